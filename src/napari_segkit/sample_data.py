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


def nuclei_realistic(seed: int = NUCLEI_SEED) -> list[tuple]:
    """A realistic generated 2D nuclei image (uint16 camera counts) and its ground truth.

    From :func:`napari_segkit.datasets.realistic_nuclei` ("train" configuration, 512 x 512,
    nuclei ~24 px wide): clumps of touching nuclei, dim and bright nuclei, texture, blur, debris,
    uneven background and camera noise.
    """
    from .datasets import realistic_nuclei

    image, labels = realistic_nuclei((512, 512), config="train", diameter=24, seed=seed)
    meta = {
        "generator": "napari_segkit.datasets.realistic_nuclei",
        "config": "train",
        "diameter": 24,
        "seed": seed,
    }
    return [
        (image, {"name": "nuclei (realistic)", "metadata": meta, "colormap": "gray"}, "image"),
        (
            labels,
            {"name": "nuclei (realistic) ground truth", "metadata": meta, "visible": False},
            "labels",
        ),
    ]


def nuclei_realistic_3d(seed: int = NUCLEI_SEED) -> list[tuple]:
    """A realistic generated 3D nuclei z-stack (uint16) and its ground truth.

    From :func:`napari_segkit.datasets.realistic_nuclei_3d` ("train" configuration,
    48 x 192 x 192): the layers are scaled by the generated voxel anisotropy (z step / pixel
    size) and carry the axis labels ("z", "y", "x").
    """
    from .datasets import realistic_nuclei_3d

    image, labels, spacing = realistic_nuclei_3d(
        (48, 192, 192), config="train", seed=seed, return_spacing=True
    )
    meta = {
        "generator": "napari_segkit.datasets.realistic_nuclei_3d",
        "config": "train",
        "seed": seed,
        "spacing": spacing,
    }
    common = {"metadata": meta, "scale": spacing, "axis_labels": ("z", "y", "x")}
    return [
        (image, {"name": "nuclei 3d (realistic)", "colormap": "gray", **common}, "image"),
        (
            labels,
            {"name": "nuclei 3d (realistic) ground truth", "visible": False, **common},
            "labels",
        ),
    ]
