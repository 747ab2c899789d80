"""translation-barrier: does a failed translation fail at the task or at the last step?

After the Translation Barrier Hypothesis: for each word and language pair, the outcome is
*correct* (the final top-1 token is the target word), a *translation failure* (the final answer is
wrong, but the right concept, in any language, is decoded at some intermediate layer: among the
lens's top-k tokens or with probability mass above a threshold) or a *task-solving failure* (the
concept is never decoded). Rates per pair, per target language and per source/target script.
Words whose first tokens collide between target, English and source are dropped by default; the
share of translation failures is also given with them, and with the source word counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from experiments import register
from experiments.base import ResultDir, seed_everything
from experiments.fields import Range
from experiments.translation_task import (
    TaskRun,
    TranslationConfig,
    choices,
    run_task,
    task_workload,
)
from interp import plots
from interp.analysis.language_id import detect_languages
from interp.data import LANGUAGES
from interp.metrics import rates as metrics_rates

NAME = "translation-barrier"
OUTCOMES = ("correct", "translation_failure", "task_solving_failure")


@dataclass
class BarrierConfig(TranslationConfig):
    """The translation task plus the decoding criterion."""

    prob_threshold: float = 0.05
    """The concept counts as decoded at a layer when its mass (any language) reaches this."""
    exclude_source: bool = True
    """Do not count the source-language word as decoded: it is in the prompt, so seeing it in an
    intermediate layer may be copying, not translating."""

    _ranges: ClassVar[dict[str, Range]] = {"prob_threshold": Range(0, 1, lo_open=True)}


def classify(final_correct: bool, decoded: Sequence[bool]) -> str:
    """The outcome of one prompt from its final correctness and, per intermediate layer, whether
    the concept was decoded there."""
    if final_correct:
        return "correct"
    return "translation_failure" if any(decoded) else "task_solving_failure"


def decoded_by_layer(task, top_k: int, threshold: float, concept_set: str) -> torch.Tensor:
    """``[item, layer]``: the concept set's tokens are in the top-k or have mass >= threshold."""
    mass = task.lens.set_logprobs[..., task.lens.set_names.index(concept_set)].exp()
    in_top = torch.stack(
        [
            torch.isin(
                task.lens.top_ids[i, :, :top_k], torch.tensor(task.sets[i][concept_set])
            ).any(-1)
            for i in range(len(task.items))
        ]
    )
    return in_top | (mass >= threshold)


def rates(outcomes: list[str]) -> dict[str, float]:
    """Share of each outcome (``interp.metrics.rates`` over ``OUTCOMES``)."""
    return metrics_rates(outcomes, OUTCOMES)


