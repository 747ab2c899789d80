"""latent-language: which language is each layer "in" while the model translates a word?

After Wendler et al. 2024 ("Do Llamas Work in English?") and the translation-barrier paper:
few-shot word translation for every source/target pair (and the repetition task), decoded at
every layer with the logit (or tuned) lens. Per layer and pair: the probability of the answer in
the target language, in English and in the source language, and the probability mass on the
concept's forms in every language, with bootstrap 95% intervals over words. Words whose first
tokens collide between target, English and source are dropped by default, and the English curve
is drawn with and without them as a control; demonstrations are drawn per test word by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments import register
from experiments.base import ResultDir, seed_everything
from experiments.translation_task import (
    TaskRun,
    TranslationConfig,
    choices,
    run_task,
    task_workload,
)
from interp import plots
from interp.metrics import bootstrap_mean, curve_peak

NAME = "latent-language"


@register(
    NAME,
    TranslationConfig,
    "layer-wise language of few-shot word translation",
    workload=task_workload,
)
def run(config: TranslationConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    full = run_task(config)
    task = full.main()
    out = ResultDir(NAME, config)
    probs = task.lens.set_logprobs[..., : len(task.set_langs)].exp()  # [item, layer, language]
    roles = task.role_probs()
    layers = task.lens.layers
    correct = task.final_correct()
    items = task.items

    rows, pair_acc = [], {}
    pairs = sorted({(it.src, it.tgt) for it in items})
    for src, tgt in pairs:
        idx = torch.tensor([i for i, it in enumerate(items) if (it.src, it.tgt) == (src, tgt)])
        pair_acc[(src, tgt)] = float(correct[idx].float().mean())
        stats = {k: bootstrap_mean(v[idx], config.bootstrap, config.seed) for k, v in roles.items()}
        for li, layer in enumerate(layers):
            row = {"src": src, "tgt": tgt, "layer": layer, "n_words": len(idx)}
            for role, (mean, lo, hi) in stats.items():
                row |= {
                    f"p_{role}": float(mean[li]),
                    f"p_{role}_lo": float(lo[li]),
                    f"p_{role}_hi": float(hi[li]),
                }
            rows.append(row)
    out.table("per_pair_layer", rows)
    out.table(
        "words",
        [
            {
                "concept": it.concept,
                "src": it.src,
                "tgt": it.tgt,
                "source_word": it.source_word,
                "target_word": it.target_word,
                "control_only": it.control_only,
                "collisions": " ".join(it.collides),
            }
            for it in full.items
        ],
    )

    # Wendler's setting: English is neither the source nor the target.
    focus = _focus(items)
    curves = {k: bootstrap_mean(v[focus], config.bootstrap, config.seed) for k, v in roles.items()}
    fig = plots.lines_with_bands(
        layers,
        {f"{k} language": tuple(t.tolist() for t in v) for k, v in curves.items()},
        title="Answer probability by layer (translation, English neither source nor target)",
        xlabel="layer",
        ylabel="probability (mean, 95% CI over words)",
    )
    out.figure(
        "answer_language_by_layer",
        "Which language is the answer in, layer by layer?",
        "Mean probability, under the lens, of the correct word's first tokens in the target "
        "language, in English and in the source language, over all pairs where English is "
        "neither source nor target. An English bump in the middle layers before the target "
        "takes over is the 'latent English' pattern.",
        *fig,
    )

    mass = probs[focus].mean(0).numpy()  # [layer, language]
    out.figure(
        "language_mass",
        "Probability mass per language and layer",
        "Mass on the concept's forms in each language (summed over its first tokens), "
        "averaged over the same prompts: which language each layer is 'in'.",
        *plots.heatmap(
            mass,
            [str(layer) for layer in layers],
            task.set_langs,
            title="Concept probability mass by language",
            xlabel="language",
            ylabel="layer",
            zlabel="probability",
            fmt=".2f",
        ),
    )

    per_target = []
    for tgt in config.langs:
        sel = torch.tensor([it.tgt == tgt and it.src != tgt and it.src != "en" for it in items])
        if not sel.any():
            continue
        en_curve, tgt_curve = roles["en"][sel].mean(0), roles["target"][sel].mean(0)
        per_target.append(
            {
                "tgt": tgt,
                "n_items": int(sel.sum()),
                "en_peak_layer": layers[int(en_curve.argmax())],
                "en_peak_prob": float(en_curve.max()),
                "target_peak_layer": layers[int(tgt_curve.argmax())],
                "final_accuracy": float(correct[sel].float().mean()),
            }
        )
    out.table("per_target", per_target)
    langs = config.langs
    acc = np.array([[pair_acc.get((s, t), np.nan) for t in langs] for s in langs])
    out.table(
        "final_accuracy", [{"src": s, "tgt": t, "accuracy": a} for (s, t), a in pair_acc.items()]
    )
    out.figure(
        "final_accuracy",
        "Final accuracy per language pair",
        "Share of test words whose top-1 next token (last layer) is a first token of the "
        "target-language form. Diagonal: the repetition task.",
        *plots.heatmap(
            acc,
            langs,
            langs,
            title="Top-1 accuracy",
            xlabel="target",
            ylabel="source",
            zlabel="accuracy",
            vmin=0,
            vmax=1,
        ),
    )

    en_peak = curve_peak(roles["en"][focus], layers, config.bootstrap, config.seed)
    collision_control = _collision_control(out, full, config)
    right = focus & correct
    en_peak_correct = (
        curve_peak(roles["en"][right], layers, config.bootstrap, config.seed)
        if right.any()
        else None
    )
    demo_sets = len({(it.src, it.tgt, it.demos) for it in items})
    controls = [
        out.control(
            "Cognates: where English and source forms share first tokens, p(English) is the "
            "source word copied from the prompt.",
            "English peak without and with the words whose tokens collide (target, English, "
            "source), on the same draw of words; "
            + ("they are dropped." if config.drop_collisions else "they are kept."),
            _peak_text(collision_control),
        ),
        out.control(
            "One fixed set of demonstrations per pair: a pair's curve would partly measure those "
            "few words.",
            f"demonstrations: {config.demonstrations}"
            + (
                " (a seeded draw per test word, never the word itself)."
                if config.demonstrations == "per_word"
                else " (one fixed set per pair; the per_word variant is the default)."
            ),
            f"{demo_sets} distinct demonstration sets over {len(items)} prompts; the other "
            "variant's English peak (same test words) comes from a rerun with the switch flipped.",
        ),
        out.control(
            "An English bump on prompts the model gets wrong would be noise, not a route to the "
            "answer.",
            "English peak among the words translated correctly at the last layer only.",
            "no correct word"
            if en_peak_correct is None
            else f"layer {en_peak_correct['layer']}: {en_peak_correct['value']:.3f} "
            f"[{en_peak_correct['ci_low']:.3f}, {en_peak_correct['ci_high']:.3f}] over "
            f"{en_peak_correct['n']} words",
        ),
    ]
    metrics = {
        "model": config.model,
        "lens": config.lens,
        "words": full.words_source,
        "n_items": len(items),
        "n_pairs": len(pairs),
        "skipped_pairs": task.skipped_pairs,
        "collision_policy": "dropped" if config.drop_collisions else "kept",
        "demonstrations": config.demonstrations,
        "distinct_demonstration_sets": demo_sets,
        "en_peak_layer": en_peak["layer"],
        "en_peak_prob": en_peak["value"],
        "en_peak_ci_low": en_peak["ci_low"],
        "en_peak_ci_high": en_peak["ci_high"],
        "target_prob_last_layer": float(curves["target"][0][-1]),
        "mean_final_accuracy": float(correct.float().mean()),
        "en_peak_correct_only": en_peak_correct,
        "collision_control": collision_control,
        "collisions_per_pair": task.dropped,
        "controls": controls,
        "per_target": per_target,
    }
    out.metrics(metrics)
    intro = __doc__.split("\n\n")[1] + " " + choices(config)
    out.report("Latent language of translation", intro, metrics)
    return out.commit()


def _focus(items) -> torch.Tensor:
    """Wendler's setting: English is neither the source nor the target (all items if none)."""
    non_en = torch.tensor([it.src != "en" and it.tgt != "en" and it.src != it.tgt for it in items])
    return non_en if non_en.any() else torch.ones(len(items), dtype=torch.bool)


