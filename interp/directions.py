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

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.batching import pad_batch
from interp.errors import PolylensError
from interp.extract import extract
from interp.interventions import Add, Apply, directional_ablation, intervene, orthogonalize
from interp.metrics import auroc, kl_divergence
from interp.models import LoadedModel
from interp.refusal import RefusalTemplate, judge, refusal_score
from interp.sites import layer_site
from interp.store import ActivationStore

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


# -- batched scoring ----------------------------------------------------------------------------


def _unit_rows(vectors: Tensor) -> Tensor:
    norms = vectors.norm(dim=-1, keepdim=True)
    return torch.where(norms > 0, vectors / norms.clamp_min(1e-30), torch.zeros_like(vectors))


def _row_ablation(units: Tensor) -> Apply:
    """Ablate a different unit direction from each row of the batch (zero rows: unchanged)."""

    def fn(x: Tensor) -> Tensor:
        u = units.to(x.device, x.dtype)[:, None, :]
        return x - (x * u).sum(-1, keepdim=True) * u

    return Apply(fn)


def _row_addition(vectors: Tensor) -> Apply:
    """Add a different vector to each row of the batch, at every position."""
    return Apply(lambda x: x + vectors.to(x.device, x.dtype)[:, None, :])


def row_edits(
    model: LoadedModel,
    *,
    ablate: Float[Tensor, "row d_model"] | None = None,
    add: Float[Tensor, "row d_model"] | None = None,
    add_layers: Sequence[int] | None = None,
    coeff: float = 1.0,
) -> dict:
    """Edits for a stacked batch, one direction per row.

    Row r ablates ``ablate[r]`` everywhere and adds ``coeff * add[r]`` at residual layer
    ``add_layers[r]``.
    """
    edits: dict = {}
    if ablate is not None:
        edit = _row_ablation(_unit_rows(ablate.float()))
        edits |= {k: edit for k in directional_ablation(torch.ones(model.d_model))}
    if add is not None:
        layers = torch.tensor(list(add_layers))
        for layer in sorted(set(layers.tolist())):
            mask = (layers == layer).float()[:, None]
            site = layer_site(layer).name
            edits.setdefault(site, [])
            edits[site] = [*edits[site], _row_addition(coeff * add.float() * mask)]
    return edits


def last_logits(model: LoadedModel, batch: dict) -> Float[Tensor, "row vocab"]:
    """Next-token logits at the last position of a left-padded batch (no full unembedding)."""
    return _unembed(model, model.body(**batch, use_cache=False)[0][:, -1])


def _unembed(
    model: LoadedModel,
    hidden: Float[Tensor, "row d_model"],
) -> Float[Tensor, "row vocab"]:
    logits = model.unembed(hidden).float()
    if model.softcap:
        logits = torch.tanh(logits / model.softcap) * model.softcap
    return logits


