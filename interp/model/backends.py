"""Extraction backends: one padded batch in, the selected residual rows of each layer out.

All three see the same left-padded batch (with explicit position ids) and the same selector, so
they must agree; ``tests/test_extract.py`` checks that they do.

- ``hooks`` (default): plain PyTorch hooks; selects positions inside the hook and stops the
  forward pass after the deepest requested layer.
- ``transformer_lens``: TransformerLens 4's ``TransformerBridge`` and ``run_with_cache`` with a
  names filter. The bridge replaces the model's modules in place, so it wraps a copy.
- ``nnsight``: ``TransformersModel.trace`` (nnsight >= 0.8; its ``LanguageModel`` is a deprecated
  alias). Pass ``backend_options={"remote": True}`` to run on NDIF; that needs the model loaded
  from its hub id (``load_model("org/name")``) and an NDIF API key configured for nnsight. Every
  option is passed on to ``trace`` (e.g. ``"backend"``).

A family a backend cannot run names it in its adapter row (``unsupported_backends``, with why);
asking for that backend is refused in one line before anything is wrapped or run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import PolylensError
from interp.model.hooks import Select, StopForward, reading_hooks
from interp.model.models import LoadedModel
from interp.model.sites import Site

Batch = dict[str, Tensor]
Backend = Callable[[LoadedModel, Batch, Sequence[Site], Select, dict], Float[Tensor, "rows site d"]]


def hooks_backend(
    model: LoadedModel, batch: Batch, sites: Sequence[Site], select: Select, options: dict
) -> Float[Tensor, "rows site width"]:
    """Forward the transformer body with reading hooks; stop after the deepest site."""
    with reading_hooks(model, sites, select) as captured:
        try:
            model.body(**batch, use_cache=False)
        except StopForward:
            pass
    # Blocks may live on several devices (device_map): gather on the model's.
    return torch.stack([captured[site].to(model.device) for site in sites], dim=1)


def residual_layers(sites: Sequence[Site], backend: str) -> list[int]:
    """The residual layers of ``sites``; other sites need the hooks backend."""
    other = [site.name for site in sites if site.layer is None]
    if other:
        raise PolylensError(
            f"the {backend} backend reads residual layers; use backend='hooks' for {other[0]}"
        )
    return [site.layer for site in sites]


def check_backend(model: LoadedModel, backend: str) -> None:
    """Refuse, in one line, a backend that cannot run the model's architecture."""
    why = model.adapter.unsupported(backend)
    if why:
        raise PolylensError(
            f"the {backend} backend does not support {model.hf.config.model_type} models: {why}; "
            "use backend='hooks'"
        )


def _tl_bridge(model: LoadedModel):
    check_backend(model, "transformer_lens")
    if "transformer_lens" not in model._backend_cache:
        from transformer_lens.model_bridge import TransformerBridge

        # boot_transformers swaps the HF modules for bridge components; keep ours untouched.
        hf_copy = copy.deepcopy(model.hf)
        if not model.causal:
            hf_copy = _masked_lm(hf_copy)
        model._backend_cache["transformer_lens"] = TransformerBridge.boot_transformers(
            model.hf.config.name_or_path or model.name,
            hf_model=hf_copy,
            tokenizer=model.tokenizer,
            device=model.device,
            dtype=model.dtype,
        )
    return model._backend_cache["transformer_lens"]


def _masked_lm(encoder: nn.Module) -> nn.Module:
    """A bare encoder inside a masked-LM model, the form TransformerLens bridges BERT in.

    The head is zero and unread (the backend reads residual layers only); it is built on the
    meta device and materialised alone, so the encoder's weights are never allocated twice.
    """
    from transformers import AutoModelForMaskedLM

    with torch.device("meta"):
        wrapper = AutoModelForMaskedLM.from_config(encoder.config)
    # The name the bridge looks its adapter up by; XLM-R is RoBERTa's architecture by another name.
    wrapper.config.architectures = [type(wrapper).__name__.replace("XLMRoberta", "Roberta")]
    setattr(wrapper, wrapper.base_model_prefix, encoder)
    for name, child in wrapper.named_children():
        if name != wrapper.base_model_prefix:
            child.to_empty(device=encoder.device).to(encoder.dtype)
            for p in child.parameters():
                nn.init.zeros_(p)
    wrapper.tie_weights()  # the decoder reads the encoder's own token embedding
    return wrapper.eval()


def tl_names(layers: Sequence[int]) -> list[str]:
    """TransformerLens hook names of polylens layers (layer 0 = block 0's resid_pre)."""
    return [
        "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"
        for layer in layers
    ]


def transformer_lens_backend(
    model: LoadedModel, batch: Batch, sites: Sequence[Site], select: Select, options: dict
) -> Float[Tensor, "rows layer d_model"]:
    """``run_with_cache`` with a names filter on the residual hooks of the requested layers."""
    bridge = _tl_bridge(model)
    names = tl_names(residual_layers(sites, "transformer_lens"))
    _, cache = bridge.run_with_cache(
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        names_filter=lambda name: name in names,
    )
    return torch.stack([select(cache[name]) for name in names], dim=1)


def _nnsight_model(model: LoadedModel, remote: bool):
    """The nnsight wrapper: the loaded HF model locally, its hub id (meta weights only) for NDIF.

    The task is pinned to text-generation (what the deprecated ``LanguageModel`` pinned): it keeps
    the hub id's task lookup off the network and names the same NDIF deployment as before. An
    encoder is pinned to feature-extraction, the pipeline of a bare encoder.
    """
    check_backend(model, "nnsight")
    key = ("nnsight", remote)
    if key not in model._backend_cache:
        from nnsight import TransformersModel

        source = model.name if remote else model.hf
        task = "text-generation" if model.causal else "feature-extraction"
        model._backend_cache[key] = TransformersModel(source, task=task, tokenizer=model.tokenizer)
    return model._backend_cache[key]


def nnsight_backend(
    model: LoadedModel, batch: Batch, sites: Sequence[Site], select: Select, options: dict
) -> Float[Tensor, "rows layer d_model"]:
    """``TransformersModel.trace`` saving block inputs/outputs; ``remote=True`` runs it on NDIF."""
    layers = residual_layers(sites, "nnsight")
    options = {"remote": False, **options}  # every option reaches trace (NDIF's included)
    lm = _nnsight_model(model, bool(options["remote"]))
    blocks = _envoy(lm, model.adapter.blocks)
    saved = []
    with lm.trace(dict(batch), **options):
        for layer in layers:
            site = blocks[0].input if layer == 0 else blocks[layer - 1].output
            saved.append(site.save())
    hidden = [s[0] if isinstance(s, tuple) else s for s in saved]
    return torch.stack([select(h.to(model.device)) for h in hidden], dim=1)


def _envoy(root, path: str):
    for part in path.split("."):
        root = getattr(root, part)
    return root


BACKENDS: dict[str, Backend] = {
    "hooks": hooks_backend,
    "transformer_lens": transformer_lens_backend,
    "nnsight": nnsight_backend,
}


def get_backend(name: str, model: LoadedModel | None = None) -> Backend:
    """The backend called ``name``, or an error listing the known ones.

    With ``model``, a backend that cannot run its architecture is refused too (``check_backend``).
    """
    if name not in BACKENDS:
        raise PolylensError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    if model is not None:
        check_backend(model, name)
    return BACKENDS[name]
