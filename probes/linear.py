"""Linear probes fitted for every layer at once: L2 logistic regression and the mass-mean probe.

The logistic probe minimises ``sum(log-loss) + ||w||^2 / (2C)`` (scikit-learn's objective for the
same ``C``; the bias is not penalised) by batched Newton steps for all layers (or layers x folds)
together, on a GPU when the features are there. Features are standardised per layer with the
training statistics, which are part of the probe.

Activations are wide (``d`` in the thousands) and probe sets small, so with fewer items than
features the Newton iterations run in the ``n``-dimensional dual: by the representer theorem
``w = Z^T alpha``, the logits are ``K alpha + b`` with the Gram matrix ``K = Z Z^T``, and each
step factorises an ``n``-square matrix instead of a ``(d + 1)``-square one.
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
    """Clear errors for inputs a probe cannot be fitted on.

    ``y`` is ``[n]`` (the same labels for every layer) or ``[layer, n]`` (one row per problem,
    as when several label sets, or folds, are fitted together along the layer axis).
    """
    if x.ndim != 3 or y.ndim not in (1, 2) or x.shape[1] != y.shape[-1]:
        raise PolylensError(
            f"features must be [layer, n, d] and labels [n]; got {tuple(x.shape)}"
            f" and {tuple(y.shape)}"
        )
    if y.ndim == 2 and y.shape[0] != x.shape[0]:
        raise PolylensError(f"labels [layer, n] must have {x.shape[0]} rows; got {y.shape[0]}")
    # One reduction instead of a mask pass: any NaN or inf makes the sum non-finite.
    if not torch.isfinite(x.sum(dtype=torch.promote_types(x.dtype, torch.float32))):
        raise PolylensError("features contain NaN or inf; check the activations they came from")
    values = set(torch.unique(y).tolist())
    rows = y.reshape(-1, y.shape[-1]).bool()
    if not values <= {0, 1} or not (rows.any(-1) & ~rows.all(-1)).all():
        raise PolylensError(f"labels must contain both classes 0 and 1; got {sorted(values)}")


def solve_spd(a: Float[Tensor, "*batch m m"], b: Float[Tensor, "*batch m k"]) -> Tensor:
    """Solve ``a x = b`` for symmetric positive definite ``a`` by a Cholesky factor.

    Half the work of an LU solve, and it avoids a failure of batched LU in this torch's MKL
    ("Pivots given to lu_solve ...") after ``torch.set_num_threads`` has been called. A matrix
    that is not numerically positive definite falls back to LU.
    """
    chol, info = torch.linalg.cholesky_ex(a)
    if info.any():
        return torch.linalg.solve(a, b)
    return torch.cholesky_solve(b, chol)


def _standardise(x: Tensor, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` as ``dtype`` with zero mean and unit variance per layer and feature (a new tensor).

    The mean is accumulated in float64 whatever ``dtype`` (residual entries reach 1e4).
    """
    mean = x.mean(1, dtype=torch.float64)
    z = x.to(dtype, copy=True)  # standardised in place below
    z.sub_(mean[:, None].to(dtype))
    # Constant features get unit scale instead of a division by zero.
    std = (torch.linalg.vector_norm(z, dim=1).double() / (z.shape[1] - 1) ** 0.5).clamp_min(1e-6)
    return z.div_(std[:, None].to(dtype)), mean, std


def _targets(y: Tensor, like: Tensor) -> Float[Tensor, "layer n"]:
    return y.to(like).expand(like.shape[0], like.shape[1])


def fit_logistic(
    x: Float[Tensor, "layer n d"],
    y: Float[Tensor, "*layer n"],
    *,
    C: float = 1.0,  # noqa: N803 (scikit-learn's name)
    max_iter: int = 50,
    tol: float = 1e-3,
) -> LinearProbe:
    """L2-regularised logistic regression for all layers at once (batched Newton).

    Stops when no training logit moved by more than ``tol`` in a step; Newton converges
    quadratically, so the logits are then within about ``tol ** 2`` of the optimum.
    """
    check_features(x, y)
    dual = x.shape[1] < x.shape[2]
    # The dual's Gram matrix is computed in float32 (half the time of float64 on a CPU; a
    # relative error near 1e-7); the primal design stays float64.
    z, mean, std = _standardise(x, torch.float32 if dual else torch.float64)
    target = _targets(y, z).double()
    newton = _newton_dual if dual else _newton_primal
    weight, bias = newton(z, target, 1.0 / C, max_iter, tol)
    return LinearProbe(weight.float(), bias.float(), mean.float(), std.float())