_MIN_SHARED_PREFIX = 8
"""Fewer shared tokens than this are not worth a forward pass of their own."""


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own.

    Counted on token ids, not text: a tokenizer may merge the template's last character with
    the instruction's first word.
    """
    limit = min(len(x) for x in ids) - 1
    first, count = ids[0], 0
    while count < limit and all(x[count] == first[count] for x in ids):
        count += 1
    return count


EditsFor = Callable[[int], dict]
"""``edits_for(r)``: the edits of a stacked batch whose every copy spans ``r`` rows."""


def stacked_last_logits(
    model: LoadedModel,
    ids: Sequence[Sequence[int]],
    copies: int,
    edits_for: EditsFor,
    *,
    reuse_prefix: bool = True,
) -> Float[Tensor, "row vocab"]:
    """Last-position logits of ``copies`` stacked copies of the prompts ``ids`` (copy-major).

    With ``reuse_prefix``, the tokens all prompts share (e.g. a few-shot dialogue) run once per
    copy under that copy's edits, and their keys and values are reused by each prompt's own
    tokens: the same numbers as running every full prompt (edits here act on each position
    alone), for a fraction of the work when the shared prefix is long.
    """
    n = len(ids)
    shared = shared_prefix_length(ids) if reuse_prefix else 0
    pad, device = model.tokenizer.pad_token_id, model.device
    if shared < _MIN_SHARED_PREFIX:
        batch = pad_batch([x for _ in range(copies) for x in ids], pad, device)
        with intervene(model, edits_for(n)):
            return last_logits(model, batch)
    prefix = torch.tensor([list(ids[0][:shared])] * copies, device=device)
    with intervene(model, edits_for(1)):
        cache = model.body(input_ids=prefix, use_cache=True).cache
    cache.batch_repeat_interleave(n)
    # Right-padded own tokens: causal attention keeps pads (after them) out of real positions.
    own = [x[shared:] for _ in range(copies) for x in ids]
    lengths = torch.tensor([len(x) for x in own])
    width = int(lengths.max())
    input_ids = torch.full((len(own), width), pad, dtype=torch.long)
    for row, x in enumerate(own):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    positions = (shared + torch.arange(width)).expand(len(own), width)
    with intervene(model, edits_for(n)):
        hidden = model.body(
            input_ids=input_ids.to(device),
            position_ids=positions.to(device),
            cache=cache,
            use_cache=True,
        )[0]
    return _unembed(model, hidden[torch.arange(len(own)), (lengths - 1).to(hidden.device)])


@torch.inference_mode()
def scores_under_edits(
    model: LoadedModel,
    prompts: Sequence[str],
    opener_ids: Sequence[int],
    *,
    ablate: Float[Tensor, "cand d_model"] | None = None,
    add: Float[Tensor, "cand d_model"] | None = None,
    add_layers: Sequence[int] | None = None,
    coeff: float = 1.0,
    reference: Float[Tensor, "prompt vocab"] | None = None,
    rows_per_pass: int = 64,
    reuse_prefix: bool = True,
    progress: str | None = None,
) -> tuple[Float[Tensor, "cand prompt"], Float[Tensor, "cand prompt"] | None]:
    """Refusal score of every prompt under every candidate, and the KL from ``reference``.

    ``reference`` holds plain log-probs of the *last* ``len(reference)`` prompts (so harmful and
    harmless prompts share a pass and only the harmless ones get a KL): KL(plain || edited).

    Candidate c edits copy c of the prompt batch; as many copies share one forward pass as fit
    in ``rows_per_pass`` rows (at least one candidate per pass). With neither ``ablate`` nor
    ``add``, one unedited "candidate". ``reuse_prefix``: see ``stacked_last_logits``.
    ``progress``: a tqdm bar over candidates with this label.
    """
    ids = model.tokenize(list(prompts))
    n = len(ids)
    k = next((len(t) for t in (ablate, add) if t is not None), 1)
    per_pass = max(1, rows_per_pass // n)
    scores, kls = [], []
    bar = tqdm(total=k, desc=progress, unit="cand", disable=progress is None, leave=False)
    for start in range(0, k, per_pass):
        chunk = list(range(start, min(k, start + per_pass)))

        def edits_for(r: int, chunk: list[int] = chunk) -> dict:
            rows = [c for c in chunk for _ in range(r)]  # copy-major, r rows per candidate
            return row_edits(
                model,
                ablate=None if ablate is None else ablate[rows],
                add=None if add is None else add[rows],
                add_layers=None if add is None else [add_layers[c] for c in rows],
                coeff=coeff,
            )

        logits = stacked_last_logits(model, ids, len(chunk), edits_for, reuse_prefix=reuse_prefix)
        scores.append(refusal_score(logits, opener_ids).view(len(chunk), n).cpu())
        if reference is not None:
            m = len(reference)
            tail = logits.view(len(chunk), n, -1)[:, n - m :].log_softmax(-1)
            ref = reference.to(logits.device)[None].expand_as(tail)
            kls.append(kl_divergence(ref, tail).cpu())
        bar.update(len(chunk))
    bar.close()
    return torch.cat(scores), (torch.cat(kls) if kls else None)


@torch.inference_mode()
def plain_logits(
    model: LoadedModel, prompts: Sequence[str], *, reuse_prefix: bool = True
) -> Float[Tensor, "prompt vocab"]:
    """Unedited next-token logits at each prompt's last token, in one stacked pass."""
    return stacked_last_logits(
        model, model.tokenize(list(prompts)), 1, lambda _: {}, reuse_prefix=reuse_prefix
    )


