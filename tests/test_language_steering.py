"""Unit tier: the language-steering experiment end to end on a tiny random model."""

import csv
import html
import json

import pytest
from tiny import save_tiny

from experiments import run_experiment
from experiments.steering_pairs import wrap
from interp import PolylensError
from interp.analysis.refusal_behaviour import answer_fluency
from interp.analysis.steering_sweep import Setting, generate_each
from interp.data import load
from interp.model.models import load_model

OVERRIDES = {
    "langs": "en,fr,zh",
    "sources": ["en"],
    "targets": ["fr", "zh"],
    "n_prompts": 4,
    "layers": [1, 3],
    "coeffs": [4.0, 16.0],
    "neuron_coeffs": [2.0],
    "max_new_tokens": 5,
    "n_parallel": 6,
    "top_rate": 0.05,
    "n_boot": 20,
    "rows_per_pass": 16,
}


def _csv(path):
    return list(csv.DictReader(path.open(encoding="utf-8")))


def _number(text):
    return None if text == "" else float(text)


def test_experiment_end_to_end_on_a_tiny_model(tmp_path):
    model_dir = str(save_tiny("llama", tmp_path / "tiny"))
    settings = {"model": model_dir, "store": str(tmp_path / "store"), "out": str(tmp_path / "o")}
    out = run_experiment("language-steering", None, OVERRIDES | settings)
    for name in (
        "metrics.json",
        "report.html",
        "tables/settings.csv",
        "tables/best.csv",
        "tables/answers.csv",
        "tables/confusion.csv",
        "figures/success_by_layer_en_fr.png",
        "figures/tradeoff_en_zh.html",
        "figures/best_success_vector.png",
        "figures/best_success_neurons.png",
        "figures/best_success_prompt.png",
        "figures/best_layer_vector.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_pairs"] == 2 and metrics["layers"] == [1, 3]
    settings_rows = _csv(out / "tables/settings.csv")
    answers = _csv(out / "tables/answers.csv")
    # Per pair: unsteered, native (asked in the target), 2 layers x 2 coefficients, 1 neuron
    # setting, the prompt; then the controls at the best vector setting (random, unrelated,
    # prompt + vector).
    for target, unrelated in (("fr", "zh"), ("zh", "fr")):
        mine = [r for r in settings_rows if r["target"] == target]
        arms = [r["arm"] for r in mine]
        assert arms[:8] == ["none", "native"] + ["vector"] * 4 + ["neurons", "prompt"]
        best = metrics["per_pair"][f"en>{target}"]
        if best["vector"] is not None:
            assert arms[8:] == ["random", "unrelated", "prompt+vector"]
            assert best["unrelated"]["label"] == unrelated
            assert (best["random"]["layer"], best["random"]["coeff"]) == (
                best["vector"]["layer"],
                best["vector"]["coeff"],
            )
        # Each setting's success is the mean of its answers' (4 prompts each).
        for row in mine:
            key = (row["arm"], row["layer"], row["coeff"])
            got = [
                float(a["success"])
                for a in answers
                if a["target"] == target and (a["arm"], a["layer"], a["coeff"]) == key
            ]
            assert len(got) == 4 and float(row["success"]) == pytest.approx(sum(got) / 4)
            assert float(row["success_low"]) <= float(row["success"]) <= float(row["success_high"])
        # The best vector setting is the most successful within the fluency tolerance of the
        # model's own answers to the target-language prompts.
        native = next(r for r in mine if r["arm"] == "native")
        allowed = [
            r
            for r in mine
            if r["arm"] == "vector"
            and r["fluency"]
            and float(r["fluency"]) >= float(native["fluency"]) - 1.0
            and float(r["repetition"]) <= float(native["repetition"]) + 0.3
            and float(r["success"]) > 0
        ]
        if best["vector"] is not None:
            assert best["vector"]["success"] == max(float(r["success"]) for r in allowed)
    # Key numbers are means over the pairs of the per-pair rows.
    per_pair = metrics["per_pair"].values()
    assert metrics["success_prompt"] == pytest.approx(
        sum(p["prompt"]["success"] for p in per_pair) / 2
    )
    assert metrics["success_unsteered"] == pytest.approx(
        sum(p["none"]["success"] for p in per_pair) / 2
    )
    # An answer's success is whether its language is the target.
    for a in answers:
        assert float(a["success"]) == float(a["answer_language"] == a["target"])
    # Fluency reads an answer after the target-language version of its prompt (not the source
    # prompt it was generated from), with the unedited model.
    model = load_model(model_dir)
    french = {r.id: r for r in load("freeform", ["fr"])}
    scored = [a for a in answers if a["target"] == "fr" and a["arm"] == "vector" and a["answer"]]
    for a in scored[:3]:
        asked = wrap(model, [french[a["prompt_id"]]], "plain")
        (expected,) = answer_fluency(model, asked, [a["answer"]])
        assert float(a["fluency"]) == pytest.approx(expected, abs=1e-4)
    # The native answers are the model's plain answers to the same prompts asked in French.
    rows = [a for a in answers if a["target"] == "fr" and a["arm"] == "native"]
    asked = wrap(model, [french[a["prompt_id"]] for a in rows], "plain")
    again = generate_each(model, asked, [Setting("none")], max_new_tokens=5).texts[0]
    native = [a["answer"] for a in rows]
    assert native == again
    # Confusion: plain monolingual (en, fr, zh) and cross-lingual rows, steered where a best
    # vector setting exists, each steered row carrying its plain twin's LPR.
    confusion = _csv(out / "tables/confusion.csv")
    plain = [r for r in confusion if r["edit"] == "none"]
    assert [(r["condition"], r["prompt_lang"], r["asked_lang"]) for r in plain] == [
        ("monolingual", "en", "en"),
        ("monolingual", "fr", "fr"),
        ("monolingual", "zh", "zh"),
        ("cross-lingual", "en", "fr"),
        ("cross-lingual", "en", "zh"),
    ]
    for r in confusion:
        if r["edit"] != "none":
            twin = next(
                p
                for p in plain
                if (p["condition"], p["asked_lang"]) == (r["condition"], r["asked_lang"])
            )
            assert _number(r["plain_lpr"]) == _number(twin["lpr"])
    assert metrics["drifting_cases"] == sum(r["drifts"] == "True" for r in confusion)
    page = (out / "report.html").read_text()
    assert "<h2>Controls</h2>" in page and "Example answers" in page
    shown = [a for a in answers if a["arm"] == "prompt" and a["target"] == "fr"][:2]
    assert all(html.escape(a["answer"]) in page for a in shown)
    assert len(metrics["controls"]) >= 2


