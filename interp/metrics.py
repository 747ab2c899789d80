"""Statistics the analyses share: bootstrap intervals, KL divergence, outcome rates, AUROC.

Plain functions on tensors (or lists of labels), with no model and no files, so that a notebook
computes exactly what an experiment reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def bootstrap_mean(
    values: Float[Tensor, "sample ..."], n: int, seed: int
) -> tuple[Float[Tensor, "..."], Float[Tensor, "..."], Float[Tensor, "..."]]:
    """Mean over dim 0 and its 95% percentile interval from ``n`` resamples of the rows.

    Args:
        values: one row per sample (e.g. ``[word, layer]``).
        n: bootstrap resamples.
        seed: seed of the resampling (same seed, same interval).

    Returns:
        ``(mean, low, high)``, each shaped like one row.
    """
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.shape[0], (n, values.shape[0]), generator=gen)
    means = values[idx].mean(1)
    return values.mean(0), means.quantile(0.025, dim=0), means.quantile(0.975, dim=0)


def kl_divergence(
    p_logp: Float[Tensor, "row vocab"], q_logp: Float[Tensor, "row vocab"]
) -> Float[Tensor, " row"]:
    """KL(p || q) per row, in nats, from log-probabilities (e.g. final layer vs a lens)."""
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1)


def rates(labels: Sequence[str], categories: Sequence[str]) -> dict[str, float]:
    """Share of each category among ``labels`` (0 for all when there are none)."""
    n = max(1, len(labels))
    return {c: labels.count(c) / n for c in categories}


def curve_peak(
    values: Float[Tensor, "sample layer"], layers: Sequence[int], n: int, seed: int
) -> dict[str, float | int]:
    """The layer where the mean curve peaks, its value and the 95% bootstrap interval there.

    Args:
        values: one curve per sample (e.g. ``[word, layer]`` probabilities).
        layers: the layer index of each column.
        n: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        ``{"layer", "value", "ci_low", "ci_high", "n"}``; the interval is over samples at the
        peak layer (the peak's position is not resampled).
    """
    mean, lo, hi = bootstrap_mean(values, n, seed)
    at = int(mean.argmax())
    return {
        "layer": int(layers[at]),
        "value": float(mean[at]),
        "ci_low": float(lo[at]),
        "ci_high": float(hi[at]),
        "n": int(values.shape[0]),
    }


def auroc(positive: Sequence[float] | Tensor, negative: Sequence[float] | Tensor) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    pos = torch.as_tensor(positive, dtype=torch.float64).flatten()
    neg = torch.as_tensor(negative, dtype=torch.float64).flatten()
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
