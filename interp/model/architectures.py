"""One declarative adapter per architecture: where its blocks, final norm and unembedding live.

Adding an architecture is adding a row to ``ADAPTERS``; nothing else in polylens branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from interp.errors import PolylensError


@dataclass(frozen=True)
class Adapter:
    """Dotted paths into a Hugging Face causal LM (or bare encoder), relative to the top model."""

    blocks: str
    """The ModuleList of transformer blocks; block 0's input is the embedding output (layer 0)."""
    final_norm: str | None
    """The norm applied to the last residual stream before the unembedding (None: an encoder,
    which loads without a vocabulary head)."""
    unembed: str | None
    """The Linear mapping the normed residual to vocabulary logits (None: an encoder)."""
    body: str
    """The transformer body (embeddings + blocks + final norm), without the unembedding."""
    embed: str
    """The token embedding (its output is the ``embed`` site)."""
    attn_out: str
    """Inside a block: the module whose output the block adds to the residual stream after
    attention (the attention itself, or Gemma's post-attention norm)."""
    mlp_out: str
    """Inside a block: the module whose output the block adds after the MLP."""
    mlp_down: str | None
    """Inside a block: the MLP's down projection; its input is the ``mlp_act`` site. None for a
    mixture of experts, which has no one down projection (``mlp_act_refusal`` says why)."""
    attn_write: str
    """Inside a block: the projection that writes attention into the residual stream."""
    extra_embeds: tuple[str, ...] = ()
    """Other embeddings added before block 0 (GPT-2's learned positions)."""
    softcap_attr: str | None = None
    """Config attribute holding the final-logit soft-capping constant, where the family has one."""
    orthogonalize_refusal: str | None = None
    """Why weight orthogonalization would not equal hook ablation here (None: it does)."""
    logit_scale_attr: str | None = None
    """Config attribute holding a constant the head multiplies the logits by (Cohere's)."""
    mlp_act_refusal: str | None = None
    """Why the family has no one layer of MLP neurons (a mixture of experts); the ``mlp_act``
    site is refused with it. Set exactly when ``mlp_down`` is None."""
    mlp_writers: tuple[str, ...] = ()
    """Inside a block: where the MLP writes into the residual stream, for ``orthogonalize``,
    where that is not ``mlp_down`` (a mixture of experts: its experts' fused down projections, a
    3-D weight ``[expert, d_model, d_expert]``, and a shared expert's down projection)."""
    unsupported_backends: tuple[tuple[str, str], ...] = ()
    """``(backend, why)`` for each extraction backend that cannot run the family."""
    causal: bool = True
    """A causal LM (next-token logits, left padding); False for a bidirectional encoder, which
    loads without a head (``AutoModel``) and refuses every next-token analysis."""
    positions_after_pad: bool = False
    """Learned position ids start after the pad id (RoBERTa's ``padding_idx + 1``), not at 0."""

    def __post_init__(self) -> None:
        if (self.mlp_down is None) != (self.mlp_act_refusal is not None):
            raise ValueError("an adapter without mlp_down must say why (mlp_act_refusal)")
        if self.mlp_down is None and not self.mlp_writers:
            raise ValueError("an adapter without mlp_down must name its mlp_writers")

    def unsupported(self, backend: str) -> str | None:
        """Why ``backend`` cannot run this family (None: it can)."""
        return dict(self.unsupported_backends).get(backend)

    @property
    def writers(self) -> tuple[str, ...]:
        """Inside a block: every weight that writes into the residual stream."""
        return (self.attn_write, *(self.mlp_writers or (self.mlp_down,)))


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
# Gemma 3 4B-27B checkpoints (Gemma3ForConditionalGeneration): the language model inside the
# multimodal wrapper; the vision tower stays loaded, unused by text-only forward passes. No
# soft-capping: the wrapper's head never applies its text config's final_logit_softcapping.
_GEMMA3_MULTIMODAL = replace(
    _GEMMA,
    blocks="model.language_model.layers",
    final_norm="model.language_model.norm",
    body="model.language_model",
    embed="model.language_model.embed_tokens",
    softcap_attr=None,
    unsupported_backends=(
        (
            "transformer_lens",
            "its multimodal bridge loads an image processor and, where torchvision is missing, "
            "pip-installs it (and a torch to match) into the running environment",
        ),
    ),
)
# OLMo 2 normalises each sublayer's output (no input norms), like Gemma's post-sublayer norms.
_OLMO2 = replace(
    _LLAMA_LIKE,
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
    orthogonalize_refusal=_GEMMA.orthogonalize_refusal,
)
# BLOOM's attention and MLP add the residual inside themselves (dropout_add), so what a sublayer
# adds is its output projection's output. ``embed`` is the raw token embedding: layer 0
# (resid_pre.0) is after word_embeddings_layernorm. ALiBi reads positions off the attention
# mask; transformers 5 takes and ignores the batch's position_ids. (Checkpoints with
# pretraining_tp > 1 and slow_but_exact bypass the dense modules; none is published.)
_BLOOM = Adapter(
    blocks="transformer.h",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    body="transformer",
    embed="transformer.word_embeddings",
    attn_out="self_attention.dense",
    mlp_out="mlp.dense_4h_to_h",
    mlp_down="mlp.dense_4h_to_h",
    attn_write="self_attention.dense",
    orthogonalize_refusal=(
        "normalises its token embeddings (word_embeddings_layernorm) before block 0, so "
        "embeddings orthogonal to a direction still hand block 0 a component along it"
    ),
)
# XGLM's MLP is fc1 -> activation -> fc2 inside the block, with no module of its own.
_XGLM = Adapter(
    blocks="model.layers",
    final_norm="model.layer_norm",
    unembed="lm_head",
    body="model",
    embed="model.embed_tokens",
    attn_out="self_attn",
    mlp_out="fc2",
    mlp_down="fc2",
    attn_write="self_attn.out_proj",
    orthogonalize_refusal=(
        "adds fixed sinusoidal position vectors (a table, not a weight) to its embeddings, so "
        "projected weights still hand block 0 a component along the direction"
    ),
)
# Mixtures of experts: every expert has its own neurons and each token reaches only a few
# experts, so there is no one [d_mlp] activation per token; mlp_out is the routed sum.
_MOE_NEURONS = (
    "routes each token through a few of its experts' MLPs, so it has no one layer of MLP neurons"
)
_MIXTRAL = replace(
    _LLAMA_LIKE,
    mlp_down=None,
    mlp_act_refusal=_MOE_NEURONS,
    mlp_writers=("mlp.experts.down_proj",),
)
_QWEN2_MOE = replace(
    _MIXTRAL,
    mlp_writers=("mlp.experts.down_proj", "mlp.shared_expert.down_proj"),
)
# Bidirectional encoders, loaded bare (AutoModel: no pooler, no masked-LM head), so no final
# norm and no unembedding. Post-LN blocks compute LN(x + f(x)) for each sublayer f: attn_out and
# mlp_out are the sublayers' output projections (what they add before the norm), resid_post the
# normalised block output (HF's hidden_states). ``embed`` is the token embedding alone; layer 0
# (resid_pre.0) is the embeddings' sum after their LayerNorm.
_BERT = Adapter(
    blocks="encoder.layer",
    final_norm=None,
    unembed=None,
    body="",
    embed="embeddings.word_embeddings",
    attn_out="attention.output.dense",
    mlp_out="output.dense",
    mlp_down="output.dense",
    attn_write="attention.output.dense",
    extra_embeds=("embeddings.position_embeddings", "embeddings.token_type_embeddings"),
    orthogonalize_refusal=(
        "normalises the residual stream after every sublayer (post-LN), so weights orthogonal "
        "to a direction still write along it"
    ),
    causal=False,
)

ADAPTERS: dict[str, Adapter] = {
    "gemma3": _GEMMA3_MULTIMODAL,
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
    "bloom": _BLOOM,
    "xglm": _XGLM,
    "olmo2": _OLMO2,
    "phi3": _LLAMA_LIKE,  # fused qkv_proj and gate_up_proj; o_proj and down_proj as Llama's
    # Parallel block: attention and MLP both read the same norm and add to the residual.
    "cohere": replace(_LLAMA_LIKE, logit_scale_attr="logit_scale"),
    "mixtral": _MIXTRAL,
    "qwen2_moe": _QWEN2_MOE,
    "bert": _BERT,  # mBERT; an encoder
    "xlm-roberta": replace(_BERT, positions_after_pad=True),  # an encoder
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
