"""A result directory, written atomically.

A run writes into ``<out>/.<name>.partial-<pid>-<random>`` (same parent, so the final rename is
atomic) and ``commit()`` swaps it into ``<out>/<name>``. The previous result stays whole until the
new one is complete; an interrupted run leaves it untouched and never a mixed directory. Leftovers
of a killed run (hidden, never taken for a result) are cleaned by the next run of that experiment.
A full disk while a file of the result is written is one line naming the file (``PolylensError``).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import errno
import functools
import html
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.endings import file_named
from interp.checks import check_output_dir
from interp.errors import PolylensError
from interp.storage.files import atomic_write_bytes, atomic_write_text
from interp.storage.provenance import provenance

# What a result directory holds; a directory with anything else is not replaced.
LAYOUT = frozenset(
    {"config.yaml", "metrics.json", "report.html", "summary.json", "tables", "figures", "probes"}
)
SUMMARY = "summary.json"
"""What ``polylens report`` reads of a result: title, key numbers, first figure, wall time."""

ASSETS = "assets"
"""The folder beside the result directories of a site (``<out>/assets``) with what they share."""
PLOTLY_JS = "plotly.min.js"
SHARED_PLOTLY_SRC = f"../../{ASSETS}/{PLOTLY_JS}"
"""How a figure page (``<out>/<name>/figures/x.html``) loads the site's shared plotly.js."""
PLOTLY_NOTE_ID = "polylens-plotly-missing"

# Whether the results written now carry their own plotly.js (``plotly_copy``).
_self_contained = False
# Result directories opened in this process and not yet committed or discarded.
_OPEN: list[ResultDir] = []
# When the experiment running now began (``run_clock``): a run's wall time includes the
# extraction it does before it opens its ResultDir.
_run_started: float | None = None


@contextlib.contextmanager
def run_clock() -> Iterator[None]:
    """The wall clock of the experiment run inside (its ``summary.json`` reports it)."""
    global _run_started
    _run_started = time.perf_counter()
    try:
        yield
    finally:
        _run_started = None


@contextlib.contextmanager
def plotly_copy(self_contained: bool) -> Iterator[None]:
    """Inside, figures load plotly.js from a copy in their own result (``self_contained``) or
    from the one copy shared by the site's results, ``<out>/assets/plotly.min.js``."""
    global _self_contained
    before, _self_contained = _self_contained, self_contained
    try:
        yield
    finally:
        _self_contained = before


@functools.cache
def _plotly_js() -> bytes:
    """plotly.js (4.8 MB), read from the plotly package once per process."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def _ensure_plotly(path: Path) -> Path:
    """Write plotly.js at ``path`` (atomically) unless that exact file is there already."""
    data = _plotly_js()
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        made = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_bytes(path, data)
        except BaseException:
            if made:  # a folder made for nothing is not left behind
                shutil.rmtree(path.parent, ignore_errors=True)
            raise
    return path


def shared_plotly(site: str | Path) -> Path:
    """The site's one plotly.js, ``<site>/assets/plotly.min.js``, written once."""
    return _ensure_plotly(Path(site) / ASSETS / PLOTLY_JS)


_SCRIPT_SRC = re.compile(r'(<script[^>]*\ssrc=")([^"]*plotly[^"]*\.js)(")')
_NOTE = (
    f"<div id='{PLOTLY_NOTE_ID}' style='font-family:sans-serif;padding:1em;margin:1em;"
    "border:2px solid #a00;color:#a00'>This interactive figure did not load: it needs plotly.js "
    f"from <code>{SHARED_PLOTLY_SRC}</code>, the one copy shared by the results of a polylens "
    f"site (<code>&lt;out&gt;/{ASSETS}/{PLOTLY_JS}</code>). Keep this result directory beside "
    f"that <code>{ASSETS}/</code> folder (copy it along), or rerun the experiment with "
    "<code>polylens run NAME --self-contained</code> to give the result its own copy. The PNG "
    "beside this page shows the same figure.</div>"
)
# Removes the note once plotly.js has loaded (it runs after plotly's script tag).
_NOTE_SCRIPT = (
    f"<script>if (window.Plotly) document.getElementById('{PLOTLY_NOTE_ID}').remove();</script>"
)