@torch.inference_mode()
def plain_logprobs(model: LoadedModel, prompts: Sequence[str], *, batch_size: int = 16) -> Tensor:
    """Unedited next-token log-probabilities at each prompt's last token."""
    parts = []
    for _, batch in model.padded_batches(list(prompts), batch_size=batch_size):
        parts.append(last_logits(model, batch).log_softmax(-1))
    return torch.cat(parts)


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


# -- effects on held-out prompts ----------------------------------------------------------------


@torch.inference_mode()
def orthogonalization_gap(
    model: LoadedModel, direction: Tensor, prompts: Sequence[str]
) -> float | None:
    """Max |log-prob| gap between weight orthogonalization and hook ablation.

    None where the architecture cannot be orthogonalized.
    """
    if model.adapter.orthogonalize_refusal:
        return None
    ortho = orthogonalize(model, direction.float())
    plain = plain_logprobs(ortho, prompts)
    with intervene(model, directional_ablation(direction.float())):
        hooked = plain_logprobs(model, prompts)
    return float((plain - hooked).abs().max())


def cosine_by_layer(
    directions: Float[Tensor, "lang layer d_model"],
) -> Float[Tensor, "layer lang lang"]:
    """Cosine similarity of every pair of languages' directions, at every layer."""
    unit = _unit_rows(directions.double()).transpose(0, 1)
    return unit @ unit.transpose(1, 2)


def shared_position(offsets: Sequence[int], n_positions: Sequence[int]) -> int:
    """The most often selected post-instruction position every language has, from the end.

    The position to compare languages' candidates at, as an offset from the prompt's end
    (``-1``: the last token). Languages' templates tokenize to different numbers of
    post-instruction tokens, so a position is compared by its meaning, its offset from the end
    (where the templates line up on the answer's start), never by its index from the first
    post-instruction token. ``offsets``: each language's selected offset (negative);
    ``n_positions``: each language's number of post-instruction tokens. Offsets some language
    lacks are not counted; when no language selected one every language has, ``-1``. Ties go
    to the earliest selection.
    """
    if any(p >= 0 for p in offsets):
        raise ValueError(f"offsets count from the end and are negative, got {list(offsets)}")
    depth = min(n_positions)
    everywhere = [p for p in offsets if p >= -depth]
    return Counter(everywhere).most_common(1)[0][0] if everywhere else -1


