"""What a run will cost, from the model's config alone: parameters, memory, store size, time.

``polylens plan`` and the early refusal of ``polylens run`` ask here before any weight is read.
The model is built on the meta device (shapes, no storage), so a 70B model's plan takes as
long as a 135M one's. An experiment states its *workload* (``Workload``: which sequences it runs
forward, how many tokens it generates, which residual vectors it stores); ``estimate`` turns a
model's shape and a workload into numbers, and ``calibrate`` times one block of the real width
on this machine so that the wall-time estimate is this machine's, not a datasheet's.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from interp.errors import PolylensError
from interp.model.architectures import adapter_for, get_submodule
from interp.model.dtypes import resolve_dtype
from interp.model.models import (
    LoadedModel,
    checkpoint_dtype,
    device_keys,
    first_line,
    model_class,
    model_source,
)

__all__ = [
    "Estimate",
    "ModelShape",
    "Pass",
    "Timing",
    "Workload",
    "calibrate",
    "estimate",
    "format_bytes",
    "forward_pass",
    "free_bytes",
    "held_vectors",
    "model_shape",
    "placement",
    "planning_model",
    "process_bytes",
]

GB = 1e9


@dataclass(frozen=True)
class ModelShape:
    """A model's sizes, read from its config on the meta device (no weights)."""

    name: str
    model_type: str
    n_params: int
    """Every parameter once (tied embeddings counted once)."""
    n_blocks: int
    d_model: int
    vocab: int
    dtype: torch.dtype
    """The compute dtype the load would use."""
    config: PretrainedConfig = field(repr=False, compare=False)
    meta: nn.Module = field(repr=False, compare=False)
    """The model on the meta device: shapes, no storage."""
    source: Path | str = field(repr=False, compare=False)
    """Where its files are (``model_source``)."""

    @property
    def n_layers(self) -> int:
        """Residual layers: the embedding output plus one after every block."""
        return self.n_blocks + 1

    @property
    def bytes_per_value(self) -> int:
        """Bytes of one weight or activation in the compute dtype."""
        return torch.finfo(self.dtype).bits // 8

    @property
    def weight_bytes(self) -> int:
        """Memory of the weights in the compute dtype."""
        return self.n_params * self.bytes_per_value


def model_shape(spec: str, *, dtype: str | None = "auto", on_gpu: bool | None = None) -> ModelShape:
    """The shape of ``spec`` from its ``config.json`` alone (a hub id: over the network).

    An embedded model or a GGUF file not yet converted is converted first (once). ``dtype`` as
    ``load_model`` takes it; ``on_gpu`` (default: whether CUDA is available) is what ``auto``
    follows. The model class is the one ``load_model`` would build.
    """
    source, name = model_source(spec, weights=False)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise PolylensError(f"cannot read the config of {spec!r} ({first_line(e)})") from None
    gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    compute = resolve_dtype(dtype, on_gpu=gpu, checkpoint=checkpoint_dtype(config))
    auto, options = model_class(config)
    with torch.device("meta"):
        hf = auto.from_config(config, dtype=compute, **options)
    text = config.get_text_config()
    return ModelShape(
        name=name,
        model_type=config.model_type,
        n_params=sum(p.numel() for p in hf.parameters()),
        n_blocks=len(get_submodule(hf, adapter_for(config.model_type).blocks)),
        d_model=text.hidden_size,
        vocab=text.vocab_size,
        dtype=compute,
        config=config,
        meta=hf,
        source=source,
    )


def planning_model(
    spec: str, *, dtype: str | None = "auto", on_gpu: bool | None = None
) -> tuple[LoadedModel, ModelShape]:
    """``spec`` as a model on the meta device, with its real tokenizer, and its shape.

    ``model_shape`` plus the tokenizer: the model tokenizes, applies its chat template and
    knows its layers, so an experiment plans its prompts with the code that builds them; a
    forward pass fails.
    """
    shape = model_shape(spec, dtype=dtype, on_gpu=on_gpu)
    try:
        tokenizer = AutoTokenizer.from_pretrained(shape.source)
    except (OSError, ValueError) as e:
        raise PolylensError(f"cannot read the tokenizer of {spec!r} ({first_line(e)})") from None
    return LoadedModel(shape.meta, tokenizer, shape.name), shape