def _newton_primal(z: Tensor, target: Tensor, lam: float, max_iter: int, tol: float):
    """Newton on ``(w, b)``: one ``(d + 1)``-square solve per step (cheap when n >= d)."""
    n_layers, n, d = z.shape
    design = torch.cat([z, torch.ones(n_layers, n, 1, dtype=z.dtype, device=z.device)], dim=-1)
    ridge = torch.full((d + 1,), lam, dtype=z.dtype, device=z.device)
    ridge[-1] = 1e-9  # the bias is not penalised; the jitter keeps separable layers solvable
    theta = torch.zeros(n_layers, d + 1, dtype=z.dtype, device=z.device)
    for _ in range(max_iter):
        p = torch.sigmoid(torch.einsum("lnd,ld->ln", design, theta))
        grad = torch.einsum("lnd,ln->ld", design, p - target) + ridge * theta
        hess = torch.einsum("lnd,ln,lne->lde", design, p * (1 - p), design) + torch.diag(ridge)
        step = solve_spd(hess, grad[..., None])[..., 0]
        theta = theta - step
        if torch.einsum("lnd,ld->ln", design, step).abs().max() < tol:
            break
    return theta[:, :-1], theta[:, -1]


def _newton_dual(z: Tensor, target: Tensor, lam: float, max_iter: int, tol: float):
    """Newton on ``(alpha, b)`` with ``w = Z^T alpha``: ``n``-square solves per step.

    Most steps are taken in float32 (twice as fast on a CPU) until no logit moves by more than
    0.3; float32's own optimum lies a few hundredths from float64's, so two or three float64
    steps (quadratic convergence) finish to ``tol``. A float32 factorisation that fails (a badly
    conditioned layer) hands over to float64 at once;
    each step's length comes from ``_line_search``.
    """
    gram = torch.bmm(z, z.transpose(1, 2))  # [layer, n, n], fixed
    alpha = torch.zeros(z.shape[:2], dtype=torch.float64, device=z.device)
    bias = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    steps = 0
    for dtype, stop in ((torch.float32, max(tol, 0.3)), (torch.float64, tol)):
        k, y = gram.to(dtype), target.to(dtype)
        alpha, bias = alpha.to(dtype), bias.to(dtype)
        while steps < max_iter:
            # From the state itself, not a running sum of moves (float32 rounding drifts).
            logits = torch.bmm(alpha[:, None], k)[:, 0] + bias[:, None]
            step = _dual_step(k, y, alpha, logits, lam)
            if step is None:
                break
            d_alpha, d_bias, moved = _line_search(step, y, alpha, bias, logits, lam)
            alpha, bias = alpha - d_alpha, bias - d_bias
            steps += 1
            if moved.abs().max() < stop:
                break
    return torch.bmm(alpha.to(z)[:, None], z)[:, 0], bias.double()


_STEP_LENGTHS = (2.0, 1.0, 0.5, 0.25, 0.125, 0.0625)


