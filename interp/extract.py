"""Batched, hook-based extraction of the residual stream at every requested layer.

Layer convention: index 0 is the embedding output (what block 0 reads), index i the raw residual
stream after block i, so a model with L blocks has L + 1 layers. Unlike Hugging Face's
``output_hidden_states``, the last layer is kept raw (before the final norm).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.backends import get_backend
from interp.errors import PolylensError
from interp.models import LoadedModel
from interp.positions import BatchSelector, Positions, PositionsLike, is_ragged
from interp.transfer import HostCopy, to_device

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Activations:
    """Residual activations of a prompt list: ``flat`` rows grouped per prompt by ``offsets``.

    With one position per prompt (last, mean, an index) every prompt has exactly one row and
    ``.tensor`` is ``[prompt, layer, d_model]``; with ragged positions (all, spans) use
    ``.per_prompt()``.
    """

    flat: Float[Tensor, "row layer d_model"]
    offsets: Int[Tensor, " prompt_plus_one"]
    layers: list[int]
    prompts: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def ragged(self) -> bool:
        """Whether prompts may have several rows."""
        return is_ragged(self.meta.get("positions", "last"))

    @property
    def tensor(self) -> Float[Tensor, "prompt layer d_model"]:
        """One row per prompt."""
        if self.ragged:
            raise PolylensError(
                f"positions {self.meta['positions']!r} give several rows per prompt; "
                "use .per_prompt() or .flat with .offsets"
            )
        return self.flat

    def per_prompt(self) -> list[Float[Tensor, "pos layer d_model"]]:
        """Each prompt's rows."""
        bounds = self.offsets.tolist()
        return [self.flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def layer(self, layer: int) -> Float[Tensor, "prompt d_model"]:
        """The ``[prompt, d_model]`` slice of one model layer (by model index, not position)."""
        if layer not in self.layers:
            raise PolylensError(f"layer {layer} was not extracted; have {self.layers}")
        return self.tensor[:, self.layers.index(layer)]

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Activations:
        """A copy on ``device`` (e.g. a GPU for the analyses)."""
        return Activations(
            self.flat.to(device, dtype), self.offsets, self.layers, self.prompts, dict(self.meta)
        )


def resolve_layers(layers: str | int | Sequence[int], n_layers: int) -> list[int]:
    """``"all"``, one index or a list; negative indices count from the end. Sorted, unique."""
    if isinstance(layers, str):
        if layers == "all":
            return list(range(n_layers))
        try:
            layers = [int(x) for x in layers.split(",")]
        except ValueError:
            raise PolylensError(
                f"layers {layers!r} is not 'all' or a comma-separated index list"
            ) from None
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        resolved = layer + n_layers if layer < 0 else layer
        if not 0 <= resolved < n_layers:
            raise PolylensError(
                f"layer {layer} is out of range: the model has {n_layers} layers "
                f"(0 = embeddings .. {n_layers - 1} = last block); use -{n_layers}..{n_layers - 1}"
            )
        out.append(resolved)
    if not out:
        raise PolylensError("no layers requested; pass 'all' or at least one index")
    return sorted(set(out))


def prompts_hash(prompts: Sequence[str]) -> str:
    """Content hash of an ordered prompt list."""
    return hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode()).hexdigest()[:16]


def pad_batch(
    token_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> dict[str, Tensor]:
    """Left-pad a batch; position ids count real tokens only, as in generation."""
    seq_len = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), seq_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), seq_len), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, seq_len - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, seq_len - len(ids) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": to_device(input_ids, device),
        "attention_mask": to_device(mask, device),
        "position_ids": to_device(position_ids, device),
    }


@dataclass(frozen=True)
class ExtractionPlan:
    """Everything that determines the result of an extraction, tokenized and validated."""

    model: LoadedModel
    prompts: list[str]
    token_ids: list[list[int]]
    layers: list[int]
    positions: Positions
    dtype: str

    @property
    def meta(self) -> dict:
        """Provenance and the content-addressed identity of the result."""
        from interp import __version__

        return {
            "model": self.model.identity,
            "prompts_hash": prompts_hash(self.prompts),
            "n_prompts": len(self.prompts),
            "layers": self.layers,
            "positions": self.positions.key,
            "dtype": self.dtype,
            "d_model": self.model.d_model,
            "polylens_version": __version__,
        }

    def rows_per_prompt(self, rows: Sequence[int]) -> list[int]:
        """How many activation rows each prompt contributes."""
        lengths = [len(self.token_ids[r]) for r in rows]
        slices = self.positions.subset(rows).token_slices(lengths)
        if self.positions.kind == "mean":
            return [1] * len(rows)
        return [b - a for a, b in slices]


