"""Unit tier: figures draw every script of polylens's languages, with no glyph missing.

matplotlib warns "Glyph N (...) missing from font(s) ..." and draws a box where no font of its
fallback list has a character; these tests render a word of each language and fail on that
warning, and check the detector on a figure drawn with DejaVu Sans alone.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib import font_manager

from interp import plots
from interp.data import load

LANGS = ("en", "fr", "de", "es", "ru", "zh", "ja", "ko", "ar", "hi", "sw", "th")
# What a sample word of each language must contain, so that every script is drawn: accented
# Latin, Cyrillic, Han, kana with kanji, Hangul, Arabic, a Devanagari vowel sign drawn before its
# consonant, Thai.
SCRIPT = {
    "en": "[a-z]",
    "fr": "[àâçéèêëîïôùûü]",
    "de": "[äöüß]",
    "es": "[áéíñóú]",
    "ru": "[а-я]",
    "zh": "[\u4e00-\u9fff]",
    "ja": "[\u3040-\u30ff].*[\u4e00-\u9fff]|[\u4e00-\u9fff].*[\u3040-\u30ff]",
    "ko": "[\uac00-\ud7a3]",
    "ar": "[\u0620-\u064a]{3}",
    "hi": "[\u0915-\u0939]\u093f",
    "sw": "[a-z]",
    "th": "[\u0e01-\u0e2e].*[\u0e31-\u0e4e]",
}
MISSING = re.compile(r"Glyph (\d+) .*missing from font")


def sample_words() -> dict[str, str]:
    """A word of each language from the bundled word list, showing its script."""
    words: dict[str, str] = {}
    for word in load("words", langs=list(LANGS)):
        for form in word.forms:
            if word.lang not in words and re.search(SCRIPT[word.lang], form):
                words[word.lang] = form
    assert sorted(words) == sorted(LANGS), f"no sample word for {set(LANGS) - set(words)}"
    return words


def render(fig) -> tuple[bytes, list[str]]:
    """``fig`` as PNG bytes (Agg), and the messages of every warning drawing it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60)
    plt.close(fig)
    return buffer.getvalue(), [str(w.message) for w in caught]


def missing_glyphs(messages: list[str]) -> set[str]:
    return {chr(int(m.group(1))) for m in map(MISSING.search, messages) if m}


def test_the_packaged_fonts_provide_every_fallback_family():
    assert plots.use_fonts() == list(plots.FALLBACK_FAMILIES)
    files = plots._register_package_fonts()
    for package in plots.FONT_PACKAGES:
        assert any(f"/{package}/" in path for path in files), f"no font file from {package}"
    families = matplotlib.rcParams["font.family"]
    assert families[-len(plots.FALLBACK_FAMILIES) :] == list(plots.FALLBACK_FAMILIES)
    assert plots.use_fonts() and matplotlib.rcParams["font.family"] == families  # idempotent


def test_every_script_renders_without_a_missing_glyph(caplog):
    words = sample_words()
    labels = [f"{lang}: {words[lang]}" for lang in LANGS]
    values = np.arange(len(LANGS) ** 2, dtype=float).reshape(len(LANGS), -1)
    figures = [
        # tick labels on both axes, a title with every non-Latin word
        plots.heatmap(
            values,
            labels,
            list(words.values()),
            title=" ".join(words[lang] for lang in LANGS[4:]),
            xlabel=words["ja"],
            ylabel=words["ar"],
            zlabel=words["hi"],
        )[0],
        # text annotations
        plots.labelled_scatter(
            np.stack([np.arange(len(LANGS)), np.zeros(len(LANGS))], 1).astype(float),
            labels,
            title=words["th"],
            xlabel=words["ko"],
            ylabel=words["zh"],
        )[0],
        # categorical ticks and a legend
        plots.stacked_bars(
            list(words.values()),
            {words["ru"]: [0.5] * len(LANGS), words["ar"]: [0.5] * len(LANGS)},
            title="t",
            xlabel="x",
            ylabel="y",
        )[0],
    ]
    with caplog.at_level(logging.WARNING, logger="matplotlib.font_manager"):
        for fig in figures:
            png, messages = render(fig)
            assert png.startswith(b"\x89PNG") and len(png) > 1000
            assert not missing_glyphs(messages), messages
            assert not [m for m in messages if "missing from font" in m], messages
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # e.g. findfont misses


