"""``polylens notebooks``: execute the notebooks in ``notebooks/`` and commit them with outputs.

On a code host a notebook shows only what is stored in it, so the notebooks are committed
executed, figures included. ``polylens notebooks`` (or ``--only 01,03``) runs each one top to
bottom with nbclient on the ``python3`` kernel (the one ``tests/test_notebooks.py`` uses), in a
temporary working directory, and writes it back in place, atomically, with its outputs:

* figures are PNGs at 72 dpi (a setup cell, run before the notebook's first cell and not
  stored in it, sets matplotlib's figure dpi), a few tens of KB each;
* volatile parts are left out so that a rerun changes little: no execution timings in the
  cell metadata, the notebook metadata as committed (no ``language_info``), no progress bars
  (stderr lines redrawn with a carriage return), no Jupyter widget outputs, and plotly's
  HTML/JavaScript bundles (only a PNG of such a figure stays, where the kernel made one).

A notebook that raises stops the command (exit 2) and leaves that file as it was.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from interp.errors import PolylensError
from interp.storage.files import atomic_write_text

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "python3"
DPI = 72
"""Figure resolution of the stored PNGs: a 7 x 4 inch figure is 504 x 288 pixels."""

SETUP = f"""\
%matplotlib inline
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
import matplotlib
matplotlib.rcParams.update({{"figure.dpi": {DPI}, "savefig.dpi": {DPI}}})
"""
"""Run in the kernel before the notebook's first cell, without taking an execution count."""

DROPPED_MIME = ("application/vnd.jupyter.widget-view+json", "application/vnd.plotly.v1+json")
"""Interactive outputs a code host cannot show; an output left with only its text repr goes."""
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled")


def notebook_paths(only: Sequence[str] | None = None, directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks in ``directory``, sorted; ``only`` keeps those whose name starts with one of
    its entries (``"01"``, ``"03_interventions"``, ``"03_interventions.ipynb"``)."""
    paths = sorted(directory.glob("*.ipynb"))
    if not only:
        return paths
    picked = [p for p in paths if any(p.name.startswith(o) for o in only)]
    unknown = [o for o in only if not any(p.name.startswith(o) for p in paths)]
    if unknown:
        names = ", ".join(p.stem for p in paths)
        raise PolylensError(f"no notebook named {', '.join(unknown)} (there are: {names})")
    return picked


def _merge_streams(outputs: list) -> list:
    """Consecutive stream outputs to the same stream as one (the kernel sends them in pieces)."""
    merged: list = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (
            output.get("output_type") == "stream"
            and last is not None
            and last.get("output_type") == "stream"
            and last.get("name") == output.get("name")
        ):
            last["text"] = "".join(last["text"]) + "".join(output["text"])
        else:
            merged.append(output)
    return merged


def _without_progress_bars(text: str) -> str:
    """``text`` (stderr) without the lines a progress bar redraws with carriage returns."""
    lines = [line for line in text.split("\n") if "\r" not in line]
    return "\n".join(lines).strip("\n") + "\n" if any(lines) else ""


def clean_outputs(outputs: list) -> list:
    """``outputs`` without progress bars, widgets and plotly's HTML/JavaScript bundles."""
    kept = []
    for output in _merge_streams(outputs):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            output["text"] = _without_progress_bars("".join(output["text"]))
            if not output["text"]:
                continue
        data = output.get("data")
        if data is not None:
            interactive = any(k in DROPPED_MIME for k in data) or "plotly" in str(
                data.get("text/html", "")
            )
            if interactive:
                data = {k: v for k, v in data.items() if k.startswith("image/")}
                if not data:  # nothing static to show (a widget, a plotly figure without kaleido)
                    continue
                output["data"] = data
        kept.append(output)
    # A dropped progress bar may leave two pieces of the same stream side by side.
    return _merge_streams(kept)


def strip_volatile(nb, metadata: dict) -> None:
    """Make ``nb`` (executed) reproducible: committed metadata, no timings, cleaned outputs."""
    nb.metadata = metadata
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = clean_outputs(cell.outputs)


def execute(path: Path, timeout: int = 1200) -> str:
    """Execute the notebook at ``path`` and return it as text, outputs kept, volatile parts not.

    Raises ``PolylensError`` naming the cell when one fails.
    """
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as e:  # the notebook tooling is in the test extras
        raise PolylensError(
            f"`polylens notebooks` needs nbclient, nbformat and ipykernel ({e}): "
            "pip install -e '.[test]'"
        ) from e

    nb = nbformat.read(path, as_version=4)
    metadata = copy.deepcopy(nb.metadata)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix="polylens-nb-") as cwd:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=KERNEL,
            record_timing=False,
            resources={"metadata": {"path": cwd}},
        )
        try:
            # a fixed hash seed: set and dict orders that depend on it print the same each time
            with client.setup_kernel(env={**os.environ, "PYTHONHASHSEED": "0"}):
                # silent: no outputs, no execution count, nothing stored in the notebook
                reply = client.wait_for_reply(client.kc.execute(SETUP, silent=True))
                if reply is None or reply["content"]["status"] != "ok":
                    raise PolylensError(f"{path.name}: the setup cell failed: {reply}")
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
        except CellExecutionError as e:
            raise PolylensError(f"{path.name} failed:\n{e}") from e
    strip_volatile(nb, metadata)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def regenerate(only: Sequence[str] | None = None, timeout: int = 1200) -> list[Path]:
    """Execute the chosen notebooks and write each back in place (atomically); returns them."""
    paths = notebook_paths(only)
    for path in paths:
        start = time.perf_counter()
        print(f"{path.name}: running", file=sys.stderr, flush=True)
        text = execute(path, timeout)
        atomic_write_text(path, text)
        print(
            f"{path.name}: {len(text.encode()) / 1024:.0f} KB written "
            f"in {time.perf_counter() - start:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    return paths


def _cmd_notebooks(args: argparse.Namespace) -> None:
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only else None
    regenerate(only, args.timeout)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``notebooks`` command on the main parser."""
    p = sub.add_parser(
        "notebooks", help="execute notebooks/*.ipynb and store them with their outputs"
    )
    p.add_argument(
        "--only", default=None, help="comma-separated notebook names or prefixes (e.g. 01,03)"
    )
    p.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default: 1200)")
    p.set_defaults(func=_cmd_notebooks)


if __name__ == "__main__":  # python -m experiments.notebooks [--only ...]
    parser = argparse.ArgumentParser(prog="python -m experiments.notebooks")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["notebooks", *sys.argv[1:]])
    args.func(args)
