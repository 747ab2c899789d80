"""Linear probes fitted for every layer at once: L2 logistic regression and the mass-mean probe.

The logistic probe minimises ``sum(log-loss) + ||w||^2 / (2C)`` (scikit-learn's objective for the
same ``C``; the bias is not penalised) by batched Newton steps: one ``[layer, d+1, d+1]`` solve per
iteration for all layers together, on a GPU when the features are there. Features are
standardised per layer with the training statistics, which are part of the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import PolylensError


@dataclass
class LinearProbe:
    """Per-layer linear classifiers: ``sigmoid(((x - mean) / std) @ w + b)``."""

    weight: Float[Tensor, "layer d"]
    bias: Float[Tensor, " layer"]
    mean: Float[Tensor, "layer d"]
    std: Float[Tensor, "layer d"]

    def logits(self, x: Float[Tensor, "layer n d"]) -> Float[Tensor, "layer n"]:
        """Decision values per layer."""
        z = (x.to(self.weight) - self.mean[:, None]) / self.std[:, None]
        return torch.einsum("lnd,ld->ln", z, self.weight) + self.bias[:, None]

    def predict_proba(self, x: Float[Tensor, "layer n d"]) -> Float[Tensor, "layer n"]:
        """P(label = 1) per layer."""
        return torch.sigmoid(self.logits(x))


def check_features(x: Tensor, y: Tensor) -> None:
    """Clear errors for inputs a probe cannot be fitted on."""
    if x.ndim != 3 or y.ndim != 1 or x.shape[1] != y.shape[0]:
        raise PolylensError(
            f"features must be [layer, n, d] and labels [n]; got {tuple(x.shape)}"
            f" and {tuple(y.shape)}"
        )
    if not torch.isfinite(x).all():
        raise PolylensError("features contain NaN or inf; check the activations they came from")
    classes = torch.unique(y)
    if len(classes) != 2 or not set(classes.tolist()) <= {0, 1}:
        raise PolylensError(
            f"labels must contain both classes 0 and 1; got {sorted(set(classes.tolist()))}"
        )


def _standardise(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean = x.mean(1)
    # Constant features get unit scale instead of a division by zero.
    std = x.std(1).clamp_min(1e-6)
    return (x - mean[:, None]) / std[:, None], mean, std


def fit_logistic(
    x: Float[Tensor, "layer n d"],
    y: Float[Tensor, " n"],
    *,
    C: float = 1.0,  # noqa: N803 (scikit-learn's name)
    max_iter: int = 50,
    tol: float = 1e-6,
) -> LinearProbe:
    """L2-regularised logistic regression for all layers at once (batched Newton)."""
    check_features(x, y)
    z, mean, std = _standardise(x.double())
    n_layers, n, d = z.shape
    design = torch.cat([z, torch.ones(n_layers, n, 1, dtype=z.dtype, device=z.device)], dim=-1)
    target = y.to(design)
    theta = torch.zeros(n_layers, d + 1, dtype=z.dtype, device=z.device)
    ridge = torch.full((d + 1,), 1.0 / C, dtype=z.dtype, device=z.device)
    ridge[-1] = 0.0  # the bias is not penalised
    newton_step = _dual_step if n < d else _primal_step
    gram = torch.bmm(z, z.transpose(1, 2)) if n < d else None  # [layer, n, n], fixed
    for _ in range(max_iter):
        p = torch.sigmoid(torch.einsum("lnd,ld->ln", design, theta))
        grad = torch.einsum("lnd,ln->ld", design, p - target) + ridge * theta
        step = newton_step(design, p * (1 - p), grad, ridge, gram)
        theta = theta - step
        if step.abs().max() < tol:
            break
    return LinearProbe(theta[:, :-1].float(), theta[:, -1].float(), mean.float(), std.float())


def _primal_step(design: Tensor, w: Tensor, grad: Tensor, ridge: Tensor, gram) -> Tensor:
    """Solve the ``(d+1) x (d+1)`` Newton system directly (cheap when n >= d)."""
    d1 = design.shape[-1]
    hess = torch.einsum("lnd,ln,lne->lde", design, w, design) + torch.diag(ridge)
    # A tiny jitter keeps the solve defined when a layer separates perfectly.
    hess = hess + 1e-9 * torch.eye(d1, dtype=design.dtype, device=design.device)
    return torch.linalg.solve(hess, grad)


def _dual_step(design: Tensor, w: Tensor, grad: Tensor, ridge: Tensor, gram: Tensor) -> Tensor:
    """The same Newton step through an ``n x n`` system (Woodbury), for n < d.

    With weights ``A = Z^T W Z + lam I`` and the unpenalised bias eliminated by its Schur
    complement: ``A^-1 v = (v - Z^T S K^-1 S Z v) / lam`` with ``S = W^(1/2)`` and
    ``K = lam I + S Z Z^T S``.
    """
    lam = ridge[0]
    z = design[..., :-1]
    sw = w.sqrt()
    n = z.shape[1]
    k = lam * torch.eye(n, dtype=z.dtype, device=z.device) + sw[:, :, None] * gram * sw[:, None, :]

    def a_inv(v: Tensor) -> Tensor:  # v: [layer, d, m]
        u = sw[:, :, None] * torch.bmm(z, v)
        u = torch.linalg.solve(k, u)
        return (v - torch.bmm(z.transpose(1, 2), sw[:, :, None] * u)) / lam

    b = torch.einsum("lnd,ln->ld", z, w)  # cross term between weights and bias
    c = w.sum(-1)
    g_w, g_b = grad[:, :-1], grad[:, -1]
    solved = a_inv(torch.stack([g_w, b], dim=-1))  # [layer, d, 2]
    ainv_g, ainv_b = solved[..., 0], solved[..., 1]
    s_b = (g_b - (b * ainv_g).sum(-1)) / (c - (b * ainv_b).sum(-1))
    s_w = ainv_g - ainv_b * s_b[:, None]
    return torch.cat([s_w, s_b[:, None]], dim=-1)


def fit_mass_mean(x: Float[Tensor, "layer n d"], y: Float[Tensor, " n"]) -> LinearProbe:
    """Difference-of-means probe: ``w = mu_1 - mu_0``, threshold halfway between the means."""
    check_features(x, y)
    z, mean, std = _standardise(x.double())
    pos, neg = z[:, y == 1].mean(1), z[:, y == 0].mean(1)
    weight = pos - neg
    bias = -(weight * (pos + neg) / 2).sum(-1)
    return LinearProbe(weight, bias, mean, std)
