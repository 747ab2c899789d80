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

# -- half precision ------------------------------------------------------------------------------
# A model loaded in bfloat16 rounds its residual stream to bfloat16 after every sublayer. bfloat16
# keeps 8 significant bits: one unit in the last place (ulp) is EPS_BF16 = 2^-7 = 7.8e-3 of a
# value in [1, 2), and rounding to nearest moves a value by at most half of that. Two routes to
# the same numbers agree exactly only where they round at the same points; where a rounding falls
# the other way, a value moves by one ulp, up to EPS_BF16 of itself, and a move in the residual
# reaches the outputs through the later blocks. Compared outputs are rounded too (the logits come
# out of a bfloat16 unembedding), so the floor of any such comparison is about one EPS_BF16 of the
# scale, not float32's few units of 1.2e-7. Each budget below is a few ulps of the outputs; the
# bugs the tests guard against move them by far more, even on tiny random models, whose blocks
# change little (measured over 3 seeds: a lens without the final norm 8e-2..1.6e-1, a direction
# not ablated 0.55..0.81 of the residual's norm, another prompt's states patched in >= 0.56, the
# model not orthogonalized >= 0.20); tests/test_bfloat16.py checks each of these too.

EPS_BF16 = torch.finfo(torch.bfloat16).eps
EPS_F16 = torch.finfo(torch.float16).eps

BF16_SAME_MATH = EPS_BF16
"""The same bfloat16 operations on the same inputs, a few values rounded at other points: the
lens decodes with the model's own bfloat16 norm and unembedding, and keeps the head's last steps
(Gemma's soft-cap: divide, tanh, multiply) in float32 where the model rounds each of them, up to
three half-ulps of the logits, which sit well inside the log-probabilities' scale. One ulp of the
scale (7.8e-3); measured on tiny llama and gpt2: 0; gemma3_text: <= 3.2e-4."""

BF16_DEEP_FORWARD = 2 * EPS_BF16
"""The same forward in another batch (other padding, so other reduction orders in every kernel):
a float32-level difference flips roundings of the bfloat16 residual here and there (an ulp, up to
EPS_BF16 of an entry), the later blocks carry them to the logits, which are rounded once more.
Two ulps of the scale (1.6e-2); measured, patching a run into itself through batches of 3 instead
of 4: <= 7.6e-3 (gemma3_text), <= 3.7e-3 (llama); its float32 twin is SAME_MATH."""

BF16_OTHER_IMPLEMENTATION = 4 * EPS_BF16
"""Another route to the same function in bfloat16: TransformerLens's own modules (which round at
their own points and keep some steps in float32), or the weights orthogonalized once against the
activations ablated at every sublayer. Each block's output may round differently on the two
routes, and these add up over the blocks: about an ulp per block of a tiny model (3 blocks) and
one for the embedding or the logits, 4 ulps (3.1e-2); measured: TransformerLens <= 1.2e-2
(gemma3_text; llama, gpt2 <= 8.3e-3), nnsight 0 (the same modules), orthogonalized vs hooked
logits <= 8.1e-3."""

BF16_NO_COMPONENT = EPS_BF16
"""What an ablated direction keeps of a bfloat16 residual, relative to the residual's norm. The
projection runs in float32 and is rounded once, and every later sum in the residual stream is
rounded again: each rounding moves each entry by <= EPS_BF16 / 2 of it, so its component along a
unit direction is <= EPS_BF16 / 2 of the norm (in practice ~ EPS_BF16 / (2 sqrt(d_model)), signs
at random). Two such roundings aligned with the direction, 7.8e-3; measured through 3 blocks:
<= 1.3e-3, against 0.55..0.81 for the direction before ablation."""

F16_SAME_MATH = EPS_F16
"""``BF16_SAME_MATH`` for float16, whose 11 significant bits make an ulp 2^-10 = 9.8e-4 of a
value; measured for the lens: <= 4.7e-5 (gemma3_text), 0 for llama and gpt2."""


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
