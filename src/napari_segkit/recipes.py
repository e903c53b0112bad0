"""Recipes: a method and its parameters in a small, versioned, human-readable YAML file.

A recipe records everything needed to redo a segmentation on other images: the method, its
parameters (checked against the method's one declaration, :mod:`napari_segkit.params`, when the
recipe is saved *and* when it is loaded), how a stack is read (``auto``, ``planes``, ``volume``),
the colour/channel options, the checksum (SHA-256) of every model file a parameter names, and the
plugin version that wrote it. No napari, no Qt, no torch here (the method's own module may import
torch when a recipe runs it).

A recipe file looks like this::

    # napari-segkit recipe: edit the parameters, keep the format and version lines
    format: napari-segkit/recipe
    version: 1
    method: threshold
    parameters:
      method: otsu
      dark: false
      output: objects
      min_size: 20
      fill_holes: true
      connectivity: 1
    input:
      stack: auto
      rgb: null
      channel_axis: null
      channel: 0
    models: {}
    plugin_version: 0.1.0

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "otsu.yaml"
>>> _ = save_recipe(path, "threshold", {"method": "otsu", "min_size": 5})
>>> recipe = load_recipe(path)
>>> recipe.method, recipe.params["min_size"]
('threshold', 5)
>>> import numpy as np
>>> img = np.zeros((20, 20)); img[2:8, 2:8] = 1; img[12:18, 10:16] = 1
>>> int(recipe.run(img).labels.max())
2
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, params
from .params import MethodSpec

__all__ = [
    "FORMAT",
    "VERSION",
    "STACK_MODES",
    "Recipe",
    "RecipeError",
    "RecipeResult",
    "ModelChangedWarning",
    "save_recipe",
    "load_recipe",
    "recipe_from_metadata",
    "file_sha256",
]

#: the format tag every recipe file starts with
FORMAT = "napari-segkit/recipe"
#: the recipe format version this code writes and reads (older ones are read too, when there are)
VERSION = 1
#: how a stack is read: ``auto`` (a time axis -> planes, else a z-stack as one volume), ...
STACK_MODES = ("auto", "planes", "volume")
#: file endings of model checkpoints: a parameter value ending so names a file
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")
#: the keys of a recipe file
_KEYS = ("format", "version", "method", "parameters", "input", "models", "plugin_version")
_INPUT_KEYS = ("stack", "rgb", "channel_axis", "channel")
#: the metadata key of the plugin's layers (as ``widgets/_output.py`` writes it)
_META_KEY = "napari-segkit"


class RecipeError(ValueError):
    """A recipe file that cannot be used: not YAML, not a recipe, a newer version, bad values."""


class ModelChangedWarning(UserWarning):
    """A model file named by a recipe is not the file the recipe was made with."""


def file_sha256(path: str | os.PathLike, *, block: int = 1 << 20) -> str:
    """The SHA-256 of a file's content, as 64 hex digits (read in 1 MiB blocks).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> file_sha256(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as plain YAML-safe Python (lists for tuples, Python numbers, text for paths)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise RecipeError(
        f"{value!r} ({type(value).__name__}) cannot be written to a recipe: use numbers, text, "
        "true/false or lists"
    )


def _names_model_file(spec: MethodSpec, name: str, value: Any) -> bool:
    """Whether the value of parameter ``name`` names a model file (to be checksummed)."""
    p = spec[name]
    if p.widget not in ("model", "file") or value is None:
        return False
    if not isinstance(value, str | os.PathLike):
        return False
    path = Path(value)
    return path.suffix.lower() in MODEL_SUFFIXES or path.is_file()


@dataclass
class RecipeResult:
    """What :meth:`Recipe.run` returns: the labels, the method's own table (if it makes one,
    e.g. Mask R-CNN's class and score per object), and the method's full result."""

    labels: Any
    table: dict | None = None
    result: Any = None


