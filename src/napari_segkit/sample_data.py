"""Sample-data commands: each returns napari layer-data tuples ``(data, kwargs, layer_type)``."""

from __future__ import annotations

from .datasets import synthetic_nuclei

NUCLEI_SEED = 0


def coins() -> list[tuple]:
    """scikit-image's coins: a natural greyscale photograph (ships with scikit-image, offline)."""
    from skimage import data

    return [
        (data.coins(), {"name": "coins", "metadata": {"source": "skimage.data.coins"}}, "image")
    ]


def nuclei(seed: int = NUCLEI_SEED) -> list[tuple]:
    """A generated 2D fluorescence-nuclei image (uint16, uneven illumination) and its ground truth."""
    image, labels = synthetic_nuclei(
        (512, 512), n_nuclei=120, radius=(7, 14), touching=True, background_gradient=0.3, seed=seed
    )
    meta = {"generator": "napari_segkit.datasets.synthetic_nuclei", "seed": seed}
    return [
        (image, {"name": "nuclei", "metadata": meta, "colormap": "gray"}, "image"),
        (labels, {"name": "nuclei ground truth", "metadata": meta, "visible": False}, "labels"),
    ]


def nuclei_3d(seed: int = NUCLEI_SEED) -> list[tuple]:
    """A generated 3D nuclei volume (uint16) and its ground truth."""
    image, labels = synthetic_nuclei((48, 128, 128), n_nuclei=30, radius=(5, 10), seed=seed)
    meta = {"generator": "napari_segkit.datasets.synthetic_nuclei", "seed": seed}
    return [
        (image, {"name": "nuclei 3d", "metadata": meta}, "image"),
        (labels, {"name": "nuclei 3d ground truth", "metadata": meta, "visible": False}, "labels"),
    ]
