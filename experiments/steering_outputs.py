"""What language-steering writes: its tables, figures, controls and metrics.

``experiments.language_steering`` generates and scores; this module turns its per-pair summary
rows, answers and confusion rows into the result directory's files.
"""

from __future__ import annotations

import math

import numpy as np

from experiments.base import ResultDir
from interp import plots

SHOWN = ("success", "meaning", "fluency", "repetition", "lpr")
"""The summary columns the report's tables show (every column: tables/settings.csv)."""
LABELS = {
    "none": "unsteered",
    "native": "asked in the target (unsteered)",
    "vector": "vector (best)",
    "neurons": "neurons (best)",
    "prompt": "prompt",
    "prompt+vector": "prompt + vector",
    "random": "random control",
    "unrelated": "unrelated control",
}


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(kept) / len(kept) if kept else None


def _of(rows: list[dict], arm: str) -> dict | None:
    return next((r for r in rows if r["arm"] == arm), None)


def chosen(sweep, pair) -> dict[str, dict | None]:
    """A pair's rows by arm: the unsteered, the best of each edit, the prompt, the controls."""
    rows = sweep.rows[pair]
    extra = {arm: _of(rows, arm) for arm in ("prompt+vector", "random", "unrelated")}
    return {**sweep.best[pair], **{k: v for k, v in extra.items() if "vector" in sweep.best[pair]}}


def _brief(row: dict | None) -> dict | None:
    if row is None:
        return None
    keys = ("layer", "coeff", "label", "n", "success", "success_low", "success_high")
    return {k: row[k] for k in (*keys, "meaning", "fluency", "repetition", "lpr")}


def write_tables(out: ResultDir, config, sweep, layers: list[int], confusion: list[dict]):
    """Every CSV, the report's tables and the figures."""
    out.table("settings", [r for pair in config.pairs for r in sweep.rows[pair]])
    best_rows = [
        {"source": s, "target": t, "arm": arm} | (_brief(row) or {})
        for s, t in config.pairs
        for arm, row in chosen(sweep, (s, t)).items()
    ]
    out.table("best", best_rows)
    out.table("answers", sweep.answers)
    out.table("confusion", confusion)
    out.report_table(
        "Best setting per pair and arm",
        "success: share of answers lingua identifies as the target language; meaning: cosine of "
        "the answer's and the unsteered answer's mean residual at the middle layer; fluency: "
        "mean log-probability per token of the answer after the target-language version of its "
        "prompt, unedited model; repetition: seq-rep-4; lpr: LCB's line-level pass rate for the "
        "target. 'asked in the target': the model's own answers to the target-language prompts. "
        f"Best: the highest success within {config.tolerance:g} nats per token of their fluency "
        f"and {config.repetition_tolerance:g} of their repetition (seq-rep-4 over tokens), with "
        "some success. "
        "Controls at the best vector layer and coefficient. Intervals: tables/best.csv.",
        [
            {"pair": f"{r['source']}>{r['target']}", "arm": LABELS.get(r["arm"], r["arm"])}
            | {"layer": r.get("layer"), "coeff": r.get("coeff")}
            | {k: r.get(k) for k in SHOWN}
            for r in best_rows
        ],
    )
    out.report_table(
        "Language confusion",
        "Line-level pass rate (LPR), word-level pass rate (WPR) and their harmonic mean (LCPR) "
        "after the Language Confusion Benchmark, with 95% intervals in tables/confusion.csv. "
        "Monolingual: prompts in a language, answers expected in it; cross-lingual: a prompt in "
        "one language asking for an answer in another ('Answer in X.'). A steered row adds the "
        "pair's best vector; lpr_change is its LPR minus the plain row's.",
        [
            {k: r.get(k) for k in ("condition", "prompt_lang", "asked_lang", "edit")}
            | {k: r.get(k) for k in ("n_scored", "lpr", "wpr", "lcpr", "lpr_change")}
            for r in confusion
        ],
    )
    _examples(out, config, sweep)
    _figures(out, config, sweep, layers, confusion)


def _examples(out: ResultDir, config, sweep) -> None:
    rows = []
    for s, t in config.pairs:
        for arm, best in chosen(sweep, (s, t)).items():
            if best is None or arm in ("random", "unrelated"):
                continue
            key = (arm, best["layer"], best["coeff"])
            mine = [
                a
                for a in sweep.answers
                if (a["source"], a["target"]) == (s, t)
                and (a["arm"], a["layer"], a["coeff"]) == key
            ]
            rows += [
                {"pair": f"{s}>{t}", "setting": LABELS.get(arm, arm), "prompt": a["prompt"]}
                | {"answer": a["answer"], "answer language": a["answer_language"]}
                for a in mine[: config.n_examples]
            ]
    if rows:
        out.report_table(
            "Example answers",
            f"The answers to the first {config.n_examples} prompts of each pair under each arm's "
            "best setting (all of them: tables/answers.csv); answer language: lingua's (blank: "
            "cannot tell).",
            rows,
        )