@dataclass(frozen=True)
class Pass:
    """One kind of model call over a set of sequences, as an experiment makes it."""

    name: str
    """What the pass is for (shown by ``polylens plan``)."""
    lengths: tuple[int, ...]
    """Tokens of each sequence (its prompt, with special tokens)."""
    batch_size: int
    logits: Literal["none", "last", "all"] = "none"
    """Where the unembedding runs: nowhere (extraction stops in the body), at the last token,
    or at every position."""
    new_tokens: int = 0
    """Tokens generated greedily per sequence (at most)."""
    stored: int | tuple[int, ...] = 0
    """Residual vectors (``d_model`` values) written to the activation store per sequence: one
    number for every sequence, or one per sequence (token spans of different lengths)."""
    repeats: int = 1
    """How many times the same sequences run (once per candidate edit, coefficient, ...)."""
    depth: float = 1.0
    """Share of the blocks run (extraction stops after the deepest layer it reads)."""

    @property
    def tokens(self) -> int:
        """Tokens run forward over all repeats (generation counted separately)."""
        return sum(self.lengths) * self.repeats

    @property
    def stored_vectors(self) -> int:
        """Residual vectors the pass writes to the store (once: a repeat reads them back)."""
        if isinstance(self.stored, int):
            return self.stored * len(self.lengths)
        return sum(self.stored)


def placement(shape: ModelShape, max_memory: dict | None = None) -> dict[str, int]:
    """Bytes of weights per device that ``device_map="auto"`` would give the model.

    accelerate's own placement rule (``infer_auto_device_map``: fill the GPUs in order, then
    the CPU, then the disk), on the meta model, so a 70B model's map takes milliseconds.
    """
    from accelerate import infer_auto_device_map  # only a device map needs it

    hf = shape.meta
    device_map = infer_auto_device_map(
        hf,
        max_memory=device_keys(max_memory),
        no_split_module_classes=getattr(hf, "_no_split_modules", None) or [],
        dtype=shape.dtype,
    )
    sizes: dict[str, int] = {}
    for name, p in hf.named_parameters():
        owner = max(
            (m for m in device_map if m == "" or name == m or name.startswith(m + ".")), key=len
        )
        device = device_map[owner]
        key = f"cuda:{device}" if isinstance(device, int) else str(device)
        sizes[key] = sizes.get(key, 0) + p.numel() * p.element_size()
    return sizes


def forward_pass(
    model: LoadedModel, name: str, prompts: Sequence[str], *, batch_size: int, **options: object
) -> Pass:
    """A ``Pass`` over ``prompts`` as ``model`` tokenizes them (``options``: ``Pass``'s fields)."""
    lengths = tuple(len(ids) for ids in model.tokenize(prompts)) if prompts else ()
    return Pass(name, lengths, batch_size, **options)


