"""A small line-plot widget that sits in a magicgui ``Container`` (drawn with plain Qt).

matplotlib is not a dependency of the plugin, so the plot is painted with ``QPainter``: axes with
1-2-5 ticks, one colored polyline (with dots) per series, a legend, a title. It is enough for a
metric-vs-threshold curve or a live loss curve, and it costs no import time.

Usage (on the GUI thread; from a worker, send the numbers through a signal or ``yielded``)::

    plot = LinePlot("AP vs IoU threshold", "IoU threshold", "AP", ylim=(0, 1))
    container.append(plot)
    plot.set_series("AP", [0.5, 0.75], [0.9, 0.6])
    plot.append_point("loss", epoch, value)  # grows a series point by point
    plot.clear()
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from magicgui.backends._qtpy.widgets import QBaseWidget
from magicgui.widgets.bases import Widget
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LinePlot", "nice_ticks"]

#: series colors, in order (matplotlib's "tab10")
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def nice_ticks(lo: float, hi: float, *, n: int = 5) -> np.ndarray:
    """About ``n`` round tick values (steps of 1, 2 or 5 times a power of ten) covering ``lo..hi``.

    Examples
    --------
    >>> nice_ticks(0.0, 1.0).tolist()
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(3, 3).tolist()
    [3.0]
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite; got {lo}..{hi}")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        return np.array([lo])
    raw = (hi - lo) / max(n, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return np.round(np.arange(first, last + 1) * step, 12)


def _fmt(value: float, step: float) -> str:
    """A tick label with just enough decimals for ``step``."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.1e}"
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 2
    return f"{value:.{decimals}f}"


class _PlotCanvas(QWidget):
    """The Qt widget that paints the plot; :class:`LinePlot` holds the data."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.owner: LinePlot | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(160)
        self.setMinimumWidth(200)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        return QSize(320, 220)

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt name)
        if self.owner is None:
            return
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            self.owner._paint(painter, self.width(), self.height(), self.palette())
        finally:
            painter.end()


class _PlotBackend(QBaseWidget):
    """magicgui backend for the canvas (show/hide/size/parent come from ``QBaseWidget``)."""

    def __init__(self, parent=None, **_kwargs):
        super().__init__(_PlotCanvas, parent=parent)


