"""The result of an extraction: activation rows grouped per prompt, with their provenance.

Both extraction (``interp.extract``) and the store (``interp.store``) return it; the analyses
read it. It knows nothing of models or disks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError
from interp.positions import is_ragged


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
