"""``python -m build`` makes a wheel and sdist that install in a new venv and pass npe2 validate.

Runs ``scripts/check_dist.py --install`` (see its docstring for what is checked and how the new
venv gets its dependencies). Needs ``build`` (the ``testing`` extra) and the package index for
the isolated build's backend (hatchling, hatch-vcs); skipped without ``build``.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="`build` is not installed")
def test_wheel_and_sdist_build_install_and_validate():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_dist.py"), "--install"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK: napari-segkit" in out.stdout
