"""Refusal directions (Arditi et al. 2024; PolyRefuse 2025): candidates, selection, effects.

```python
cands = candidate_directions(model, harmful_prompts, harmless_prompts, n_post)  # [layer pos d]
scores = score_candidates(model, cands, val_harmful, val_harmless, opener_ids)
choice = select_direction(scores, model.n_blocks)
with intervene(model, directional_ablation(cands[choice.layer, choice.pos].float())):
    model.generate(test_harmful, max_new_tokens=32)
```

Candidates are diff-in-means vectors, one per residual layer and post-instruction position,
accumulated in float64 from the activation store. Each candidate is scored on a validation split
by three numbers: **bypass** (mean refusal score of harmful prompts with the direction ablated
everywhere), **induce** (mean refusal score of harmless prompts with the vector added at its own
layer, every position) and **KL** (of the harmless next-token distribution under ablation).
Scoring is batched: several candidates share one forward pass, the prompt batch stacked once per
candidate, each copy edited with its own direction; the tokens every prompt shares (a few-shot
dialogue, a system turn) run once per candidate and their keys and values are reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analysis.edit_scores import plain_logits, scores_under_edits, stacked_passes
from interp.analysis.refusal import refusal_score
from interp.errors import PolylensError
from interp.extract import extract
from interp.model.footprint import Pass
from interp.model.models import LoadedModel
from interp.storage.store import ActivationStore

_DEGENERATE = 1e-6
"""Candidates shorter than this (relative to the longest) are not directions (e.g. layer 0)."""


# -- candidates ---------------------------------------------------------------------------------


def post_instruction_acts(
    model: LoadedModel,
    prompts: Sequence[str],
    n_post: int,
    *,
    batch_size: int = 16,
    store: ActivationStore | str | Path | None = None,
) -> Float[Tensor, "prompt pos layer d_model"]:
    """Residuals of every layer at each prompt's last ``n_post`` tokens (via the store)."""
    lengths = [len(x) for x in model.tokenize(list(prompts))]
    spans = [(n - n_post, n) for n in lengths]
    acts = extract(
        model,
        list(prompts),
        layers="all",
        positions=spans,
        batch_size=batch_size,
        store=store,
        progress=False,
    )
    return torch.stack(acts.per_prompt())


def diff_in_means(
    harmful: Float[Tensor, "prompt pos layer d_model"],
    harmless: Float[Tensor, "prompt pos layer d_model"],
) -> Float[Tensor, "layer pos d_model"]:
    """mean(harmful) - mean(harmless) per layer and position, in float64."""
    if harmful.shape[1:] != harmless.shape[1:]:
        raise PolylensError(
            f"harmful {tuple(harmful.shape)} and harmless {tuple(harmless.shape)} activations "
            "differ beyond the prompt axis"
        )
    diff = harmful.double().mean(0) - harmless.double().mean(0)
    return diff.transpose(0, 1).contiguous()


def candidate_directions(
    model: LoadedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    n_post: int,
    *,
    batch_size: int = 16,
    store: ActivationStore | str | Path | None = None,
) -> Float[Tensor, "layer pos d_model"]:
    """Diff-in-means candidates at every layer and each of the last ``n_post`` positions."""
    kw = dict(batch_size=batch_size, store=store)
    return diff_in_means(
        post_instruction_acts(model, harmful, n_post, **kw),
        post_instruction_acts(model, harmless, n_post, **kw),
    )


def spare_top_dimensions(
    candidates: Float[Tensor, "layer pos d_model"],
    residuals: Float[Tensor, "prompt pos layer d_model"],
    k: int,
) -> Float[Tensor, "layer pos d_model"]:
    """Candidates with their components on the ``k`` largest residual dimensions set to zero.

    The dimensions are, per layer and position, those with the largest mean square over
    ``residuals`` (e.g. the harmless training prompts'). Not in the paper: a variant for streams
    carried by a few massive dimensions (Gemma 3), where ablating any direction that touches
    them moves the output whatever the direction means (see ``top_dimension_share``).
    """
    if k == 0:
        return candidates
    if k >= candidates.shape[-1]:
        raise PolylensError(
            f"cannot spare {k} of {candidates.shape[-1]} residual dimensions: nothing would be "
            "left of the candidates; lower spare_top_dims"
        )
    power = residuals.double().pow(2).mean(0).transpose(0, 1)  # [layer pos d_model]
    if power.shape != candidates.shape:
        raise PolylensError(
            f"residuals give {tuple(power.shape)} (layer, pos, d_model), candidates "
            f"{tuple(candidates.shape)}"
        )
    return candidates.scatter(-1, power.topk(k, dim=-1).indices, 0.0)


