"""Save and load a method widget's settings as a recipe file (:mod:`napari_segkit.recipes`).

:class:`~napari_segkit.widgets._base.SegmentWidget` gets two buttons, "Save recipe..." and
"Load recipe...", which open a file dialog and call :func:`save_widget_recipe` /
:func:`load_widget_recipe` (also callable without a dialog: ``widget.save_recipe(path)``,
``widget.load_recipe(path)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, PushButton

from ..recipes import Recipe, load_recipe, make_recipe

#: the widget's stack choice <-> the recipe's stack mode
_STACK_TO_RECIPE = {0: "auto", 2: "planes", 3: "volume"}
_RECIPE_TO_STACK = {v: k for k, v in _STACK_TO_RECIPE.items()}
_FILTER = "napari-segkit recipe (*.yaml *.yml)"


def widget_recipe(widget: Any) -> Recipe:
    """The recipe of the widget's current settings (``ValueError`` if a value is bad)."""
    if widget.spec is None:
        raise ValueError(f"{widget.method}: this widget has no parameter declaration")
    params = widget.parameters()
    # hidden by the widget's own logic (not merely because the dock is not on screen): not used
    axis = None if widget.channel_axis.native.isHidden() else widget.channel_axis.value
    return make_recipe(
        widget.spec.name,
        params,
        stack=_STACK_TO_RECIPE.get(int(widget.stack.value), "auto"),
        channel_axis=axis,
        channel=int(widget.channel.value),
    )


def save_widget_recipe(widget: Any, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write the widget's settings to ``path`` (a dialog has already asked about replacing)."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".yaml")
    out = widget_recipe(widget).save(path, overwrite=overwrite)
    widget.status.value = f"recipe saved: {out.name}"
    return out


def load_widget_recipe(widget: Any, path: str | os.PathLike) -> Recipe:
    """Show a recipe's settings in the widget; ``ValueError`` if it is for another method."""
    recipe = load_recipe(path, on_model_change="warn")
    if widget.spec is None or recipe.method != widget.spec.name:
        title = widget.spec.title if widget.spec is not None else widget.method
        raise ValueError(f"{Path(path).name} is a {recipe.method} recipe, not one for {title}")
    values = dict(recipe.params)
    model = values.get("model")
    picker = getattr(widget, "model", None)
    if model is not None and picker is not None and hasattr(widget, "checkpoint"):
        if model not in picker.choices:
            picker.value = "file"  # a checkpoint file: the file picker shows it
            widget.checkpoint.value = model
            values.pop("model")
    widget.params.set_values(values)
    widget.stack.value = _RECIPE_TO_STACK.get(recipe.stack, 0)
    widget.channel.value = recipe.channel
    if recipe.channel_axis is not None:
        if recipe.channel_axis in widget.channel_axis.choices:
            widget.channel_axis.value = recipe.channel_axis
    widget.status.value = f"recipe loaded: {Path(path).name}"
    return recipe


def _ask_path(widget: Any, save: bool) -> str:
    from qtpy.QtWidgets import QFileDialog

    if save:
        name = f"{widget.spec.name if widget.spec else 'segkit'}_recipe.yaml"
        path, _ = QFileDialog.getSaveFileName(widget.native, "Save recipe", name, _FILTER)
    else:
        path, _ = QFileDialog.getOpenFileName(widget.native, "Load recipe", "", _FILTER)
    return path


def recipe_buttons(widget: Any) -> Container:
    """A row with "Save recipe..." and "Load recipe..." for ``widget``."""
    save = PushButton(text="Save recipe...")
    load = PushButton(text="Load recipe...")
    save.tooltip = "Save the method and its parameters to a YAML file (for segkit batch)"
    load.tooltip = "Set the parameters from a recipe file"

    def on_save(*_args: Any) -> None:
        path = _ask_path(widget, True)
        if path:
            try:
                save_widget_recipe(widget, path)
            except (ValueError, OSError) as err:
                widget._fail(err)

    def on_load(*_args: Any) -> None:
        path = _ask_path(widget, False)
        if path:
            try:
                load_widget_recipe(widget, path)
            except (ValueError, OSError) as err:
                widget._fail(err)

    save.changed.connect(on_save)
    load.changed.connect(on_load)
    row = Container(widgets=[save, load], layout="horizontal", labels=False)
    row.margins = (0, 0, 0, 0)
    return row
