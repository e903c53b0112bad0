"""One declaration of every method's parameters.

Each method (threshold, edges, k-means, Mask R-CNN, CNN, ...) declares its parameters **once**, as a
:class:`MethodSpec` of :class:`Param` objects: name, type, default, range or choices, help text, when
it applies. Everything else reads that declaration:

- the algorithm: :func:`checked` wraps the function, refuses (at import) a signature default that
  differs from the declaration, and validates every call's values (a ``ValueError`` naming the
  parameter and the value);
- the widget: ``widgets/_params.py`` builds one magicgui widget per parameter, with the same default,
  range, choices, help (tooltip) and visibility;
- the command line: ``segkit <method>`` gets one option per parameter, with the same default;
- recipes and layer metadata: :meth:`MethodSpec.applicable` gives the values that were used;
- the docs: :func:`markdown_table` writes the parameter table of the README's reference section.

No napari, no Qt, no torch here.

Examples
--------
>>> spec = MethodSpec("demo", "Demo", "builtins:print", (
...     Param("k", int, 3, "clusters", min=2, max=32),
...     Param("mode", str, "a", "mode", choices=(("A", "a"), ("B", "b"))),
... ))
>>> spec.defaults()
{'k': 3, 'mode': 'a'}
>>> spec.validate({"k": 40})
Traceback (most recent call last):
...
ValueError: k must be <= 32; got 40
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Param", "MethodSpec", "checked", "register", "get", "METHODS", "markdown_table"]

#: Registry of every method's declaration, filled by :func:`register` (the algorithm modules).
METHODS: dict[str, MethodSpec] = {}

_UNSET = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a method.

    Parameters
    ----------
    name : str
        The keyword of the method's function.
    type : type
        ``int``, ``float``, ``bool`` or ``str``.
    default : object
        The default: the same for the function, the widget and the command line.
    help : str
        One sentence for the user (tooltip, ``--help``, docs).
    label : str, optional
        The widget's label (default: the name with spaces).
    choices : tuple of (label, value), optional
        The allowed values, each with the text shown in the widget.
    min, max : float, optional
        Inclusive range of a number.
    step : float, optional
        The widget's step for a number.
    optional : bool
        ``None`` is allowed (it means ``none_label``, e.g. "auto"); numeric widgets show it as
        their minimum with that text.
    none_label : str
        What ``None`` means, shown in the widget and docs.
    when : callable, optional
        ``when(values) -> bool``: whether the parameter applies given the other values (hidden in
        the widget and left out of the recorded parameters otherwise).
    widget : str, optional
        Widget override: ``"line"`` (a text field), ``"file"`` (a file picker).
    cli : str, optional
        The command-line option, where ``--name`` would clash with a common option.
    also : tuple of type
        Other types the function takes as they are (e.g. a list besides the text form).
    group : str
        ``"method"`` (passed to the function) or ``"output"`` (the widget's extra layers; the
        command line's extra outputs), which the function does not take.
    odd : bool
        An integer that must be odd (e.g. a block size).
    """

    name: str
    type: type
    default: Any
    help: str
    label: str | None = None
    choices: tuple[tuple[str, Any], ...] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    optional: bool = False
    none_label: str = "auto"
    when: Callable[[Mapping[str, Any]], bool] | None = None
    widget: str | None = None
    group: str = "method"
    odd: bool = False
    #: other types the function also takes, passed through unchecked (e.g. a list of cut points)
    also: tuple[type, ...] = ()
    #: the command-line option when ``--<name>`` would clash with a common option (``--output``)
    cli: str | None = None

    @property
    def display(self) -> str:
        return self.label or self.name.replace("_", " ")

    @property
    def values(self) -> tuple:
        """The allowed values when the parameter has choices."""
        return tuple(v for _, v in self.choices) if self.choices else ()

    def applies(self, values: Mapping[str, Any]) -> bool:
        return self.when is None or bool(self.when(values))

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to the parameter's type; raise ValueError if it is invalid."""
        if value is None:
            if self.optional or self.default is None:
                return None
            raise ValueError(f"{self.name} must not be None")
        if self.also and isinstance(value, self.also):
            return value
        if self.choices is not None:
            if value not in self.values:
                raise ValueError(f"{self.name} must be one of {self.values}; got {value!r}")
            return value
        if self.type is bool:
            if isinstance(value, bool | int) and value in (0, 1):
                return bool(value)
            raise ValueError(f"{self.name} must be True or False; got {value!r}")
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    import numpy as np

                    if isinstance(value, np.number):
                        value = value.item()
                    else:
                        raise TypeError
                except TypeError:
                    raise ValueError(f"{self.name} must be a number; got {value!r}") from None
            if self.type is int:
                if isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError(f"{self.name} must be an integer; got {value!r}")
                    value = int(value)
            elif not math.isfinite(value):
                raise ValueError(f"{self.name} must be a finite number; got {value!r}")
            if self.min is not None and value < self.min:
                raise ValueError(f"{self.name} must be >= {self.min:g}; got {value!r}")
            if self.max is not None and value > self.max:
                raise ValueError(f"{self.name} must be <= {self.max:g}; got {value!r}")
            if self.odd and int(value) % 2 == 0:
                raise ValueError(f"{self.name} must be odd; got {value!r}")
            return self.type(value)
        if self.type is str:
            if not isinstance(value, str):
                raise ValueError(f"{self.name} must be text; got {value!r}")
            return value
        return value


