"""Unit tier: the experiment pattern and the translation experiments on a tiny random model."""

import csv
import json
from collections import Counter

import pytest
from tiny import save_tiny

from experiments import get_experiment, register, run_experiment
from experiments.base import CONFIG_DIR, ExperimentConfig
from experiments.cli import main
from experiments.translation_barrier import classify
from interp import PolylensError
from interp.analysis.language_id import detect_languages


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-gemma")))


def test_classification_rule():
    assert classify(True, [False, False]) == "correct"
    assert classify(True, [True]) == "correct"
    assert classify(False, [False, True, False]) == "translation_failure"
    assert classify(False, [False, False, False]) == "task_solving_failure"
    assert classify(False, []) == "task_solving_failure"


def test_registry_refuses_duplicates_and_lists_known():
    get_experiment("latent-language")
    with pytest.raises(ValueError, match="already registered"):
        register("latent-language", ExperimentConfig, "again")(lambda c: None)
    with pytest.raises(
        PolylensError,
        match="unknown experiment .nope.; known: .*knowledge-boundary, .*latent-language",
    ):
        get_experiment("nope")


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_wordz: 3\n")
    with pytest.raises(PolylensError, match="unknown config key 'n_wordz'"):
        run_experiment("latent-language", bad)
    with pytest.raises(PolylensError, match="unknown or uncovered language 'xx'"):
        run_experiment("latent-language", None, {"langs": "en,xx"})
    with pytest.raises(PolylensError, match="lens = 'magic' is not valid: expected one of"):
        run_experiment("latent-language", None, {"lens": "magic"})


