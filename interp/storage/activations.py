"""The result of an extraction: activation rows grouped per prompt, with their provenance.

Both extraction (``interp.extract``) and the store (``interp.storage.store``) return it; the
analyses read it. It knows nothing of models or disks: its rows are a tensor in memory, or a
``RowSource`` (the store's shards) read on demand, a chunk of layers at a time, so an analysis
that loops over ``layer_chunks()`` never holds more than one chunk of a set larger than memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError

RAGGED_KINDS = ("all", "spans")

READ_BUDGET = 2**24
"""Bytes of activations one chunk of ``Activations.layer_chunks`` holds (16 MiB)."""


def is_ragged(key: str) -> bool:
    """Whether a spec's ``key`` (as stored in provenance) gives several rows per prompt."""
    return key.split(":")[0] in RAGGED_KINDS


def residual_site_name(layer: int) -> str:
    """The site name of residual layer ``layer``: ``resid_pre.0``, then ``resid_post.{layer-1}``."""
    return "resid_pre.0" if layer == 0 else f"resid_post.{layer - 1}"


class RowSource(Protocol):
    """Rows ``[row, site, width]`` kept outside memory (the store's shards), read by site range."""

    shape: tuple[int, int, int]
    dtype: torch.dtype

    def read_into(self, out: Float[Tensor, "row site width"], sites: slice) -> None:
        """Copy every row's sites ``sites`` into ``out`` (any device and dtype)."""


def layer_slices(n_layers: int, per_layer_bytes: int, budget: int) -> list[slice]:
    """Consecutive layers in slices of at most ``budget`` bytes (at least one layer each)."""
    size = max(1, min(n_layers, budget // max(1, per_layer_bytes)))
    return [slice(s, min(s + size, n_layers)) for s in range(0, n_layers, size)]


class Activations:
    """Activations of a prompt list: ``flat`` rows grouped per prompt by ``offsets``.

    With one position per prompt (last, mean, an index) every prompt has exactly one row and
    ``.tensor`` is ``[prompt, layer, d_model]``; with ragged positions (all, spans) use
    ``.per_prompt()``. The second axis is the residual ``layers`` by default, or the named
    ``sites`` an extraction asked for (then ``layers`` is empty and ``.site(name)`` reads one).

    ``flat`` is a tensor, or a ``RowSource`` (what ``ActivationStore.load`` gives): then
    ``.layer``, ``.site`` and ``.layer_chunks`` read only the slices asked for, and ``.flat``,
    ``.tensor`` and ``.per_prompt()`` read everything once and keep it.
    """

    def __init__(
        self,
        flat: Float[Tensor, "row layer d_model"] | RowSource,
        offsets: Int[Tensor, " prompt_plus_one"],
        layers: list[int],
        prompts: list[str],
        meta: dict | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self._flat = flat if isinstance(flat, Tensor) else None
        self._source = None if isinstance(flat, Tensor) else flat
        self.offsets = offsets
        self.layers = layers
        self.prompts = prompts
        self.meta = {} if meta is None else meta
        # Where and as what a source's reads land (a tensor already is where it is).
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._dtype = dtype

    def __repr__(self) -> str:
        where = "in memory" if self._flat is not None else "on disk"
        return (
            f"Activations({len(self.prompts)} prompts, shape {tuple(self.shape)}, "
            f"{self.dtype}, {where})"
        )

    @property
    def shape(self) -> torch.Size:
        """``[row, layer, d_model]``, known without reading anything."""
        if self._flat is not None:
            return self._flat.shape
        return torch.Size(self._source.shape)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the rows (as read)."""
        if self._flat is not None:
            return self._flat.dtype
        return self._dtype or self._source.dtype

    @property
    def in_memory(self) -> bool:
        """Whether every row is in memory (else they are read from the store on demand)."""
        return self._flat is not None

    @property
    def flat(self) -> Float[Tensor, "row layer d_model"]:
        """Every row (read once from the store and kept, for a lazy set)."""
        if self._flat is None:
            self._flat = self._read(slice(0, self.shape[1]))
            self._source = None
        return self._flat

    def _read(self, sites: slice) -> Float[Tensor, "row site width"]:
        rows, _, width = self.shape
        out = torch.empty(
            rows, sites.stop - sites.start, width, dtype=self.dtype, device=self._device
        )
        self._source.read_into(out, sites)
        return out

    def _one_row_per_prompt(self) -> None:
        if self.ragged:
            raise PolylensError(
                f"positions {self.meta['positions']!r} give several rows per prompt; "
                "use .per_prompt() or .flat with .offsets"
            )

    def _sites(self, sites: slice) -> Float[Tensor, "prompt site width"]:
        """Sites ``sites`` (positions on the second axis) of every prompt's one row."""
        self._one_row_per_prompt()
        return self._flat[:, sites] if self._flat is not None else self._read(sites)

    @property
    def ragged(self) -> bool:
        """Whether prompts may have several rows."""
        return is_ragged(self.meta.get("positions", "last"))

    @property
    def tensor(self) -> Float[Tensor, "prompt layer d_model"]:
        """One row per prompt (every layer at once: loop over ``layer_chunks`` for big sets)."""
        self._one_row_per_prompt()
        return self.flat

    def per_prompt(self) -> list[Float[Tensor, "pos layer d_model"]]:
        """Each prompt's rows."""
        bounds = self.offsets.tolist()
        flat = self.flat
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def layer(self, layer: int) -> Float[Tensor, "prompt d_model"]:
        """The ``[prompt, d_model]`` slice of one model layer (by model index, not position)."""
        if layer not in self.layers:
            have = self.layers or f"sites {', '.join(self.sites)} (use .site(name))"
            raise PolylensError(f"layer {layer} was not extracted; have {have}")
        i = self.layers.index(layer)
        return self._sites(slice(i, i + 1))[:, 0]

    @property
    def sites(self) -> list[str]:
        """The site name of each entry of the second axis."""
        return self.meta.get("sites") or [residual_site_name(layer) for layer in self.layers]

    def site(self, name: str) -> Float[Tensor, "prompt width"]:
        """The ``[prompt, width]`` slice of one extracted site (e.g. ``mlp_act.3``)."""
        if name not in self.sites:
            raise PolylensError(f"site {name} was not extracted; have {', '.join(self.sites)}")
        i = self.sites.index(name)
        return self._sites(slice(i, i + 1))[:, 0]

    def layer_chunks(
        self, *, budget: int | None = READ_BUDGET
    ) -> Iterator[tuple[slice, Float[Tensor, "prompt chunk d_model"]]]:
        """Consecutive layers (sites) ``[prompt, k, d_model]`` of at most ``budget`` bytes each.

        Each comes with the slice of ``.layers`` (``.sites``) it holds; at least one layer per
        chunk, whatever the budget (``None``: every layer in one chunk). An analysis that loops
        over these holds one chunk at a time of a set read from the store; the chunks of a set
        in memory are views, cut alike, so both give the same numbers.
        """
        self._one_row_per_prompt()
        rows, n, width = self.shape
        per_layer = rows * width * self.dtype.itemsize
        for span in layer_slices(n, per_layer, n * per_layer if budget is None else budget):
            yield span, self._sites(span)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Activations:
        """A copy on ``device`` (e.g. a GPU for the analyses); a lazy set stays lazy."""
        if self._flat is not None:
            flat = self._flat.to(device, dtype)
            return Activations(flat, self.offsets, self.layers, self.prompts, dict(self.meta))
        return Activations(
            self._source,
            self.offsets,
            self.layers,
            self.prompts,
            dict(self.meta),
            device=device,
            dtype=dtype or self._dtype,
        )
