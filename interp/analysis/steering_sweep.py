"""Steering settings and the batched sweep: many settings' greedy answers in one generation.

A ``Setting`` is one edit of an output-language steering run (``interp.analysis.steering``): a
vector added at one residual layer (``coeff * vector`` at every position, prompt and generated
tokens), or ``mlp_act`` neurons set to ``coeff`` times given values, or no edit at all (the
unsteered answers, the prompting arm). ``vector_settings`` and ``neuron_settings`` make an arm's
grid of layers and coefficients.

Answers are greedy. ``generate_stacked`` runs many settings (layer x coefficient x arm) in one
generation: the prompt batch is repeated once per setting and each copy is edited with its own
vector or neurons (``Apply`` edits that read a per-row table, ``stacked_edits``), so one
KV-cached decoding loop serves them all; its token ids equal those of ``generate_each``, one
generation per setting under ``Add`` (tested): adding a zero row is exact, and rows of a batch
do not mix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import PolylensError
from interp.interventions import Add, Apply, Edit, intervene
from interp.model.footprint import Pass
from interp.model.models import LoadedModel, cut_at
from interp.model.sites import layer_site

__all__ = [
    "Generations",
    "Setting",
    "generate_each",
    "generate_stacked",
    "neuron_settings",
    "stacked_edits",
    "sweep_passes",
    "vector_settings",
]


# -- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Setting:
    """One steering setting: the edit every copy of the prompt batch it owns receives."""

    arm: str
    """``none``, ``vector``, ``neurons``, ``random``, ``unrelated``, ``prompt`` or another label."""
    layer: int | None = None
    """Residual layer the vector is added at (vector arms)."""
    coeff: float = 0.0
    """Multiplier of the vector, or of the neurons' values (0 adds nothing to the residual, but
    sets the neurons to zero)."""
    vector: Float[Tensor, " d_model"] | None = field(default=None, repr=False)
    """Added as ``coeff * vector`` at every position of layer ``layer``."""
    neurons: Bool[Tensor, "block neuron"] | None = field(default=None, repr=False)
    """``mlp_act`` neurons set to ``coeff * values``."""
    values: Float[Tensor, "block neuron"] | None = field(default=None, repr=False)
    """The values the neurons are set to, at ``coeff = 1``."""
    label: str = ""
    """Free text for tables (e.g. the unrelated control's language)."""

    def __post_init__(self) -> None:
        if (self.vector is None) != (self.layer is None):
            raise PolylensError("a vector setting needs both a layer and a vector")
        if (self.neurons is None) != (self.values is None):
            raise PolylensError("a neuron setting needs both neurons and values")

    def edits(self) -> dict[str, Edit]:
        """This setting's edits for a plain generation (``Add``, or ``Apply`` at ``mlp_act``)."""
        edits: dict[str, Edit] = {}
        if self.vector is not None:
            edits[layer_site(self.layer).name] = Add(self.vector, self.coeff)
        if self.neurons is not None:
            for block, row in enumerate(self.neurons):
                if row.any():
                    value = self.coeff * self.values[block].float()
                    edits[f"mlp_act.{block}"] = _set_neurons(row[None], value[None])
        return edits

    def describe(self) -> dict:
        """The setting as a table row: ``arm``, ``layer``, ``coeff``, ``label``."""
        return {"arm": self.arm, "layer": self.layer, "coeff": self.coeff, "label": self.label}


def vector_settings(
    arm: str,
    vectors: Float[Tensor, "layer d_model"],
    layers: Sequence[int],
    coeffs: Sequence[float],
    *,
    label: str = "",
) -> list[Setting]:
    """One setting per layer and coefficient, layer-major: ``coeff * vectors[layer]``."""
    return [
        Setting(arm, layer=layer, coeff=float(c), vector=vectors[layer], label=label)
        for layer in layers
        for c in coeffs
    ]


def neuron_settings(
    target: Bool[Tensor, "block neuron"],
    values: Float[Tensor, "block neuron"],
    coeffs: Sequence[float],
    *,
    deactivate: Bool[Tensor, "block neuron"] | None = None,
    arm: str = "neurons",
) -> list[Setting]:
    """The neuron arm: ``target`` neurons set to ``coeff * values`` (e.g. their target mean).

    ``deactivate``: neurons set to zero as well (e.g. the source language's, as Tang et al.
    do), unless they are target neurons too.
    """
    neurons, vals = target.bool(), values.float() * target
    if deactivate is not None:
        neurons = neurons | deactivate.bool()
    return [Setting(arm, coeff=float(c), neurons=neurons, values=vals) for c in coeffs]


# -- generation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generations:
    """Greedy answers of every setting to every prompt."""

    texts: list[list[str]]
    """``[setting][prompt]`` decoded answers (cut before the first stop string)."""
    ids: list[list[list[int]]]
    """``[setting][prompt]`` generated token ids, trailing pads removed."""


def _set_neurons(mask: Tensor, values: Tensor) -> Apply:
    """Set the masked neurons of each row (``mask`` / ``values`` ``[row or 1, neuron]``)."""
    cache: dict = {}

    def fn(x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = (mask.to(x.device)[:, None], values.to(x.device, x.dtype)[:, None])
        m, v = cache[key]
        return torch.where(m, v, x)

    return Apply(fn)


def _add_rows(deltas: Tensor) -> Apply:
    """Add a different vector to each row, at every position (a zero row leaves it as it is)."""
    cache: dict = {}

    def fn(x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in cache:  # one host-to-device copy, not one per decoding step
            cache[key] = deltas.to(x.device, x.dtype)[:, None]
        return x + cache[key]

    return Apply(fn)


def stacked_edits(settings: Sequence[Setting], rows: int) -> dict[str, list[Edit]]:
    """Edits of a batch of ``len(settings)`` copies of ``rows`` rows each, copy-major.

    Copy ``i`` gets setting ``i``'s edit: per-row additions at each layer some setting uses,
    per-row neuron values at each block some setting sets. Values are computed as ``Add`` and
    ``Setting.edits`` compute them (``coeff * x`` in float32, cast to the site's dtype once).
    """
    n = len(settings) * rows
    adds: dict[int, Tensor] = {}
    masks: dict[int, tuple[Tensor, Tensor]] = {}
    for i, s in enumerate(settings):
        span = slice(i * rows, (i + 1) * rows)
        if s.vector is not None:
            delta = adds.setdefault(s.layer, torch.zeros(n, s.vector.shape[0]))
            delta[span] = s.coeff * s.vector.float()
        if s.neurons is not None:
            for block, row in enumerate(s.neurons):
                if row.any():
                    width = row.shape[0]
                    m, v = masks.setdefault(
                        block, (torch.zeros(n, width, dtype=torch.bool), torch.zeros(n, width))
                    )
                    m[span] = row
                    v[span] = s.coeff * s.values[block].float()
    edits: dict[str, list[Edit]] = {}
    for layer, delta in adds.items():
        edits[layer_site(layer).name] = [_add_rows(delta)]
    for block, (m, v) in masks.items():
        edits[f"mlp_act.{block}"] = [_set_neurons(m, v)]
    return edits


def _generate(
    model: LoadedModel, batch: dict, max_new_tokens: int, stops: list[str]
) -> tuple[list[list[int]], list[str]]:
    """Greedy ids (trailing pads removed) and texts of a padded batch, as ``model.generate``."""
    pad = model.tokenizer.pad_token_id
    new = model.greedy_ids(batch, max_new_tokens=max_new_tokens, stops=stops).tolist()
    ids = []
    for row in new:
        while row and row[-1] == pad:
            row.pop()
        ids.append(row)
    texts = [cut_at(t, stops) for t in model.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return ids, texts


def _check(model: LoadedModel, max_new_tokens: int, batch_size: int) -> None:
    model.require_next_token("steering generation")
    if max_new_tokens < 1 or batch_size < 1:
        raise PolylensError("steering generation needs max_new_tokens >= 1 and batch_size >= 1")


@torch.inference_mode()
def generate_stacked(
    model: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[Setting],
    *,
    max_new_tokens: int,
    stop: str | Sequence[str] | None = None,
    batch_size: int = 16,
    rows_per_pass: int = 256,
    progress: str | None = None,
) -> Generations:
    """Greedy answers under every setting, many settings per generation.

    Prompts are taken ``batch_size`` at a time (left-padded as ``model.generate`` pads them);
    each batch is repeated once per setting, as many settings per generation as
    ``rows_per_pass`` rows allow (at least one), every copy edited with its own setting.

    Args:
        model: the model.
        prompts: the texts, verbatim (chat template applied where wanted).
        settings: the settings (``Setting("none")``: unedited).
        max_new_tokens: most tokens per answer.
        stop: a string or several that end an answer (as ``model.generate``).
        batch_size: prompts per batch.
        rows_per_pass: most rows (prompts x settings) per generation.
        progress: a tqdm bar over settings x prompt batches, with this label.
    """
    _check(model, max_new_tokens, batch_size)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    k = len(settings)
    texts = [[""] * len(prompts) for _ in settings]
    ids: list[list[list[int]]] = [[[] for _ in prompts] for _ in settings]
    n_batches = -(-len(prompts) // batch_size)
    bar = tqdm(total=k * n_batches, desc=progress, disable=progress is None, leave=False)
    for rows, batch in model.padded_batches(list(prompts), batch_size=batch_size):
        r = len(rows)
        per_pass = max(1, rows_per_pass // r)
        for start in range(0, k, per_pass):
            chunk = list(range(start, min(k, start + per_pass)))
            stacked = {
                key: batch[key].repeat(len(chunk), 1) for key in ("input_ids", "attention_mask")
            }
            with intervene(model, stacked_edits([settings[i] for i in chunk], r)):
                got_ids, got_texts = _generate(model, stacked, max_new_tokens, stops)
            for j, i in enumerate(chunk):
                for q, row in enumerate(rows):
                    ids[i][row] = got_ids[j * r + q]
                    texts[i][row] = got_texts[j * r + q]
            bar.update(len(chunk))
    bar.close()
    return Generations(texts, ids)


@torch.inference_mode()
def generate_each(
    model: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[Setting],
    *,
    max_new_tokens: int,
    stop: str | Sequence[str] | None = None,
    batch_size: int = 16,
) -> Generations:
    """The reference of ``generate_stacked``: one generation per setting under its ``edits()``."""
    _check(model, max_new_tokens, batch_size)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    texts = [[""] * len(prompts) for _ in settings]
    ids: list[list[list[int]]] = [[[] for _ in prompts] for _ in settings]
    for i, s in enumerate(settings):
        with intervene(model, s.edits()):
            for rows, batch in model.padded_batches(list(prompts), batch_size=batch_size):
                got_ids, got_texts = _generate(model, batch, max_new_tokens, stops)
                for q, row in enumerate(rows):
                    ids[i][row], texts[i][row] = got_ids[q], got_texts[q]
    return Generations(texts, ids)


def sweep_passes(
    model: LoadedModel,
    name: str,
    prompts: Sequence[str],
    n_settings: int,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    rows_per_pass: int = 256,
) -> list[Pass]:
    """The generations ``generate_stacked`` makes, for ``polylens plan``.

    Each prompt batch once per setting, as many settings per generation as ``rows_per_pass``
    allows; ``max_new_tokens`` per answer (an upper bound: a stop string or the end of a turn
    ends an answer earlier).
    """
    if not prompts or n_settings < 1:
        return []
    lengths = [len(ids) for ids in model.tokenize(list(prompts))]
    passes = []
    for start in range(0, len(lengths), batch_size):
        batch = tuple(lengths[start : start + batch_size])
        per_pass = max(1, rows_per_pass // len(batch))
        chunks = Counter(min(per_pass, n_settings - s) for s in range(0, n_settings, per_pass))
        for copies, times in sorted(chunks.items(), reverse=True):
            passes.append(
                Pass(name, batch * copies, copies * len(batch), logits="last",
                     new_tokens=max_new_tokens, repeats=times)
            )  # fmt: skip
    return passes
