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
    embed: str
    """The token embedding (its output is the ``embed`` site)."""
    attn_out: str
    """Inside a block: the module whose output the block adds to the residual stream after
    attention (the attention itself, or Gemma's post-attention norm)."""
    mlp_out: str
    """Inside a block: the module whose output the block adds after the MLP."""
    mlp_down: str
    """Inside a block: the MLP's down projection; its input is the ``mlp_act`` site."""
    attn_write: str
    """Inside a block: the projection that writes attention into the residual stream."""
    extra_embeds: tuple[str, ...] = ()
    """Other embeddings added before block 0 (GPT-2's learned positions)."""
    softcap_attr: str | None = None
    """Config attribute holding the final-logit soft-capping constant, where the family has one."""
    orthogonalize_refusal: str | None = None
    """Why weight orthogonalization would not equal hook ablation here (None: it does)."""


_LLAMA_LIKE = Adapter(
    blocks="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    body="model",
    embed="model.embed_tokens",
    attn_out="self_attn",
    mlp_out="mlp",
    mlp_down="mlp.down_proj",
    attn_write="self_attn.o_proj",
)
_GEMMA = Adapter(
    blocks="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    body="model",
    embed="model.embed_tokens",
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
    mlp_down="mlp.down_proj",
    attn_write="self_attn.o_proj",
    softcap_attr="final_logit_softcapping",
    orthogonalize_refusal=(
        "normalises each sublayer's output before adding it to the residual stream, so weights "
        "orthogonal to a direction still write along it"
    ),
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
        blocks="transformer.h",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        body="transformer",
        embed="transformer.wte",
        attn_out="attn",
        mlp_out="mlp",
        mlp_down="mlp.c_proj",
        attn_write="attn.c_proj",
        extra_embeds=("transformer.wpe",),
    ),
}


def adapter_for(model_type: str) -> Adapter:
    """Return the adapter of a Hugging Face ``config.model_type``, or a clear error."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise PolylensError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(ADAPTERS))}. "
            "Add a row to interp.model.architectures.ADAPTERS to support it."
        ) from None


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted adapter path, with an error naming the path the model lacks."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise PolylensError(
            f"model {type(model).__name__} has no module at {path!r}; its adapter does not fit it"
        ) from None
