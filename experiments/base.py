"""What every experiment shares: its config base and its result directory.

A result is a directory: ``config.yaml`` (fully resolved), ``metrics.json``, ``tables/*.csv``,
``figures/*.png`` and ``figures/*.html`` (plotly, self-contained), and ``report.html``.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml

from interp.data import DEFAULT_LANGS
from interp.data.languages import check_langs
from interp.errors import PolylensError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ExperimentConfig:
    """Fields every experiment has."""

    model: str = "gemma-3-270m"
    """Embedded model name, local directory, .gguf file or hub id."""
    langs: list[str] = field(default_factory=lambda: list(DEFAULT_LANGS))
    """ISO 639-1 codes of the languages to study."""
    out: str = "results"
    """Parent directory; the run writes ``<out>/<experiment name>/``."""
    seed: int = 0
    """Seed of every sampling step."""
    batch_size: int = 16
    """Prompts per forward pass."""
    device: str | None = None
    """cuda or cpu (default: cuda when available)."""
    store: str | None = None
    """Activation store directory (default: the polylens cache)."""

    def __post_init__(self) -> None:
        if isinstance(self.langs, str):
            self.langs = self.langs.split(",")
        self.langs = check_langs(list(self.langs))
        if self.batch_size < 1:
            raise PolylensError("batch_size must be at least 1")


def load_config(
    cls: type[ExperimentConfig], name: str, path: str | Path | None, overrides: dict
) -> ExperimentConfig:
    """Defaults from ``configs/<name>.yaml``, then the user's YAML, then overrides."""
    values: dict = {}
    for source in (CONFIG_DIR / f"{name}.yaml", path):
        if source is None:
            continue
        source = Path(source)
        if not source.is_file():
            raise PolylensError(f"config file {source} does not exist")
        values.update(yaml.safe_load(source.read_text()) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PolylensError(
            f"unknown config key {unknown[0]!r} for {name}; known: {', '.join(sorted(known))}"
        )
    return cls(**values)


def seed_everything(seed: int) -> None:
    """Same config and seed, same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Figure:
    """A figure of the report: a PNG, an interactive HTML twin and what it shows."""

    name: str
    title: str
    explanation: str


class ResultDir:
    """Writes one experiment's result directory."""

    def __init__(self, name: str, config: ExperimentConfig) -> None:
        self.name = name
        self.path = Path(config.out) / name
        (self.path / "tables").mkdir(parents=True, exist_ok=True)
        (self.path / "figures").mkdir(parents=True, exist_ok=True)
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        (self.path / "config.yaml").write_text(
            yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True)
        )

    def table(self, name: str, rows: Sequence[dict]) -> Path:
        """Write ``tables/<name>.csv`` (one dict per row, same keys)."""
        path = self.path / "tables" / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        return path

    def figure(self, name: str, title: str, explanation: str, mpl_fig, plotly_fig) -> None:
        """Save a matplotlib PNG and a self-contained plotly HTML (plotly.js inlined)."""
        import matplotlib.pyplot as plt

        mpl_fig.savefig(self.path / "figures" / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(mpl_fig)
        plotly_fig.write_html(self.path / "figures" / f"{name}.html", include_plotlyjs=True)
        self.figures.append(Figure(name, title, explanation))

    def metrics(self, metrics: dict) -> None:
        """Write ``metrics.json``."""
        (self.path / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))

    def report(self, title: str, intro: str, metrics: dict) -> Path:
        """Write ``report.html``: the key numbers, then every figure with its explanation."""
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
            "img{max-width:100%;border:1px solid #ddd}td,th{padding:2px 10px;text-align:left}"
            "</style></head><body>",
            f"<h1>{html.escape(title)}</h1><p>{intro}</p><h2>Key numbers</h2><table>",
        ]
        for key, value in metrics.items():
            if not isinstance(value, (dict, list)):
                parts.append(
                    f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>"
                )
        parts.append("</table>")
        for note in self.notes:
            parts.append(f"<p>{note}</p>")
        for fig in self.figures:
            png = (self.path / "figures" / f"{fig.name}.png").read_bytes()
            parts.append(
                f"<h2>{html.escape(fig.title)}</h2><p>{fig.explanation}</p>"
                f"<img alt='{fig.name}' src='data:image/png;base64,"
                f"{base64.b64encode(png).decode()}'>"
                f"<p><a href='figures/{fig.name}.html'>interactive version</a></p>"
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
        path.write_text("\n".join(parts), encoding="utf-8")
        return path