def _line_search(
    step: tuple[Tensor, Tensor, Tensor],
    target: Tensor,
    alpha: Tensor,
    bias: Tensor,
    logits: Tensor,
    lam: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per layer, the multiple of the Newton step that lowers the objective most; 0 if none does.

    Far from the optimum of a nearly separable layer the full step is timid (the logits must
    grow to tens): twice the step saves about a quarter of the steps. Shorter multiples guard
    against a step that overshoots, and 0 stops a layer whose step no longer lowers the
    objective at this precision (float32 on a degenerate layer; float64 at convergence). Once no
    logit would move by 1, the full step (quadratic convergence) unless it fails to lower the
    objective. The objective is ``sum(log-loss) + lam/2 alpha.(f - b)`` (``= lam/2 ||w||^2``),
    cheap to evaluate because the logits move linearly along the step.
    """
    d_alpha, d_bias, moved = step
    etas = torch.tensor((0.0, *_STEP_LENGTHS), dtype=logits.dtype, device=logits.device)
    e = etas[:, None, None]  # all multiples at once: [eta, layer, n]
    f, a = logits - e * moved, alpha - e * d_alpha
    b = bias - etas[:, None] * d_bias
    loss = torch.nn.functional.softplus(f) - target * f
    objective = loss.sum(-1) + 0.5 * lam * (a * (f - b[..., None])).sum(-1)  # [eta, layer]
    objective = objective.nan_to_num(nan=torch.inf)
    best = objective[1:].argmin(0) + 1
    best = torch.where(moved.abs().amax(-1) < 1, _STEP_LENGTHS.index(1.0) + 1, best)
    lowers = objective.gather(0, best[None])[0] < objective[0]
    eta = etas[best]
    return (
        torch.where(lowers[:, None], eta[:, None] * d_alpha, 0.0),
        torch.where(lowers, eta * d_bias, 0.0),
        torch.where(lowers[:, None], eta[:, None] * moved, 0.0),
    )


def _dual_step(gram: Tensor, target: Tensor, alpha: Tensor, logits: Tensor, lam: float):
    """One Newton step ``(d_alpha, d_bias, d_logits)``; None when the factorisation fails.

    Restricted to ``w = Z^T alpha`` the primal Newton system reads (``W = diag(p (1 - p))``)
    ``(W K + lam I) d_alpha + W 1 d_b = p - y + lam alpha`` and
    ``1^T W K d_alpha + 1^T W 1 d_b = 1^T (p - y)``. ``(W K + lam I)^-1`` is applied as
    ``(I - S B^-1 S K) / lam`` with ``S = W^(1/2)`` and ``B = lam I + S K S`` (symmetric positive
    definite, eigenvalues >= lam: a Cholesky factor, never a division by ``S``); the bias step
    follows from the second equation.
    """
    p = torch.sigmoid(logits)
    w = p * (1 - p)
    root = w.sqrt()
    eye = lam * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    chol, info = torch.linalg.cholesky_ex(
        torch.addcmul(eye, gram, root[:, :, None] * root[:, None, :])
    )
    if info.any():
        return None
    # Right-hand sides as rows, [layer, 2, n]: K is symmetric, and row-times-matrix products
    # are several times faster than matrix-times-column ones for so few columns.
    rhs = torch.stack([p - target + lam * alpha, w], dim=1)
    k_rhs = torch.bmm(rhs, gram)
    s = root[:, None, :]
    u = s * torch.cholesky_solve((s * k_rhs).transpose(1, 2), chol).transpose(1, 2)
    solved = (rhs - u) / lam  # (W K + lam I)^-1 rhs
    k_solved = (k_rhs - torch.bmm(u, gram)) / lam
    d_bias = ((p - target).sum(-1) - (w * k_solved[:, 0]).sum(-1)) / (
        w.sum(-1) - (w * k_solved[:, 1]).sum(-1)
    )
    d_alpha = solved[:, 0] - solved[:, 1] * d_bias[:, None]
    moved = k_solved[:, 0] - k_solved[:, 1] * d_bias[:, None] + d_bias[:, None]
    return d_alpha, d_bias, moved


def fit_mass_mean(x: Float[Tensor, "layer n d"], y: Float[Tensor, "*layer n"]) -> LinearProbe:
    """Difference-of-means probe: ``w = mu_1 - mu_0``, threshold halfway between the means."""
    check_features(x, y)
    z, mean, std = _standardise(x)
    pos = _targets(y, z)[..., None]
    mu_pos = (z * pos).sum(1) / pos.sum(1)
    mu_neg = (z * (1 - pos)).sum(1) / (1 - pos).sum(1)
    weight = mu_pos - mu_neg
    bias = -(weight * (mu_pos + mu_neg) / 2).sum(-1)
    return LinearProbe(weight.float(), bias.float(), mean.float(), std.float())
