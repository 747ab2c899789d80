"""Unit tier: figure builders return matching matplotlib and plotly figures."""

import numpy as np

from interp import plots


def test_heatmaps_by_layer_has_a_panel_and_a_slider_step_per_layer():
    values = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    fig, pfig = plots.heatmaps_by_layer(
        values, ["a", "b"], ["x", "y"], [0, 4, 8], title="t", xlabel="x", ylabel="y", zlabel="z"
    )
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["layer 0", "layer 4", "layer 8"]
    np.testing.assert_array_equal(shown[1].images[0].get_array(), values[1])
    assert [trace.visible for trace in pfig.data] == [False, False, True]
    steps = pfig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0", "4", "8"]
    assert steps[0].args[0]["visible"] == [True, False, False]


def test_lines_with_bands_gives_each_of_twelve_series_its_own_colour():
    series = {f"s{i}": ([i, i + 1], [i - 0.1, i], [i + 0.1, i + 2]) for i in range(12)}
    fig, pfig = plots.lines_with_bands([0, 1], series, title="t", xlabel="x", ylabel="y")
    colours = [tuple(line.get_color()) for line in fig.axes[0].lines]
    assert len(set(colours)) == 12
    assert [t.name for t in pfig.data if t.name] == list(series)


def test_labelled_scatter_annotates_every_point():
    fig, pfig = plots.labelled_scatter(
        np.array([[0.0, 1.0], [2.0, 3.0]]), ["en", "fr"], title="t", xlabel="x", ylabel="y"
    )
    assert [t.get_text() for t in fig.axes[0].texts] == ["en", "fr"]
    assert list(pfig.data[0].text) == ["en", "fr"]