@dataclass(frozen=True)
class MethodSpec:
    """Everything about one method's parameters; see the module docstring."""

    name: str
    title: str
    function: str  # "module:function", imported on demand
    params: tuple[Param, ...]
    description: str = ""
    #: the method can process a 3D volume as a whole (the stack option)
    supports_volume: bool = True
    #: the method uses every channel (True) or one channel (False)
    uses_all_channels: bool = False
    #: the method takes the voxel ``spacing`` of a z-stack (the layer's scale; ``--spacing``)
    uses_spacing: bool = False
    extra: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def names(self, group: str | None = "method") -> list[str]:
        return [p.name for p in self.params if group is None or p.group == group]

    def defaults(self, group: str | None = None) -> dict:
        return {p.name: p.default for p in self.params if group is None or p.group == group}

    def validate(self, values: Mapping[str, Any], *, fill: bool = True) -> dict:
        """Check ``values`` (unknown names, types, ranges); with ``fill``, add the defaults."""
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        out = dict(self.defaults()) if fill else {}
        for p in self.params:
            if p.name in values:
                out[p.name] = p.check(values[p.name])
        return out

    def applicable(self, values: Mapping[str, Any]) -> dict:
        """The values of the parameters that apply (as the widget shows them), in order."""
        full = {**self.defaults(), **values}
        return {p.name: full[p.name] for p in self.params if p.applies(full)}

    def split(self, values: Mapping[str, Any]) -> tuple[dict, dict]:
        """``(method keywords, output options)`` from one dict of values."""
        method = {k: v for k, v in values.items() if self[k].group == "method"}
        output = {k: v for k, v in values.items() if self[k].group != "method"}
        return method, output

    def resolve(self) -> Callable:
        """The method's function."""
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


#: Parameters every deep-learning method shares (declared once, used by each method's declaration).
DEVICE = Param(
    "device",
    str,
    "auto",
    "Where the network runs: auto picks CUDA, then MPS, then the CPU.",
    choices=(("auto", "auto"), ("cuda", "cuda"), ("mps", "mps"), ("cpu", "cpu")),
)
HALF = Param(
    "half", bool, True, "float16 on the GPU (ignored on the CPU).", label="half precision on GPU"
)


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (done by each algorithm module at import)."""
    METHODS[spec.name] = spec
    return spec


#: module holding each method's declaration (imported on demand by :func:`get`)
_SPEC_MODULES = {
    "threshold": "napari_segkit.algorithms.threshold",
    "edges": "napari_segkit.algorithms.edges",
    "kmeans": "napari_segkit.algorithms.kmeans",
    "maskrcnn": "napari_segkit.models.maskrcnn",
    "cnn": "napari_segkit.models.cnn",
}


def get(name: str) -> MethodSpec:
    """The declaration of method ``name`` (imports the module that declares it)."""
    if name not in METHODS and name in _SPEC_MODULES:
        importlib.import_module(_SPEC_MODULES[name])
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; known: {', '.join(sorted(_SPEC_MODULES))}"
        ) from None


def all_specs() -> list[MethodSpec]:
    """Every method's declaration, in the order of :data:`_SPEC_MODULES`."""
    return [get(name) for name in _SPEC_MODULES]


def checked(spec: MethodSpec) -> Callable[[Callable], Callable]:
    """Decorate a method's function so it reads ``spec``.

    At import: every declared ``"method"`` parameter must be a keyword of the function (unless it
    forwards ``**kwargs`` to a checked function) with the declared default (an ``AssertionError`` otherwise: the two cannot drift apart). At each call:
    the declared keywords given are validated (``ValueError`` naming the parameter and value).
    """

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func)
        forwards = any(q.kind is inspect.Parameter.VAR_KEYWORD for q in sig.parameters.values())
        for p in spec.params:
            if p.group != "method" or (forwards and p.name not in sig.parameters):
                continue
            if p.name not in sig.parameters:
                raise AssertionError(f"{func.__name__} has no parameter {p.name!r} of {spec.name}")
            default = sig.parameters[p.name].default
            if default is not inspect.Parameter.empty and default != p.default:
                raise AssertionError(
                    f"{func.__name__}({p.name}={default!r}) differs from the declared default "
                    f"{p.default!r} of {spec.name}"
                )

        names = {p.name: p for p in spec.params if p.group == "method"}

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for key, value in kwargs.items():
                p = names.get(key)
                if p is not None:
                    kwargs[key] = p.check(value)
            return func(*args, **kwargs)

        wrapper.spec = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _fmt(value: Any, p: Param) -> str:
    if value is None:
        return p.none_label
    if p.choices:
        return f"`{value}`"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def markdown_table(spec: MethodSpec) -> str:
    """The parameter table of ``spec`` for the docs (name, default, allowed values, help)."""
    rows = ["| parameter | default | values | what it does |", "|---|---|---|---|"]
    for p in spec.params:
        if p.choices:
            allowed = ", ".join(f"`{v}`" for v in p.values)
        elif p.type in (int, float):
            lo = "" if p.min is None else f"{p.min:g}"
            hi = "" if p.max is None else f"{p.max:g}"
            allowed = f"{p.type.__name__} {lo}..{hi}".strip()
            if p.optional:
                allowed += f", or {p.none_label}"
        else:
            allowed = p.type.__name__
        rows.append(f"| `{p.name}` | {_fmt(p.default, p)} | {allowed} | {p.help} |")
    return "\n".join(rows)
