"""The QPainter line plot: inside a magicgui Container, series in, pixels out."""

import numpy as np
import pytest
from magicgui.widgets import Container

from napari_segkit.widgets._plot import LinePlot, nice_ticks


def test_nice_ticks_are_round_and_cover_the_range():
    np.testing.assert_allclose(nice_ticks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(nice_ticks(0.5, 0.95), [0.5, 0.6, 0.7, 0.8, 0.9])
    np.testing.assert_allclose(nice_ticks(-3, 12, n=3), [0, 5, 10])
    assert nice_ticks(2, 2).tolist() == [2.0]
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0, np.nan)


def _colored_pixels(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int((np.abs(img[..., :3].astype(int) - rgb).sum(-1) < 40).sum())


def test_series_are_drawn_in_a_container(qtbot):
    plot = LinePlot("AP vs IoU threshold", "IoU threshold", "AP", ylim=(0, 1))
    box = Container(widgets=[plot])
    qtbot.addWidget(box.native)
    box.native.resize(400, 300)
    box.show()
    blank = plot.render()
    assert _colored_pixels(blank, (0x1F, 0x77, 0xB4)) == 0
    plot.set_series("AP", [0.5, 0.75, 0.95], [1.0, 0.5, np.nan])  # the NaN point is left out
    plot.append_point("loss", 0, 0.2)
    plot.append_point("loss", 1, 0.1)
    assert list(plot.series) == ["AP", "loss"]
    np.testing.assert_array_equal(plot.series["loss"][1], [0.2, 0.1])
    img = plot.render()
    assert _colored_pixels(img, (0x1F, 0x77, 0xB4)) > 50  # first series, tab:blue
    assert _colored_pixels(img, (0xFF, 0x7F, 0x0E)) > 20  # second series, tab:orange
    plot.set_series("AP", [0.5, 0.75], [0.2, 0.1])  # replaced, keeps its color
    assert len(plot.series["AP"][0]) == 2
    plot.clear()
    assert plot.series == {}
    assert _colored_pixels(plot.render(), (0x1F, 0x77, 0xB4)) == 0
    with pytest.raises(ValueError, match="xs has 2 values but ys has 1"):
        plot.set_series("x", [1, 2], [1])


def test_log_axis_and_degenerate_ranges_do_not_fail(qtbot):
    plot = LinePlot("loss", "epoch", "loss", logy=True)
    qtbot.addWidget(plot.native)
    plot.native.resize(300, 200)
    plot.show()
    plot.set_series("train", [0, 1, 2], [1.0, 0.0, 0.01])  # 0 is not drawn on a log axis
    plot.set_series("one point", [3], [3])
    img = plot.render()
    assert img.shape[0] > 0 and _colored_pixels(img, (0x1F, 0x77, 0xB4)) > 0