def transfer_grid(
    model: LoadedModel,
    directions: Float[Tensor, "lang d_model"],
    layers: Sequence[int],
    prompts: Sequence[tuple[Sequence[str], Sequence[str]]],
    opener_ids: Sequence[Sequence[int]],
    *,
    coeff: float = 1.0,
    rows_per_pass: int = 64,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Source direction A edited while prompting in target B, for every (A, B).

    ``progress``: a tqdm bar over target languages.

    Returns ``[source, target]`` matrices: ``ablation_drop`` (mean refusal score of B's harmful
    prompts, plain minus with A's direction ablated), ``ablation_share`` (that drop relative to
    B's own direction's), and ``addition_gain`` (mean score of B's harmless prompts with A's
    vector added at A's layer, minus plain).
    """
    k = len(directions)
    drop, gain = np.zeros((k, k)), np.zeros((k, k))
    for b, (harmful, harmless) in enumerate(
        tqdm(prompts, desc="transfer", unit="target", disable=not progress)
    ):
        plain, _ = scores_under_edits(
            model, [*harmful, *harmless], opener_ids[b], rows_per_pass=rows_per_pass
        )
        ablated, _ = scores_under_edits(
            model, harmful, opener_ids[b], ablate=directions, rows_per_pass=rows_per_pass
        )
        added, _ = scores_under_edits(
            model,
            harmless,
            opener_ids[b],
            add=directions,
            add_layers=layers,
            coeff=coeff,
            rows_per_pass=rows_per_pass,
        )
        drop[:, b] = float(plain[0, : len(harmful)].mean()) - ablated.mean(1).numpy()
        gain[:, b] = added.mean(1).numpy() - float(plain[0, len(harmful) :].mean())
    own = np.diag(drop)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(own[None, :] != 0, drop / own[None, :], np.nan)
    return {"ablation_drop": drop, "ablation_share": share, "addition_gain": gain}


@torch.inference_mode()
def held_out_effects(
    model: LoadedModel,
    template: RefusalTemplate,
    direction: Float[Tensor, " d_model"],
    layer: int,
    harmful: Sequence[str],
    harmless: Sequence[str],
    opener_ids: Sequence[int],
    *,
    coeff: float = 1.0,
    n_generate: int = 4,
    max_new_tokens: int = 24,
    rows_per_pass: int = 64,
    batch_size: int = 16,
) -> tuple[dict, list[dict]]:
    """What ablating (harmful) and adding (harmless) ``direction`` does on test instructions.

    Returns the summary (refusal scores and AUROC harmful vs harmless before and after
    ablation, KL on harmless, judge refusal rates on the first ``n_generate`` prompts of each
    condition and the two judges' agreement) and the generated examples.
    """
    h_prompts, n_prompts = template.wrap(harmful), template.wrap(harmless)
    nh = len(h_prompts)
    d = direction.float()[None]
    both = [*h_prompts, *n_prompts]
    plain_all = plain_logits(model, both)
    reference = plain_all[nh:].log_softmax(-1)
    plain = refusal_score(plain_all, opener_ids)[None]
    abl, kl = scores_under_edits(
        model, both, opener_ids, ablate=d, reference=reference, rows_per_pass=rows_per_pass
    )
    add, _ = scores_under_edits(
        model, n_prompts, opener_ids, add=d, add_layers=[layer], coeff=coeff,
        rows_per_pass=rows_per_pass,
    )  # fmt: skip
    summary = {
        "auroc_before": auroc(plain[0, :nh], plain[0, nh:]),
        "auroc_after_ablation": auroc(abl[0, :nh], abl[0, nh:]),
        "harmful_score_before": float(plain[0, :nh].mean()),
        "harmful_score_after_ablation": float(abl[0, :nh].mean()),
        "harmless_score_before": float(plain[0, nh:].mean()),
        "harmless_score_after_addition": float(add[0].mean()),
        "harmless_kl_under_ablation": float(kl.mean()),
    }
    g = min(n_generate, nh, len(n_prompts))
    conditions = {
        "harmful": (harmful, h_prompts, {}, plain[0, :g]),
        "harmful+ablation": (harmful, h_prompts, directional_ablation(d[0]), abl[0, :g]),
        "harmless": (harmless, n_prompts, {}, plain[0, nh : nh + g]),
        "harmless+addition": (
            harmless, n_prompts, {layer_site(layer).name: Add(d[0], coeff=coeff)}, add[0, :g]
        ),
    }  # fmt: skip
    examples, agree = [], []
    for name, (texts, prompts, edits, scores) in conditions.items():
        if g == 0:
            break
        with intervene(model, edits):
            answers = model.generate(
                prompts[:g],
                max_new_tokens=max_new_tokens,
                stop=list(template.stop) or None,
                batch_size=batch_size,
            )
        refused = judge(answers, template.phrases)
        summary[f"judge_refusal_{name}"] = sum(refused) / g
        agree += [r == bool(s > 0) for r, s in zip(refused, scores.tolist())]
        examples += [
            {"lang": template.lang, "condition": name, "instruction": t, "answer": a,
             "judged_refusal": r, "refusal_score": float(s)}
            for t, a, r, s in zip(texts, answers, refused, scores.tolist())
        ]  # fmt: skip
    summary["judge_score_agreement"] = sum(agree) / len(agree) if agree else float("nan")
    return summary, examples
