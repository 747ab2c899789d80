"""What a chosen refusal direction does, and how far it carries to other languages.

Held-out effects (ablation and addition on the test split, judged by the refusal score and the
refusal phrases), the check that weight orthogonalization equals hook ablation, cosines of the
languages' candidates layer by layer at a position every language has, and the transfer grid
(language A's direction ablated or added on language B's prompts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.analysis.edit_scores import (
    plain_logits,
    plain_logprobs,
    scores_under_edits,
    stacked_passes,
    unit_rows,
)
from interp.analysis.language_id import detect_languages
from interp.analysis.refusal import RefusalTemplate, judge, refusal_score
from interp.interventions import Add, directional_ablation, intervene, orthogonalize
from interp.metrics import auroc
from interp.model.footprint import Pass, forward_pass
from interp.model.models import LoadedModel
from interp.model.sites import layer_site


def orthogonalization_passes(model: LoadedModel, prompts: Sequence[str]) -> list[Pass]:
    """The forward passes ``orthogonalization_gap`` makes (on the copy and under hooks)."""
    if model.adapter.orthogonalize_refusal:
        return []
    return [
        forward_pass(
            model, "orthogonalization check", prompts, batch_size=16, logits="last", repeats=2
        )
    ]


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
    unit = unit_rows(directions.double()).transpose(0, 1)
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


def transfer_passes(
    model: LoadedModel,
    n_directions: int,
    prompts: Sequence[tuple[Sequence[str], Sequence[str]]],
    *,
    rows_per_pass: int = 64,
) -> list[Pass]:
    """The forward passes ``transfer_grid`` makes, for ``polylens plan``."""
    kw = dict(rows_per_pass=rows_per_pass)
    passes = []
    for harmful, harmless in prompts:
        passes += stacked_passes(model, "transfer: plain", [*harmful, *harmless], **kw)
        passes += stacked_passes(model, "transfer: ablated", harmful, candidates=n_directions, **kw)
        passes += stacked_passes(model, "transfer: added", harmless, candidates=n_directions, **kw)
    return passes


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


def held_out_passes(
    model: LoadedModel,
    template: RefusalTemplate,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    n_generate: int = 4,
    max_new_tokens: int = 24,
    rows_per_pass: int = 64,
    batch_size: int = 16,
) -> list[Pass]:
    """The forward passes ``held_out_effects`` makes, for ``polylens plan``.

    Generation is counted at ``max_new_tokens`` per answer (an upper bound: it stops at the
    template's end of turn).
    """
    h_prompts, n_prompts = template.wrap(harmful), template.wrap(harmless)
    both, kw = [*h_prompts, *n_prompts], dict(candidates=1, rows_per_pass=rows_per_pass)
    passes = [
        *stacked_passes(model, "test: plain", both),
        *stacked_passes(model, "test: ablated", both, **kw),
        *stacked_passes(model, "test: added", n_prompts, **kw),
    ]
    g = min(n_generate, len(h_prompts), len(n_prompts))
    for kind, prompts in (("harmful", h_prompts[:g]), ("harmless", n_prompts[:g])):
        if g:  # plain and edited: two conditions per kind
            passes.append(
                forward_pass(
                    model, f"test: generation ({kind})", prompts, batch_size=batch_size,
                    logits="last", new_tokens=max_new_tokens, repeats=2,
                )
            )  # fmt: skip
    return passes


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
    ablation, KL on harmless, the score judge's refusal rates on every prompt, the phrase
    judge's on the first ``n_generate`` prompts of each condition, and the two judges'
    agreement) and the generated examples, each with its
    ``answer_language`` (``interp.analysis.language_id``; None where it cannot tell).
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
        # The score judge's refusal rate (score > 0) over every test prompt, not only the
        # generated ones.
        "score_refusal_harmful": float((plain[0, :nh] > 0).float().mean()),
        "score_refusal_harmful+ablation": float((abl[0, :nh] > 0).float().mean()),
        "score_refusal_harmless": float((plain[0, nh:] > 0).float().mean()),
        "score_refusal_harmless+addition": float((add[0] > 0).float().mean()),
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
    for e, code in zip(examples, detect_languages([e["answer"] for e in examples])):
        e["answer_language"] = code
    summary["judge_score_agreement"] = sum(agree) / len(agree) if agree else float("nan")
    return summary, examples