@register(
    NAME,
    BarrierConfig,
    "correct / translation failure / task-solving failure per pair",
    workload=task_workload,
)
def run(config: BarrierConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    full = run_task(config)
    task = full.main()
    out = ResultDir(NAME, config)
    concept_set = "any_but_source" if config.exclude_source else "any"
    outcomes, decoded = _outcomes(task, config, concept_set)
    items = task.items
    # The answer is one token (the last layer's top-1), so its language is a hint, not a verdict.
    answers = [task.model.tokenizer.decode([t]) for t in task.lens.top_ids[:, -1, 0].tolist()]
    out.table(
        "per_item",
        [
            {
                "concept": it.concept,
                "src": it.src,
                "tgt": it.tgt,
                "source_word": it.source_word,
                "target_word": it.target_word,
                "answer": a,
                "answer_language": code,
                "outcome": o,
                "first_decoded_layer": (int(d.nonzero()[0]) + 1) if d.any() else "",
            }
            for it, a, code, o, d in zip(
                items, answers, detect_languages(answers), outcomes, decoded
            )
        ],
    )

    def grouped(key) -> dict:
        groups: dict = {}
        for it, o in zip(items, outcomes):
            groups.setdefault(key(it), []).append(o)
        return {k: rates(v) | {"n": len(v)} for k, v in sorted(groups.items())}

    per_pair = grouped(lambda it: (it.src, it.tgt))
    per_target = grouped(lambda it: it.tgt)
    per_script = grouped(lambda it: (LANGUAGES[it.src].script, LANGUAGES[it.tgt].script))
    out.table("per_pair", [{"src": s, "tgt": t} | r for (s, t), r in per_pair.items()])
    out.table("per_target", [{"tgt": t} | r for t, r in per_target.items()])
    out.table(
        "per_script", [{"src_script": s, "tgt_script": t} | r for (s, t), r in per_script.items()]
    )

    langs = config.langs
    for outcome in OUTCOMES[1:]:
        grid = np.array(
            [[per_pair.get((s, t), {}).get(outcome, np.nan) for t in langs] for s in langs]
        )
        out.figure(
            f"{outcome}_by_pair",
            f"{outcome.replace('_', ' ').capitalize()} rate per pair",
            f"Share of test words per (source, target) pair classified as "
            f"{outcome.replace('_', ' ')}.",
            *plots.heatmap(
                grid,
                langs,
                langs,
                title=outcome.replace("_", " ") + " rate",
                xlabel="target",
                ylabel="source",
                zlabel="rate",
                vmin=0,
                vmax=1,
            ),
        )
    targets = list(per_target)
    out.figure(
        "outcomes_by_target",
        "Outcomes per target language",
        "For every target language (all sources), the share of correct answers, "
        "translation failures and task-solving failures.",
        *plots.stacked_bars(
            targets,
            {o: [per_target[t][o] for t in targets] for o in OUTCOMES},
            title="Outcome shares by target language",
            xlabel="target",
            ylabel="share",
        ),
    )
    scripts = sorted({s for pair in per_script for s in pair})
    grid = np.array(
        [
            [per_script.get((a, b), {}).get("translation_failure", np.nan) for b in scripts]
            for a in scripts
        ]
    )
    out.figure(
        "translation_failure_by_script",
        "Translation failures by script pair",
        "Translation-failure rate grouped by the scripts of source and target.",
        *plots.heatmap(
            grid,
            scripts,
            scripts,
            title="translation failure rate",
            xlabel="target script",
            ylabel="source script",
            zlabel="rate",
            vmin=0,
            vmax=1,
        ),
    )
    overall = rates(outcomes)
    share = _failure_share(outcomes)
    with_collisions = _failure_share(_outcomes(full, config, concept_set)[0])
    other_set = "any" if config.exclude_source else "any_but_source"
    other_share = _failure_share(_outcomes(task, config, other_set)[0])
    counted = "counted" if other_set == "any" else "not counted"
    controls = [
        out.control(
            "Copying: the source word is in the prompt, so decoding it at a middle layer need not "
            "be translation.",
            f"The source-language form {'is not' if config.exclude_source else 'is'} counted as "
            f"decoded; the same share with it {counted} shows how much copying adds.",
            f"translation-failure share of failures {share:.3f}; with the source {counted}: "
            f"{other_share:.3f}",
        ),
        out.control(
            "Cognates and shared tokens: a colliding word is 'decoded' in English or the source "
            "whenever the other is.",
            "Collision policy "
            + ("drop" if config.drop_collisions else "keep")
            + "; the same share on the same draw of words with the colliding ones included.",
            f"{share:.3f} on {len(items)} words; with colliding words {with_collisions:.3f} on "
            f"{len(full.items)} words",
        ),
    ]
    metrics = {
        "model": config.model,
        "lens": config.lens,
        "words": full.words_source,
        "n_items": len(items),
        "criterion": {
            "top_k": config.top_k,
            "prob_threshold": config.prob_threshold,
            "layers": "intermediate (1 .. L-1)",
            "concept_tokens": concept_set,
        },
        "collision_policy": "dropped" if config.drop_collisions else "kept",
        "demonstrations": config.demonstrations,
        "skipped_pairs": task.skipped_pairs,
        **{f"rate_{k}": v for k, v in overall.items()},
        "translation_failure_share_of_failures": share,
        "translation_failure_share_with_collisions": with_collisions,
        f"translation_failure_share_source_{counted.replace(' ', '_')}": other_share,
        "collisions_per_pair": task.dropped,
        "controls": controls,
        "per_target": per_target,
    }
    out.metrics(metrics)
    intro = __doc__.split("\n\n")[1] + " " + choices(config)
    out.report("Translation barrier", intro, metrics)
    return out.commit()


def _outcomes(task: TaskRun, config: BarrierConfig, concept_set: str) -> tuple[list[str], Tensor]:
    """Each item's outcome and ``[item, layer]`` decoded flags at the intermediate layers."""
    correct = task.final_correct().tolist()
    decoded = decoded_by_layer(task, config.top_k, config.prob_threshold, concept_set)[:, 1:-1]
    return [classify(c, d.tolist()) for c, d in zip(correct, decoded)], decoded


def _failure_share(outcomes: list[str]) -> float:
    """Translation failures among all failures (0 when nothing failed)."""
    failures = [o for o in outcomes if o != "correct"]
    return failures.count("translation_failure") / max(1, len(failures))
