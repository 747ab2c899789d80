"""Training-free alignment of one language's representations to another's, and probe transfer.

Four maps from language B's residuals to language A's space, each fitted per layer on training
items only (parallel items for the projections: row i of B and row i of A are the same item):

- ``identical``: no change;
- ``mean_shift``: ``x + (mu_A - mu_B)``;
- ``projection``: least-squares ``W`` with ``X_B W ~ X_A``;
- ``centred_projection``: ``(x - mu_B) W + mu_A`` with ``W`` fitted on centred data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import PolylensError
from probes.evaluate import balanced_accuracy
from probes.linear import fit_logistic, solve_spd

METHODS = ("identical", "mean_shift", "projection", "centred_projection")


@dataclass
class Alignment:
    """A fitted per-layer affine map ``x @ W + b`` (``W`` None means the identity)."""

    method: str
    weight: Float[Tensor, "layer d d"] | None
    bias: Float[Tensor, "layer d"]

    def __call__(self, x: Float[Tensor, "layer n d"]) -> Float[Tensor, "layer n d"]:
        """Map B's residuals into A's space."""
        out = x if self.weight is None else torch.bmm(x, self.weight.to(x))
        return out + self.bias.to(x)[:, None]


def _lstsq(src: Tensor, dst: Tensor, ridge: float) -> Tensor:
    # Normal equations with a small ridge: defined even when d > n (few parallel items).
    gram = src.transpose(1, 2) @ src
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return solve_spd(gram + ridge * eye, src.transpose(1, 2) @ dst)


def fit_alignment(
    method: str,
    source: Float[Tensor, "layer n d"],
    target: Float[Tensor, "layer n d"],
    *,
    ridge: float = 1e-3,
) -> Alignment:
    """Fit the map from ``source`` (language B) to ``target`` (language A) on paired rows."""
    if method not in METHODS:
        raise PolylensError(f"unknown alignment {method!r}; use one of {', '.join(METHODS)}")
    if source.shape != target.shape:
        raise PolylensError(
            f"alignment needs paired items: source {tuple(source.shape)} vs target "
            f"{tuple(target.shape)}"
        )
    src, dst = source.double(), target.double()
    mu_src, mu_dst = src.mean(1), dst.mean(1)
    if method == "identical":
        return Alignment(method, None, torch.zeros_like(mu_src).float())
    if method == "mean_shift":
        return Alignment(method, None, (mu_dst - mu_src).float())
    if method == "projection":
        return Alignment(method, _lstsq(src, dst, ridge).float(), torch.zeros_like(mu_src).float())
    w = _lstsq(src - mu_src[:, None], dst - mu_dst[:, None], ridge)
    bias = mu_dst - torch.einsum("ld,lde->le", mu_src, w)
    return Alignment(method, w.float(), bias.float())


def transfer_matrix(
    data: Mapping[str, tuple[Tensor, Tensor]],
    fit: Callable[[Tensor, Tensor], object],
    score: Callable[[Tensor, Tensor], Tensor],
    test: Mapping[str, tuple[Tensor, Tensor]] | None = None,
) -> tuple[list[str], Float[Tensor, "layer train_lang test_lang"]]:
    """Train a probe on each language, score it on every language, per layer.

    ``data[lang] = (x [layer, n, d], y [n])`` is the training data; ``test`` (default: ``data``)
    the evaluation data; ``score(prob, y)`` returns one value per layer.
    """
    test = test or data
    langs = list(data)
    rows = []
    for a in langs:
        probe = fit(*data[a])
        rows.append(
            torch.stack([score(probe.predict_proba(test[b][0]), test[b][1]) for b in langs], dim=-1)
        )
    return langs, torch.stack(rows, dim=1)


def aligned_transfer(
    train: Mapping[str, tuple[Float[Tensor, "layer n d"], Tensor]],
    test: Mapping[str, tuple[Float[Tensor, "layer m d"], Tensor]],
    layers: list[int],
    C: float,  # noqa: N803 (scikit-learn's name)
) -> dict[str, Float[Tensor, " layer"]]:
    """Mean balanced accuracy over ordered language pairs of A's probe on aligned B, per layer.

    For every ordered pair (A, B) of languages, a logistic probe is fitted on A's train split
    and each alignment maps B onto A (fitted on the parallel train items); the probe is scored
    on B's aligned test split.

    Args:
        train: per language, ``(features [layer, n, d], labels [n])``, items parallel.
        test: the same for the held-out items.
        layers: the model layers to align at (indices into the features' first dimension).
        C: inverse L2 strength of the logistic probe.

    Returns:
        Per alignment method (``METHODS``), a tensor ``[len(layers)]``.
    """
    scores: dict[str, list[Tensor]] = {m: [] for m in METHODS}
    for a, (x_a, y_a) in train.items():
        probe = fit_logistic(x_a[layers], y_a, C=C)
        for b, (x_b, _) in train.items():
            if a == b:
                continue
            for method in METHODS:
                align = fit_alignment(method, x_b[layers], x_a[layers])
                prob = probe.predict_proba(align(test[b][0][layers]))
                scores[method].append(balanced_accuracy(prob, test[b][1]))
    return {m: torch.stack(v).mean(0) for m, v in scores.items()}