def _load_plotly_from(page: str, src: str) -> str:
    """A figure page whose plotly.js script tag loads ``src``."""
    return _SCRIPT_SRC.sub(lambda m: m.group(1) + src + m.group(3), page, count=1)


def _shared_page(page: str) -> str:
    """A figure page that loads the site's plotly.js, with the note shown when it is missing."""
    page = _load_plotly_from(page, SHARED_PLOTLY_SRC)
    if PLOTLY_NOTE_ID not in page:
        page = page.replace("<body>", "<body>" + _NOTE, 1)
        page = page.replace("</body>", _NOTE_SCRIPT + "</body>", 1)
    return page


def relink_figures(result: str | Path, self_contained: bool) -> None:
    """Make a result's figure pages load plotly.js as ``self_contained`` says.

    For a result kept from an earlier run: every state on the way works (the new copy is written
    before the pages point at it, the old one removed after).
    """
    figures = Path(result) / "figures"
    pages = sorted(figures.glob("*.html"))
    if not pages:
        return
    own = figures / PLOTLY_JS
    if self_contained:
        _ensure_plotly(own)
    else:
        shared_plotly(Path(result).parent)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if self_contained:
            new = _load_plotly_from(text, PLOTLY_JS)
        else:
            new = _shared_page(text)
        if new != text:
            atomic_write_text(page, new)
    if not self_contained:
        own.unlink(missing_ok=True)


def check_result_target(name: str, out: str | Path) -> Path:
    """``<out>/<name>``, checked before any work: writable, and absent or a previous result."""
    target = check_output_dir(out, "out directory") / name
    if target.exists() and not target.is_dir():
        raise PolylensError(f"{target} is an existing file; choose another out directory")
    if target.is_dir():
        extra = sorted(p.name for p in target.iterdir() if p.name not in LAYOUT)
        if extra:
            raise PolylensError(
                f"{target} exists and is not a polylens result (it holds {extra[0]!r}); "
                "choose another out directory or move it away"
            )
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(target: Path) -> None:
    """Remove what killed runs left beside ``target``; put back a previous result moved aside."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(partial|old)-(\d+)-[0-9a-f]+$")
    for path in sorted(target.parent.iterdir()):
        match = pattern.match(path.name)
        if not match:
            continue
        pid = int(match.group(2))
        in_use = any(r.path == path for r in _OPEN) if pid == os.getpid() else _alive(pid)
        if in_use:
            continue
        if match.group(1) == "old" and not target.exists():
            # Killed between the two renames of a swap: the previous result is whole; restore it.
            os.rename(path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def discard_uncommitted() -> int:
    """Remove every result directory this process opened and did not commit; returns how many."""
    count = len(_OPEN)
    for result in list(_OPEN):
        result.discard()
    return count


@dataclass
class Figure:
    """A figure of the report: a PNG, an interactive HTML twin and what it shows."""

    name: str
    title: str
    explanation: str


def display(value: object) -> str:
    """A key number as a reader wants it: floats to 4 significant digits, the rest as is."""
    if not isinstance(value, float):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


@dataclass
class Control:
    """A row of the report's controls: what could fake the headline and the number against it."""

    threat: str
    """What could produce the headline without the effect it claims."""
    check: str
    """The control run against it."""
    result: str
    """The number the control gives, in words."""


