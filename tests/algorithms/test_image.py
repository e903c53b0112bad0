"""Input handling shared by every method."""

import dask.array as da
import numpy as np
import pytest

from napari_segkit.algorithms.image import (
    Cancelled,
    apply_blockwise,
    check_image,
    finite_values,
    guess_channel_axis,
    guess_rgb,
    iter_blocks,
    prepare_input,
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


# ---- prepare_input: the one reading of an image's layout (widget, command line, recipes) -----


def test_prepare_input_rgb_channels_and_labels_shape():
    inp = prepare_input(np.zeros((8, 16, 16, 3), np.uint8))  # napari's rule: RGB
    assert inp.rgb and inp.channel_axis is None and inp.labels_shape == (8, 16, 16)
    assert (inp.spatial_ndim, inp.stack_reason) == (
        3,
        "3D image: a z-stack, segmented as one volume",
    )
    inp = prepare_input(np.zeros((2, 5, 16, 16)), channel_axis=-4, channel=1)
    assert (inp.channel_axis, inp.channel, inp.labels_shape) == (0, 1, (5, 16, 16))
    assert inp.as_params() == {"channel_axis": 0, "channel": 1, "spatial_ndim": 3}
    # a method that uses every channel does not check the channel
    assert prepare_input(np.zeros((2, 8, 8)), channel_axis=0, channel=5, uses_all_channels=True)
    # a method that cannot do volumes: plane by plane, whatever the stack option
    assert (
        prepare_input(np.zeros((4, 8, 8)), stack="volume", supports_volume=False).spatial_ndim == 2
    )


def test_prepare_input_stack_options_and_axis_labels():
    vol = np.zeros((4, 8, 8))
    assert prepare_input(vol, stack="planes").spatial_ndim == 2
    assert prepare_input(vol, stack=2).spatial_ndim == 2
    assert prepare_input(vol, stack="volume").stack_reason == ""
    inp = prepare_input(vol, axis_labels=("t", "y", "x"))
    assert inp.spatial_ndim == 2 and "time" in inp.stack_reason
    # napari's axis_labels of an RGB layer leave out the color axis
    inp = prepare_input(np.zeros((4, 8, 8, 3), np.uint8), axis_labels=("time", "y", "x"))
    assert inp.spatial_ndim == 2 and "time" in inp.stack_reason
    assert prepare_input(np.zeros((8, 8)), stack="volume").spatial_ndim == 2  # a 2D image


@pytest.mark.parametrize(
    "image, kwargs, match",
    [
        (np.zeros((8, 8, 2)), {"rgb": True}, "RGB needs 3"),
        (np.zeros((8, 8, 3)), {"rgb": True, "channel_axis": 0}, "exclusive"),
        (np.zeros((2, 8, 8)), {"channel_axis": 3}, "channel_axis=3 is out of range"),
        (np.zeros((2, 8, 8)), {"channel_axis": 0, "channel": 2}, r"channel=2 .* 2 channels"),
        (np.zeros((8, 2)), {"channel_axis": 1}, "1 spatial dimension"),
        (np.zeros((8, 8)), {"stack": "sideways"}, "stack must be"),
        (np.zeros((0, 8)), {}, "empty"),
        (np.full((3000, 600), np.nan, np.float32), {}, "no finite value"),
        (np.full((8, 8), np.inf), {}, "no finite value"),
        ([], {"multiscale": True}, "no level"),
    ],
)
def test_prepare_input_rejects(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_input(image, **kwargs)


def test_prepare_input_finds_a_finite_value_anywhere():
    img = np.full((3000, 600), np.nan, np.float32)  # several slabs
    img[-1, -1] = 1.0
    assert prepare_input(img).data is img
    assert prepare_input(da.full((8, 8), np.nan, chunks=4)).data.shape == (8, 8)  # not read


def test_prepare_input_multiscale_dask_float16_and_other_arrays(monkeypatch):
    import napari_segkit.algorithms.image as image_module

    img = np.arange(64.0).reshape(8, 8)
    inp = prepare_input([img, img[::2, ::2]])
    assert inp.data is img and inp.notes == ()
    monkeypatch.setattr(image_module, "HUGE_BYTES", 100)
    inp = prepare_input([img, img[::2, ::2]], multiscale=True)
    assert inp.data is img and "level 0 of 2" in inp.notes[0]
    lazy = da.from_array(img.astype(np.float16), chunks=4)
    inp = prepare_input(lazy)
    assert isinstance(inp.data, da.Array) and inp.data.dtype == np.float32  # still lazy
    assert prepare_input(img.astype(np.float16)).data.dtype == np.float32

    class Other:  # an array that is neither numpy nor dask (zarr, h5py, ...): read lazily
        shape, dtype, ndim = img.shape, img.dtype, 2

        def __getitem__(self, key):
            return img[key]

    inp = prepare_input(Other())
    assert isinstance(inp.data, da.Array)
    np.testing.assert_array_equal(inp.data.compute(), img)


@pytest.mark.parametrize(
    "shape, rgb, expected",
    [
        ((64, 64, 2), False, 2),
        ((3, 64, 64, 4), False, 3),
        ((64, 64, 3), True, None),  # RGB
        ((64, 64), False, None),
        ((2, 64, 64), False, None),  # two channels or two planes: not guessed
        ((64, 6, 3), False, None),  # the last axis is not short next to the one before
        ((64, 64, 16), False, None),
    ],
)
def test_guess_channel_axis(shape, rgb, expected):
    assert guess_channel_axis(shape, rgb=rgb) == expected
