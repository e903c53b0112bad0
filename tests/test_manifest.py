"""The npe2 manifest: valid, found by napari, every python_name importable; fast package import."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest():
    return PluginManifest.from_distribution("napari-segkit")


def test_manifest_is_found_from_the_installed_distribution(manifest):
    assert manifest.name == "napari-segkit"
    # the packaged manifest is the top-level one (a symlink in the package)
    assert (ROOT / "src/napari_segkit/napari.yaml").resolve() == (ROOT / "napari.yaml").resolve()


def test_npe2_validate_passes():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-segkit"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_python_name_imports(manifest):
    names = [cmd.python_name for cmd in manifest.contributions.commands]
    assert names, "the manifest names no command"
    for name in names:
        module, _, attr = name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), name


def test_command_ids_follow_the_convention(manifest):
    for cmd in manifest.contributions.commands:
        assert cmd.id.startswith("napari-segkit.")
    widget_cmds = {w.command for w in manifest.contributions.widgets}
    menus = manifest.contributions.menus
    menu_cmds = {item.command for item in menus["napari/layers/segment"]}
    menu_cmds |= {item.command for item in menus.get("napari/layers/measure", [])}
    # Train makes models, not layers: a dock widget outside the layers menus
    assert widget_cmds == menu_cmds | {
        "napari-segkit.make_train_widget",
        "napari-segkit.make_batch_widget",
    }
    assert "napari-segkit.make_train_widget" not in menu_cmds


@pytest.mark.parametrize(
    "modules, forbidden",
    [
        # the package and its pure algorithms: no torch, no Qt, no napari
        (
            "napari_segkit, napari_segkit.algorithms.threshold, napari_segkit.datasets",
            ("torch", "torchvision", "qtpy", "PyQt6", "napari"),
        ),
        # the widgets: Qt and napari, but torch only when a model runs
        (
            "napari_segkit.widgets.threshold, napari_segkit.widgets.edges, "
            "napari_segkit.widgets.kmeans, napari_segkit.widgets.maskrcnn, "
            "napari_segkit.widgets.train",
            ("torch", "torchvision"),
        ),
    ],
)
def test_imports_stay_light(modules, forbidden):
    code = (
        f"import sys, {modules};"
        f"bad = [m for m in {forbidden!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
