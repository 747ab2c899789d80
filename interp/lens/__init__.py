"""Lenses: what each layer's residual stream would predict.

The logit lens (``logit``: the model's own final norm and unembedding at every layer) and the
tuned lens (``tuned``: one trained affine translator per layer).

The package re-exports both, so ``from interp.lens import apply_lens`` is the documented path.
"""

from interp.lens.logit import (
    LensOutput,
    apply_lens,
    collisions,
    decode_logits,
    first_tokens,
)

__all__ = ["LensOutput", "apply_lens", "collisions", "decode_logits", "first_tokens"]
