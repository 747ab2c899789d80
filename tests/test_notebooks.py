"""Notebooks: every one runs top to bottom (integration), and each is committed executed.

`polylens notebooks` regenerates them in place with their outputs (experiments/notebooks.py), so
that a code host shows their figures; the checks below fail on a notebook committed without
outputs, or saved from Jupyter with its timings, or with a figure too large to keep in git.
"""

import base64
import copy
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from experiments.cli import main
from experiments.notebooks import clean_outputs, notebook_paths, strip_volatile

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
MAX_PNG_BYTES = 100_000
REGENERATE = "committed without its outputs or stale: regenerate it with `polylens notebooks`"


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert errors == []


def test_notebooks_exist():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_quickstart.ipynb"]
    assert notebook_paths() == NOTEBOOKS


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_committed_with_outputs(path):
    cells = _code_cells(path)
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: {REGENERATE}"
    assert any(c.outputs for c in cells), f"{path.name}: {REGENERATE}"
    outputs = [o for c in cells for o in c.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    pngs = [
        base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get("data", {})
    ]
    if any("plt." in c.source for c in cells):  # the notebook draws: its figures are stored
        assert pngs, f"{path.name} draws a figure but stores none: {REGENERATE}"
    for png in pngs:
        assert png.startswith(b"\x89PNG") and len(png) < MAX_PNG_BYTES, (path.name, len(png))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_no_volatile_metadata(path):
    """Stored as the command writes it: cleaning it again changes nothing."""
    nb = nbformat.read(path, as_version=4)
    assert set(nb.metadata) <= {"kernelspec"}, f"{path.name}: {sorted(nb.metadata)}"
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        assert "execution" not in cell.metadata, f"{path.name}: timings stored; {REGENERATE}"
    again = copy.deepcopy(nb)
    strip_volatile(again, copy.deepcopy(nb.metadata))
    assert again == nb, f"{path.name}: progress bars or widgets stored; {REGENERATE}"


def test_clean_outputs_keeps_what_a_code_host_shows():
    text = {"output_type": "stream", "name": "stdout", "text": "layer 0\n"}
    bar = [
        {"output_type": "stream", "name": "stderr", "text": "\rextract:   0%|  | 0/6"},
        {"output_type": "stream", "name": "stderr", "text": "\rextract: 100%|##| 6/6"},
        {"output_type": "stream", "name": "stderr", "text": "\n"},
    ]
    warning = {"output_type": "stream", "name": "stderr", "text": "UserWarning: careful\n"}
    widget = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"application/vnd.jupyter.widget-view+json": {}, "text/plain": "HBox()"},
    }
    plotly = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "application/vnd.plotly.v1+json": {"data": []},
            "text/html": "<script>/* plotly.js, megabytes */</script>",
            "image/png": "iVBORw0KGgo=",
        },
    }
    figure = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 504x288 with 1 Axes>"},
    }
    kept = clean_outputs(copy.deepcopy([text, *bar, warning, widget, plotly, figure]))
    assert kept == [
        text,
        warning,
        {**plotly, "data": {"image/png": "iVBORw0KGgo="}},
        figure,
    ]
    assert json.dumps(kept)  # still plain JSON
    # a progress bar dropped between two prints leaves one stdout output, as a rerun stores it
    second = {"output_type": "stream", "name": "stdout", "text": "layer 1\n"}
    kept = clean_outputs(copy.deepcopy([text, bar[0], second]))
    assert kept == [{**text, "text": "layer 0\nlayer 1\n"}]
    assert clean_outputs(copy.deepcopy(kept)) == kept


def test_notebooks_command_names_an_unknown_notebook(capsys):
    assert main(["notebooks", "--only", "99_missing"]) == 2
    err = capsys.readouterr().err
    assert "no notebook named 99_missing" in err and "01_quickstart" in err