def test_config_checks(tmp_path):
    with pytest.raises(PolylensError, match="targets: 'sw' is not in langs"):
        run_experiment("language-steering", None, {"langs": "en,fr,zh", "targets": ["sw"]})
    with pytest.raises(PolylensError, match="no .source, target. pair"):
        run_experiment("language-steering", None, {"sources": ["en"], "targets": ["en"]})
    with pytest.raises(PolylensError, match="needs a third language"):
        run_experiment(
            "language-steering", None, {"langs": "en,fr", "sources": ["en"], "targets": ["fr"]}
        )
    prompt_only = {"langs": "en,fr", "sources": ["en"], "targets": ["fr"], "arms": ["prompt"]}
    from experiments import resolve_config

    assert resolve_config("language-steering", None, prompt_only).pairs == [("en", "fr")]


def test_each_language_is_answered_unsteered_once(tmp_path, monkeypatch):
    """zh is a target of en before it is a source: its plain answers serve both (not generated
    a second time in zh's sweep), and the plan counts exactly the generations made."""
    import experiments.steering_pairs as pairs
    from experiments import resolve_config
    from experiments.plan import make_plan

    unsteered = []
    real = pairs.sw.generate_stacked

    def recording(model, prompts, settings, **kw):
        unsteered.extend(p for s in settings if s.arm == "none" for p in prompts)
        return real(model, prompts, settings, **kw)

    monkeypatch.setattr(pairs.sw, "generate_stacked", recording)
    model_dir = str(save_tiny("llama", tmp_path / "tiny"))
    fields = OVERRIDES | {"sources": ["en", "zh"], "targets": ["en", "zh", "fr"], "n_prompts": 2}
    fields |= {"model": model_dir, "out": str(tmp_path / "o"), "store": str(tmp_path / "s")}
    config = resolve_config("language-steering", None, None, fields)
    run_experiment("language-steering", None, fields)
    assert len(unsteered) == len(set(unsteered)) == 3 * 2  # en, zh, fr: 2 prompts each
    passes = make_plan("language-steering", config, timed=False).estimate.passes
    rows = {}
    for p in passes:
        rows[p["pass"]] = rows.get(p["pass"], 0) + p["sequences"] * p["repeats"]
    grid = 2 * 2 + 1  # 2 layers x 2 coefficients, 1 neuron setting
    # en: unsteered + grid x (zh, fr); zh: grid x (en, fr) only; fr: its plain answers.
    assert rows["sweep (en)"] == 2 * (1 + 2 * grid) and rows["sweep (zh)"] == 2 * 2 * grid
    assert rows["plain (zh)"] == rows["plain (fr)"] == 2 and "plain (en)" not in rows
