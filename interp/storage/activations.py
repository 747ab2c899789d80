"""The result of an extraction: activation rows grouped per prompt, with their provenance.

Both extraction (``interp.extract``) and the store (``interp.storage.store``) return it; the
analyses read it. It knows nothing of models or disks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError

RAGGED_KINDS = ("all", "spans")


def is_ragged(key: str) -> bool:
    """Whether a spec's ``key`` (as stored in provenance) gives several rows per prompt."""
    return key.split(":")[0] in RAGGED_KINDS


def residual_site_name(layer: int) -> str:
    """The site name of residual layer ``layer``: ``resid_pre.0``, then ``resid_post.{layer-1}``."""
    return "resid_pre.0" if layer == 0 else f"resid_post.{layer - 1}"


@dataclass
class Activations:
    """Activations of a prompt list: ``flat`` rows grouped per prompt by ``offsets``.

    With one position per prompt (last, mean, an index) every prompt has exactly one row and
    ``.tensor`` is ``[prompt, layer, d_model]``; with ragged positions (all, spans) use
    ``.per_prompt()``. The second axis is the residual ``layers`` by default, or the named
    ``sites`` an extraction asked for (then ``layers`` is empty and ``.site(name)`` reads one).
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
            have = self.layers or f"sites {', '.join(self.sites)} (use .site(name))"
            raise PolylensError(f"layer {layer} was not extracted; have {have}")
        return self.tensor[:, self.layers.index(layer)]

    @property
    def sites(self) -> list[str]:
        """The site name of each entry of the second axis."""
        return self.meta.get("sites") or [residual_site_name(layer) for layer in self.layers]

    def site(self, name: str) -> Float[Tensor, "prompt width"]:
        """The ``[prompt, width]`` slice of one extracted site (e.g. ``mlp_act.3``)."""
        if name not in self.sites:
            raise PolylensError(f"site {name} was not extracted; have {', '.join(self.sites)}")
        return self.tensor[:, self.sites.index(name)]

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Activations:
        """A copy on ``device`` (e.g. a GPU for the analyses)."""
        return Activations(
            self.flat.to(device, dtype), self.offsets, self.layers, self.prompts, dict(self.meta)
        )
