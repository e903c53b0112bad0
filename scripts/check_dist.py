"""Build napari-segkit's sdist and wheel and check what a user would install.

``python -m build`` makes the sdist, then the wheel *from the sdist* (as PyPI users' installers
would from the sdist), into a temporary folder. Then it checks:

- the wheel holds ``napari_segkit/napari.yaml`` as a regular file equal to the top-level
  ``napari.yaml`` (in the repo, ``src/napari_segkit/napari.yaml`` is a symlink to it),
  ``napari_segkit/_version.py`` (written from the git tag by hatch-vcs), every shipped model in
  ``models/weights/`` byte for byte, the LICENSE, the ``napari.manifest`` entry point, a version
  that is PEP 440 and equal to ``_version.py``'s, and no test files;
- the sdist holds the LICENSE, ``pyproject.toml``, ``napari.yaml`` and the package's
  ``napari.yaml`` (a relative symlink to the top-level file, pointing inside the archive).

With ``--install`` it also installs the wheel into a new virtual environment, outside the source
tree and with ``PYTHONPATH`` cleared, and runs there ``npe2 validate --imports napari-segkit``,
``segkit --version``, ``pip check`` and a check that ``napari_segkit`` is imported from that
environment with the wheel's version. To avoid downloading PyTorch (gigabytes) for every check,
the wheel is installed with ``--no-deps`` and the new environment *borrows* the dependencies of
the Python running this script: a ``.pth`` file appends that interpreter's site-packages after the
new environment's own, so the wheel's files, manifest and entry points come from the new
environment and only the dependencies come from the old one (``pip check`` then confirms that the
wheel's declared requirements are met). This tests the wheel, not dependency resolution from
PyPI: ``--install --fresh-deps`` installs the dependencies from the package index instead
(network, minutes, several GB).

Usage::

    python scripts/check_dist.py                    # build and inspect
    python scripts/check_dist.py --install          # ... and install and run it in a new venv
    python scripts/check_dist.py --outdir dist      # keep the sdist and wheel in dist/

Exit code 0 when every check passes, 1 when one fails (each failure is printed), 2 when
``build`` is not installed (``pip install build``, or the ``testing`` extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import site
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "napari_segkit"
DIST = "napari-segkit"
# PEP 440, the canonical public form plus an optional local part (packaging's pattern, simplified)
PEP440 = re.compile(
    r"^([1-9][0-9]*!)?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"
    r"((a|b|rc)(0|[1-9][0-9]*))?(\.post(0|[1-9][0-9]*))?(\.dev(0|[1-9][0-9]*))?"
    r"(\+[a-z0-9]+(\.[a-z0-9]+)*)?$"
)
TEST_FILE = re.compile(r"(^|/)(tests?/|conftest\.py$|test_[^/]*\.py$|[^/]*_test\.py$)")


def _run(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None) -> str:
    """Run ``cmd``; return its output, raise ``RuntimeError`` with the output if it fails."""
    print("$", " ".join(str(c) for c in cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} ... failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


def build(outdir: Path) -> tuple[Path, Path]:
    """``python -m build`` (sdist, then the wheel from the sdist) into ``outdir``.

    Building the sdist makes hatch-vcs (re)write ``src/napari_segkit/_version.py`` in the source
    tree; the file is put back as it was (or removed) afterwards, so a check leaves the checkout,
    and the version an editable install reports, as they were.
    """
    version_file = ROOT / "src" / PACKAGE / "_version.py"
    before = version_file.read_bytes() if version_file.exists() else None
    try:
        _run([sys.executable, "-m", "build", "--outdir", str(outdir), str(ROOT)])
    finally:
        if before is None:
            version_file.unlink(missing_ok=True)
        else:
            version_file.write_bytes(before)
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return sdist, wheel


def check_wheel(wheel: Path) -> tuple[list[str], str]:
    """Problems with the wheel's contents (an empty list when none), and its version."""
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        names = set(infos)

        manifest = f"{PACKAGE}/napari.yaml"
        if manifest not in names:
            problems.append(f"wheel: no {manifest}")
        else:
            mode = infos[manifest].external_attr >> 16
            if mode and not stat.S_ISREG(mode):
                problems.append(f"wheel: {manifest} is not a regular file (mode {oct(mode)})")
            if zf.read(manifest) != (ROOT / "napari.yaml").read_bytes():
                problems.append(f"wheel: {manifest} differs from the top-level napari.yaml")

        weights = ROOT / "src" / PACKAGE / "models" / "weights"
        for path in sorted(weights.glob("*.safetensors")):
            name = f"{PACKAGE}/models/weights/{path.name}"
            if name not in names:
                problems.append(f"wheel: shipped model {name} missing")
            elif zf.read(name) != path.read_bytes():
                problems.append(f"wheel: shipped model {name} differs from the repo's")

        tests = sorted(n for n in names if TEST_FILE.search(n))
        if tests:
            problems.append(f"wheel: test files {tests}")

        dist_info = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
        if len(dist_info) != 1:
            problems.append(f"wheel: {len(dist_info)} .dist-info folders")
            return problems, ""
        (dist_info,) = dist_info
        meta = zf.read(f"{dist_info}/METADATA").decode()
        version = re.search(r"^Version: (.+)$", meta, re.M).group(1).strip()
        if not PEP440.match(version):
            problems.append(f"wheel: version {version!r} is not PEP 440")
        if f"{dist_info}/licenses/LICENSE" not in names:
            problems.append("wheel: no LICENSE in the .dist-info")
        for field in ("License-Expression: BSD-3-Clause", "Classifier: Framework :: napari"):
            if field not in meta:
                problems.append(f"wheel: METADATA lacks {field!r}")
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        if f"{DIST} = {PACKAGE}:napari.yaml" not in entry_points:
            problems.append("wheel: no napari.manifest entry point")

        version_file = f"{PACKAGE}/_version.py"
        if version_file not in names:
            problems.append(f"wheel: no {version_file}")
        else:
            text = zf.read(version_file).decode()
            if f"version = {version!r}" not in text.replace('"', "'"):
                problems.append(f"wheel: {version_file} does not say version {version!r}")
    return problems, version