def _html_table(header: Sequence[str], rows: Iterable[Iterable[object]]) -> str:
    """A header row, then one row per sequence of cells (escaped; numbers as ``display``)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(display(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class ResultDir:
    """Writes one experiment's result directory; ``commit()`` puts it in place."""

    def __init__(self, name: str, config) -> None:
        self.name = name
        self.config = config
        self.target = check_result_target(name, config.out)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(self.target)
        self.path = _sibling(self.target, "partial")
        """Where files are written: the temporary directory until ``commit()``, then the target."""
        # Open before anything is created: a failure from here on leaves nothing behind.
        _OPEN.append(self)
        with self._writing(self.path / "tables"):
            (self.path / "tables").mkdir(parents=True)
            (self.path / "figures").mkdir()
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.controls: list[Control] = []
        self.sections: list[str] = []
        self.started = time.perf_counter() if _run_started is None else _run_started
        self.summary: dict | None = None
        self.self_contained = _self_contained
        """Whether the figures load a plotly.js inside this result (else the site's shared one)."""
        self._plotly_shared = False
        with self._writing(self.path / "config.yaml"):
            (self.path / "config.yaml").write_text(
                yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True),
                encoding="utf-8",
            )

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """A full disk while writing ``path`` is one line naming the file in the result.

        The file named is the one the error names, else ``path``, as it would be in
        ``<out>/<name>`` (the temporary directory is gone by the time the user reads it).
        """
        try:
            yield
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            named = file_named(e)
            where = Path(named) if named else Path(path)
            if where.is_relative_to(self.path):
                where = self.target / where.relative_to(self.path)
            raise PolylensError(
                f"no space left on device while writing {where}; free some space or write elsewhere"
            ) from e

    def commit(self) -> Path:
        """Write ``summary.json``, swap the result into ``<out>/<name>``, drop the previous one."""
        if self.summary is not None:
            summary = self.summary | {"wall_s": round(time.perf_counter() - self.started, 2)}
            with self._writing(self.path / SUMMARY):
                (self.path / SUMMARY).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        if self._plotly_shared:  # the site's one copy, before the result that needs it appears
            with self._writing(self.target.parent / ASSETS / PLOTLY_JS):
                shared_plotly(self.target.parent)
        old = None
        if self.target.exists():
            old = _sibling(self.target, "old")
            os.rename(self.target, old)
        try:
            os.rename(self.path, self.target)
        except BaseException:
            if old is not None and not self.target.exists():
                os.rename(old, self.target)
            raise
        _OPEN.remove(self)
        self.path = self.target
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def discard(self) -> None:
        """Drop an unfinished result: the previous one, if any, stays as it was."""
        if self in _OPEN:
            _OPEN.remove(self)
            shutil.rmtree(self.path, ignore_errors=True)

    def table(self, name: str, rows: Sequence[dict]) -> Path:
        """Write ``tables/<name>.csv`` (one dict per row, same keys)."""
        path = self.path / "tables" / f"{name}.csv"
        with self._writing(path), open(path, "w", newline="", encoding="utf-8") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        return path

    def figure(self, name: str, title: str, explanation: str, mpl_fig, plotly_fig) -> None:
        """Save a matplotlib PNG and a plotly HTML that works offline.

        plotly.js (4.8 MB) is written once per site, as ``<out>/assets/plotly.min.js``, and every
        figure's page loads it relatively (a page moved away from it shows a note saying how to
        get it working). Under ``plotly_copy(True)`` (``--self-contained``) each result has its
        own ``figures/plotly.min.js`` instead.
        """
        import matplotlib.pyplot as plt

        png, page = self.path / "figures" / f"{name}.png", self.path / "figures" / f"{name}.html"
        try:
            with self._writing(png):
                mpl_fig.savefig(png, dpi=120, bbox_inches="tight")
        finally:
            plt.close(mpl_fig)
        with self._writing(page):
            if self.self_contained:
                plotly_fig.write_html(page, include_plotlyjs="directory")
            else:
                self._plotly_shared = True  # written at commit: a failed run leaves no asset
                text = plotly_fig.to_html(include_plotlyjs=SHARED_PLOTLY_SRC, full_html=True)
                page.write_text(_shared_page(text), encoding="utf-8")
        self.figures.append(Figure(name, title, explanation))

    def report_table(self, title: str, explanation: str, rows: Sequence[dict]) -> None:
        """Show ``rows`` (one dict per row, same keys) as a table in ``report.html``.

        For what a reader should see on the page itself (per-language numbers, example
        generations); every table is also linked as CSV when written with ``table``.
        """
        self.sections.append(
            f"<h2>{html.escape(title)}</h2><p>{html.escape(explanation)}</p>"
            + _html_table(list(rows[0]) if rows else [], [row.values() for row in rows])
        )

    def control(self, threat: str, check: str, result: str) -> dict:
        """Add a row to the report's controls section; returns it as a dict for metrics.json."""
        self.controls.append(Control(threat, check, result))
        return dataclasses.asdict(self.controls[-1])

    def metrics(self, metrics: dict) -> None:
        """Write ``metrics.json``, with the provenance of the model the run loaded.

        ``provenance.model`` is the identity ``ExperimentConfig.load_model`` kept: the model's
        name, weights' fingerprint and the dtype it computed in.
        """
        identity = getattr(self.config, "model_identity", None)
        record = {**metrics, "provenance": provenance(identity)}
        with self._writing(self.path / "metrics.json"):
            (self.path / "metrics.json").write_text(
                json.dumps(record, indent=2, ensure_ascii=False)
            )

    def report(self, title: str, intro: str, metrics: dict, labels: dict | None = None) -> Path:
        """Write ``report.html``: the key numbers, then every figure with its explanation.

        The title, the key numbers and the first figure go to ``summary.json`` at ``commit()``,
        with ``labels`` (field name -> how the site's index names it) where the experiment
        declares any; the index derives the others from the field names.
        """
        key_numbers = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        self.summary = {
            "experiment": self.name,
            "title": title,
            "key_numbers": key_numbers,
            "figure": f"figures/{self.figures[0].name}.png" if self.figures else None,
        }
        if labels:
            self.summary["labels"] = dict(labels)
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
            "img{max-width:100%;border:1px solid #ddd}td,th{padding:2px 10px;text-align:left}"
            "</style></head><body>",
            f"<h1>{html.escape(title)}</h1><p>{intro}</p><h2>Key numbers</h2><table>",
        ]
        for key, value in key_numbers.items():
            parts.append(
                f"<tr><th>{html.escape(key)}</th><td>{html.escape(display(value))}</td></tr>"
            )
        parts.append("</table>")
        if self.controls:
            parts.append(
                "<h2>Controls</h2><p>What could fake the headline, and the number that rules it "
                "out.</p>"
                + _html_table(
                    ("could fake it", "control", "result"),
                    [(c.threat, c.check, c.result) for c in self.controls],
                )
            )
        for note in self.notes:
            parts.append(f"<p>{note}</p>")
        parts += self.sections
        for fig in self.figures:
            png = (self.path / "figures" / f"{fig.name}.png").read_bytes()
            parts.append(
                f"<h2>{html.escape(fig.title)}</h2><p>{fig.explanation}</p>"
                f"<img alt='{fig.name}' src='data:image/png;base64,"
                f"{base64.b64encode(png).decode()}'>"
                f"<p><a href='figures/{fig.name}.html'>interactive version</a></p>"
            )
        if self.figures:
            parts.append(
                "<p><small>The interactive versions load plotly.js from "
                f"<code>figures/{PLOTLY_JS}</code> in a self-contained result (<code>polylens run "
                "--self-contained</code>), else from the one copy shared by the results of a "
                f"site, <code>../{ASSETS}/{PLOTLY_JS}</code>: moved away from its site, this "
                f"directory needs that <code>{ASSETS}/</code> folder beside it (or a rerun with "
                "<code>--self-contained</code>) for them; the images above need nothing."
                "</small></p>"
            )
        parts.append(
            "<p>Tables: "
            + ", ".join(
                f"<a href='tables/{p.name}'>{p.name}</a>"
                for p in sorted((self.path / "tables").glob("*.csv"))
            )
            + ". All numbers: <a href='metrics.json'>metrics.json</a>.</p></body></html>"
        )
        path = self.path / "report.html"
        with self._writing(path):
            path.write_text("\n".join(parts), encoding="utf-8")
        return path