@dataclass
class CandidateScores:
    """Every candidate's validation scores, ``[layer, pos]`` (NaN: not scored, e.g. zero)."""

    bypass: np.ndarray
    induce: np.ndarray
    kl: np.ndarray
    baseline_harmful: float
    baseline_harmless: float

    def rows(self, pos_labels: Sequence[str]) -> list[dict]:
        """One table row per candidate."""
        return [
            {
                "layer": layer,
                "pos": pos_labels[p],
                "bypass": float(self.bypass[layer, p]),
                "induce": float(self.induce[layer, p]),
                "kl": float(self.kl[layer, p]),
            }
            for layer in range(self.bypass.shape[0])
            for p in range(self.bypass.shape[1])
        ]


def score_candidates(
    model: LoadedModel,
    candidates: Float[Tensor, "layer pos d_model"],
    harmful: Sequence[str],
    harmless: Sequence[str],
    opener_ids: Sequence[int],
    *,
    layers: Sequence[int] | None = None,
    rows_per_pass: int = 64,
    reuse_prefix: bool = True,
    progress: bool = False,
) -> CandidateScores:
    """Bypass, induce and KL of every candidate (at ``layers``; default all) on validation prompts.

    One plain pass gives both baselines and the harmless reference distribution; bypass and KL
    come from one ablated pass over harmful and harmless prompts together, induce from one
    added pass over the harmless ones (candidates stacked, see ``scores_under_edits``).
    ``progress``: tqdm bars over the candidates.
    """
    n_layers, n_pos, _ = candidates.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    norms = candidates.norm(dim=-1)
    keep = [
        (layer, p)
        for layer in layers
        for p in range(n_pos)
        if norms[layer, p] > _DEGENERATE * float(norms.max())
    ]
    shape = (n_layers, n_pos)
    out = CandidateScores(
        np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan), 0, 0
    )
    both, nh = [*harmful, *harmless], len(harmful)
    plain = plain_logits(model, both, reuse_prefix=reuse_prefix)
    base = refusal_score(plain, opener_ids)
    out.baseline_harmful = float(base[:nh].mean())
    out.baseline_harmless = float(base[nh:].mean())
    if not keep:
        return out
    vecs = torch.stack([candidates[layer, p] for layer, p in keep]).float()
    kw = dict(rows_per_pass=rows_per_pass, reuse_prefix=reuse_prefix)
    reference = plain[nh:].log_softmax(-1)
    abl, kl = scores_under_edits(
        model, both, opener_ids, ablate=vecs, reference=reference,
        progress="bypass, KL" if progress else None, **kw,
    )  # fmt: skip
    ind, _ = scores_under_edits(
        model, harmless, opener_ids, add=vecs, add_layers=[layer for layer, _ in keep],
        progress="induce" if progress else None, **kw,
    )  # fmt: skip
    for j, (layer, p) in enumerate(keep):
        out.bypass[layer, p] = float(abl[j, :nh].mean())
        out.kl[layer, p] = float(kl[j].mean())
        out.induce[layer, p] = float(ind[j].mean())
    return out


def score_candidates_passes(
    model: LoadedModel,
    name: str,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    candidates: int,
    rows_per_pass: int = 64,
) -> list[Pass]:
    """The forward passes ``score_candidates`` makes, for ``polylens plan``.

    ``candidates`` directions are counted; ``score_candidates`` skips near-zero ones, so this
    is an upper bound.
    """
    both, kw = [*harmful, *harmless], dict(candidates=candidates, rows_per_pass=rows_per_pass)
    return [
        *stacked_passes(model, f"{name}: plain", both),
        *stacked_passes(model, f"{name}: ablated", both, **kw),
        *stacked_passes(model, f"{name}: added", harmless, **kw),
    ]