def test_the_detector_sees_missing_glyphs_with_dejavu_sans_alone():
    words = sample_words()
    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        fig, ax = plt.subplots()
        ax.set_yticks(range(len(LANGS)), [words[lang] for lang in LANGS])
        ax.text(0.5, 0.5, " ".join(words.values()))
        _, messages = render(fig)
    missing = missing_glyphs(messages)
    # DejaVu Sans has no Han, kana, Hangul, Devanagari or Thai.
    for lang in ("zh", "ja", "ko", "hi", "th"):
        assert set(words[lang]) & missing, f"no missing-glyph warning for {lang} {words[lang]!r}"
    for lang in ("en", "fr", "de", "es", "ru", "sw"):
        assert not set(words[lang]) & missing


def test_shape_rtl_gives_presentation_forms_in_visual_order():
    # salam: seen initial, lam-alef final ligature, meem isolated; drawn left to right, reversed.
    assert plots.shape_rtl("سلام") == "\ufee1\ufefc\ufeb3"
    # najma (star): noon initial, jeem medial, meem medial, teh marbuta final.
    assert plots.shape_rtl("نجمة") == "\ufe94\ufee4\ufea0\ufee7"
    assert plots.shape_rtl("water") == "water"


def test_display_text_shapes_arabic_only_where_matplotlib_cannot(monkeypatch):
    monkeypatch.setattr(plots, "LAYS_OUT_TEXT", True)  # libraqm shapes: shaping too would reverse
    assert plots.display_text("نجمة") == "نجمة"
    monkeypatch.setattr(plots, "LAYS_OUT_TEXT", False)
    assert plots.display_text("نجمة") == plots.shape_rtl("نجمة")
    assert plots.display_text("ar: نجمة") == plots.shape_rtl("ar: نجمة")
    for text in ("вода", "水", "ご飯", "물", "बारिश", "ดวงอาทิตย์"):
        assert plots.display_text(text) == text
    # The builders pass the text they draw through it.
    fig, pfig = plots.labelled_scatter(
        np.zeros((2, 2)), ["نجمة", "water"], title="سلام", xlabel="x", ylabel="y"
    )
    assert [t.get_text() for t in fig.axes[0].texts] == [plots.shape_rtl("نجمة"), "water"]
    assert fig.axes[0].get_title() == plots.shape_rtl("سلام")
    assert list(pfig.data[0].text) == ["نجمة", "water"]  # the browser shapes the plotly twin
    fig, _ = plots.heatmap(np.zeros((1, 1)), ["نجمة"], [3], title="t", xlabel="x", ylabel="y",
                           zlabel="z")  # fmt: skip
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [plots.shape_rtl("نجمة")]
    plt.close("all")


@pytest.mark.skipif(not plots.LAYS_OUT_TEXT, reason="matplotlib without libraqm (< 3.11)")
@pytest.mark.parametrize("family", ["DejaVu Sans", "Noto Sans Arabic"])
def test_libraqm_joins_arabic_right_to_left(family):
    from matplotlib._text_helpers import layout  # what draws a string, glyph by glyph

    font = font_manager.get_font(
        font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    )
    font.set_size(12, 72)
    items = list(layout("نجمة", font))
    clusters = list(dict.fromkeys(item.char for item in items))
    assert clusters == ["ة", "م", "ج", "ن"]  # left to right on the page: the word reversed
    for letter in clusters:  # every letter joins: none is drawn as its isolated form alone
        glyphs = [item.glyph_index for item in items if item.char == letter]
        assert glyphs != [font.get_char_index(ord(letter))], letter


@pytest.mark.skipif(not plots.LAYS_OUT_TEXT, reason="matplotlib without libraqm (< 3.11)")
def test_libraqm_draws_the_devanagari_vowel_sign_i_before_its_consonant():
    from matplotlib._text_helpers import layout

    font = font_manager.get_font(
        font_manager.findfont(
            font_manager.FontProperties(family="Noto Sans Devanagari"), fallback_to_default=False
        )
    )
    font.set_size(12, 72)
    glyphs = [item.glyph_index for item in layout("कि", font)]
    assert len(glyphs) == 2 and glyphs[1] == font.get_char_index(ord("क"))