def held_vectors(n_bytes: float, d_model: int) -> int:
    """``n_bytes`` of memory as ``Workload.held`` counts it: float32 vectors of ``d_model``."""
    return -(-int(n_bytes) // (4 * d_model))


@dataclass(frozen=True)
class Workload:
    """Everything an experiment will ask of the model."""

    passes: tuple[Pass, ...]
    held: int = 0
    """Residual vectors (``d_model`` float32 values) the analysis holds in memory at once."""
    store_dtype_bytes: int = 4
    """Bytes per stored value (the store keeps float32 unless told otherwise)."""


@dataclass(frozen=True)
class Timing:
    """This machine's speed on one block of the model's width: ``a + b * tokens`` seconds."""

    block_overhead: float
    """Seconds per block call, whatever its size (kernel launches, Python)."""
    block_per_token: float
    """Seconds per token per block."""
    unembed_per_token: float
    """Seconds per token of the unembedding (the whole vocabulary)."""
    device: str


def calibrate(shape: ModelShape, device: str = "cpu", *, batch: int = 8) -> Timing:
    """Time one randomly filled block of ``shape``'s real config on ``device`` (a second or two).

    The block is built from the model's own config with one layer, on the meta device, then
    given storage on ``device`` and filled with small values (no initialiser cost, no
    denormals). Its forward is timed at 1 and 32 tokens per sequence to separate the fixed cost
    of a call from the cost per token; the unembedding is timed on a slice of the vocabulary and
    scaled.
    """
    text = copy.deepcopy(shape.config.get_text_config())
    text.num_hidden_layers = 1
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[:1]
    text.vocab_size = 256  # the embedding is a lookup: its size does not change the time
    with torch.device("meta"):
        body = AutoModel.from_config(text)
    body = body.to_empty(device=device).to(shape.dtype).eval()
    with torch.no_grad():
        for p in body.parameters():
            p.fill_(1e-2)
        for b in body.buffers():
            if b.is_floating_point():
                b.fill_(1.0)

    def seconds(tokens: int) -> float:
        ids = torch.randint(0, 256, (batch, tokens), device=device)
        with torch.no_grad():
            body(input_ids=ids)  # warm-up
            return _fastest(lambda: body(input_ids=ids), device)

    short, long = seconds(1), seconds(32)
    per_token = max(long - short, 1e-9) / (batch * 31)
    overhead = max(short - per_token * batch, 0.0)
    rows = min(shape.vocab, 16384)
    w = torch.full((rows, shape.d_model), 1e-2, dtype=shape.dtype, device=device)
    x = torch.full((batch * 32, shape.d_model), 1e-2, dtype=shape.dtype, device=device)
    with torch.no_grad():
        x @ w.T
        unembed = _fastest(lambda: x @ w.T, device) / (batch * 32) * shape.vocab / rows
    return Timing(overhead, per_token, unembed, device)


def _fastest(call: Callable[[], object], device: str, repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls: other work on the machine only adds time."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Estimate:
    """What a run of a workload on a model will cost (all estimates)."""

    n_params: int
    weight_bytes: int
    store_bytes: int
    peak_bytes: int
    """Peak resident memory of the process (CPU) or of the largest device (GPU)."""
    tokens_forward: int
    tokens_generated: int
    seconds: float | None
    """Model time on this machine (None without a calibration); analyses come on top."""
    passes: tuple[dict, ...]


def _batches(lengths: Sequence[int], batch_size: int) -> list[tuple[int, int]]:
    """``(rows, longest)`` of each batch, in the order the sequences are given."""
    return [
        (len(chunk), max(chunk))
        for chunk in (lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size))
    ]


def _batch_bytes(shape: ModelShape, rows: int, tokens: int, logits: str) -> int:
    """Memory a forward pass holds for one left-padded batch at its peak.

    The residual stream and its normed copies, the MLP's hidden activations (gate, up and
    product), attention scores (the math kernel materialises them on a CPU), and the logits
    where the unembedding runs (Hugging Face computes every position's unless told otherwise).
    """
    text = shape.config.get_text_config()
    d_mlp = getattr(text, "intermediate_size", None) or 4 * shape.d_model
    heads = getattr(text, "num_attention_heads", 1)
    b = shape.bytes_per_value
    per_token = 4 * shape.d_model + 3 * d_mlp
    attention = rows * heads * tokens * tokens * 2
    logit_rows = {"none": 0, "last": rows, "all": rows * tokens}[logits]
    return b * (rows * tokens * per_token + attention) + 4 * logit_rows * shape.vocab


def estimate(
    shape: ModelShape,
    workload: Workload,
    *,
    timing: Timing | None = None,
    base_bytes: int | None = None,
) -> Estimate:
    """Tokens, store size, peak memory and (with ``timing``) model time of ``workload``.

    ``base_bytes`` is the memory of the process before the model loads (default: this
    process's resident memory now, which has imported what a run imports).
    """
    base = process_bytes() if base_bytes is None else base_bytes
    tokens = generated = store = 0
    working = 0
    seconds = 0.0
    rows_out = []
    for p in workload.passes:
        n = len(p.lengths)
        tokens += p.tokens
        generated += n * p.new_tokens * p.repeats
        stored = p.stored_vectors * shape.d_model * workload.store_dtype_bytes
        store += stored
        batches = _batches(p.lengths, p.batch_size)
        longest = max(
            (_batch_bytes(shape, r, t + p.new_tokens, p.logits) for r, t in batches), default=0
        )
        working = max(working, longest)
        if timing is not None:
            blocks = shape.n_blocks * p.depth
            t = 0.0
            for r, length in batches:
                t += blocks * (timing.block_overhead + timing.block_per_token * r * length)
                t += timing.unembed_per_token * {"none": 0, "last": r, "all": r * length}[p.logits]
                # Each generated token: one cached step of the batch through every block.
                t += p.new_tokens * (
                    blocks * (timing.block_overhead + timing.block_per_token * r)
                    + timing.unembed_per_token * r
                )
            seconds += t * p.repeats
        rows_out.append(
            {"pass": p.name, "sequences": n, "tokens": p.tokens, "repeats": p.repeats}
            | {"generated": n * p.new_tokens * p.repeats, "store_bytes": stored}
        )
    held = workload.held * shape.d_model * 4
    peak = base + shape.weight_bytes + working + held
    return Estimate(
        n_params=shape.n_params,
        weight_bytes=shape.weight_bytes,
        store_bytes=store,
        peak_bytes=peak,
        tokens_forward=tokens,
        tokens_generated=generated,
        seconds=seconds if timing is not None else None,
        passes=tuple(rows_out),
    )


def process_bytes() -> int:
    """Resident memory of this process now."""
    return psutil.Process(os.getpid()).memory_info().rss


def free_bytes(device: str = "cpu") -> int:
    """Memory a run can still take on ``device``: available RAM, or a GPU's free memory."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return psutil.virtual_memory().available


def format_bytes(n: float) -> str:
    """``n`` bytes in GB (or MB below one GB), as people say them."""
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1e6:.0f} MB"
