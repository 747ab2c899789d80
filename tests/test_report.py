"""Unit tier: ``polylens report`` on a tiny random model (profiles, resume, failures, the index)."""

import json
import shutil
import time

import pytest
import yaml
from tiny import save_tiny

import experiments.base
import experiments.report
import experiments.translation_task
from experiments import EXPERIMENTS, Experiment, registered
from experiments.base import CONFIG_DIR, ExperimentConfig, ResultDir
from experiments.cli import main
from experiments.report import PROFILE_DIR, profile_path, run_report
from interp import PolylensError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-gemma")))


def _broken(config):
    raise RuntimeError("the broken experiment broke")


@pytest.fixture
def with_broken(tmp_path, monkeypatch):
    """A registered experiment that fails, with defaults of its own and no profile."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "broken.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(experiments.base, "CONFIG_DIR", configs)
    monkeypatch.setattr(experiments.report, "PROFILE_DIR", configs / "report")
    registered()  # fill the registry first, so the fake is its last entry
    monkeypatch.setitem(
        EXPERIMENTS, "broken", Experiment("broken", ExperimentConfig, _broken, "always fails")
    )


def test_every_profile_is_a_valid_override_of_a_registered_experiment():
    names = {e.name for e in registered()}
    for path in PROFILE_DIR.glob("*.yaml"):
        assert path.stem in names, path
        experiments.resolve_config(path.stem, path)  # unknown keys or bad values raise
    for name in ("latent-language", "translation-barrier", "knowledge-boundary"):
        assert profile_path(name) is not None


EXTRACTION_S = 1.0
"""What the slowed extraction below sleeps, before the experiment opens its result directory."""


@pytest.fixture
def timed_run(monkeypatch):
    """The extraction sleeps EXTRACTION_S; when it started and when each result was committed."""
    times = {"extract": [], "commit": []}
    real_extract, real_commit = experiments.translation_task.extract, ResultDir.commit

    def slow_extract(*args, **kwargs):
        times["extract"].append(time.perf_counter())
        time.sleep(EXTRACTION_S)
        return real_extract(*args, **kwargs)

    def commit(self):
        times["commit"].append(time.perf_counter())
        return real_commit(self)

    monkeypatch.setattr(experiments.translation_task, "extract", slow_extract)
    monkeypatch.setattr(ResultDir, "commit", commit)
    return times


def test_report_runs_resumes_and_reports_failures(
    tiny_dir, tmp_path, with_broken, capsys, timed_run
):
    site = tmp_path / "site"
    argv = ["report", "--out", str(site), "--model", tiny_dir]
    assert main([*argv, "--only", "latent-language,broken"]) == 1
    printed = capsys.readouterr()
    assert "[1/2] latent-language: running" in printed.out
    assert "[1/2] latent-language: done in" in printed.out
    assert "[2/2] broken: failed: RuntimeError: the broken experiment broke" in printed.out
    assert "1 experiment(s) failed: broken" in printed.err

    result = site / "latent-language"
    summary = json.loads((result / "summary.json").read_text())
    metrics = json.loads((result / "metrics.json").read_text())
    assert summary["title"] == "Latent language of translation"
    assert summary["key_numbers"] == {
        k: v for k, v in metrics.items() if not isinstance(v, (dict, list))
    }
    assert (result / summary["figure"]).is_file()
    # The wall time counts the extraction, which runs before the result directory is opened:
    # at least from the extraction's start (and its sleep) to the commit (rounded to 0.01 s).
    (started,), (committed,) = timed_run["extract"], timed_run["commit"]
    assert committed - started > EXTRACTION_S
    assert summary["wall_s"] >= round(committed - started, 2) - 0.01
    config = yaml.safe_load((result / "config.yaml").read_text())
    profile = yaml.safe_load(profile_path("latent-language").read_text())
    assert {k: config[k] for k in profile} == profile  # the quick profile was applied

    # One plotly.js for the whole site, which the figure pages load.
    assert sorted(site.rglob("plotly.min.js")) == [site / "assets" / "plotly.min.js"]
    page = result / summary["figure"].replace(".png", ".html")
    assert 'src="../../assets/plotly.min.js"' in page.read_text()

    index = (site / "index.html").read_text()
    assert "href='latent-language/report.html'" in index
    assert f"src='latent-language/{summary['figure']}'" in index
    assert f"n_words: {profile['n_words']} (default 10)" in index and "12 items" in index
    assert "failed: RuntimeError: the broken experiment broke" in index
    for other in registered():  # every registered experiment has a row, run or not
        assert f"<b>{other.name}</b>" in index or f">{other.name}</a>" in index

    # Same resolved config: kept; another config on disk: run again.
    stamp = (result / "report.html").stat().st_mtime_ns
    assert main([*argv, "--only", "latent-language"]) == 0
    assert "latent-language: skipped" in capsys.readouterr().out
    assert (result / "report.html").stat().st_mtime_ns == stamp
    config["n_words"] = 3
    (result / "config.yaml").write_text(yaml.safe_dump(config))
    assert main([*argv, "--only", "latent-language"]) == 0
    assert "latent-language: done in" in capsys.readouterr().out
    assert yaml.safe_load((result / "config.yaml").read_text())["n_words"] == profile["n_words"]


def test_report_checks_names_before_running(tmp_path):
    with pytest.raises(PolylensError, match="unknown experiment 'nope'"):
        run_report(tmp_path, only=["nope"])
    assert not (tmp_path / "index.html").exists()
