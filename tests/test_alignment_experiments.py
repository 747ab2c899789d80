"""Unit tier: the alignment, embedding-geometry and language-neuron experiments on a tiny model."""

import json

import pytest
from tiny import save_tiny

from experiments import run_experiment
from interp import PolylensError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-gemma")))


def test_mid_layer_alignment(tiny_dir, tmp_path):
    overrides = dict(model=tiny_dir, langs="en,fr,ru,zh", n_sentences=6, k=2, out=str(tmp_path))
    overrides["poolings"] = ["mean", "last"]
    path = run_experiment("mid-layer-alignment", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_sentences"] == 6 and metrics["n_layers"] == 4
    assert set(metrics["variants"]) == {"mean/raw", "mean/centred", "last/raw", "last/centred"}
    p1 = metrics["variants"]["mean/centred"]["p1_margin"]
    assert 0 <= p1["different script"]["peak"] <= 1
    assert "same_script" in p1["relatedness_at_peak"]
    for name in ("per_layer_pair", "peaks", "groups", "relatedness"):
        assert (path / "tables" / f"{name}.csv").stat().st_size > 0
    for name in ("retrieval_heatmap", "p1_margin_by_layer_mean_centred"):
        assert (path / "figures" / f"{name}.png").exists()
        assert (path / "figures" / f"{name}.html").exists()
    assert (path / "report.html").exists()


def test_mid_layer_alignment_user_files(tiny_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "en.txt").write_text("Good morning.\nThe cat sleeps.\nI like tea.\n", encoding="utf-8")
    (data / "fr.txt").write_text("Bonjour.\nLe chat dort.\nJ'aime le thé.\n", encoding="utf-8")
    overrides = dict(
        model=tiny_dir,
        langs="en,fr",
        parallel_dir=str(data),
        poolings=["last"],
        k=1,
        out=str(tmp_path / "out"),
    )
    path = run_experiment("mid-layer-alignment", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_sentences"] == 3 and set(metrics["variants"]) == {"last/raw", "last/centred"}
    (data / "fr.txt").write_text("Bonjour.\n", encoding="utf-8")
    with pytest.raises(PolylensError, match="has 1 lines but"):
        run_experiment("mid-layer-alignment", None, overrides)


def test_embedding_geometry(tiny_dir, tmp_path):
    overrides = dict(
        model=tiny_dir,
        min_tokens=3,
        probe_tokens=20,
        neighbour_queries=3,
        neighbours=5,
        chunk=50,
        out=str(tmp_path),
    )
    path = run_experiment("embedding-geometry", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["vocab_size"] == 320
    assert "Latin" in metrics["embedding"]["neighbours_other_script"]
    assert 0 <= metrics["embedding"]["separability_balanced_accuracy"] <= 1
    for name in ("token_scripts", "separability", "neighbour_diversity", "translation_neighbours"):
        assert (path / "tables" / f"{name}.csv").exists()
    assert (path / "figures" / "translation_neighbours.html").exists()


def test_language_neurons(tiny_dir, tmp_path):
    overrides = dict(
        model=tiny_dir,
        langs="en,fr,zh",
        n_train_sentences=6,
        n_eval_sentences=2,
        top_rate=0.05,
        out=str(tmp_path),
    )
    path = run_experiment("language-neurons", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_neurons"] == 3 * 128
    assert metrics["n_selected"] >= 1
    assert set(metrics["neurons_per_language"]) == {"en", "fr", "zh"}
    for name in ("neurons_per_layer", "selected_neurons", "overlap", "ablation"):
        assert (path / "tables" / f"{name}.csv").stat().st_size > 0
    assert (path / "figures" / "ablation_matrix.png").exists()
    with pytest.raises(PolylensError, match="top_rate = 1.5 is not valid"):
        run_experiment("language-neurons", None, dict(overrides, top_rate=1.5))


@pytest.mark.parametrize("name", ["mid-layer-alignment", "embedding-geometry", "language-neurons"])
def test_shipped_configs_resolve(name):
    from experiments import get_experiment
    from experiments.base import CONFIG_DIR, load_config

    cls = get_experiment(name).config_class
    default = load_config(cls, name, None, {})
    quick = load_config(cls, name, CONFIG_DIR / "report" / f"{name}.yaml", {})
    assert quick.model == default.model == "gemma-3-270m"
    assert len(quick.langs) < len(default.langs)
