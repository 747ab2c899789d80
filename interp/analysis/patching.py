"""Cross-lingual activation patching of subjects ("How Do Multilingual Models Remember?").

A subject's residual states are read from a prompt in language A and written into another
prompt (in language B) at one residual layer; whether B's prediction follows the patched subject
says at which layers the subject's representation carries the fact across languages.

- ``subject_span`` finds a subject's tokens from the tokenizer's character offsets (never
  hard-coded), the last occurrence in the prompt (few-shot prompts mention other subjects first).
- ``patch_plan`` pairs each target prompt with the source states to write: ``"last"`` the
  subject's last token only; ``"prefix"`` every position up to and including the subject's last
  token, aligned at that token (source and target prefixes differ in length across languages, so
  the ``k = min`` of the two lengths, BOS excluded, are written: the last ``k`` of each).
- ``PatchRows`` is the edit: per prompt, its own positions and values (``Patch`` gives every row
  of a batch the same positions). Rows are consumed in prompt order, one prompt pass after
  another, as every polylens forward batches them (``model.logits``, ``extract``, the candidate
  scorer in ``interp.analysis.factual``); KV-cached continuation steps are left alone.
- ``SwapCase`` / ``swap_partners`` / ``swap_scores``: fact X's subject read in language A and
  written into fact Y's prompt (same relation, another answer) in language B; the case flips
  when the patched prompt prefers X's answer in B over Y's own answer in B, both scored by the
  candidate scorer (summed log-probs of every answer token). Patching layer ``L`` cannot change
  the answer (the subject precedes the last token), so layers run over ``0 .. L-1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.analysis.factual import candidate_logprobs, candidate_passes, continuation
from interp.errors import PolylensError
from interp.extract import extract
from interp.interventions import Edit, ForwardState, intervene
from interp.model.footprint import Workload, forward_pass
from interp.model.models import LoadedModel
from interp.model.sites import layer_site

Variant = Literal["last", "prefix"]


def subject_span(model: LoadedModel, prompt: str, subject: str) -> tuple[int, int]:
    """Token indices ``[start, end)`` of the last occurrence of ``subject`` in ``prompt``.

    Indices count the tokens of ``model.tokenize([prompt])[0]`` (special tokens included), so
    they address extraction positions directly. A token belongs to the subject when its
    character offsets overlap the subject's characters.
    """
    at = prompt.rfind(subject) if subject else -1
    if at < 0:
        raise PolylensError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    enc = model.tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
    if len(enc["input_ids"]) != len(model.tokenize([prompt])[0]):
        raise PolylensError("the tokenizer's offsets do not match its tokens; use a fast tokenizer")
    hit = [
        t
        for t, (a, b) in enumerate(enc["offset_mapping"])
        if b > a and a < at + len(subject) and b > at
    ]
    if not hit:
        raise PolylensError(f"subject {subject!r} has no tokens in prompt {prompt!r}")
    return hit[0], hit[-1] + 1


@dataclass
class PatchRows(Edit):
    """Per-row patch: row ``r`` gets ``values[r]`` at ``positions[r]`` (counted from the end).

    Rows are taken in order across the prompt passes it sees (``rows_done`` counts them); a
    KV-cached step (continuation tokens) is left as it is.
    """

    values: list[Float[Tensor, "pos width"]]
    positions: list[list[int]]
    rows_done: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if len(self.values) != len(self.positions):
            raise PolylensError("PatchRows needs one value block and one position list per row")
        for v, p in zip(self.values, self.positions):
            if v.dim() != 2 or v.shape[0] != len(p) or any(q >= 0 for q in p):
                raise PolylensError(
                    "PatchRows: each row needs values [len(positions), width] and positions "
                    "counted from the end (-1 is the last token)"
                )
        self.width = self.values[0].shape[-1] if self.values else None

    def __call__(self, x: Tensor, state: ForwardState) -> Tensor:  # noqa: D102
        if state.cached_step:
            return x
        start, stop = self.rows_done, self.rows_done + x.shape[0]
        if stop > len(self.values):
            raise PolylensError(
                f"PatchRows holds {len(self.values)} rows but the forward passes brought "
                f"{stop}; patch exactly the prompts that run, in order"
            )
        out = x.clone()
        for row in range(start, stop):
            pos = self.positions[row]
            if -min(pos) > x.shape[1]:
                raise PolylensError(f"PatchRows row {row}: position {min(pos)} is before the start")
            out[row - start, pos] = self.values[row].to(x.device, x.dtype)
        self.rows_done = stop
        return out


@dataclass
class PatchPlan:
    """Per target prompt: the source states to write at one layer, and where."""

    layers: list[int]
    states: list[Float[Tensor, "pos layer d_model"]]
    """Per target, the source's states at the patched positions, every layer of ``layers``."""
    positions: list[list[int]]
    """Per target, the positions written, counted from the target's end."""

    def edit(self, layer: int) -> PatchRows:
        """A fresh ``PatchRows`` for residual layer ``layer`` (one per forward run)."""
        li = self.layers.index(layer)
        return PatchRows([s[:, li] for s in self.states], self.positions)


