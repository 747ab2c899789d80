"""Figures, each as a matplotlib figure (static PNG) and a plotly figure (interactive HTML).

Every builder draws text in all the scripts of polylens's languages (``use_fonts``) and passes
the text it draws through ``display_text``. The plotly twins need neither: browsers choose fonts
and shape text themselves.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is assumed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from matplotlib import font_manager, ft2font  # noqa: E402

Band = tuple[Sequence[float], Sequence[float], Sequence[float]]
"""(mean, lower, upper) per x."""

FALLBACK_FAMILIES = (
    "Noto Sans Arabic",
    "Noto Sans Devanagari",
    "Noto Sans Thai",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
)
"""Font families drawn from, glyph by glyph, for what the first family lacks.

matplotlib's default (DejaVu Sans) draws Latin, Cyrillic and Arabic; these add Devanagari, Thai,
Han, kana and Hangul (each Noto Sans CJK face covers all three; the first one present is used).
Installed by the packages of ``FONT_PACKAGES``; a family installed on the system counts too.
"""

FONT_PACKAGES = (
    "fontpkg_noto_sans_arabic",
    "fontpkg_noto_sans_devanagari",
    "fontpkg_noto_sans_thai",
    "noto_cjk_sans_otc",
)
"""Python packages (dependencies of polylens) whose package data are the fallback fonts."""

# matplotlib >= 3.11 lays text out with libraqm (HarfBuzz shaping, bidirectional reordering).
LAYS_OUT_TEXT = hasattr(ft2font, "__libraqm_version__")
_ARABIC_SCRIPT = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc]")


@functools.cache
def _register_package_fonts() -> tuple[str, ...]:
    """Add the font files of ``FONT_PACKAGES`` to matplotlib's font manager (once a process)."""
    added = []
    for package in FONT_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue  # not installed: a family of the same name on the system may stand in
        for folder in spec.submodule_search_locations:
            for path in sorted(Path(folder).rglob("*")):
                if path.suffix.lower() in {".ttf", ".otf", ".ttc"}:
                    font_manager.fontManager.addfont(path)
                    added.append(str(path))
    return tuple(added)


@functools.cache
def _fallbacks() -> tuple[str, ...]:
    """The ``FALLBACK_FAMILIES`` matplotlib knows, the packaged fonts registered first."""
    _register_package_fonts()
    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    return tuple(family for family in FALLBACK_FAMILIES if family in installed)


def use_fonts() -> list[str]:
    """Make matplotlib draw the scripts of all polylens languages; returns the fallbacks in use.

    Registers the packaged fonts and appends the ``FALLBACK_FAMILIES`` found to
    ``rcParams["font.family"]`` (after the families already there, so the look of Latin text is
    unchanged). Idempotent and cheap: every builder here calls it, so a reset of ``rcParams``
    between figures does not lose the fallbacks.
    """
    fallbacks = list(_fallbacks())
    families = plt.rcParams["font.family"]
    families = [families] if isinstance(families, str) else list(families)
    plt.rcParams["font.family"] = [f for f in families if f not in fallbacks] + fallbacks
    return fallbacks


def shape_rtl(text: str) -> str:
    """Arabic-script ``text`` joined into its presentation forms, in left-to-right visual order.

    For a renderer that draws characters one by one from left to right (matplotlib before 3.11).
    """
    from arabic_reshaper import reshape
    from bidi import get_display

    return get_display(reshape(text))


def display_text(text: str) -> str:
    """``text`` as matplotlib must be given it to draw it right.

    matplotlib >= 3.11 shapes text and orders right-to-left runs itself (libraqm), so ``text`` is
    returned unchanged: shaping it here as well would reverse it twice. Older matplotlib draws
    characters unjoined from left to right, so text with Arabic script goes through
    ``shape_rtl``. (Devanagari conjuncts and Thai marks need libraqm: matplotlib >= 3.11.)
    """
    if LAYS_OUT_TEXT or not _ARABIC_SCRIPT.search(text):
        return text
    return shape_rtl(text)


