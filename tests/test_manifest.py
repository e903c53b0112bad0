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
    menu_cmds = {item.command for item in manifest.contributions.menus["napari/layers/segment"]}
    assert widget_cmds == menu_cmds


def test_import_is_light():
    """Importing the package (and its algorithms) must not import torch, Qt or napari."""
    code = (
        "import sys, napari_segkit, napari_segkit.algorithms.threshold, napari_segkit.datasets;"
        "bad = [m for m in ('torch', 'torchvision', 'qtpy', 'PyQt6', 'napari') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_widget_modules_do_not_import_torch():
    code = (
        "import sys, napari_segkit.widgets.threshold;"
        "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]; print(bad);"
        "sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
