"""Unit tier: the report site renders in a real headless Chromium (skipped where none exists).

The site is built by ``polylens report`` on a tiny random model; the test opens the index, one
experiment's report and one interactive figure, and checks that the figures drew something where
they stand on the page and that the console shows no error (a missing plotly.js would).
"""

import json

import pytest
from browser import Browser, drawn_fraction, find_chromium
from tiny import save_tiny

from experiments.report import run_report

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium or Chrome on PATH (apt-get install chromium)"
)
IMAGES_LOADED = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"
# A plot is drawn once its SVG holds a trace (scatter, bar) or a heatmap.
PLOT_DRAWN = "document.querySelector('.plotly-graph-div .main-svg :is(.trace, .hm)') !== null"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    model = save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-gemma"))
    out = tmp_path_factory.mktemp("site")
    outcomes = run_report(out, only=["latent-language"], model=str(model), progress=lambda _: 0)
    assert [o.status for o in outcomes if o.name == "latent-language"] == ["done"]
    return out


def _check_drawn(browser, selector, minimum):
    image = browser.screenshot()
    boxes = browser.boxes(selector)
    assert boxes, f"no {selector} on the page"
    for box in boxes:
        assert box["width"] > 100 and box["height"] > 100, box
        assert drawn_fraction(image, box) > minimum, (selector, box)
    return image


def test_index_report_and_figure_render(site, tmp_path):
    summary = json.loads((site / "latent-language" / "summary.json").read_text())
    figure = site / "latent-language" / summary["figure"].replace(".png", ".html")
    with Browser(CHROMIUM) as browser:
        browser.open(site / "index.html", ready=IMAGES_LOADED)
        assert browser.evaluate("document.images.length") == 1  # the one thumbnail
        _check_drawn(browser, "img", 0.05)

        browser.open(site / "latent-language" / "report.html", ready=IMAGES_LOADED)
        assert browser.evaluate("document.images.length") == len(list(figure.parent.glob("*.png")))
        _check_drawn(browser, "img", 0.05)

        browser.open(figure, ready=PLOT_DRAWN)
        image = _check_drawn(browser, ".plotly-graph-div", 0.02)
        # A plot, not a blank page with a border: traces in several colours.
        colours = {tuple(p) for p in image.reshape(-1, 3)[::7].tolist()}
        assert len(colours) > 20
        assert browser.errors() == []


def test_a_page_with_a_broken_script_is_caught(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script src='missing.js'></script><script>nope()</script>")
    with Browser(CHROMIUM) as browser:
        browser.open(page)
        errors = browser.errors()
    assert any("nope is not defined" in e for e in errors)
    assert any("ERR_FILE_NOT_FOUND" in e and "missing.js" in e for e in errors)