def check_sdist(sdist: Path) -> list[str]:
    """Problems with the sdist's contents (an empty list when none)."""
    problems = []
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1]: m for m in tf.getmembers() if "/" in m.name}
    for name in ("LICENSE", "pyproject.toml", "napari.yaml", "PKG-INFO", "README.md"):
        if name not in members or not members[name].isfile():
            problems.append(f"sdist: no file {name}")
    packaged = members.get(f"src/{PACKAGE}/napari.yaml")
    if packaged is None:
        problems.append(f"sdist: no src/{PACKAGE}/napari.yaml")
    elif packaged.issym():
        target = os.path.normpath(os.path.join(f"src/{PACKAGE}", packaged.linkname))
        if target != "napari.yaml":
            problems.append(f"sdist: src/{PACKAGE}/napari.yaml links to {packaged.linkname}")
    elif not packaged.isfile():
        problems.append(f"sdist: src/{PACKAGE}/napari.yaml is neither a file nor a symlink")
    return problems


def _borrow_site_packages(venv_python: Path) -> None:
    """Append this interpreter's site-packages to the new venv's ``sys.path`` (a ``.pth``)."""
    purelib = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    borrowed = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "zz_borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")


def check_install(wheel: Path, version: str, workdir: Path, *, fresh_deps: bool) -> list[str]:
    """Install the wheel in a new venv and run the plugin from there; problems found."""
    venv = workdir / "venv"
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    if fresh_deps:
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(python), "-m", "pip", "install", "-q", str(wheel)], env=env, cwd=workdir)
        pip = [str(python), "-m", "pip"]
    else:
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
        _run([*pip, "install", "-q", "--no-deps", str(wheel)], env=env, cwd=workdir)
        _borrow_site_packages(python)

    problems = []
    checks = [
        ("pip check", [*pip, "check"]),
        ("npe2 validate", [str(python), "-m", "npe2", "validate", "--imports", DIST]),
        ("segkit --version", [str(bindir / "segkit"), "--version"]),
        (
            "import",
            [
                str(python),
                "-c",
                "import importlib.metadata as m, napari_segkit, npe2; "
                "print(napari_segkit.__version__); print(napari_segkit.__file__); "
                "print(m.version('napari-segkit')); "
                "print(npe2.PluginManifest.from_distribution('napari-segkit').name)",
            ],
        ),
    ]
    outputs = {}
    for name, cmd in checks:
        try:
            outputs[name] = _run(cmd, env=env, cwd=workdir)
        except (RuntimeError, FileNotFoundError) as err:
            problems.append(f"install: {name}: {err}")
    if "segkit --version" in outputs and version not in outputs["segkit --version"]:
        problems.append(f"install: segkit --version says {outputs['segkit --version']!r}")
    if "import" in outputs:
        got_version, got_file, got_metadata, got_name = outputs["import"].split()
        if got_version != version:
            problems.append(f"install: __version__ is {got_version!r}, the wheel's {version!r}")
        if got_metadata != version:
            problems.append(f"install: the metadata found says {got_metadata!r}, not {version!r}")
        if not Path(got_file).resolve().is_relative_to(venv.resolve()):
            problems.append(f"install: napari_segkit imported from {got_file}, not the new venv")
        if got_name != DIST:
            problems.append(f"install: npe2 found the manifest {got_name!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, help="keep the sdist and wheel here")
    parser.add_argument("--install", action="store_true", help="install and run in a new venv")
    parser.add_argument(
        "--fresh-deps",
        action="store_true",
        help="with --install: install the dependencies from the index (several GB) instead of "
        "borrowing this interpreter's",
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("build") is None:
        print("`build` is not installed: pip install build", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="segkit-dist-") as tmp:
        outdir = args.outdir or Path(tmp, "dist")
        outdir.mkdir(parents=True, exist_ok=True)
        for old in [*outdir.glob("*.whl"), *outdir.glob("*.tar.gz")]:
            old.unlink()
        try:
            sdist, wheel = build(outdir)
        except RuntimeError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"built {sdist.name}, {wheel.name}")
        problems, version = check_wheel(wheel)
        problems += check_sdist(sdist)
        if args.install and not problems:
            problems += check_install(wheel, version, Path(tmp), fresh_deps=args.fresh_deps)
    for problem in problems:
        print("FAIL", problem)
    if problems:
        return 1
    print(f"OK: {DIST} {version}" + (" (installed and run in a new venv)" if args.install else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
