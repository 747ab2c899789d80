"""Unit tier: the benchmarks run end to end on a tiny model (their timings are not asserted)."""

import json
import statistics

import pytest
from tiny import save_tiny

from interp.bench import bench_extract, bench_lens
from interp.timing import interleaved
from probes.bench import bench_probes


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("llama", tmp_path_factory.mktemp("tiny-bench")))


def test_interleaved_runs_every_method_each_repeat():
    calls = []
    timings = interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, cuda=False
    )
    assert calls == ["a", "b"] * 3
    assert [len(v) for v in timings.times.values()] == [3, 3]


def test_bench_extract_report(tiny_dir):
    result = bench_extract(tiny_dir, n_prompts=12, repeats=1, batch_size=4)
    assert set(result["ratios"]) == {"b/a", "c/b", "d/b"}
    assert result["n_prompts"] == 12 and result["layers"] == 4


def test_bench_lens_report(tiny_dir):
    result = bench_lens(tiny_dir, n_prompts=12, repeats=1)
    assert set(result["median_s"]) == {"polylens", "transformer_lens"}
    assert result["vocab"] == 320


def test_bench_probes_report(tiny_dir):
    result = bench_probes(tiny_dir, n_per_class=10, folds=2, langs=("en", "fr"), repeats=2)
    assert set(result["median_s"]) == {"polylens", "sklearn"}
    assert all(len(times) == 2 for times in result["all_s"].values())
    # Both sides fit the same strictly convex problem (L2 logistic, C = 1) on the same folds:
    # their test predictions agree unless an item lies within solver tolerance of the boundary.
    assert result["max_accuracy_difference_points"] == 0


def test_bench_interventions_report(tiny_dir):
    from interp.bench import bench_interventions

    result = bench_interventions(tiny_dir, n_prompts=8, repeats=3, batch_size=4)
    assert set(result["median_s"]) == {"plain", "ablated"} and result["hooks"] == 9
    times = result["all_s"]
    assert all(len(v) == 3 for v in times.values())
    assert result["median_s"] == {k: statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(times["ablated"]) / statistics.median(times["plain"])
    assert result["ratio ablated/plain"] == pytest.approx(ratio)


def test_bench_interventions_cli(tiny_dir, tmp_path, capsys):
    from experiments.cli import main

    out = tmp_path / "b.json"
    argv = ["bench", "interventions", "--model", tiny_dir, "--n-prompts", "4", "--repeats", "1"]
    assert main([*argv, "--batch-size", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["hooks"] == 9