@dataclass
class Recipe:
    """A method with its parameters and input options; see the module docstring.

    Use :func:`load_recipe`, :func:`save_recipe` or :func:`recipe_from_metadata` rather than
    building one by hand (they validate). ``models`` maps a parameter naming a model file to
    ``{"path": ..., "sha256": ...}``.
    """

    method: str
    params: dict
    stack: str = "auto"
    rgb: bool | None = None
    channel_axis: int | None = None
    channel: int = 0
    models: dict = field(default_factory=dict)
    plugin_version: str = __version__
    #: the file it was loaded from or saved to, if any
    path: Path | None = None
    #: the model files were checked (once per recipe, not once per image)
    models_checked: bool = field(default=False, repr=False, compare=False)

    @property
    def spec(self) -> MethodSpec:
        return params.get(self.method)

    # ---- reading the options ----------------------------------------------------------------
    def method_kwargs(self) -> dict:
        """The keywords of the method's function (declared defaults, then the recipe's values;
        only those that apply, as the widget and the command line pass them)."""
        spec = self.spec
        values = spec.validate(self.params)
        return spec.split(spec.applicable(values))[0]

    def output_options(self) -> dict:
        """The declared output options (extra layers/files), e.g. ``show_edge_map``."""
        spec = self.spec
        return spec.split(spec.applicable(spec.validate(self.params)))[1]

    def spatial_ndim(self, shape: Sequence[int], axis_labels: Sequence[str] | None = None) -> int:
        """2 (plane by plane) or 3 (whole volumes) for an image of ``shape``; ``auto`` decides
        from the axis labels as the widget does (a time axis: planes; else a z-stack: volume)."""
        if self.stack == "planes" or not self.spec.supports_volume:
            return 2
        if self.stack == "volume":
            return 3
        from .algorithms.image import guess_rgb, stack_mode

        rgb = (
            self.rgb
            if self.rgb is not None
            else (self.channel_axis is None and guess_rgb(tuple(shape)))
        )
        channel_axis = self.channel_axis
        if channel_axis is not None and not -len(shape) <= channel_axis < len(shape):
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image of shape {tuple(shape)}"
            )
        return stack_mode(
            tuple(shape), axis_labels=axis_labels, rgb=bool(rgb), channel_axis=channel_axis
        )[0]

    def input_kwargs(self, shape: Sequence[int], axis_labels: Sequence[str] | None = None) -> dict:
        """The input keywords of the method's function (rgb, channel_axis, channel, spatial_ndim)."""
        spec = self.spec
        out: dict[str, Any] = {"rgb": self.rgb, "channel_axis": self.channel_axis}
        if not spec.uses_all_channels:
            out["channel"] = self.channel
        if spec.supports_volume:
            out["spatial_ndim"] = self.spatial_ndim(shape, axis_labels)
        return out

    # ---- running --------------------------------------------------------------------------------
    def run(
        self,
        image: Any,
        axis_labels: Sequence[str] | None = None,
        progress: Any = None,
    ) -> RecipeResult:
        """Segment ``image`` with this recipe.

        Parameters
        ----------
        image : array-like
            numpy or dask, as the method takes it.
        axis_labels : sequence of str, optional
            One label per axis (a TIFF file's axes, napari's ``axis_labels``), read by
            ``stack: auto``.
        progress : callable, optional
            ``progress(done, total)``; it may raise to stop the work.

        Returns
        -------
        RecipeResult
        """
        if not self.models_checked:
            check_models(self, on_change="raise")
        shape = tuple(getattr(image, "shape", np.shape(image)))
        func = self.spec.resolve()
        result = func(
            image,
            **self.input_kwargs(shape, axis_labels),
            **self.method_kwargs(),
            progress=progress,
        )
        if isinstance(result, np.ndarray) or hasattr(result, "dask"):
            return RecipeResult(result, None, result)
        if isinstance(result, tuple):
            return RecipeResult(result[0], None, result)
        return RecipeResult(result.labels, getattr(result, "table", None), result)

    def run_chunked(
        self,
        image: Any,
        *,
        out: str | os.PathLike | None = None,
        axis_labels: Sequence[str] | None = None,
        chunk: int | None = None,
        scheduler: Any = None,
        workers: int | None = None,
        overwrite: bool = False,
        progress: Any = None,
    ) -> Any:
        """Segment ``image`` block by block with dask into a zarr array (``out``); see
        :func:`napari_segkit.algorithms.chunked.segment_chunked` (threshold, edges, k-means) and
        :func:`napari_segkit.models.blockwise.segment_model_blockwise` (Mask R-CNN, CNN).
        ``chunk=None``: 2048, or for a model a block that holds a whole number of its tiles.
        Returns the lazy labels.

        Raises
        ------
        ValueError
            If the method (with these parameters) cannot run block by block.
        """
        from .algorithms.chunked import MODEL_METHODS, segment_chunked

        shape = tuple(getattr(image, "shape", ()))
        if not shape:
            from .algorithms.chunked import _as_dask

            shape = tuple(_as_dask(image).shape)
        inputs = self.input_kwargs(shape, axis_labels)
        if self.method in MODEL_METHODS:
            from .models.blockwise import segment_model_blockwise

            return segment_model_blockwise(
                image,
                self.method,
                self.method_kwargs(),
                chunk=chunk,
                scheduler=scheduler,
                workers=workers,
                out=out,
                overwrite=overwrite,
                progress=progress,
                **inputs,
            ).labels
        return segment_chunked(
            image,
            self.method,
            self.method_kwargs(),
            chunk=2048 if chunk is None else chunk,
            scheduler=scheduler,
            workers=workers,
            out=out,
            overwrite=overwrite,
            progress=progress,
            **inputs,
        )

    # ---- files ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The recipe as the plain mapping written to YAML."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "parameters": _plain(self.params),
            "input": {
                "stack": self.stack,
                "rgb": self.rgb,
                "channel_axis": self.channel_axis,
                "channel": self.channel,
            },
            "models": _plain(self.models),
            "plugin_version": self.plugin_version,
        }

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the recipe as YAML (atomically; an existing file only with ``overwrite``)."""
        import yaml

        from .io import atomic_path

        path = Path(path)
        text = (
            "# napari-segkit recipe: edit the parameters, keep the format and version lines\n"
            + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        )
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self.path = path
        return path


def _check_inputs(inputs: Mapping[str, Any], where: str) -> dict:
    """The input options, checked (``RecipeError`` naming the bad one)."""
    unknown = sorted(set(inputs) - set(_INPUT_KEYS))
    if unknown:
        raise RecipeError(
            f"{where}unknown input option(s) {', '.join(unknown)}; known: {', '.join(_INPUT_KEYS)}"
        )
    stack = inputs.get("stack", "auto")
    if stack not in STACK_MODES:
        raise RecipeError(f"{where}stack must be one of {STACK_MODES}; got {stack!r}")
    rgb = inputs.get("rgb")
    if rgb is not None and not isinstance(rgb, bool):
        raise RecipeError(f"{where}rgb must be true, false or null; got {rgb!r}")
    channel_axis = inputs.get("channel_axis")
    if channel_axis is not None and (
        isinstance(channel_axis, bool) or not isinstance(channel_axis, int)
    ):
        raise RecipeError(f"{where}channel_axis must be an integer or null; got {channel_axis!r}")
    if rgb and channel_axis is not None:
        raise RecipeError(f"{where}rgb: true and a channel_axis are exclusive")
    channel = inputs.get("channel", 0)
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        raise RecipeError(f"{where}channel must be an integer >= 0; got {channel!r}")
    return {"stack": stack, "rgb": rgb, "channel_axis": channel_axis, "channel": channel}


def _stack_from_spatial_ndim(value: Any) -> str:
    return {2: "planes", 3: "volume", 0: "auto", None: "auto"}.get(value, "auto")


def make_recipe(
    method: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    stack: str = "auto",
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    spatial_ndim: int | None = None,
) -> Recipe:
    """A validated :class:`Recipe` (``ValueError`` naming an unknown method or a bad parameter).

    ``spatial_ndim`` (2 or 3, as recorded in a layer's metadata) is another way to give
    ``stack`` (``planes`` or ``volume``). Model files named by a parameter are checksummed now.
    """
    spec = params.get(method)  # ValueError naming an unknown method
    values = spec.validate(dict(parameters or {}))
    values = spec.applicable(values)
    if spatial_ndim is not None:
        if spatial_ndim not in (0, 2, 3):
            raise RecipeError(f"spatial_ndim must be 2 or 3; got {spatial_ndim!r}")
        if stack == "auto":
            stack = _stack_from_spatial_ndim(spatial_ndim)
    inputs = _check_inputs(
        {"stack": stack, "rgb": rgb, "channel_axis": channel_axis, "channel": channel}, ""
    )
    models = {}
    for name, value in values.items():
        if _names_model_file(spec, name, value):
            path = Path(value).expanduser()
            if not path.is_file():
                raise RecipeError(f"{name}: the model file {path} does not exist")
            path = path.resolve()
            values[name] = str(path)
            models[name] = {"path": str(path), "sha256": file_sha256(path)}
    return Recipe(method=spec.name, params=_plain(values), models=models, **inputs)


def save_recipe(
    path: str | os.PathLike,
    method: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    **inputs: Any,
) -> Path:
    """Validate ``parameters`` of ``method`` and write them as a recipe file (YAML).

    Parameters
    ----------
    path : path
        The file to write (``.yaml``); an existing file only with ``overwrite``.
    method : str
        The method's name (``threshold``, ``edges``, ``kmeans``, ``maskrcnn``, ...).
    parameters : mapping
        The method's parameters (missing ones take the declared defaults).
    overwrite : bool
        Replace an existing file.
    **inputs
        ``stack`` ('auto', 'planes', 'volume'; or ``spatial_ndim`` 2/3), ``rgb``,
        ``channel_axis``, ``channel``.

    Raises
    ------
    ValueError
        An unknown method, an unknown or invalid parameter or input option (named).
    """
    recipe = make_recipe(method, parameters, **inputs)
    return recipe.save(path, overwrite=overwrite)


def _model_path(ref: Mapping[str, Any], recipe_path: Path | None) -> Path | None:
    """Where the model file is: the recorded path, else beside the recipe file."""
    path = Path(ref["path"]).expanduser()
    if path.is_file():
        return path
    if recipe_path is not None:
        beside = recipe_path.parent / path.name
        if beside.is_file():
            return beside
    return None


def check_models(recipe: Recipe, *, on_change: str = "raise") -> None:
    """Check that every model file the recipe names is there and unchanged (by SHA-256).

    A missing file is always a :class:`RecipeError`. A changed file is a :class:`RecipeError`
    with ``on_change='raise'``, a :class:`ModelChangedWarning` with ``'warn'``, nothing with
    ``'ignore'``. A file found beside the recipe (not at its recorded path) is used.
    """
    if on_change not in ("raise", "warn", "ignore"):
        raise ValueError(f"on_change must be 'raise', 'warn' or 'ignore'; got {on_change!r}")
    where = f"{recipe.path}: " if recipe.path else ""
    for name, ref in recipe.models.items():
        path = _model_path(ref, recipe.path)
        if path is None:
            raise RecipeError(
                f"{where}the model file of {name!r} is missing: {ref['path']} (copy it there, "
                "or beside the recipe file)"
            )
        recipe.params[name] = str(path)
        if on_change == "ignore":
            continue
        digest = file_sha256(path)
        if digest != ref["sha256"]:
            msg = (
                f"{where}the model file {path} has changed since the recipe was made "
                f"(sha256 {digest[:12]}..., recipe {str(ref['sha256'])[:12]}...): results may differ"
            )
            if on_change == "raise":
                raise RecipeError(msg + "; load with on_model_change='warn' to use it anyway")
            warnings.warn(msg, ModelChangedWarning, stacklevel=3)
    recipe.models_checked = True


def recipe_from_dict(data: Any, *, where: str = "") -> Recipe:
    """A :class:`Recipe` from the mapping of a recipe file, checked; ``where`` prefixes errors."""
    if not isinstance(data, Mapping):
        raise RecipeError(
            f"{where}not a napari-segkit recipe (expected a YAML mapping with "
            f"'format: {FORMAT}'; got {type(data).__name__})"
        )
    fmt = data.get("format")
    if fmt != FORMAT:
        raise RecipeError(
            f"{where}not a napari-segkit recipe: format is {fmt!r}, expected {FORMAT!r}"
        )
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RecipeError(f"{where}bad recipe version {version!r}: expected an integer >= 1")
    if version > VERSION:
        raise RecipeError(
            f"{where}recipe version {version} was written by a newer napari-segkit "
            f"({data.get('plugin_version', '?')}); this one ({__version__}) reads version "
            f"{VERSION}: upgrade napari-segkit"
        )
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise RecipeError(f"{where}unknown key(s) {', '.join(map(str, unknown))}")
    method = data.get("method")
    if not isinstance(method, str):
        raise RecipeError(f"{where}'method' is missing or not text: {method!r}")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise RecipeError(f"{where}'parameters' must be a mapping; got {parameters!r}")
    inputs = data.get("input") or {}
    if not isinstance(inputs, Mapping):
        raise RecipeError(f"{where}'input' must be a mapping; got {inputs!r}")
    models = data.get("models") or {}
    if not isinstance(models, Mapping):
        raise RecipeError(f"{where}'models' must be a mapping; got {models!r}")
    try:
        spec = params.get(method)
        values = spec.applicable(spec.validate(dict(parameters)))
    except RecipeError:
        raise
    except ValueError as err:
        raise RecipeError(f"{where}{err}") from None
    checked_models = {}
    for name, ref in models.items():
        if name not in values:
            raise RecipeError(f"{where}models: {name!r} is not a parameter of {method}")
        if not (isinstance(ref, Mapping) and "path" in ref and "sha256" in ref):
            raise RecipeError(f"{where}models: {name!r} needs a path and a sha256")
        checked_models[name] = {"path": str(ref["path"]), "sha256": str(ref["sha256"])}
    return Recipe(
        method=spec.name,
        params=_plain(values),
        models=checked_models,
        plugin_version=str(data.get("plugin_version", "unknown")),
        **_check_inputs(inputs, where),
    )


def load_recipe(path: str | os.PathLike, *, on_model_change: str = "raise") -> Recipe:
    """Read and check a recipe file.

    Parameters
    ----------
    path : path
        A file written by :func:`save_recipe` (or by hand in that format).
    on_model_change : {'raise', 'warn', 'ignore'}
        What a changed model file (another SHA-256) does; a missing one always raises.

    Raises
    ------
    RecipeError (a ValueError)
        Naming the file and the problem: no such file, not YAML, not a recipe (format tag), a
        newer recipe version, an unknown method, an unknown or invalid parameter, a missing or
        changed model file.

    Examples
    --------
    >>> load_recipe("no/such/recipe.yaml")
    Traceback (most recent call last):
    ...
    napari_segkit.recipes.RecipeError: no/such/recipe.yaml: no such file
    """
    import yaml

    path = Path(path)
    where = f"{path}: "
    if not path.is_file():
        raise RecipeError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{where}not a text (YAML) file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RecipeError(f"{where}not valid YAML ({first})") from None
    recipe = recipe_from_dict(data, where=where)
    recipe.path = path
    check_models(recipe, on_change=on_model_change)
    return recipe


def recipe_from_metadata(layer_metadata: Mapping[str, Any]) -> Recipe:
    """The recipe of an output layer, from its metadata (``{"napari-segkit": {...}}``).

    The widgets record the method, its parameters and the input options they used (``channel``,
    ``channel_axis``, ``spatial_ndim``; ``spacing``, the layer's scale, is left out: a recipe
    carries no spacing). Accepts the layer's whole ``metadata`` or its ``"napari-segkit"`` entry.

    Raises
    ------
    ValueError
        The metadata holds no napari-segkit record, or names an unknown method or parameter.

    Examples
    --------
    >>> meta = {"napari-segkit": {"method": "threshold", "version": "0.1.0", "source": "img",
    ...         "params": {"method": "li", "min_size": 3, "channel_axis": None, "channel": 0,
    ...                    "spatial_ndim": 2}}}
    >>> r = recipe_from_metadata(meta)
    >>> r.params["method"], r.stack
    ('li', 'planes')
    """
    meta = layer_metadata.get(_META_KEY, layer_metadata)
    if not isinstance(meta, Mapping) or "method" not in meta:
        raise RecipeError("the layer's metadata holds no napari-segkit result (method, params)")
    spec = _spec_for_layer_method(str(meta["method"]))
    recorded = dict(meta.get("params") or {})
    inputs = {k: recorded.pop(k) for k in ("channel_axis", "channel", "rgb") if k in recorded}
    spatial_ndim = recorded.pop("spatial_ndim", None)
    recorded.pop("spacing", None)  # the layer's scale: a recipe carries none (batch reads none)
    if inputs.get("channel") is None:
        inputs.pop("channel", None)
    return make_recipe(spec.name, recorded, spatial_ndim=spatial_ndim, **inputs)


def _spec_for_layer_method(name: str) -> MethodSpec:
    """The declaration of a layer's method: its name (``threshold``), its title (``Mask R-CNN``),
    or either followed by an extra layer's suffix (``edges edge map``)."""
    from .params import all_specs

    specs = all_specs()
    lowered = name.strip().lower()
    for spec in specs:
        if lowered in (spec.name.lower(), spec.title.lower()):
            return spec
    for spec in specs:
        for key in (spec.name.lower(), spec.title.lower()):
            if lowered.startswith(key + " "):
                return spec
    return params.get(name)  # the registry's own error, naming the known methods