def plan_extraction(
    model: LoadedModel,
    prompts: Sequence[str],
    *,
    layers: str | int | Sequence[int] = "all",
    positions: PositionsLike = "last",
    dtype: str = "float32",
) -> ExtractionPlan:
    """Tokenize and validate a request before any forward pass runs."""
    prompts = list(prompts)
    if not prompts:
        raise PolylensError("the prompt list is empty; pass at least one prompt")
    if dtype not in STORAGE_DTYPES:
        raise PolylensError(f"unknown storage dtype {dtype!r}; use {', '.join(STORAGE_DTYPES)}")
    token_ids = model.tokenize(prompts)
    empty = [i for i, ids in enumerate(token_ids) if not ids]
    if empty:
        raise PolylensError(f"prompt {empty[0]} tokenizes to nothing; remove empty prompts")
    plan = ExtractionPlan(
        model,
        prompts,
        token_ids,
        resolve_layers(layers, model.n_layers),
        Positions.parse(positions, len(prompts)),
        dtype,
    )
    plan.positions.token_slices([len(ids) for ids in token_ids])  # fail now, not mid-run
    return plan


@torch.inference_mode()
def extract_rows(
    plan: ExtractionPlan,
    rows: Sequence[int],
    *,
    backend: str = "hooks",
    batch_size: int = 16,
    backend_options: dict | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Float[Tensor, "row layer d_model"], Int[Tensor, " prompt_plus_one"]]:
    """Extract the prompts at ``rows`` (in that order), batching them by length.

    Each batch's rows are gathered on the device and copied to the host once, asynchronously;
    the host waits for a batch's copy only after launching the next batch, so the GPU stays busy.
    """
    run = get_backend(backend)
    model, device = plan.model, plan.model.device
    storage = STORAGE_DTYPES[plan.dtype]
    counts = torch.tensor([0] + plan.rows_per_prompt(rows))
    offsets = counts.cumsum(0)
    # The result is allocated once; each batch's rows are written into it in one pass.
    flat = torch.empty(int(offsets[-1]), len(plan.layers), model.d_model, dtype=storage)
    # Longest first: similar lengths share a batch (little padding) and memory peaks early.
    order = sorted(range(len(rows)), key=lambda i: -len(plan.token_ids[rows[i]]))
    in_flight: tuple[Tensor, HostCopy] | None = None

    def finish(destination: Tensor, copy: HostCopy) -> None:
        flat.index_copy_(0, destination, copy.wait())

    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        chunk_rows = [rows[i] for i in chunk]
        ids = [plan.token_ids[r] for r in chunk_rows]
        batch = pad_batch(ids, model.tokenizer.pad_token_id, device)
        select = BatchSelector.build(
            plan.positions.subset(chunk_rows),
            [len(x) for x in ids],
            batch["input_ids"].shape[1],
            device,
        )
        out = run(model, batch, plan.layers, select, backend_options or {})
        copy = HostCopy.start(out.to(storage))
        if in_flight is not None:
            finish(*in_flight)
        destination = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in chunk])
        in_flight = (destination, copy)
        if on_batch:
            on_batch(len(chunk))
    if in_flight is not None:
        finish(*in_flight)
    return flat, offsets


def extract(
    model: LoadedModel,
    prompts: Sequence[str],
    *,
    layers: str | int | Sequence[int] = "all",
    positions: PositionsLike = "last",
    backend: str = "hooks",
    batch_size: int = 16,
    dtype: str = "float32",
    store=None,
    progress: bool = True,
    backend_options: dict | None = None,
) -> Activations:
    """Extract residual-stream activations of ``prompts`` at ``layers`` and ``positions``.

    Args:
        model: from ``interp.load_model``.
        prompts: the texts, used verbatim (apply a chat template first if wanted).
        layers: ``"all"``, an index or a list (0 = embedding output, L = after the last block).
        positions: ``"last"``, ``"mean"``, ``"all"``, an index, one index per prompt, or one
            ``(start, end)`` token span per prompt (see ``interp.positions``).
        backend: ``hooks`` (default), ``transformer_lens`` or ``nnsight``.
        batch_size: prompts per forward pass.
        dtype: storage dtype of the result: float32, float16 or bfloat16.
        store: an ``ActivationStore`` (or a directory): reuse a cached result with the same
            model, prompts, layers, positions and dtype, else extract into it shard by shard
            (an interrupted run resumes from its completed shards).
        progress: show a tqdm bar.
        backend_options: passed to the backend, e.g. ``{"remote": True}`` for nnsight on NDIF.
    """
    plan = plan_extraction(model, prompts, layers=layers, positions=positions, dtype=dtype)
    if store is not None:
        from interp.store import ActivationStore

        store = store if isinstance(store, ActivationStore) else ActivationStore(store)
        return store.get_or_extract(
            plan,
            backend=backend,
            batch_size=batch_size,
            progress=progress,
            backend_options=backend_options,
        )
    with tqdm(total=len(plan.prompts), desc="extract", unit="prompt", disable=not progress) as bar:
        flat, offsets = extract_rows(
            plan,
            range(len(plan.prompts)),
            backend=backend,
            batch_size=batch_size,
            backend_options=backend_options,
            on_batch=bar.update,
        )
    return Activations(flat, offsets, plan.layers, plan.prompts, plan.meta)
