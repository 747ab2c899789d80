"""Unit tier: the report site shares one plotly.js, and its index reads like a table of results.

Built from two fake experiments that write one figure each (no model), so the site takes seconds.
"""

import re
import shutil
from pathlib import Path

import matplotlib
import plotly.graph_objects as go
import pytest

import experiments.base
import experiments.report
from experiments import EXPERIMENTS, Experiment, registered
from experiments.base import CONFIG_DIR, ExperimentConfig, ResultDir
from experiments.cli import main
from experiments.report import label, run_report, significant

matplotlib.use("Agg")

NAMES = ("demo-a", "demo-b")
METRICS = {
    "en_peak_layer": 9,
    "en_peak_prob": 0.10091234,
    "en_peak_ci_low": 0.0812345,
    "en_peak_ci_high": 0.1213456,
    "transfer_drop_ratio_offdiag_to_own": 0.43219876,
}
SRC = re.compile(r'<script[^>]*\ssrc="([^"]*plotly[^"]*)"')


def _fake(name):
    def run(config):
        import matplotlib.pyplot as plt

        out = ResultDir(name, config)
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1, 3, 2])
        out.figure("curve", "A curve", "What it shows.", fig, go.Figure(go.Scatter(y=[1, 3, 2])))
        metrics = {"model": config.model, **METRICS}
        out.metrics(metrics)
        labels = {"transfer_drop_ratio_offdiag_to_own": "Drop, other / own"}
        labels = labels if name == "demo-b" else None
        out.report(f"Demo {name}", "A fake experiment.", metrics, labels)
        return out.commit()

    return run


@pytest.fixture
def demos(tmp_path, monkeypatch):
    """Two registered experiments that write one figure each."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    monkeypatch.setattr(experiments.base, "CONFIG_DIR", configs)
    monkeypatch.setattr(experiments.report, "PROFILE_DIR", configs / "report")
    registered()
    for name in NAMES:
        (configs / f"{name}.yaml").write_text("seed: 0\n")
        monkeypatch.setitem(
            EXPERIMENTS, name, Experiment(name, ExperimentConfig, _fake(name), "a fake")
        )


def _plotly_copies(root: Path) -> list[Path]:
    return sorted(root.rglob("plotly.min.js"))


def _script_targets(result: Path) -> list[Path]:
    """What each figure page's plotly script tag points at, resolved from the page."""
    pages = sorted((result / "figures").glob("*.html"))
    assert pages
    return [(page.parent / SRC.search(page.read_text()).group(1)).resolve() for page in pages]


def test_a_site_holds_one_plotly_shared_by_its_results(demos, tmp_path):
    site = tmp_path / "site"
    run_report(site, only=NAMES, progress=lambda _: 0)
    shared = site / "assets" / "plotly.min.js"
    assert _plotly_copies(site) == [shared]  # was one per result
    for name in NAMES:
        assert _script_targets(site / name) == [shared.resolve()]
    # What the site holds beyond that one copy is small: the quick profile's 11 results,
    # each as large as a fake one here plus their own PNGs, stay far under 15 MB.
    rest = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and p != shared)
    assert rest < 1e6

    # --self-contained: a copy per result, the kept results relinked; and back again.
    assert main(["report", "--out", str(site), "--only", ",".join(NAMES), "--self-contained"]) == 0
    for name in NAMES:
        own = site / name / "figures" / "plotly.min.js"
        assert own.is_file() and _script_targets(site / name) == [own.resolve()]
    run_report(site, only=NAMES, progress=lambda _: 0)
    assert _plotly_copies(site) == [shared]
    for name in NAMES:
        assert _script_targets(site / name) == [shared.resolve()]


def test_a_result_made_alone_works_or_says_how(demos, tmp_path, capsys):
    assert main(["run", "demo-a", "--out", str(tmp_path / "alone")]) == 0
    result = tmp_path / "alone" / "demo-a"
    (target,) = _script_targets(result)
    assert target.is_file() and target == (tmp_path / "alone/assets/plotly.min.js").resolve()

    # Moved away from its assets/ folder: the page says how to get it working, visibly (the
    # note is removed by a script only once plotly.js has loaded), and so does report.html.
    moved = tmp_path / "elsewhere" / "demo-a"
    shutil.copytree(result, moved)
    (target,) = _script_targets(moved)
    assert not target.exists()
    page = (moved / "figures" / "curve.html").read_text()
    note = re.search(r"<div id='polylens-plotly-missing'[^>]*>(.*?)</div>", page).group(1)
    assert "polylens run NAME --self-contained" in note and "assets/" in note
    assert "hidden" not in page.split("polylens-plotly-missing")[1].split(">")[0]
    assert "if (window.Plotly)" in page
    assert "--self-contained" in (moved / "report.html").read_text()

    assert main(["run", "demo-a", "--out", str(tmp_path / "own"), "--self-contained"]) == 0
    own = tmp_path / "own" / "demo-a"
    assert _plotly_copies(tmp_path / "own") == [own / "figures" / "plotly.min.js"]
    assert _script_targets(own) == [(own / "figures" / "plotly.min.js").resolve()]


def test_index_key_numbers_are_labelled_rounded_with_interval_and_raw_name(demos, tmp_path):
    site = tmp_path / "site"
    run_report(site, only=NAMES, progress=lambda _: 0)
    index = (site / "index.html").read_text()
    row_a = index.split(">demo-a</a>")[1].split("</tr>")[0]
    assert (
        '<dt title="en_peak_prob (interval: en_peak_ci_low, en_peak_ci_high)">'
        "English peak probability</dt> <dd>0.101 <span class='ci'>[0.0812, 0.121]</span></dd>"
    ) in row_a
    assert '<dt title="transfer_drop_ratio_offdiag_to_own">' in row_a
    assert "Transfer drop ratio off-diagonal to own</dt> <dd>0.432</dd>" in row_a
    assert "0.1009" not in row_a and "en_peak_ci_low</dt>" not in row_a  # folded into its metric
    assert '<dt title="en_peak_layer">English peak layer</dt> <dd>9</dd>' in row_a
    # An experiment may declare its own label.
    row_b = index.split(">demo-b</a>")[1].split("</tr>")[0]
    assert '<dt title="transfer_drop_ratio_offdiag_to_own">Drop, other / own</dt>' in row_b


def test_labels_and_significant_digits():
    assert label("mean_auroc_best_layer") == "Mean AUROC best layer"
    assert label("n_items") == "Number of items"
    assert label("offset_r2_best_layer_mean") == "Offset R² best layer mean"
    assert significant(0.07216348) == "0.0722" and significant(12345.678) == "12,346"
    assert significant(3) == "3" and significant(True) == "True" and significant("en") == "en"