def _band(rows: list[dict]) -> tuple[list[float], list[float], list[float]]:
    return tuple(
        [math.nan if r[k] is None else r[k] for r in rows]
        for k in ("success", "success_low", "success_high")
    )


def _figures(out: ResultDir, config, sweep, layers: list[int], confusion: list[dict]) -> None:
    for s, t in config.pairs:
        rows, best = sweep.rows[(s, t)], sweep.best[(s, t)]
        slug = f"{s}_{t}"
        if "vector" in config.arms:
            series = {}
            for c in config.coeffs:
                at = [
                    next(r for r in rows if (r["arm"], r["layer"], r["coeff"]) == ("vector", x, c))
                    for x in layers
                ]
                series[f"vector x{c:g}"] = _band(at)
            for arm in ("none", "native", "neurons", "prompt"):
                if best.get(arm) is not None:
                    flat = _band([best[arm]] * len(layers))
                    series[LABELS[arm]] = flat
            out.figure(
                f"success_by_layer_{slug}",
                f"Success by layer, {s} > {t}",
                f"Share of answers to {s} prompts in {t}, with the {s}>{t} vector added at each "
                "layer (one line per coefficient; band: 95% bootstrap interval over prompts). "
                "Flat lines: the arms with no layer (the unsteered answers, the answers to the "
                f"{t} prompts, the best neuron setting, the instruction).",
                *plots.lines_with_bands(
                    layers, series, title=f"{s} > {t}", xlabel="layer", ylabel="success"
                ),
            )
        points = [r for r in rows if r["fluency"] is not None]
        if points:
            out.figure(
                f"tradeoff_{slug}",
                f"Success against fluency, {s} > {t}",
                "Each setting's mean success against its mean fluency (log-probability per token "
                f"of the answer after the {t} prompt, unedited model). Up and to the right is "
                "better; the native point is the model asked in the target language; L: the "
                "vector's layer, x: its coefficient, N: the neurons' coefficient.",
                *plots.labelled_scatter(
                    np.array([[r["fluency"], r["success"]] for r in points]),
                    [_short(r) for r in points],
                    title=f"{s} > {t}",
                    xlabel="fluency (nats per token)",
                    ylabel="success",
                ),
            )
    _matrices(out, config, sweep)
    steered = [r for r in confusion if r["edit"] != "none"]
    if steered:
        categories = [
            f"mono {r['asked_lang']} (+{r['edit'].split()[1]})"
            if r["condition"] == "monolingual"
            else f"{r['prompt_lang']} asks {r['asked_lang']} (+vector)"
            for r in steered
        ]
        plain = [_plain_of(confusion, r) for r in steered]
        out.figure(
            "confusion",
            "Line-level pass rate, plain and steered at the best layer",
            "LCB's line-level pass rate (share of scored answers whose every line is in the asked "
            "language) of plain answers and of the same prompts with the pair's best vector "
            "added (its source and target in brackets); monolingual (mono) and cross-lingual "
            "prompts ('en asks fr': English prompts asking for French); bars: 95% intervals.",
            *plots.bars_with_intervals(
                categories,
                {"plain": _rates(plain), "steered": _rates(steered)},
                title="Language confusion",
                xlabel="condition",
                ylabel="LPR",
            ),
        )


def _plain_of(confusion: list[dict], row: dict) -> dict:
    keys = ("condition", "prompt_lang", "asked_lang")
    return next(r for r in confusion if r["edit"] == "none" and all(r[k] == row[k] for k in keys))


def _rates(rows: list[dict]):
    return tuple(
        [math.nan if r[k] is None else r[k] for r in rows] for k in ("lpr", "lpr_low", "lpr_high")
    )


def _short(row: dict) -> str:
    if row["arm"] == "vector":
        return f"L{row['layer']} x{row['coeff']:g}"
    if row["arm"] == "neurons":
        return f"N x{row['coeff']:g}"
    if row["arm"] == "native":
        return "native"
    return LABELS.get(row["arm"], row["arm"])


def _matrices(out: ResultDir, config, sweep) -> None:
    sources, targets = config.sources, config.targets
    for arm in ("vector", "neurons", "prompt"):
        if arm not in config.arms:
            continue
        grid = np.full((len(sources), len(targets)), np.nan)
        layer = np.full_like(grid, np.nan)
        for (s, t), best in sweep.best.items():
            if best.get(arm) is not None:
                grid[sources.index(s), targets.index(t)] = best[arm]["success"]
                if arm == "vector":
                    layer[sources.index(s), targets.index(t)] = best[arm]["layer"]
        out.figure(
            f"best_success_{arm}",
            f"Success at the best setting per pair ({LABELS[arm]})",
            "Share of answers in the target language (column) to prompts in the source language "
            "(row), at the arm's best setting; blank: the same language, or no setting with "
            "some success within the fluency and repetition bounds.",
            *plots.heatmap(
                grid, sources, targets, title=f"Success ({LABELS[arm]})", xlabel="target",
                ylabel="source", zlabel="success", vmin=0, vmax=1,
            ),
        )  # fmt: skip
        if arm == "vector":
            out.figure(
                "best_layer_vector",
                "Best layer per pair (vector)",
                "The layer of each pair's best vector setting: where adding the language "
                "difference turns the answer's language most while staying fluent.",
                *plots.heatmap(
                    layer, sources, targets, title="Best layer", xlabel="target",
                    ylabel="source", zlabel="layer", fmt=".0f",
                ),
            )  # fmt: skip