def test_latent_language_result_directory(tiny_dir, tmp_path, capsys):
    argv = [
        "run",
        "latent-language",
        "--model",
        tiny_dir,
        "--langs",
        "en,fr,zh",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = tmp_path / "latent-language"
    for name in (
        "config.yaml",
        "metrics.json",
        "report.html",
        "tables/per_pair_layer.csv",
        "figures/answer_language_by_layer.png",
        "figures/answer_language_by_layer.html",
        "figures/language_mass.png",
        "figures/final_accuracy.html",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["collision_policy"] == "dropped" and metrics["demonstrations"] == "per_word"
    assert (out / "figures/control_collisions.png").is_file()
    assert set(metrics["collision_control"]) >= {"without collisions", "with all collisions"}
    assert set(metrics["collisions_per_pair"]["fr-zh"]) == {
        "count",
        "target_en",
        "target_source",
        "en_source",
    }
    assert metrics["en_peak_ci_low"] <= metrics["en_peak_prob"] <= metrics["en_peak_ci_high"]
    assert len(metrics["controls"]) == 3
    assert metrics["n_items"] > 0 and 0 <= metrics["mean_final_accuracy"] <= 1
    for skipped in metrics["skipped_pairs"]:
        assert skipped["reason"] and skipped["usable_words"] < 5
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "interactive version" in html
    assert "<h2>Controls</h2>" in html and "demonstrations drawn per test word" in html
    figure = (out / "figures/language_mass.html").read_text()
    # offline: one plotly.js beside the results, loaded relatively by every figure
    assert 'src="../../assets/plotly.min.js"' in figure and len(figure) < 1_000_000
    assert (out / "figures/../../assets/plotly.min.js").resolve().stat().st_size > 1_000_000
    assert not (out / "figures/plotly.min.js").exists()
    assert "0.07216348499059677" not in html  # key numbers are rounded for reading
    # Same config and seed, same numbers.
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_translation_barrier_rates(tiny_dir, tmp_path):
    path = run_experiment(
        "translation-barrier", None, {"model": tiny_dir, "langs": "en,fr,zh", "out": str(tmp_path)}
    )
    metrics = json.loads((path / "metrics.json").read_text())
    # The rates and the failure share by hand, from the per-item table.
    rows = list(csv.DictReader((path / "tables" / "per_item.csv").open(encoding="utf-8")))
    assert len(rows) == metrics["n_items"] > 0
    outcomes = Counter(r["outcome"] for r in rows)
    for o in ("correct", "translation_failure", "task_solving_failure"):
        assert metrics[f"rate_{o}"] == pytest.approx(outcomes[o] / len(rows)), o
    failed = len(rows) - outcomes["correct"]
    assert metrics["translation_failure_share_of_failures"] == pytest.approx(
        outcomes["translation_failure"] / max(1, failed)
    )
    # A failure is a translation failure exactly when the concept was decoded at some layer.
    for r in rows:
        if r["outcome"] != "correct":
            assert (r["first_decoded_layer"] != "") == (r["outcome"] == "translation_failure")
    assert failed > 0  # the tiny random model fails: the rule above was exercised
    found = detect_languages([r["answer"] for r in rows])  # None is a blank CSV cell
    assert [r["answer_language"] for r in rows] == [code or "" for code in found]
    assert metrics["criterion"] == {
        "top_k": 10,
        "prob_threshold": 0.05,
        "layers": "intermediate (1 .. L-1)",
        "concept_tokens": "any_but_source",
    }
    for key in (
        "translation_failure_share_with_collisions",
        "translation_failure_share_source_counted",
    ):
        assert 0 <= metrics[key] <= 1
    assert len(metrics["controls"]) == 2


def test_no_usable_pair_is_a_clear_error(tiny_dir, tmp_path):
    with pytest.raises(PolylensError, match="no language pair has enough usable words"):
        run_experiment(
            "latent-language",
            None,
            {"model": tiny_dir, "langs": "en,fr", "out": str(tmp_path), "n_demos": 500},
        )


def test_knowledge_boundary_on_a_tiny_model(tiny_dir, tmp_path):
    path = run_experiment(
        "knowledge-boundary",
        CONFIG_DIR / "knowledge-boundary-construction-labels.yaml",
        {"model": tiny_dir, "langs": "en,fr,zh", "out": str(tmp_path)},
    )
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["labels"] == "construction" and metrics["n_items_per_language"] == 200
    # Construction labels are constant within each relation and construction type: the control
    # task's shuffle changes nothing, so the probe has no selectivity at all.
    assert metrics["selectivity"]["peak_selectivity"] == 0.0
    assert (
        metrics["selectivity"]["accuracy_at_peak"]
        == metrics["selectivity"]["control_accuracy_at_peak"]
    )
    assert len(metrics["controls"]) == 3
    assert "<h2>Controls</h2>" in (path / "report.html").read_text()
    assert set(metrics["alignment_best_layer"]) == {
        "identical",
        "mean_shift",
        "projection",
        "centred_projection",
    }
    assert metrics["alignment_best_layer"]["identical"]["gap_closed"] == 0.0
    assert set(metrics["alignment_best_transfer_layer"]) == set(metrics["alignment_best_layer"])
    for name in (
        "auroc_by_layer",
        "transfer_best_layer",
        "transfer_by_layer",
        "transfer_heatmaps",
        "centroids",
    ):
        assert (path / "figures" / f"{name}.png").is_file()
    for name in (
        "probe_by_layer",
        "transfer_best_layer",
        "transfer_matrix_by_layer",
        "alignment",
        "language_offset",
    ):
        assert (path / "tables" / f"{name}.csv").is_file()
    from probes.artifact import load_probe

    best = metrics["best_layer"]
    probe, info = load_probe(path / "probes" / f"fr-layer{best}")
    assert info["layers"] == [best] and info["languages"] == ["fr"]
    assert len(info["dataset_sha256"]) == 64 and info["labels"] == "construction"
    assert probe.weight.shape[0] == 1


def test_knowledge_boundary_with_model_labels(tiny_dir, tmp_path, monkeypatch):
    import zlib

    import pandas as pd

    from interp.model.models import LoadedModel
    from probes import labels

    # A random tiny model knows nothing: let it "know" the facts whose answer hashes even.
    monkeypatch.setattr(LoadedModel, "generate", lambda self, prompts, **kw: [""] * len(prompts))
    monkeypatch.setattr(
        labels, "is_correct", lambda text, answers: zlib.crc32(answers[0].encode()) % 2 == 0
    )
    path = run_experiment(
        "knowledge-boundary", None, {"model": tiny_dir, "langs": "en,fr", "out": str(tmp_path)}
    )
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["labels"] == "model"  # the default
    subset = metrics["answerable_only"]
    assert set(subset["known_rate_per_relation"]) == {
        "capital",
        "continent",
        "currency",
        "language",
    }
    sel = subset["selectivity"]
    assert 0 <= sel["peak_layer"] <= 3 and set(sel["per_language_peak"]) == {"en", "fr"}
    assert 0 <= sel["auroc"]["peak_layer"] <= 3
    assert sel["peak_selectivity"] == pytest.approx(
        sel["accuracy_at_peak"] - sel["control_accuracy_at_peak"]
    )
    for name in ("selectivity_by_layer", "selectivity_by_layer_answerable"):
        assert (path / "figures" / f"{name}.png").is_file()
    table = pd.read_csv(path / "tables" / "selectivity_by_layer.csv")
    assert set(table["items"]) == {"all", "answerable"}
    assert (
        table["selectivity"] - (table["accuracy"] - table["control_accuracy"])
    ).abs().max() < 1e-6
    assert len(metrics["controls"]) == 3
    assert subset["answerable_per_language"] == 100
    assert 10 < subset["known_per_language"]["en"] < 90
    assert set(subset["peaks"]) == {"en", "fr"}
    assert (path / "figures" / "auroc_by_layer_answerable.png").is_file()
    rows = pd.read_csv(path / "tables" / "probe_by_layer.csv")
    assert set(rows["items"]) == {"all", "answerable"}
    assert set(rows["probe"]) == {"logistic", "mass_mean", "logistic_control"}
    assert len(rows[rows["items"] == "answerable"]) == len(rows[rows["items"] == "all"])
