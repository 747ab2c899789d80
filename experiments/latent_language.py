"""latent-language: which language is each layer "in" while the model translates a word?

After Wendler et al. 2024 ("Do Llamas Work in English?") and the translation-barrier paper:
few-shot word translation for every source/target pair (and the repetition task), decoded at
every layer with the logit (or tuned) lens. Per layer and pair: the probability of the answer in
the target language, in English and in the source language, and the probability mass on the
concept's forms in every language, with bootstrap 95% intervals over words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments import register
from experiments.base import ResultDir, seed_everything
from experiments.translation_task import TranslationConfig, run_task
from interp import plots
from interp.metrics import bootstrap_mean

NAME = "latent-language"


@register(NAME, TranslationConfig, "layer-wise language of few-shot word translation")
def run(config: TranslationConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    task = run_task(config)
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

    # Wendler's setting: English is neither the source nor the target.
    non_en = torch.tensor([it.src != "en" and it.tgt != "en" and it.src != it.tgt for it in items])
    focus = non_en if non_en.any() else torch.ones(len(items), dtype=torch.bool)
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

    en_mean = curves["en"][0]
    metrics = {
        "model": config.model,
        "lens": config.lens,
        "n_items": len(items),
        "n_pairs": len(pairs),
        "skipped_pairs": task.skipped_pairs,
        "collision_policy": "dropped" if config.drop_collisions else "kept",
        "dropped_for_collisions": task.dropped,
        "en_peak_layer": layers[int(en_mean.argmax())],
        "en_peak_prob": float(en_mean.max()),
        "target_prob_last_layer": float(curves["target"][0][-1]),
        "mean_final_accuracy": float(correct.float().mean()),
        "per_target": per_target,
    }
    out.metrics(metrics)
    out.report("Latent language of translation", __doc__.split("\n\n")[1], metrics)
    return out.commit()
