"""Which token positions of each prompt to keep, selected inside the hook on a padded batch.

A spec is one of:
- ``"last"``: the last real token (one row per prompt);
- ``"mean"``: the mean over the prompt's real (non-pad) tokens (one row per prompt);
- ``"all"``: every real token (ragged: as many rows as the prompt has tokens);
- an ``int`` k: token k of every prompt, negative counting from the end (one row per prompt);
- a list of ints, one per prompt: that prompt's token index (one row per prompt);
- a list of ``(start, end)`` pairs, one per prompt: the half-open token span (ragged).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError
from interp.model.transfer import to_device
from interp.storage.activations import RAGGED_KINDS

PositionsLike = str | int | Sequence[int] | Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Positions:
    """A parsed, validated position spec."""

    kind: str
    """One of last, mean, all, index, indices, spans."""
    values: tuple = ()
    """The index (``index``), one index per prompt (``indices``) or one span per prompt."""

    @classmethod
    def parse(cls, spec: PositionsLike | Positions, n_prompts: int) -> Positions:
        """Turn user input into a spec, checking it fits ``n_prompts`` prompts."""
        if isinstance(spec, Positions):
            return spec
        if isinstance(spec, str):
            if spec in ("last", "mean", "all"):
                return cls(spec)
            if spec.lstrip("-").isdigit():
                return cls("index", (int(spec),))
            raise PolylensError(
                f"unknown positions {spec!r}; use last, mean, all, an index, "
                "one index per prompt or one (start, end) span per prompt"
            )
        if isinstance(spec, int):
            return cls("index", (spec,))
        items = list(spec)
        if len(items) != n_prompts:
            raise PolylensError(
                f"got {len(items)} positions for {n_prompts} prompts; give one per prompt"
            )
        if all(isinstance(i, int) for i in items):
            return cls("indices", tuple(items))
        if all(isinstance(s, (tuple, list)) and len(s) == 2 for s in items):
            return cls("spans", tuple((int(a), int(b)) for a, b in items))
        raise PolylensError("positions list must hold ints or (start, end) pairs, one per prompt")

    @property
    def ragged(self) -> bool:
        """Whether a prompt can contribute more than one row."""
        return self.kind in RAGGED_KINDS

    @property
    def key(self) -> str:
        """A short stable string identifying the spec (for store keys and provenance)."""
        if self.kind in ("last", "mean", "all"):
            return self.kind
        if self.kind == "index":
            return f"index:{self.values[0]}"
        digest = hashlib.sha256(json.dumps(self.values).encode()).hexdigest()[:12]
        return f"{self.kind}:{digest}"

    def subset(self, rows: Sequence[int]) -> Positions:
        """The spec restricted to the prompts at ``rows`` (per-prompt specs follow their prompt)."""
        if self.kind in ("indices", "spans"):
            return Positions(self.kind, tuple(self.values[r] for r in rows))
        return self

    def token_slices(self, lengths: Sequence[int]) -> list[tuple[int, int]]:
        """Per prompt, the half-open range of its (unpadded) token indices to keep.

        For ``mean`` this is the whole prompt; the hook averages it.
        """
        out = []
        for i, n in enumerate(lengths):
            if self.kind == "last":
                out.append((n - 1, n))
            elif self.kind in ("mean", "all"):
                out.append((0, n))
            elif self.kind in ("index", "indices"):
                k = self.values[0] if self.kind == "index" else self.values[i]
                j = k + n if k < 0 else k
                if not 0 <= j < n:
                    raise PolylensError(
                        f"position {k} is outside prompt {i}, which has {n} tokens; "
                        f"use an index in [-{n}, {n - 1}]"
                    )
                out.append((j, j + 1))
            else:
                a, b = self.values[i]
                if not 0 <= a < b <= n:
                    raise PolylensError(
                        f"span ({a}, {b}) is outside prompt {i}, which has {n} tokens; "
                        f"use 0 <= start < end <= {n}"
                    )
                out.append((a, b))
        return out


@dataclass(frozen=True)
class BatchSelector:
    """Gathers the kept positions of a left-padded batch from a ``[batch, seq, d]`` tensor."""

    batch_index: Int[Tensor, " rows"]
    token_index: Int[Tensor, " rows"]
    mean_mask: Float[Tensor, "batch seq"] | None
    """Set for ``mean``: the attention mask normalised by each prompt's length."""

    @classmethod
    def build(
        cls, positions: Positions, lengths: Sequence[int], seq_len: int, device: torch.device
    ) -> BatchSelector:
        """Precompute gather indices once per batch, so the hook does one indexing op."""
        slices = positions.token_slices(lengths)
        b_idx, t_idx = [], []
        for row, ((a, b), n) in enumerate(zip(slices, lengths)):
            pad = seq_len - n
            b_idx.extend([row] * (b - a))
            t_idx.extend(range(pad + a, pad + b))
        mean_mask = None
        if positions.kind == "mean":
            pos = torch.arange(seq_len)
            lens = torch.tensor(lengths)
            mask = (pos[None, :] >= (seq_len - lens)[:, None]).float()
            mean_mask = to_device(mask / lens[:, None].float(), device)
        return cls(
            to_device(torch.tensor(b_idx, dtype=torch.long), device),
            to_device(torch.tensor(t_idx, dtype=torch.long), device),
            mean_mask,
        )

    def __call__(self, hidden: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "rows d_model"]:
        """Select (or average) the kept positions."""
        if self.mean_mask is not None:
            mask = self.mean_mask.to(hidden.device, hidden.dtype)
            return torch.einsum("bs,bsd->bd", mask, hidden)
        # A block on another device (device_map): a no-op copy everywhere else.
        return hidden[self.batch_index.to(hidden.device), self.token_index.to(hidden.device)]