def random_direction_passes(
    model: LoadedModel, name: str, prompts: Sequence[str], *, n: int = 4, rows_per_pass: int = 64
) -> list[Pass]:
    """The forward passes ``random_direction_kl`` makes, for ``polylens plan``."""
    return [
        *stacked_passes(model, f"{name}: plain", prompts),
        *stacked_passes(
            model, f"{name}: ablated", prompts, candidates=n, rows_per_pass=rows_per_pass
        ),
    ]


def random_direction_kl(
    model: LoadedModel,
    prompts: Sequence[str],
    opener_ids: Sequence[int],
    *,
    n: int = 4,
    seed: int = 0,
    rows_per_pass: int = 64,
) -> Float[Tensor, " n"]:
    """Mean KL(plain || ablated) over ``prompts`` for ``n`` random unit directions.

    The control of the KL filter: what ablating an arbitrary direction at every layer costs,
    beside what a candidate's ablation costs.
    """
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(n, model.d_model, generator=gen)
    reference = plain_logits(model, prompts).log_softmax(-1)
    _, kl = scores_under_edits(
        model, prompts, opener_ids, ablate=directions, reference=reference,
        rows_per_pass=rows_per_pass,
    )  # fmt: skip
    return kl.mean(1)


def top_dimension_share(
    direction: Float[Tensor, " d_model"],
    residuals: Float[Tensor, "prompt d_model"],
    k: int = 3,
) -> tuple[float, float]:
    """How much of ``direction`` lies on the residual stream's ``k`` largest dimensions.

    Returns (share of the direction's squared norm on the ``k`` dimensions with the largest
    mean square in ``residuals``, those dimensions' share of the residuals' mean square). Where
    a few "massive" dimensions carry the stream (Gemma 3), a candidate that lies on them
    ablates them, and the KL of its ablation says so rather than anything about refusal.
    """
    power = residuals.double().pow(2).mean(0)
    top = power.topk(k).indices
    d = direction.double().pow(2)
    return float(d[top].sum() / d.sum()), float(power[top].sum() / power.sum())


# -- selection ----------------------------------------------------------------------------------


@dataclass
class Selection:
    """The chosen candidate and why every other one lost."""

    layer: int
    pos: int
    reasons: np.ndarray
    """``[layer, pos]`` strings: ``selected``, ``kept`` or the filter that dropped it."""
    relaxed: bool
    """True when no candidate passed every filter and only the late-layer filter was kept."""


def select_direction(
    scores: CandidateScores,
    n_blocks: int,
    *,
    kl_max: float = 0.1,
    prune_fraction: float = 0.2,
) -> Selection:
    """Arditi et al.'s rule: filter, then pick the lowest bypass score.

    Dropped: KL > ``kl_max``, induce <= 0 and the last ``prune_fraction`` of layers.
    Layer ``l`` is dropped as late when ``l >= int(n_blocks * (1 - prune_fraction))``.
    """
    bypass, induce, kl = scores.bypass, scores.induce, scores.kl
    last_kept = int(n_blocks * (1 - prune_fraction))
    reasons = np.full(bypass.shape, "kept", dtype=object)
    for (layer, p), value in np.ndenumerate(bypass):
        if np.isnan(value):
            reasons[layer, p] = "not scored"
        elif layer >= last_kept:
            reasons[layer, p] = "late layer"
        elif kl[layer, p] > kl_max:
            reasons[layer, p] = f"kl > {kl_max}"
        elif not induce[layer, p] > 0:
            reasons[layer, p] = "induce <= 0"
    relaxed = not (reasons == "kept").any()
    if relaxed:
        allowed = ~np.isin(reasons.astype(str), ["not scored", "late layer"])
    else:
        allowed = reasons == "kept"
    if not allowed.any():
        raise PolylensError(
            "no candidate direction can be selected: every one is in the last "
            f"{prune_fraction:.0%} of layers or was not scored; score earlier layers"
        )
    masked = np.where(allowed, bypass, np.inf)
    layer, pos = np.unravel_index(int(np.argmin(masked)), masked.shape)
    reasons[layer, pos] = "selected"
    return Selection(int(layer), int(pos), reasons, relaxed)
