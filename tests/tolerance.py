"""Numerical tolerances, each relative to the scale of what it compares and with its reason.

Two float32 computations of the same function that differ only in reduction order (another
batch composition, BLAS kernel, GPU, chunking) agree to a few units of float32's epsilon
(1.2e-7) *relative to the magnitudes involved*, not in absolute terms: Gemma's residual stream
reaches ~3.6e4, its log-probabilities span ~-40..0 over 262,144 tokens. So every comparison
here is ``max |actual - expected| <= rel * scale`` with ``scale`` the largest magnitude compared,
and ``rel`` one of the named budgets below. Each budget is far below what a real bug changes
(a missing norm, soft-cap, layer shift or wrong position moves things by O(scale)).
"""

from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps

SAME_MATH = 64 * EPS32
"""Same operations, other reduction order, a few small blocks (tiny models): ~8e-6."""

DEEP_FORWARD = 1e-5
"""Residuals through a real model's blocks (18 x d=640): error compounds with depth (~80 eps)."""

VOCAB_SOFTMAX = 1e-4
"""Log-probs over a 262,144-token vocabulary: each logit is a d=640 dot product and the
normaliser sums the whole vocabulary; two BLAS kernels differ by up to ~1.2e-5 of the scale
(2.2e-4 absolute seen on one x86-64 CPU), so 1e-4 leaves headroom."""

OTHER_IMPLEMENTATION = 1e-4
"""Another library (TransformerLens, nnsight) recomputing the forward with its own modules."""


def max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected|`` over the largest finite magnitude of ``expected``.

    Equal entries (the same infinity included: the log-probability of an empty token set) count
    as no error; a NaN, or an infinity on one side only, is an infinite error.
    """
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    finite = expected[expected.isfinite()]
    scale = finite.abs().max().clamp_min(1e-30) if finite.numel() else torch.tensor(1.0)
    diff = torch.where(actual == expected, 0.0, (actual - expected).abs())
    return float(diff.nan_to_num(nan=torch.inf).max() / scale)


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Assert ``max |actual - expected| <= rel * max |expected|`` (shapes must match)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = max_relative_error(actual, expected)
    assert err <= rel, f"max error is {err:.2e} of the scale, budget {rel:.1e}"