COLLISION_SUBSETS = {
    "without collisions": lambda kinds: not kinds,
    "with English-source collisions": lambda kinds: set(kinds) <= {"en_source"},
    "with all collisions": lambda kinds: True,
    "English-source collisions only": lambda kinds: kinds == ("en_source",),
}
"""Item subsets of the collision control, by the collision kinds of each item's concept."""


def _collision_control(out: ResultDir, full: TaskRun, config: TranslationConfig) -> dict:
    """p(English) by layer on the same draw of words, without and with colliding ones."""
    focus = _focus(full.items)
    p_en = full.role_probs()["en"]
    layers = full.lens.layers
    peaks, bands = {}, {}
    for name, keep in COLLISION_SUBSETS.items():
        sel = focus & torch.tensor([keep(it.collides) for it in full.items])
        if not sel.any():
            peaks[name] = None
            continue
        peaks[name] = curve_peak(p_en[sel], layers, config.bootstrap, config.seed)
        mean, lo, hi = bootstrap_mean(p_en[sel], config.bootstrap, config.seed)
        bands[f"{name} (n={int(sel.sum())})"] = (mean.tolist(), lo.tolist(), hi.tolist())
    out.figure(
        "control_collisions",
        "Control: the English curve with and without colliding words",
        "Mean p(English) by layer (95% CI over words), English neither source nor target, on "
        "one draw of words: without any first-token collision (the default), adding the words "
        "whose English and source forms share first tokens (the old policy), adding every "
        "colliding word, and the English-source collisions alone. Where the curves part, "
        "p(English) is the source word copied from the prompt.",
        *plots.lines_with_bands(
            layers,
            bands,
            title="p(English) with and without first-token collisions",
            xlabel="layer",
            ylabel="p(English) (mean, 95% CI over words)",
        ),
    )
    return peaks


def _peak_text(peaks: dict) -> str:
    def one(name: str) -> str:
        p = peaks.get(name)
        if p is None:
            return f"{name}: no words"
        return (
            f"{name}: layer {p['layer']}, {p['value']:.3f} [{p['ci_low']:.3f}, "
            f"{p['ci_high']:.3f}] (n={p['n']})"
        )

    return "; ".join(one(n) for n in ("without collisions", "with English-source collisions"))
