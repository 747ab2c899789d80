"""Unit tier: result directories are written atomically; an interrupted run leaves the old one."""

import os

import pytest
from tiny import save_tiny

from experiments import results
from experiments.base import ExperimentConfig, ResultDir
from experiments.cli import main


def _snapshot(directory):
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _siblings(out, name):
    return sorted(p.name for p in out.iterdir() if p.name != name)


def _result(out, rows):
    result = ResultDir("demo", ExperimentConfig(out=str(out)))
    result.table("rows", rows)
    return result


def test_nothing_visible_until_commit_then_swapped_whole(tmp_path):
    first = _result(tmp_path, [{"a": 1}])
    assert not (tmp_path / "demo").exists()  # the partial directory is hidden beside it
    assert first.commit() == tmp_path / "demo" == first.path
    old = _snapshot(tmp_path / "demo")
    assert set(old) == {"config.yaml", "tables/rows.csv"}

    second = _result(tmp_path, [{"a": 2}])
    assert _snapshot(tmp_path / "demo") == old  # untouched while the new result is written
    second.discard()
    assert _snapshot(tmp_path / "demo") == old and _siblings(tmp_path, "demo") == []

    third = _result(tmp_path, [{"b": 3}])
    third.commit()
    assert (tmp_path / "demo/tables/rows.csv").read_text().splitlines() == ["b", "3"]
    assert _siblings(tmp_path, "demo") == []


def test_stale_leftovers_of_killed_runs_are_cleaned(tmp_path):
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    assert not results._alive(dead)
    _result(tmp_path, [{"a": 1}]).commit()
    (tmp_path / f".demo.partial-{dead}-abcd").mkdir()
    (tmp_path / f".demo.old-{dead}-abcd").mkdir()
    (tmp_path / ".other.partial-1-abcd").mkdir()  # another experiment's: not ours to touch
    _result(tmp_path, [{"a": 2}]).commit()
    assert _siblings(tmp_path, "demo") == [".other.partial-1-abcd"]


def test_a_swap_killed_half_way_restores_the_previous_result(tmp_path):
    _result(tmp_path, [{"a": 1}]).commit()
    old = _snapshot(tmp_path / "demo")
    dead = 2**22 + 12345
    os.rename(tmp_path / "demo", tmp_path / f".demo.old-{dead}-abcd")
    results._clean_stale(tmp_path / "demo")
    assert _snapshot(tmp_path / "demo") == old


def test_a_directory_that_is_not_a_result_is_never_replaced(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "thesis.tex").write_text("mine")
    with pytest.raises(results.PolylensError, match="is not a polylens result"):
        _result(tmp_path, [])
    assert (tmp_path / "demo" / "thesis.tex").read_text() == "mine"
    assert _siblings(tmp_path, "demo") == []


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-gemma")))


@pytest.mark.parametrize(("error", "code"), [(KeyboardInterrupt, 130), (RuntimeError, None)])
def test_interrupted_run_leaves_the_previous_result_whole(
    error, code, tiny_dir, tmp_path, monkeypatch, capsys
):
    argv = ["run", "translation-barrier", "--model", tiny_dir, "--langs", "en,fr,zh"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    target = tmp_path / "translation-barrier"
    before = _snapshot(target)
    assert {"config.yaml", "metrics.json", "report.html", "tables/per_item.csv"} <= set(before)

    # The rerun changes the config and fails after its config and tables were written.
    config = tmp_path / "c.yaml"
    config.write_text("n_words: 3\n")
    real_metrics = ResultDir.metrics

    def fail_after_tables(self, metrics):
        assert (self.path / "config.yaml").is_file() and (
            self.path / "tables/per_item.csv"
        ).is_file()
        raise error("stopped")

    monkeypatch.setattr(ResultDir, "metrics", fail_after_tables)
    if code is None:
        with pytest.raises(error):
            main(argv + ["--config", str(config)])
    else:
        assert main(argv + ["--config", str(config)]) == code
        assert capsys.readouterr().err.splitlines()[-1] == "polylens: interrupted"
    assert _snapshot(target) == before
    # Beside the result: the shared plotly.js of its figures (assets/) and the test's config.
    assert _siblings(tmp_path, "translation-barrier") == ["assets", "c.yaml"]

    # Once it completes, the new result replaces the old one entirely.
    monkeypatch.setattr(ResultDir, "metrics", real_metrics)
    assert main(argv + ["--config", str(config)]) == 0
    assert "n_words: 3" in (target / "config.yaml").read_text()
    assert _snapshot(target)["metrics.json"] != before["metrics.json"]
    assert _siblings(tmp_path, "translation-barrier") == ["assets", "c.yaml"]


def test_key_numbers_are_rounded_for_reading():
    from experiments.results import display

    assert display(0.07216348499059677) == "0.07216"
    assert display(12345.678) == "12,346" and display(3) == "3" and display("en") == "en"
