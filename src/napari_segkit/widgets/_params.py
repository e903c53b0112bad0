"""magicgui widgets built from a method's parameter declaration (:mod:`napari_segkit.params`).

One widget per :class:`~napari_segkit.params.Param`: a ComboBox for choices, a SpinBox or
FloatSpinBox with the declared range and step, a CheckBox for booleans, a LineEdit for text. The
declared default, help (tooltip) and visibility rule (``when``) are used as they are, so the widget
can never disagree with the function or the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, SpinBox, Widget

from ..params import MethodSpec, Param

#: the widget range of an unbounded float (a Qt spin box needs finite bounds)
FLOAT_RANGE = 1e12
#: the widget range of an unbounded int (Qt spin boxes hold 32-bit ints)
INT_RANGE = 2**31 - 1


def _number_widget(p: Param) -> Widget:
    lo = p.min if p.min is not None else (-FLOAT_RANGE if p.type is float else -INT_RANGE)
    hi = p.max if p.max is not None else (FLOAT_RANGE if p.type is float else INT_RANGE)
    default = p.default
    step = p.step or (2 if p.odd else 1 if p.type is int else 0.1)
    if p.optional:
        lo = lo - step  # one step below the range stands for None ("auto")
    if p.type is int:
        lo, hi = int(max(lo, -INT_RANGE)), int(min(hi, INT_RANGE))
        w = SpinBox(
            label=p.display,
            min=lo,
            max=hi,
            step=int(step),
            value=lo if default is None else int(default),
        )
    else:
        w = FloatSpinBox(
            label=p.display,
            min=float(lo),
            max=float(hi),
            step=float(step),
            value=float(lo if default is None else default),
        )
    if p.optional:
        # the minimum stands for None ("auto"), shown as that text in the box
        w.native.setSpecialValueText(p.none_label)
    return w


def make_widget(p: Param) -> Widget:
    """The magicgui widget for one parameter, with its default, range, choices and tooltip."""
    if p.choices is not None:
        w = ComboBox(label=p.display, choices=list(p.choices), value=p.default)
    elif p.type is bool:
        w = CheckBox(text=p.display, value=bool(p.default))
    elif p.type in (int, float):
        w = _number_widget(p)
    elif p.widget == "file":
        w = FileEdit(label=p.display, mode="r", value=p.default or "")
    else:
        w = LineEdit(label=p.display, value="" if p.default is None else str(p.default))
    w.tooltip = p.help
    w.name = p.name  # a Container finds it as an attribute (``widget.min_size``)
    return w


def read_widget(p: Param, w: Widget) -> Any:
    """The parameter's value as the widget holds it (``None`` for "auto" numbers)."""
    value = w.value
    if p.choices is not None:
        return value
    if p.type is bool:
        return bool(value)
    if p.type in (int, float):
        if p.optional and value <= w.min:
            return None
        return p.type(value)
    if p.widget == "file":
        text = str(value or "").strip()
        return text or None
    text = str(value)
    return None if (p.optional and not text.strip()) else text


def write_widget(p: Param, w: Widget, value: Any) -> None:
    """Show ``value`` in the widget (``None`` shows the "auto" minimum)."""
    if p.type in (int, float) and p.choices is None:
        if value is None:
            w.value = w.min
            return
        if value < w.min or value > w.max:  # a value beyond the declared widget range
            span = abs(value) * 2 + 1
            w.min, w.max = min(w.min, -span), max(w.max, span)
        w.value = value
    elif p.type is str and p.choices is None and p.widget != "file":
        w.value = "" if value is None else str(value)
    else:
        w.value = value


class ParamWidgets:
    """The widgets of one method's parameters, with the declared visibility rules.

    ``custom`` maps parameter names to widgets the method's widget makes itself (e.g. a model
    picker); their ``value`` is read as the parameter's value.
    """

    def __init__(self, spec: MethodSpec, *, custom: Mapping[str, Widget] | None = None):
        self.spec = spec
        custom = dict(custom or {})
        self.custom = set(custom)
        self.widgets: dict[str, Widget] = {
            p.name: custom[p.name] if p.name in custom else make_widget(p) for p in spec.params
        }
        for w in self.widgets.values():
            w.changed.connect(self.update_visibility)
        self.update_visibility()

    def __getitem__(self, name: str) -> Widget:
        return self.widgets[name]

    def __iter__(self):
        return iter(self.widgets.values())

    def _read(self, p: Param) -> Any:
        w = self.widgets[p.name]
        return w.value if p.name in self.custom else read_widget(p, w)

    def raw_values(self) -> dict:
        return {p.name: self._read(p) for p in self.spec.params}

    def values(self) -> dict:
        """The values of the parameters that apply, validated (``ValueError`` if one is bad)."""
        applicable = self.spec.applicable(self.raw_values())
        return self.spec.validate(applicable, fill=False)

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Show ``values`` (e.g. from a recipe); unknown names are a ValueError."""
        checked = self.spec.validate(values, fill=False)
        for name, value in checked.items():
            if name in self.custom:
                self.widgets[name].value = value
            else:
                write_widget(self.spec[name], self.widgets[name], value)
        self.update_visibility()

    def update_visibility(self, *_args: Any) -> None:
        values = self.raw_values()
        for p in self.spec.params:
            self.widgets[p.name].visible = p.applies(values)