def controls(out: ResultDir, config, sweep) -> list[dict]:
    """The report's controls: a random direction, an unrelated language's vector, fluency."""
    if "vector" not in config.arms:
        return []
    picked = [chosen(sweep, pair) for pair in config.pairs]

    def success(arm: str) -> str:
        parts = [
            f"{s}>{t} {c[arm]['success']:.2f}"
            for (s, t), c in zip(config.pairs, picked)
            if c.get(arm) is not None
        ]
        return ", ".join(parts) or "no pair has a best vector setting"

    found = [
        out.control(
            "Any push of this size, not the language direction, changes the answer's language.",
            "A random direction of the same norm, added at each pair's best layer and coefficient.",
            f"success, best vector: {success('vector')}; random: {success('random')}.",
        ),
        out.control(
            "The vector only moves away from the source language, not towards the target.",
            "The vector towards an unrelated language (config field unrelated), at the target "
            "vector's norm, best layer and coefficient; success still counts the target.",
            f"success: {success('unrelated')} ("
            + ", ".join(
                f"{s}>{t}: {c['unrelated']['label']}"
                for (s, t), c in zip(config.pairs, picked)
                if c.get("unrelated") is not None
            )
            + ").",
        ),
    ]
    fluency = [
        (c["native"]["fluency"], c["vector"]["fluency"])
        for c in picked
        if c.get("vector") is not None and c["native"]["fluency"] is not None
    ]
    if fluency:
        drop = _mean([b - a for a, b in fluency])
        found.append(
            out.control(
                "A broken model whose garbled output lingua happens to call the target language.",
                "Fluency of the best vector setting's answers under the unedited model against "
                "the model's own answers to the target-language prompts, both read after those "
                f"prompts (the best setting stays within {config.tolerance:g} nats per token); "
                "answers are in tables/answers.csv.",
                f"mean fluency change {drop:+.2f} nats per token over {len(fluency)} pair(s).",
            )
        )
    return found


def metrics(config, sweep, layers, confusion, parallel_source, prompts_source, n_neurons):
    """``metrics.json``: key numbers (means over pairs), then per pair and the confusion rows."""
    picked = {f"{s}>{t}": chosen(sweep, (s, t)) for s, t in config.pairs}

    def over_pairs(arm: str, key: str = "success") -> float | None:
        return _mean([c[arm][key] for c in picked.values() if c.get(arm) is not None])

    plain = [r for r in confusion if r["edit"] == "none"]
    steered = [r for r in confusion if r["edit"] != "none"]
    drifting = [r for r in steered if r["drifts"]]
    return {
        "model": config.model,
        "prompts": prompts_source,
        "parallel": parallel_source,
        "n_prompts": config.n_prompts,
        "n_pairs": len(config.pairs),
        "success_unsteered": over_pairs("none"),
        "success_native": over_pairs("native"),
        "success_vector": over_pairs("vector"),
        "success_neurons": over_pairs("neurons"),
        "success_prompt": over_pairs("prompt"),
        "success_prompt_and_vector": over_pairs("prompt+vector"),
        "success_random_control": over_pairs("random"),
        "success_unrelated_control": over_pairs("unrelated"),
        "fluency_unsteered": over_pairs("none", "fluency"),
        "fluency_native": over_pairs("native", "fluency"),
        "fluency_vector": over_pairs("vector", "fluency"),
        "meaning_vector": over_pairs("vector", "meaning"),
        "monolingual_lpr": _mean([r["lpr"] for r in plain if r["condition"] == "monolingual"]),
        "cross_lingual_lpr": _mean([r["lpr"] for r in plain if r["condition"] == "cross-lingual"]),
        "drifting_cases": len(drifting),
        "drifting_cases_steering_helps": sum(
            r["lpr_change"] is not None and r["lpr_change"] > 0 for r in drifting
        ),
        "mean_lpr_change_where_drifting": _mean([r["lpr_change"] for r in drifting]),
        "layers": layers,
        "coeffs": config.coeffs,
        "neuron_coeffs": config.neuron_coeffs if "neurons" in config.arms else None,
        "neurons_per_target": n_neurons,
        "best_layer_vector": {
            p: c["vector"]["layer"] if c.get("vector") else None for p, c in picked.items()
        },
        "per_pair": {p: {arm: _brief(row) for arm, row in c.items()} for p, c in picked.items()},
        "confusion": confusion,
    }
