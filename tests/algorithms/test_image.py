"""Input handling shared by every method."""

import dask.array as da
import numpy as np
import pytest

from napari_segkit.algorithms.image import (
    Cancelled,
    apply_blockwise,
    check_image,
    finite_values,
    guess_rgb,
    iter_blocks,
    to_channels_last,
    to_grey,
)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 5)), "empty"),
        (np.zeros(5), "at least 2"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
        (np.zeros((3, 3), complex), "dtype"),
        (None, "None"),
    ],
)
def test_check_image_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        check_image(bad)


def test_check_image_keeps_dask_lazy():
    arr = da.zeros((4, 8, 8), chunks=(1, 8, 8))
    assert check_image(arr) is arr


def test_rgb_to_luminance_matches_skimage():
    from skimage.color import rgb2gray

    rgb = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(to_grey(rgb), rgb2gray(rgb), rtol=1e-5)


def test_rgba_alpha_is_ignored_and_units_are_kept():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 7
    grey = to_grey(rgba)
    assert grey.shape == (2, 2)
    np.testing.assert_allclose(grey, 200, rtol=1e-5)  # uint8 stays on 0..255


def test_multichannel_picks_channel():
    img = np.stack([np.full((3, 3), i, np.uint16) for i in range(4)])  # (C, Y, X)
    assert (to_grey(img, channel_axis=0, channel=2) == 2).all()
    with pytest.raises(ValueError, match="channel=5 is out of range"):
        to_grey(img, channel_axis=0, channel=5)
    with pytest.raises(ValueError, match="channel_axis=3 is out of range"):
        to_grey(img, channel_axis=3)


def test_bool_becomes_uint8_and_grey_passes_through():
    assert to_grey(np.ones((2, 2), bool)).dtype == np.uint8
    img = np.arange(6, dtype=np.uint16).reshape(2, 3)
    assert to_grey(img) is img


def test_to_channels_last():
    assert to_channels_last(np.zeros((4, 5))).shape == (4, 5, 1)
    assert to_channels_last(np.zeros((4, 5, 4))).shape == (4, 5, 3)
    assert to_channels_last(np.zeros((2, 4, 5)), channel_axis=0).shape == (4, 5, 2)
    with pytest.raises(ValueError, match="exclusive"):
        to_channels_last(np.zeros((4, 5, 3)), rgb=True, channel_axis=0)
    with pytest.raises(ValueError, match="RGB needs 3"):
        to_channels_last(np.zeros((4, 5, 2)), rgb=True)


def test_guess_rgb():
    assert guess_rgb((10, 10, 3)) and guess_rgb((10, 10, 4))
    assert not guess_rgb((10, 3)) and not guess_rgb((10, 10, 5))


def test_finite_values():
    x = np.array([1.0, np.nan, 3.0, np.inf])
    np.testing.assert_array_equal(finite_values(x), [1.0, 3.0])
    with pytest.raises(ValueError, match="no finite value"):
        finite_values(np.full(3, np.nan))


def test_iter_blocks():
    assert list(iter_blocks((5, 6), 2)) == [()]
    assert list(iter_blocks((2, 3, 5, 6), 2)) == [(i, j) for i in range(2) for j in range(3)]
    assert list(iter_blocks((2, 3, 5, 6), 3)) == [(0,), (1,)]


def _components(block):
    from scipy import ndimage as ndi

    return ndi.label(block > 0)[0]


def test_apply_blockwise_unique_ids_across_stack_and_progress():
    plane = np.zeros((6, 6), np.uint8)
    plane[1, 1] = plane[4, 4] = 1  # two objects per plane
    stack = np.stack([plane] * 3)
    calls = []
    out = apply_blockwise(
        _components, stack, unique_ids=True, progress=lambda d, t: calls.append((d, t))
    )
    assert out.shape == stack.shape and out.dtype == np.int32
    assert sorted(np.unique(out)) == list(range(7))
    assert calls[-1] == (3, 3) and calls[0] == (0, 3)


def test_apply_blockwise_volume_mode_and_dask():
    vol = np.zeros((2, 4, 6, 6), np.uint8)  # (T, Z, Y, X)
    vol[:, 1:3, 2, 2] = 1  # one object spanning two z-slices in each time point
    lazy = da.from_array(vol, chunks=(1, 1, 6, 6))
    out3 = apply_blockwise(_components, lazy, spatial_ndim=3, unique_ids=True)
    assert isinstance(out3, np.ndarray)
    assert out3.max() == 2  # one object per volume
    out2 = apply_blockwise(_components, lazy, spatial_ndim=2, unique_ids=True)
    assert out2.max() == 4  # one object per plane


def test_apply_blockwise_can_be_cancelled():
    def stop(done, total):
        if done == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        apply_blockwise(_components, np.ones((3, 4, 4)), progress=stop)


def test_apply_blockwise_rejects_bad_spatial_ndim():
    with pytest.raises(ValueError, match="spatial_ndim must be 2"):
        apply_blockwise(_components, np.ones((3, 4, 4)), spatial_ndim=4)


def test_apply_blockwise_passes_each_block_its_index():
    stack = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    seen = {}

    def record(block, index):
        seen[index] = block.copy()
        return np.zeros(block.shape, np.int32)

    apply_blockwise(record, stack, with_index=True)
    assert sorted(seen) == [(i, j) for i in range(2) for j in range(3)]
    for index, block in seen.items():
        np.testing.assert_array_equal(block, stack[index])
    seen.clear()
    apply_blockwise(record, stack[0, 0], with_index=True)  # a single plane: index ()
    assert list(seen) == [()]


@pytest.mark.parametrize(
    "shape, kwargs, expected",
    [
        ((64, 64), {}, 2),
        ((64, 64, 3), {"rgb": True}, 2),
        ((10, 64, 64), {}, 3),
        ((10, 64, 64), {"axis_labels": ("t", "y", "x")}, 2),
        ((10, 64, 64), {"axis_labels": ("Time", "y", "x")}, 2),
        ((10, 64, 64), {"axis_labels": ("z", "y", "x")}, 3),
        ((5, 10, 64, 64), {"axis_labels": ("t", "z", "y", "x")}, 3),
        ((2, 64, 64), {"channel_axis": 0}, 2),
        ((2, 10, 64, 64), {"channel_axis": 0}, 3),
        ((10, 64, 64), {"axis_labels": ("t", "y")}, 3),  # labels that do not fit: ignored
    ],
)
def test_stack_mode(shape, kwargs, expected):
    from napari_segkit.algorithms.image import stack_mode

    nd, reason = stack_mode(shape, **kwargs)
    assert nd == expected and reason
