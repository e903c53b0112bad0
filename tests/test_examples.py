"""Every example in examples/ runs with ``--small`` and writes its figure (a non-empty PNG).

The examples run in this process (runpy), as ``python examples/NAME.py --small --out DIR`` would:
the deep-learning ones train tiny models for a few dozen steps on the CPU.
"""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
#: examples that run a neural network (marked slow: a few to 20 seconds each on 2 CPU cores)
DEEP = {"fcn_vs_unet", "maskrcnn_instances", "semantic_instance_panoptic", "train_on_corrections"}


def test_the_gallery_is_complete():
    assert set(NAMES) >= DEEP | {
        "threshold_mean",
        "threshold_four_classes",
        "edges_sobel_laplace",
        "kmeans_colors",
    }
    readme = (EXAMPLES / "README.md").read_text()
    missing = [name for name in NAMES if f"{name}.py" not in readme or f"{name}.png" not in readme]
    assert not missing, f"examples/README.md does not list {missing}"


@pytest.fixture
def one_thread():
    """torch on one thread: as fast for tiny models, and far faster on a busy machine."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in NAMES]
)
def test_example_writes_its_figure(name, tmp_path, monkeypatch, capsys, request):
    from PIL import Image

    if name in DEEP:
        request.getfixturevalue("one_thread")
    monkeypatch.syspath_prepend(str(EXAMPLES))  # for the shared _figure helpers
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--small", "--out", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    png = tmp_path / f"{name}.png"
    assert png.is_file() and png.stat().st_size > 10_000
    with Image.open(png) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[1] >= 500 and pixels.shape[0] >= 250
    assert pixels.std() > 10  # a picture, not a blank page
    assert f"wrote {png}" in capsys.readouterr().out
