"""Batched, hook-based extraction of the residual stream at every requested layer.

``extract`` plans a request (tokenized, validated), runs it batch by batch through a backend, and,
given a store, writes it shard by shard (``extract_to_store``: an interrupted run resumes from
its verified shards). The store only holds what this module hands it.

Layer convention: index 0 is the embedding output (what block 0 reads), index i the raw residual
stream after block i, so a model with L blocks has L + 1 layers. Unlike Hugging Face's
``output_hidden_states``, the last layer is kept raw (before the final norm; an encoder has none,
so there every layer is Hugging Face's).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import PolylensError
from interp.model.backends import get_backend
from interp.model.dtypes import DTYPES
from interp.model.models import LoadedModel
from interp.model.positions import BatchSelector, Positions, PositionsLike
from interp.model.sites import Site, layer_site, parse_sites, site_width
from interp.model.transfer import HostCopy
from interp.storage.activations import Activations
from interp.storage.provenance import provenance
from interp.storage.store import ActivationStore, entry_key

__all__ = [
    "Activations",
    "ExtractionPlan",
    "extract",
    "extract_rows",
    "extract_to_store",
    "plan_extraction",
    "prompts_hash",
    "resolve_layers",
]


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


@dataclass(frozen=True)
class ExtractionPlan:
    """Everything that determines the result of an extraction, tokenized and validated."""

    model: LoadedModel
    prompts: list[str]
    token_ids: list[list[int]]
    layers: list[int]
    """Residual layers asked for (empty when ``named_sites`` were asked for instead)."""
    positions: Positions
    dtype: str
    named_sites: tuple[Site, ...] = ()
    """Sites asked for by name (``extract(..., sites=...)``), instead of residual layers."""

    @property
    def sites(self) -> list[Site]:
        """What each entry of the result's second axis reads."""
        return list(self.named_sites) or [layer_site(layer) for layer in self.layers]

    @property
    def width(self) -> int:
        """Size of each row's last dimension (``d_model``, or the MLP width for ``mlp_act``)."""
        return site_width(self.model, self.sites[0])

    @property
    def meta(self) -> dict:
        """Provenance and the content-addressed identity of the result."""
        named = {"sites": [s.name for s in self.named_sites]} if self.named_sites else {}
        return provenance(
            self.model.identity,
            prompts_hash=prompts_hash(self.prompts),
            n_prompts=len(self.prompts),
            layers=self.layers,
            positions=self.positions.key,
            dtype=self.dtype,
            d_model=self.model.d_model,
            **named,
        )

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
    sites: str | Sequence[str] | None = None,
    positions: PositionsLike | None = None,
    dtype: str = "float32",
    where: Callable[[int], str] = "prompt {}".format,
) -> ExtractionPlan:
    """Tokenize and validate a request before any forward pass runs.

    ``positions=None`` is the model's default (``last``; ``mean`` for an encoder). ``where(i)``
    names prompt i in an error (e.g. its file and line).
    """
    prompts = list(prompts)
    if not prompts:
        raise PolylensError("the prompt list is empty; pass at least one prompt")
    if dtype not in DTYPES:
        raise PolylensError(f"unknown storage dtype {dtype!r}; use {', '.join(DTYPES)}")
    token_ids = model.tokenize(prompts)
    empty = [i for i, ids in enumerate(token_ids) if not ids]
    if empty:
        raise PolylensError(f"{where(empty[0])} tokenizes to nothing; remove empty prompts")
    model.check_context([len(ids) for ids in token_ids], where)  # before any forward pass
    named = tuple(parse_sites(model, sites)) if sites is not None else ()
    widths = {site.name: site_width(model, site) for site in named}
    if len(set(widths.values())) > 1:
        raise PolylensError(
            f"sites of different widths in one extraction ({widths}); extract mlp_act sites "
            "separately from the d_model ones"
        )
    plan = ExtractionPlan(
        model,
        prompts,
        token_ids,
        [] if named else resolve_layers(layers, model.n_layers),
        Positions.parse(model.default_positions if positions is None else positions, len(prompts)),
        dtype,
        named,
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
    storage = DTYPES[plan.dtype]
    counts = torch.tensor([0] + plan.rows_per_prompt(rows))
    offsets = counts.cumsum(0)
    # The result is allocated once; each batch's rows are written into it in one pass.
    flat = torch.empty(int(offsets[-1]), len(plan.sites), plan.width, dtype=storage)
    # Longest first: similar lengths share a batch (little padding) and memory peaks early.
    order = sorted(range(len(rows)), key=lambda i: -len(plan.token_ids[rows[i]]))
    in_flight: tuple[Tensor, HostCopy] | None = None

    def finish(destination: Tensor, copy: HostCopy) -> None:
        flat.index_copy_(0, destination, copy.wait())

    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        chunk_rows = [rows[i] for i in chunk]
        ids = [plan.token_ids[r] for r in chunk_rows]
        batch = model.pad_batch(ids)
        select = BatchSelector.build(
            plan.positions.subset(chunk_rows),
            [len(x) for x in ids],
            batch["input_ids"].shape[1],
            device,
        )
        out = run(model, batch, plan.sites, select, backend_options or {})
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
    sites: str | Sequence[str] | None = None,
    positions: PositionsLike | None = None,
    backend: str = "hooks",
    batch_size: int = 16,
    dtype: str = "float32",
    store: ActivationStore | str | Path | None = None,
    progress: bool = True,
    backend_options: dict | None = None,
) -> Activations:
    """Extract residual-stream activations of ``prompts`` at ``layers`` and ``positions``.

    Args:
        model: from ``interp.load_model``.
        prompts: the texts, used verbatim (apply a chat template first if wanted).
        layers: ``"all"``, an index or a list (0 = embedding output, L = after the last block).
        sites: instead of residual layers, named sites (``interp.model.sites``: ``attn_out.3``,
            ``mlp_out.*``, ``mlp_act.5``, ...), all of one width; needs the hooks backend for
            anything but residual sites.
        positions: ``"last"``, ``"mean"``, ``"all"``, an index, one index per prompt, or one
            ``(start, end)`` token span per prompt (see ``interp.model.positions``); by default
            ``"last"``, and ``"mean"`` over the real tokens for an encoder.
        backend: ``hooks`` (default), ``transformer_lens`` or ``nnsight``.
        batch_size: prompts per forward pass.
        dtype: storage dtype of the result: float32, float16 or bfloat16.
        store: an ``ActivationStore`` (or a directory): reuse a cached result with the same
            model, prompts, layers, positions and dtype, else extract into it shard by shard
            (an interrupted run resumes from its completed shards).
        progress: show a tqdm bar.
        backend_options: passed to the backend, e.g. ``{"remote": True}`` for nnsight on NDIF.
    """
    plan = plan_extraction(
        model, prompts, layers=layers, sites=sites, positions=positions, dtype=dtype
    )
    if store is not None:
        store = store if isinstance(store, ActivationStore) else ActivationStore(store)
        return extract_to_store(
            plan,
            store,
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


def extract_to_store(
    plan: ExtractionPlan,
    store: ActivationStore,
    *,
    backend: str = "hooks",
    batch_size: int = 16,
    progress: bool = True,
    backend_options: dict | None = None,
) -> Activations:
    """Read the store's entry for ``plan`` if complete; otherwise extract its missing shards.

    A shard on disk is reused only if it matches the checksum recorded when it was written;
    an entry whose manifest is corrupted is resumed the same way (the manifest is rebuilt).

    Data-parallel under ``torchrun`` (``torch.distributed`` initialised, any backend): rank r
    of W extracts shards r, r + W, ... into the same store; once every rank's shards are on disk
    rank 0 alone seals the manifest, and every rank reads the whole result back. A killed rank's
    shards are redone by the next run, with any number of ranks.
    """
    meta = plan.meta
    key = entry_key(meta)
    if store.is_complete(key):
        return store.load(key)
    get_backend(backend, plan.model)  # refused before the entry's directory is made
    rank, world = _rank_and_world()
    store.begin_entry(key, plan.prompts)
    n = len(plan.prompts)
    mine = store.shard_ranges(n)[rank::world]
    todo = [(a, b) for a, b in mine if not store.has_verified_shard(key, a, b)]
    total = sum(b - a for a, b in mine)
    with tqdm(total=total, desc="extract", unit="prompt", disable=not progress or rank > 0) as bar:
        bar.update(total - sum(b - a for a, b in todo))
        for start, stop in todo:
            flat, offsets = extract_rows(
                plan,
                range(start, stop),
                backend=backend,
                batch_size=batch_size,
                backend_options=backend_options,
                on_batch=bar.update,
            )
            store.write_shard(key, start, flat, offsets)
    _barrier(world)  # every rank's shards are on disk
    if rank == 0:
        store.finish_entry(key, meta, backend=backend)
    _barrier(world)  # the manifest is sealed
    return store.load(key, verify=False)


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size under ``torch.distributed``; (0, 1) without."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
