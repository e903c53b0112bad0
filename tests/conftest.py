"""Shared test setup.

napari's pytest plugin provides ``make_napari_viewer``; pytest-xvfb provides the X server, so the
viewer renders with the real xcb platform (offscreen Qt alone crashes vispy).
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip cleanly on machines without CUDA (CI has none)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture
def hub(tmp_path):
    """An empty torch hub cache for the test (no weights cached: as on an offline machine)."""
    import torch

    from napari_segkit.models.semantic import clear_semantic_cache

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    clear_semantic_cache()  # models loaded from another hub must not answer for this one
    yield tmp_path / "hub"
    clear_semantic_cache()
    torch.hub.set_dir(old)


@pytest.fixture(scope="session")
def tiny_unet_path(tmp_path_factory):
    """A tiny instance U-Net trained on generated nuclei for this test run (see tiny_unet.py)."""
    from napari_segkit.models.devices import hide_triton

    hide_triton()  # triton's LLVM crashes next to Mesa's GL once a napari canvas exists
    pytest.importorskip("torch")
    from tiny_unet import make_tiny_unet

    return make_tiny_unet(tmp_path_factory.mktemp("unet"))
