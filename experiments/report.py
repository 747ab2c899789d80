"""``polylens report``: run every registered experiment and write one offline site.

The site is ``<out>/index.html`` (one row per experiment: headline numbers, runtime, a thumbnail
of its first figure, a link to its report, and the config fields its run changed from the
defaults) beside each experiment's result directory and ``<out>/assets/plotly.min.js``, the one
plotly.js every interactive figure of the site loads (``self_contained=True``, ``polylens report
--self-contained``: one copy in each result instead). Every row is read from what the result wrote
(``summary.json``, ``config.yaml``), so an experiment added to the registry appears with no change
here. Key numbers get a label derived from their field name (``WORDS`` spells out abbreviations;
an experiment may declare its own with ``ResultDir.report(..., labels=)``), the name on hover, 3
significant digits and their interval where ``X_ci_low``/``X_ci_high`` companions bound them.

Profiles: the quick profile (the default) applies ``configs/report/<name>.yaml``, a mapping of
config overrides that keeps each experiment to about a minute on 2 CPU cores; ``full=True`` skips
them. An experiment without a profile runs with its defaults. A result already on disk for the same
resolved config is kept, not re-run; one experiment failing is shown in its row and does not stop
the others.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from experiments import get_experiment, registered, resolve_config, run_config
from experiments.base import CONFIG_DIR, ExperimentConfig
from experiments.results import (
    SUMMARY,
    check_result_target,
    display,
    plotly_copy,
    relink_figures,
)
from interp.checks import check_output_dir
from interp.errors import PolylensError
from interp.storage.files import atomic_write_text
from interp.storage.provenance import __version__

log = logging.getLogger(__name__)

PROFILE_DIR = CONFIG_DIR / "report"
"""Quick-profile overrides, one ``<experiment name>.yaml`` each."""
KEY_NUMBERS_SHOWN = 6
"""Key numbers shown in an index row before the rest fold into a details element."""
RESULT_FILES = ("config.yaml", "metrics.json", "report.html", SUMMARY)
"""What a complete result holds (a run that stopped half-way leaves none of it)."""


@dataclass
class Outcome:
    """What this invocation did with one experiment."""

    name: str
    status: str
    """done, skipped (its result exists for the same config), failed, or not run."""
    seconds: float | None = None
    error: str | None = None


def profile_path(name: str) -> Path | None:
    """The quick-profile YAML of ``name``, or None when it has none."""
    path = PROFILE_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def _comparable(config: ExperimentConfig | dict) -> dict:
    """A config as YAML reads it back (tuples become lists), without ``out``: the result's place
    is where it is looked for, not what it computed."""
    values = dataclasses.asdict(config) if isinstance(config, ExperimentConfig) else config
    values = yaml.safe_load(yaml.safe_dump(values, allow_unicode=True))
    values.pop("out", None)
    return values


def existing_result(target: Path, config: ExperimentConfig) -> bool:
    """Whether ``target`` holds a complete result computed with ``config``."""
    result = _read_result(target)
    return result is not None and _comparable(result[1]) == _comparable(config)


def _one_line(error: BaseException) -> str:
    if isinstance(error, PolylensError):
        return str(error)
    where = traceback.extract_tb(error.__traceback__)[-1:] or None
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}{at}"


def run_report(
    out: str | Path = "results",
    *,
    full: bool = False,
    only: Sequence[str] | None = None,
    model: str | None = None,
    model_options: dict | None = None,
    progress: Callable[[str], None] | None = None,
    self_contained: bool = False,
) -> list[Outcome]:
    """Run the experiments (all registered ones, or ``only``), then write ``<out>/index.html``.

    Returns one outcome per registered experiment; experiments left out by ``only`` are
    ``not run`` (their earlier results, if any, still appear on the page). ``progress`` gets one
    line per experiment (default: printed at once). The figures of the results share one
    plotly.js, ``<out>/assets/plotly.min.js``; ``self_contained`` gives each result its own copy
    (a result kept from an earlier run is relinked either way). ``model_options`` sets the
    model fields of every experiment's config (dtype, device, device_map, max_memory,
    offload_folder; ``None`` values are "not given").
    """
    progress = progress or functools.partial(print, flush=True)
    out = check_output_dir(out)
    names = [e.name for e in registered()]
    chosen = list(only) if only else names
    for name in chosen:
        get_experiment(name)  # an unknown name: one line listing the known ones
        check_result_target(name, out)
    overrides = {"out": str(out), "model": model, **(model_options or {})}
    outcomes = {n: Outcome(n, "not run") for n in names}
    for i, name in enumerate(chosen, 1):
        tag = f"[{i}/{len(chosen)}] {name}"
        try:
            config = resolve_config(name, None if full else profile_path(name), overrides)
            if existing_result(out / name, config):
                relink_figures(out / name, self_contained)
                outcomes[name] = Outcome(name, "skipped")
                progress(f"{tag}: skipped (its result exists for this config)")
                continue
            progress(f"{tag}: running")
            start = time.perf_counter()
            with plotly_copy(self_contained):
                run_config(name, config)
        except Exception as e:  # noqa: BLE001 (one experiment failing must not stop the rest)
            outcomes[name] = Outcome(name, "failed", error=_one_line(e))
            log.info("%s failed", name, exc_info=True)  # the traceback, with `polylens -v`
            progress(f"{tag}: failed: {outcomes[name].error}")
            continue
        outcomes[name] = Outcome(name, "done", seconds=time.perf_counter() - start)
        progress(f"{tag}: done in {outcomes[name].seconds:.0f} s")
    write_index(out, list(outcomes.values()), full=full)
    progress(f"site: {out / 'index.html'}")
    return list(outcomes.values())


def _changed_fields(name: str, stored: dict) -> list[str]:
    """The fields of a result's config that differ from the experiment's defaults."""
    try:
        defaults = _comparable(resolve_config(name))
    except PolylensError:
        return []
    changed = []
    for key, value in _comparable(stored).items():
        if key in defaults and defaults[key] != value:
            changed.append(f"{key}: {_short(value)} (default {_short(defaults[key])})")
    return changed


def _short(value: object) -> str:
    if isinstance(value, list) and len(value) > 6:
        return f"{len(value)} items"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return display(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _read_result(target: Path) -> tuple[dict, dict] | None:
    """A complete result's summary and config, or None."""
    if not all((target / f).is_file() for f in RESULT_FILES):
        return None
    try:
        summary = json.loads((target / SUMMARY).read_text(encoding="utf-8"))
        config = yaml.safe_load((target / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return (summary, config) if isinstance(summary, dict) and isinstance(config, dict) else None


STYLE = (
    "body{font-family:sans-serif;max-width:80em;margin:2em auto;line-height:1.4}"
    "table{border-collapse:collapse}td,th{padding:6px 10px;text-align:left;vertical-align:top;"
    "border-bottom:1px solid #ddd}img{border:1px solid #ddd}.small{font-size:85%;color:#444}"
    ".failed{color:#a00}dl{margin:0}dt{font-weight:bold;display:inline}dd{display:inline;margin:0}"
    "dd:after{content:'';display:block}dt[title]{cursor:help}.ci{color:#666}"
)


WORDS = {
    "abs": "absolute",
    "acc": "accuracy",
    "attn": "attention",
    "auroc": "AUROC",
    "avg": "average",
    "ci": "CI",
    "cos": "cosine",
    "diag": "diagonal",
    "en": "English",
    "frac": "fraction",
    "id": "ID",
    "idx": "index",
    "kl": "KL",
    "lm": "LM",
    "lr": "learning rate",
    "max": "max.",
    "min": "min.",
    "mlp": "MLP",
    "n": "number of",
    "num": "number of",
    "offdiag": "off-diagonal",
    "pca": "PCA",
    "pct": "%",
    "prob": "probability",
    "r2": "R²",
    "rel": "relative",
    "sim": "similarity",
    "std": "std.",
    "top3": "top 3",
}
"""How an abbreviation in a metric's field name reads in the index (other words stay as is)."""
INTERVALS = (("_ci_low", "_ci_high"), ("_ci_lo", "_ci_hi"), ("_lower", "_upper"))
"""Suffixes of the companions that bound a metric: ``X_ci_low``/``X_ci_high`` bound ``X``, or
the first measurement named ``X_...`` (``en_peak_ci_low`` bounds ``en_peak_prob``)."""


def label(name: str) -> str:
    """A metric's field name as words: ``en_peak_prob`` -> ``English peak probability``."""
    text = " ".join(WORDS.get(w.lower(), w) for w in name.split("_") if w)
    return text[:1].upper() + text[1:]


def significant(value: object) -> str:
    """A key number to 3 significant digits (integers and large values whole), the rest as is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _measured(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _intervals(numbers: dict) -> dict[str, tuple[str, str]]:
    """Each bounded metric's name -> the names of its low and high companions."""
    found = {}
    for key in numbers:
        for low, high in INTERVALS:
            if not key.endswith(low) or not _measured(numbers[key]):
                continue
            base = key[: -len(low)]
            if not _measured(numbers.get(base + high)):
                continue
            candidates = [base] if _measured(numbers.get(base)) else []
            candidates += [
                k
                for k, v in numbers.items()
                if k.startswith(base + "_")
                and _measured(v)
                and not any(k.endswith(s) for pair in INTERVALS for s in pair)
            ]
            # The one the interval holds, a measurement (float) before a count.
            lo, hi = numbers[key], numbers[base + high]
            candidates.sort(
                key=lambda k: (not lo <= numbers[k] <= hi, not isinstance(numbers[k], float))
            )
            if candidates and candidates[0] not in found:
                found[candidates[0]] = (key, base + high)
    return found


def _key_numbers(numbers: dict, labels: dict | None = None) -> str:
    """The key numbers of an index row: a label (the field name on hover), 3 significant digits
    and the interval where the metric has one. ``labels`` (the experiment's own, optional) take
    precedence over the ones derived from the field names."""
    labels = labels or {}
    intervals = _intervals(numbers)
    companions = {k for pair in intervals.values() for k in pair}
    # Measurements (floats) first, then counts, then settings; the model is shown by the name.
    rank = {float: 0, int: 1}
    ordered = sorted(
        ((k, v) for k, v in numbers.items() if k != "model" and k not in companions),
        key=lambda kv: rank.get(type(kv[1]), 2),
    )
    items = []
    for key, value in ordered:
        raw, shown = key, html.escape(significant(value))
        if key in intervals:
            low, high = intervals[key]
            raw += f" (interval: {low}, {high})"
            shown += (
                f" <span class='ci'>[{html.escape(significant(numbers[low]))}, "
                f"{html.escape(significant(numbers[high]))}]</span>"
            )
        name = html.escape(str(labels.get(key) or label(key)))
        items.append(f'<dt title="{html.escape(raw)}">{name}</dt> <dd>{shown}</dd>')
    shown = "<dl>" + "".join(items[:KEY_NUMBERS_SHOWN]) + "</dl>"
    if len(items) > KEY_NUMBERS_SHOWN:
        rest = "".join(items[KEY_NUMBERS_SHOWN:])
        shown += f"<details><summary>{len(items) - KEY_NUMBERS_SHOWN} more</summary><dl>{rest}"
        shown += "</dl></details>"
    return shown


def _row(outcome: Outcome, out: Path) -> str:
    name = outcome.name
    result = _read_result(out / name)
    status = {"skipped": "kept (same config)", "not run": "earlier run"}.get(
        outcome.status, outcome.status
    )
    if outcome.status == "failed":
        status = f"<span class='failed'>failed: {html.escape(outcome.error or '')}</span>"
        if result is not None:
            status += "<br>(the result below is from an earlier run)"
    if result is None:
        status = status if outcome.status == "failed" else "no result"
        description = html.escape(get_experiment(name).description)
        return f"<tr><td><b>{html.escape(name)}</b><br>{description}</td><td>{status}</td>" + (
            "<td></td>" * 4 + "</tr>"
        )
    summary, config = result
    link = f"{name}/report.html"
    figure = summary.get("figure")
    thumb = (
        f"<a href='{link}'><img src='{name}/{figure}' width='240' alt='{name} key figure'></a>"
        if figure
        else ""
    )
    changed = _changed_fields(name, config)
    profile = "<br>".join(html.escape(c) for c in changed) or "defaults"
    return (
        f"<tr><td><b><a href='{link}'>{html.escape(name)}</a></b><br>"
        f"{html.escape(summary.get('title', ''))}<br>"
        f"<span class='small'>model {html.escape(str(config.get('model', '')))}</span></td>"
        f"<td>{status}</td><td>{thumb}</td>"
        f"<td class='small'>{_key_numbers(summary.get('key_numbers', {}), summary.get('labels'))}"
        "</td>"
        f"<td>{_duration(summary.get('wall_s'))}</td><td class='small'>{profile}</td></tr>"
    )


def write_index(out: Path, outcomes: Sequence[Outcome], *, full: bool) -> Path:
    """Write ``<out>/index.html`` from the results on disk (atomically) and return its path."""
    profile = (
        "full profile: every experiment with its own defaults"
        if full
        else "quick profile: smaller item counts than the defaults, stated per row "
        "(polylens report --full runs the defaults)"
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>polylens report</title>",
        f"<style>{STYLE}</style></head><body><h1>polylens report</h1>",
        f"<p>{html.escape(profile)}. Written {stamp} by polylens {html.escape(__version__)}. "
        "Each row links to the experiment's report; the thumbnail is its first figure; a key "
        "number shows its field name on hover, and its interval in brackets where it has one. "
        "Runtime "
        "is the run's wall time, extraction included (a result kept from an earlier run shows "
        "that run's time).</p>",
        "<table><tr><th>experiment</th><th>this run</th><th>key figure</th><th>key numbers</th>"
        "<th>runtime</th><th>config changed from the defaults</th></tr>",
    ]
    parts += [_row(o, out) for o in outcomes]
    parts.append("</table></body></html>")
    path = out / "index.html"
    atomic_write_text(path, "\n".join(parts))
    return path