def _shown(value):
    """``display_text`` of a string; anything else (a number on an axis) as it is."""
    return display_text(value) if isinstance(value, str) else value


def _all_shown(values) -> list:
    return [_shown(v) for v in values]


def _titles(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set(title=_shown(title), xlabel=_shown(xlabel), ylabel=_shown(ylabel))


use_fonts()


def lines_with_bands(
    x: Sequence[float],
    series: Mapping[str, Band],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
):
    """One line per series with its shaded interval."""
    use_fonts()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pfig = go.Figure()
    palette = plt.cm.tab10 if len(series) <= 10 else plt.cm.tab20  # one colour per series
    for i, (name, (mean, lo, hi)) in enumerate(series.items()):
        color = palette(i % palette.N)
        ax.plot(x, mean, marker="o", ms=3, label=_shown(name), color=color)
        ax.fill_between(x, lo, hi, alpha=0.2, color=color)
        rgb = ",".join(str(int(c * 255)) for c in color[:3])
        pfig.add_trace(
            go.Scatter(
                x=list(x) + list(x)[::-1],
                y=list(hi) + list(lo)[::-1],
                fill="toself",
                fillcolor=f"rgba({rgb},0.2)",
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
            )
        )
        pfig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(mean),
                name=name,
                mode="lines+markers",
                line=dict(color=f"rgb({rgb})"),
            )
        )
    _titles(ax, title, xlabel, ylabel)
    ax.set_xticks(list(x))
    ax.grid(alpha=0.3)
    ax.legend()
    pfig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white")
    return fig, pfig


def heatmap(
    values: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    zlabel: str,
    fmt: str = ".2f",
    vmin: float | None = None,
    vmax: float | None = None,
):
    """A labelled heatmap; NaN cells (no data) are left blank."""
    use_fonts()
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * len(cols) + 2), max(3.5, 0.45 * len(rows) + 1.5)))
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(cols)), _all_shown(cols))
    ax.set_yticks(range(len(rows)), _all_shown(rows))
    _titles(ax, title, xlabel, ylabel)
    if values.size <= 400:
        for (r, c), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(
                    c,
                    r,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < np.nanmean(values) else "black",
                )
    fig.colorbar(im, ax=ax, label=_shown(zlabel))
    pfig = go.Figure(
        _plotly_heatmap(
            values,
            rows,
            cols,
            zlabel,
            vmin,
            vmax,
            texttemplate="%{z:" + fmt + "}" if values.size <= 400 else None,
        )
    )
    _heatmap_layout(pfig, title, xlabel, ylabel)
    return fig, pfig


def _heatmap_layout(pfig: go.Figure, title: str, xlabel: str, ylabel: str, **layout) -> None:
    # First row at the top, as in the matplotlib twin.
    pfig.update_layout(
        title=title,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        yaxis_autorange="reversed",
        template="plotly_white",
        **layout,
    )


def _plotly_heatmap(values, rows, cols, zlabel, vmin, vmax, **options) -> go.Heatmap:
    return go.Heatmap(
        z=values,
        x=list(cols),
        y=list(rows),
        colorscale="Viridis",
        zmin=vmin,
        zmax=vmax,
        colorbar=dict(title=zlabel),
        **options,
    )


