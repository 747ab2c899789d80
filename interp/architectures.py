"""One declarative adapter per architecture: where its blocks, final norm and unembedding live.

Adding an architecture is adding a row to ``ADAPTERS``; nothing else in polylens branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from interp.errors import PolylensError


@dataclass(frozen=True)
class Adapter:
    """Dotted paths into a Hugging Face causal LM, relative to the top-level model."""

    blocks: str
    """The ModuleList of transformer blocks; block 0's input is the embedding output (layer 0)."""
    final_norm: str
    """The norm applied to the last residual stream before the unembedding."""
    unembed: str
    """The Linear mapping the normed residual to vocabulary logits."""
    body: str
    """The transformer body (embeddings + blocks + final norm), without the unembedding."""
    softcap_attr: str | None = None
    """Config attribute holding the final-logit soft-capping constant, where the family has one."""


_LLAMA_LIKE = Adapter(
    blocks="model.layers", final_norm="model.norm", unembed="lm_head", body="model"
)
_GEMMA = Adapter(
    blocks="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    body="model",
    softcap_attr="final_logit_softcapping",
)

ADAPTERS: dict[str, Adapter] = {
    "gemma3_text": _GEMMA,
    "gemma2": _GEMMA,
    "gemma": _GEMMA,
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gpt2": Adapter(
        blocks="transformer.h", final_norm="transformer.ln_f", unembed="lm_head", body="transformer"
    ),
}


def adapter_for(model_type: str) -> Adapter:
    """Return the adapter of a Hugging Face ``config.model_type``, or a clear error."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise PolylensError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(ADAPTERS))}. "
            "Add a row to interp.architectures.ADAPTERS to support it."
        ) from None


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted adapter path, with an error naming the path the model lacks."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise PolylensError(
            f"model {type(model).__name__} has no module at {path!r}; its adapter does not fit it"
        ) from None