def patch_spans(
    model: LoadedModel,
    sources: Sequence[tuple[str, str]],
    targets: Sequence[tuple[str, str]],
    variant: Variant,
) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """Per pair, the source's token span read and the target's positions (from its end) written."""
    if len(sources) != len(targets):
        raise PolylensError(f"got {len(sources)} sources but {len(targets)} targets")
    if variant not in ("last", "prefix"):
        raise PolylensError(f"patch variant {variant!r}: use 'last' or 'prefix'")
    spans, moves = [], []
    for (sp, ss), (tp, ts) in zip(sources, targets):
        _, s_end = subject_span(model, sp, ss)
        _, t_end = subject_span(model, tp, ts)
        t_len = len(model.tokenize([tp])[0])
        # BOS (position 0) is the same in every prompt: never counted in a prefix.
        k = 1 if variant == "last" else min(s_end - 1, t_end - 1)
        k = max(k, 1)
        spans.append((s_end - k, s_end))
        moves.append([t_end - k + j - t_len for j in range(k)])
    return spans, moves


def patch_plan(
    model: LoadedModel,
    sources: Sequence[tuple[str, str]],
    targets: Sequence[tuple[str, str]],
    *,
    layers: Sequence[int],
    variant: Variant = "last",
    batch_size: int = 16,
) -> PatchPlan:
    """Read each source ``(prompt, subject)``'s subject states, to write into its target.

    Args:
        model: the model.
        sources: per pair, the prompt the states come from and its subject.
        targets: per pair, the prompt they are written into and its subject.
        layers: residual layers to read (0 = embeddings; patching layer ``L`` changes nothing
            at the last token).
        variant: ``last`` (the subject's last token) or ``prefix`` (every position up to it,
            aligned at it; see the module docstring).
        batch_size: prompts per extraction pass.
    """
    spans, moves = patch_spans(model, sources, targets, variant)
    acts = extract(
        model,
        [sp for sp, _ in sources],
        layers=list(layers),
        positions=spans,
        batch_size=batch_size,
        progress=False,
    )
    return PatchPlan(list(layers), acts.per_prompt(), moves)


# -- subject swaps across languages -------------------------------------------------------------
@dataclass(frozen=True)
class SwapCase:
    """Fact X's subject read in language A, written into fact Y's prompt in language B.

    Both facts share a relation and have different answers; the case "flips" when B's prompt,
    patched, prefers X's answer in B over Y's own answer in B.
    """

    relation: str
    source_fact: str
    source_lang: str
    source_prompt: str
    source_subject: str
    target_fact: str
    target_lang: str
    target_prompt: str
    target_subject: str
    source_answer: str
    """X's answer in language B (what a flipped prediction becomes)."""
    target_answer: str
    """Y's own answer in language B."""


