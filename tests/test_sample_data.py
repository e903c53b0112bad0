import numpy as np
import pytest

from napari_segkit import sample_data
from napari_segkit.datasets import synthetic_nuclei


@pytest.mark.parametrize("func", [sample_data.coins, sample_data.nuclei, sample_data.nuclei_3d])
def test_sample_commands_return_layer_tuples(func):
    layers = func()
    assert layers and all(len(t) == 3 for t in layers)
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image" and data.ndim >= 2 and "name" in kwargs


def test_nuclei_sample_is_seeded_and_has_ground_truth():
    (img1, meta1, _), (lab1, _, t) = sample_data.nuclei()
    (img2, _, _), (lab2, _, _) = sample_data.nuclei()
    assert t == "labels" and meta1["metadata"]["seed"] == 0
    np.testing.assert_array_equal(img1, img2)
    assert lab1.max() > 50 and img1.dtype == np.uint16
    img3, _ = synthetic_nuclei((512, 512), n_nuclei=120, radius=(7, 14), touching=True, seed=1)
    assert not np.array_equal(img1, img3)


def test_synthetic_nuclei_3d_and_dtypes():
    img, lab = synthetic_nuclei((16, 32, 32), n_nuclei=3, seed=0, dtype=np.float32)
    assert img.shape == lab.shape == (16, 32, 32) and img.dtype == np.float32
    assert lab.max() >= 1
    with pytest.raises(ValueError, match="2D or 3D"):
        synthetic_nuclei((4,))


@pytest.mark.parametrize("func", [sample_data.nuclei_realistic, sample_data.nuclei_realistic_3d])
def test_realistic_samples_make_napari_layers(func):
    from napari.layers import Image, Labels

    (img, img_kw, t1), (lab, lab_kw, t2) = func()
    assert (t1, t2) == ("image", "labels")
    assert img.shape == lab.shape and lab.dtype == np.int32 and lab.max() > 0
    assert img_kw["metadata"]["seed"] == 0
    image_layer, labels_layer = Image(img, **img_kw), Labels(lab, **lab_kw)
    np.testing.assert_array_equal(image_layer.scale, labels_layer.scale)
    if img.ndim == 3:
        assert tuple(image_layer.axis_labels) == ("z", "y", "x")
        assert image_layer.scale[0] >= 1 and tuple(image_layer.scale[1:]) == (1, 1)
    (again, _, _), _ = func()
    np.testing.assert_array_equal(img, again)
