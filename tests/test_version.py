"""The version: PEP 440, from git tags at build time, the same in the CLI and in outputs' metadata."""

import importlib.metadata
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import napari_segkit
from napari_segkit import cli

# PEP 440 (packaging's canonical public form, plus a local part)
PEP440 = (
    r"^([1-9][0-9]*!)?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"
    r"((a|b|rc)(0|[1-9][0-9]*))?(\.post(0|[1-9][0-9]*))?(\.dev(0|[1-9][0-9]*))?"
    r"(\+[a-z0-9]+(\.[a-z0-9]+)*)?$"
)


def test_version_is_pep440():
    assert isinstance(napari_segkit.__version__, str)
    assert napari_segkit.__version__
    assert re.match(PEP440, napari_segkit.__version__), napari_segkit.__version__


def test_version_without_version_file_or_metadata(monkeypatch):
    """A source tree that was never built and is not installed still has a (PEP 440) version."""
    # no _version.py (an unbuilt checkout) ...
    monkeypatch.setitem(sys.modules, "napari_segkit._version", None)
    assert napari_segkit._find_version() == importlib.metadata.version("napari-segkit")

    # ... and no installed distribution either
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert napari_segkit._find_version() == "0+unknown"


def test_version_file_wins(monkeypatch):
    """The file hatch-vcs writes at build time is this checkout's version: it comes first."""
    fake = types.ModuleType("napari_segkit._version")
    fake.version = "9.8.7"
    monkeypatch.setitem(sys.modules, "napari_segkit._version", fake)
    assert napari_segkit._find_version() == "9.8.7"


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"segkit (napari-segkit) {napari_segkit.__version__}"


def test_cli_version_in_a_new_process():
    out = subprocess.run(
        [sys.executable, "-m", "napari_segkit.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == napari_segkit.__version__


def test_outputs_recipes_and_checkpoints_carry_the_version():
    from napari.components import ViewerModel

    from napari_segkit import recipes
    from napari_segkit.models import checkpoints
    from napari_segkit.widgets._output import KEY, publish

    viewer = ViewerModel()
    image = viewer.add_image(np.zeros((4, 4)), name="img")
    layer, _ = publish(
        viewer, np.ones((4, 4), np.int32), source=image, method="threshold", params={}
    )
    assert layer.metadata[KEY]["version"] == napari_segkit.__version__
    assert recipes.Recipe(method="threshold", params={}).plugin_version == napari_segkit.__version__
    assert checkpoints._version() == napari_segkit.__version__