def swap_partners(
    answers: Mapping[str, Mapping[str, str]], relation_of: Mapping[str, str]
) -> dict[str, str]:
    """For each fact Y, its source fact X: the next of its relation whose answer differs.

    "Next" is the next fact id of the relation, cyclically, whose answer differs from Y's in
    every language. Facts with no such partner are left out.

    Args:
        answers: ``{fact_id: {lang: answer}}``.
        relation_of: ``{fact_id: relation}``.
    """
    out = {}
    for relation in sorted(set(relation_of.values())):
        ids = sorted(f for f, r in relation_of.items() if r == relation)
        for i, y in enumerate(ids):
            for step in range(1, len(ids)):
                x = ids[(i + step) % len(ids)]
                if all(answers[x][lang] != answers[y][lang] for lang in answers[y]):
                    out[y] = x
                    break
    return out


@dataclass
class SwapScores:
    """Per case: X's answer minus Y's answer (log-prob), unpatched and patched per layer."""

    layers: list[int]
    base_margin: Float[Tensor, " case"]
    margin: Float[Tensor, "case layer"]

    @property
    def flipped(self) -> Tensor:
        """Patched prediction prefers X's answer (bool ``[case, layer]``)."""
        return self.margin > 0


def _answer_continuations(cases: Sequence[SwapCase]) -> list[list[str]]:
    """Per case, X's then Y's answer as the candidate scorer continues the target prompt."""
    return [
        [
            continuation(c.target_prompt, a, c.target_lang)
            for a in (c.source_answer, c.target_answer)
        ]
        for c in cases
    ]


def swap_workload(
    model: LoadedModel,
    cases: Sequence[SwapCase],
    layers: Sequence[int],
    *,
    name: str,
    variant: Variant = "last",
    batch_size: int = 16,
) -> Workload:
    """What ``swap_scores`` asks of the model, for ``polylens plan``.

    Both answers scored on the plain targets, the sources' subject states read (the forward
    stops after the deepest layer; the states are held, not stored), and both answers scored
    again once per patched layer.
    """
    prompts = [c.target_prompt for c in cases]
    conts = _answer_continuations(cases)
    spans, _ = patch_spans(
        model,
        [(c.source_prompt, c.source_subject) for c in cases],
        [(c.target_prompt, c.target_subject) for c in cases],
        variant,
    )
    read = forward_pass(
        model, f"{name}: subject states", [c.source_prompt for c in cases],
        batch_size=batch_size, depth=max(layers) / model.n_blocks,
    )  # fmt: skip
    passes = (
        *candidate_passes(model, f"{name}: plain", prompts, conts, batch_size=batch_size),
        read,
        *candidate_passes(
            model, f"{name}: patched", prompts, conts, batch_size=batch_size, repeats=len(layers)
        ),
    )
    return Workload(passes, held=sum(b - a for a, b in spans) * len(layers))


def swap_scores(
    model: LoadedModel,
    cases: Sequence[SwapCase],
    layers: Sequence[int],
    *,
    variant: Variant = "last",
    batch_size: int = 16,
    progress: bool = False,
) -> SwapScores:
    """Score X's and Y's answers (candidate scorer) on every case, unpatched and per layer."""
    model.require_next_token("patching of next-token outputs")
    prompts = [c.target_prompt for c in cases]
    conts = _answer_continuations(cases)

    def margins() -> Tensor:
        scores = candidate_logprobs(model, prompts, conts, batch_size=batch_size)
        return torch.stack([s[0] - s[1] for s in scores])

    base = margins()
    plan = patch_plan(
        model,
        [(c.source_prompt, c.source_subject) for c in cases],
        [(c.target_prompt, c.target_subject) for c in cases],
        layers=layers,
        variant=variant,
        batch_size=batch_size,
    )
    out = torch.empty(len(cases), len(layers))
    for li, layer in enumerate(tqdm(layers, desc=f"patch {variant}", disable=not progress)):
        with intervene(model, {layer_site(layer): plan.edit(layer)}):
            out[:, li] = margins()
    return SwapScores(list(layers), base, out)