def stacked_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
):
    """Bars per category, stacked by series (e.g. outcome rates summing to 1)."""
    use_fonts()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(categories) + 2), 4.5))
    bottom = np.zeros(len(categories))
    pfig = go.Figure()
    for name, vals in series.items():
        ax.bar(_all_shown(categories), vals, bottom=bottom, label=_shown(name))
        bottom += np.asarray(vals, dtype=float)
        pfig.add_trace(go.Bar(x=list(categories), y=list(vals), name=name))
    _titles(ax, title, xlabel, ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: the bars reach the top
    pfig.update_layout(
        barmode="stack",
        title=title,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        template="plotly_white",
    )
    return fig, pfig


def heatmaps_by_layer(
    values: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    layers: Sequence[int],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    zlabel: str,
    vmin: float | None = None,
    vmax: float | None = None,
    active: int | None = None,
):
    """One heatmap per layer: small multiples (static) and a layer slider (interactive).

    ``active`` is the position in ``layers`` the slider opens at (default: the last layer).
    """
    use_fonts()
    values = np.asarray(values, dtype=float)
    active = len(layers) - 1 if active is None else active
    ncols = min(5, len(layers))
    nrows = -(-len(layers) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.6 * ncols, 2.5 * nrows + 0.8), squeeze=False, sharex=True
    )
    for ax in axes.flat[len(layers) :]:
        ax.axis("off")
    for ax, layer, panel in zip(axes.flat, layers, values):
        im = ax.imshow(panel, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xticks(range(len(cols)), _all_shown(cols), fontsize=6, rotation=90)
        ax.set_yticks(range(len(rows)), _all_shown(rows), fontsize=6)
    fig.suptitle(display_text(f"{title} ({ylabel} x {xlabel})"))
    fig.colorbar(im, ax=axes, label=_shown(zlabel), shrink=0.6)
    pfig = go.Figure(
        [
            _plotly_heatmap(
                panel,
                rows,
                cols,
                zlabel,
                vmin,
                vmax,
                visible=i == active,
                name=f"layer {layer}",
            )
            for i, (layer, panel) in enumerate(zip(layers, values))
        ]
    )
    steps = [
        dict(
            label=str(layer),
            method="update",
            args=[{"visible": [j == i for j in range(len(layers))]}],
        )
        for i, layer in enumerate(layers)
    ]
    slider = dict(active=active, currentvalue=dict(prefix="layer "), steps=steps)
    _heatmap_layout(pfig, title, xlabel, ylabel, sliders=[slider])
    return fig, pfig


def labelled_scatter(
    points: np.ndarray,
    labels: Sequence[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
):
    """2-D points, each annotated with its label."""
    use_fonts()
    points = np.asarray(points, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(points[:, 0], points[:, 1])
    for (px, py), label in zip(points, labels):
        ax.annotate(_shown(label), (px, py), textcoords="offset points", xytext=(4, 4))
    _titles(ax, title, xlabel, ylabel)
    ax.grid(alpha=0.3)
    pfig = go.Figure(
        go.Scatter(
            x=points[:, 0],
            y=points[:, 1],
            text=list(labels),
            mode="markers+text",
            textposition="top center",
        )
    )
    pfig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white")
    return fig, pfig


def bars_with_intervals(
    categories: Sequence[str],
    series: Mapping[str, Band],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
):
    """Grouped bars per category, one per series, each with its (lower, upper) error bar."""
    use_fonts()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(categories) + 2), 4.5))
    pfig = go.Figure()
    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    for i, (name, (mean, lo, hi)) in enumerate(series.items()):
        mean, lo, hi = (np.asarray(v, dtype=float) for v in (mean, lo, hi))
        err = np.stack([mean - lo, hi - mean])
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            mean,
            width,
            yerr=err,
            capsize=3,
            label=_shown(name),
        )
        pfig.add_trace(
            go.Bar(
                x=list(categories),
                y=list(mean),
                name=name,
                error_y=dict(type="data", symmetric=False, array=list(hi - mean),
                             arrayminus=list(mean - lo)),
            )
        )  # fmt: skip
    ax.set_xticks(x, _all_shown(categories))
    ax.axhline(0, color="black", lw=0.8)
    _titles(ax, title, xlabel, ylabel)
    ax.legend()
    pfig.update_layout(
        barmode="group", title=title, xaxis_title=xlabel, yaxis_title=ylabel,
        template="plotly_white",
    )  # fmt: skip
    return fig, pfig