class LinePlot(Widget):
    """A line plot for a magicgui ``Container``: ``set_series``, ``append_point``, ``clear``.

    Call its methods on the GUI thread only (Qt widgets are not thread-safe).

    Parameters
    ----------
    title, xlabel, ylabel : str
        Text above the plot and along the axes.
    xlim, ylim : (float, float), optional
        Fixed axis ranges; by default each axis spans the data.
    logy : bool
        Logarithmic y axis (points with y <= 0 are not drawn), e.g. for a loss curve.
    **kwargs
        magicgui ``Widget`` options (``name``, ``label``, ``tooltip``, ``visible``...).

    Examples
    --------
    >>> plot = LinePlot("AP vs IoU threshold", "IoU threshold", "AP", ylim=(0, 1))  # doctest: +SKIP
    >>> plot.set_series("AP", [0.5, 0.75, 0.9], [1.0, 0.8, 0.2])  # doctest: +SKIP
    >>> list(plot.series)  # doctest: +SKIP
    ['AP']
    """

    def __init__(
        self,
        title: str = "",
        xlabel: str = "",
        ylabel: str = "",
        *,
        xlim: tuple[float, float] | None = None,
        ylim: tuple[float, float] | None = None,
        logy: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("name", "plot")
        super().__init__(widget_type=_PlotBackend, **kwargs)
        self.title = title
        self.xlabel = xlabel
        self.ylabel = ylabel
        self.xlim = xlim
        self.ylim = ylim
        self.logy = bool(logy)
        self._series: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
        self.native.owner = self

    # ---- data ---------------------------------------------------------------------------------
    @property
    def series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The plotted data: name -> ``(xs, ys)`` (copies)."""
        return {k: (x.copy(), y.copy()) for k, (x, y, _c) in self._series.items()}

    def set_series(
        self,
        name: str,
        xs: Sequence[float],
        ys: Sequence[float],
        *,
        color: str | None = None,
    ) -> None:
        """Add the series ``name`` or replace its points (NaN/inf points are left out)."""
        xs = np.asarray(xs, dtype=np.float64).ravel()
        ys = np.asarray(ys, dtype=np.float64).ravel()
        if xs.shape != ys.shape:
            raise ValueError(f"xs has {xs.size} values but ys has {ys.size}")
        if color is None:
            color = (
                self._series[name][2]
                if name in self._series
                else PALETTE[len(self._series) % len(PALETTE)]
            )
        self._series[name] = (xs, ys, color)
        self.native.update()

    def append_point(self, name: str, x: float, y: float) -> None:
        """Add one point at the end of the series ``name`` (created if new): a live curve."""
        if name in self._series:
            xs, ys, color = self._series[name]
            self.set_series(name, np.append(xs, x), np.append(ys, y), color=color)
        else:
            self.set_series(name, [x], [y])

    def remove_series(self, name: str) -> None:
        """Remove the series ``name`` (no error if absent)."""
        self._series.pop(name, None)
        self.native.update()

    def clear(self) -> None:
        """Remove every series (the title and labels stay)."""
        self._series.clear()
        self.native.update()

    # ---- painting -----------------------------------------------------------------------------
    def _visible_points(self) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
        out = []
        for name, (xs, ys, color) in self._series.items():
            keep = np.isfinite(xs) & np.isfinite(ys)
            if self.logy:
                keep &= ys > 0
            ty = np.log10(ys[keep]) if self.logy else ys[keep]
            out.append((name, xs[keep], ty, color))
        return out

    def _ranges(self, pts) -> tuple[tuple[float, float], tuple[float, float]]:
        allx = np.concatenate([p[1] for p in pts]) if pts else np.zeros(0)
        ally = np.concatenate([p[2] for p in pts]) if pts else np.zeros(0)

        def span(values, fixed, transform):
            if fixed is not None:
                lo, hi = (transform(v) for v in fixed)
            elif values.size:
                lo, hi = float(values.min()), float(values.max())
            else:
                lo, hi = 0.0, 1.0
            if hi == lo:
                pad = abs(lo) * 0.1 or 1.0
                lo, hi = lo - pad, hi + pad
            return lo, hi

        xr = span(allx, self.xlim, float)
        yr = span(ally, self.ylim, (lambda v: math.log10(v)) if self.logy else float)
        return xr, yr

    def _paint(self, painter: QPainter, width: int, height: int, palette: QPalette) -> None:
        fg = palette.color(QPalette.ColorRole.WindowText)
        grid = QColor(fg)
        grid.setAlpha(50)
        font = QFont(painter.font())
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 6.0))
        painter.setFont(font)
        fm = painter.fontMetrics()
        line_h = fm.height()

        pts = self._visible_points()
        (x0, x1), (y0, y1) = self._ranges(pts)
        yticks = nice_ticks(y0, y1, n=5)
        if self.logy and math.floor(y1) - math.ceil(y0) >= 1:  # decades: 0.01, 0.1, 1...
            yticks = np.arange(math.ceil(y0), math.floor(y1) + 1, dtype=np.float64)
        xticks = nice_ticks(x0, x1, n=5)
        ystep = float(yticks[1] - yticks[0]) if len(yticks) > 1 else 1.0
        xstep = float(xticks[1] - xticks[0]) if len(xticks) > 1 else 1.0

        def ylabel_of(v):
            return _fmt(10.0**v, 10.0**v) if self.logy else _fmt(v, ystep)

        ytexts = [ylabel_of(v) for v in yticks]
        left = 6 + (line_h if self.ylabel else 0) + max(fm.horizontalAdvance(t) for t in ytexts) + 4
        top = 4 + (line_h + 2 if self.title else 0)
        bottom = height - (4 + line_h + (line_h if self.xlabel else 0))
        right = width - 14
        if right - left < 20 or bottom - top < 20:
            return
        area = QRectF(left, top, right - left, bottom - top)

        def px(x):
            return left + (x - x0) / (x1 - x0) * (right - left)

        def py(y):
            return bottom - (y - y0) / (y1 - y0) * (bottom - top)

        painter.setPen(QPen(fg))
        if self.title:
            painter.drawText(QRectF(0, 2, width, line_h), Qt.AlignmentFlag.AlignHCenter, self.title)
        if self.xlabel:
            painter.drawText(
                QRectF(left, height - line_h - 2, right - left, line_h),
                Qt.AlignmentFlag.AlignHCenter,
                self.xlabel,
            )
        if self.ylabel:
            painter.save()
            painter.translate(4, (top + bottom) / 2)
            painter.rotate(-90)
            painter.drawText(
                QRectF(-(bottom - top) / 2, 0, bottom - top, line_h),
                Qt.AlignmentFlag.AlignHCenter,
                self.ylabel,
            )
            painter.restore()

        # grid and tick labels
        for v, text in zip(yticks, ytexts, strict=True):
            y = py(v)
            if top - 0.5 <= y <= bottom + 0.5:
                painter.setPen(QPen(grid))
                painter.drawLine(QPointF(left, y), QPointF(right, y))
                painter.setPen(QPen(fg))
                tw = fm.horizontalAdvance(text)
                painter.drawText(QPointF(left - tw - 4, y + fm.ascent() / 2 - 1), text)
        for v in xticks:
            x = px(v)
            if left - 0.5 <= x <= right + 0.5:
                painter.setPen(QPen(grid))
                painter.drawLine(QPointF(x, top), QPointF(x, bottom))
                painter.setPen(QPen(fg))
                text = _fmt(v, xstep)
                tw = fm.horizontalAdvance(text)
                painter.drawText(QPointF(x - tw / 2, bottom + fm.ascent() + 2), text)
        painter.setPen(QPen(fg))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(area)

        # the series, clipped to the axes
        painter.save()
        painter.setClipRect(area)
        for _name, xs, ys, color in pts:
            pen = QPen(QColor(color))
            pen.setWidthF(1.8)
            painter.setPen(pen)
            if len(xs) > 1:
                path = QPainterPath(QPointF(px(xs[0]), py(ys[0])))
                for x, y in zip(xs[1:], ys[1:], strict=True):
                    path.lineTo(QPointF(px(x), py(y)))
                painter.drawPath(path)
            if len(xs) <= 60:
                painter.setBrush(QColor(color))
                for x, y in zip(xs, ys, strict=True):
                    painter.drawEllipse(QPointF(px(x), py(y)), 2.5, 2.5)
                painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.restore()

        # legend, top right inside the axes
        if len(pts) > 1 or (pts and pts[0][0]):
            y = top + 4
            wmax = max(fm.horizontalAdvance(p[0]) for p in pts)
            x = right - wmax - 24
            for name, _xs, _ys, color in pts:
                painter.setPen(QPen(QColor(color), 2.5))
                painter.drawLine(QPointF(x, y + line_h / 2), QPointF(x + 14, y + line_h / 2))
                painter.setPen(QPen(fg))
                painter.drawText(QPointF(x + 18, y + fm.ascent()), name)
                y += line_h
