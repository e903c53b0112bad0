"""Input handling shared by every segmentation method.

One place turns whatever an Image layer holds (grey, RGB/RGBA, multichannel; 2D, 3D, time stacks;
numpy or dask; any numeric dtype; NaN) into the arrays the algorithms work on, and runs an algorithm
plane by plane or volume by volume over a stack. Pure numpy: no napari, no Qt, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

#: ``progress(done, total)``: called by long algorithms after each unit of work. It may raise
#: (for instance :class:`Cancelled`) to stop the work.
ProgressCallback = Callable[[int, int], None]


#: Luminance weights of R, G, B (ITU-R BT.709, as skimage.color.rgb2gray); public for reuse.
LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


class Cancelled(Exception):
    """Raised from a progress callback to stop a running algorithm."""


def report(progress: ProgressCallback | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` if a callback was given."""
    if progress is not None:
        progress(done, total)


def check_image(image: Any, *, name: str = "image", min_ndim: int = 2) -> Any:
    """Check that ``image`` is a non-empty numeric array of at least ``min_ndim`` dimensions.

    Numpy and dask arrays are returned as they are (dask stays lazy); anything else array-like is
    converted with :func:`numpy.asarray`.

    Raises
    ------
    ValueError
        If the array is empty, has too few dimensions, or is not of a real numeric or bool dtype.
    """
    if image is None:
        raise ValueError(f"{name} is None: pass an array")
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "biuf":
        raise ValueError(
            f"{name} has dtype {dtype}; expected a real number or bool array (uint8, uint16, float, ...)"
        )
    if image.ndim < min_ndim:
        raise ValueError(
            f"{name} has {image.ndim} dimension(s) (shape {tuple(image.shape)}); "
            f"at least {min_ndim} are needed"
        )
    if 0 in tuple(image.shape):
        raise ValueError(f"{name} is empty (shape {tuple(image.shape)})")
    return image


def guess_rgb(shape: tuple[int, ...]) -> bool:
    """napari's rule: an image whose last axis has length 3 or 4 (and ndim > 2) is RGB(A)."""
    return len(shape) > 2 and shape[-1] in (3, 4)


def to_channels_last(
    image: Any, *, rgb: bool | None = None, channel_axis: int | None = None
) -> Any:
    """Return ``image`` with its colour/channel axis last, or with a length-1 channel axis if grey.

    Parameters
    ----------
    image : array-like
        Grey, RGB/RGBA (channels last) or multichannel image, numpy or dask.
    rgb : bool, optional
        Whether the last axis holds RGB(A) colour. ``None`` guesses as napari does.
    channel_axis : int, optional
        Axis holding the channels of a multichannel (non-RGB) image.

    Returns
    -------
    array-like
        ``(..., C)``; alpha is dropped from RGBA.
    """
    image = check_image(image)
    if rgb is None:
        rgb = channel_axis is None and guess_rgb(tuple(image.shape))
    if rgb and channel_axis is not None:
        raise ValueError(
            "rgb=True and channel_axis are exclusive: an RGB image has its colour last"
        )
    if rgb:
        if image.shape[-1] not in (3, 4):
            raise ValueError(
                f"rgb=True but the last axis has length {image.shape[-1]}; RGB needs 3, RGBA 4"
            )
        return image[..., :3]
    if channel_axis is not None:
        axis = _check_axis(channel_axis, image.ndim, "channel_axis")
        return _moveaxis(image, axis, -1)
    return image[..., None]


def to_grey(
    image: Any,
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
) -> Any:
    """Reduce an image to one intensity channel, lazily for dask input.

    RGB/RGBA becomes luminance (0.2125 R + 0.7154 G + 0.0721 B, alpha ignored) in float32, in the
    input's own units (a uint8 image stays on 0..255). A multichannel image gives its channel
    ``channel`` along ``channel_axis``. A grey image is returned unchanged (bool becomes uint8).

    Examples
    --------
    >>> rgb = np.zeros((4, 5, 3), np.uint8); rgb[..., 1] = 100
    >>> to_grey(rgb).shape
    (4, 5)
    """
    image = check_image(image)
    if rgb is None:
        rgb = channel_axis is None and guess_rgb(tuple(image.shape))
    if rgb:
        chans = to_channels_last(image, rgb=True)
        return _luminance(chans)
    if channel_axis is not None:
        axis = _check_axis(channel_axis, image.ndim, "channel_axis")
        n = image.shape[axis]
        if not -n <= channel < n:
            raise ValueError(f"channel={channel} is out of range for {n} channels")
        index = [slice(None)] * image.ndim
        index[axis] = channel
        image = image[tuple(index)]
        check_image(image)
    if image.dtype == bool:
        image = image.astype(np.uint8)
    return image


def _luminance(chans: Any) -> Any:
    out = chans[..., 0].astype(np.float32) * LUMA[0]
    out += chans[..., 1].astype(np.float32) * LUMA[1]
    out += chans[..., 2].astype(np.float32) * LUMA[2]
    return out


def _check_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an image of {ndim} dimensions")
    return axis % ndim


def _moveaxis(image: Any, source: int, dest: int) -> Any:
    if isinstance(image, np.ndarray):
        return np.moveaxis(image, source, dest)
    import dask.array as da  # only reached for dask input

    return da.moveaxis(image, source, dest)


def finite_values(plane: np.ndarray) -> np.ndarray:
    """The finite values of ``plane`` (all of it, without a copy, for integer dtypes).

    Raises
    ------
    ValueError
        If no value is finite (an all-NaN image).
    """
    if plane.dtype.kind != "f":
        return plane
    finite = np.isfinite(plane)
    if finite.all():
        return plane
    if not finite.any():
        raise ValueError("image has no finite value (all NaN or infinite)")
    return plane[finite]


def spatial_ndim_for(ndim: int, spatial_ndim: int) -> int:
    """Number of trailing axes processed together: 2 (plane by plane) or 3 (volume by volume)."""
    if spatial_ndim not in (2, 3):
        raise ValueError(
            f"spatial_ndim must be 2 (slice by slice) or 3 (volume); got {spatial_ndim}"
        )
    if ndim < 2:
        raise ValueError(f"the image needs at least 2 spatial dimensions; it has {ndim}")
    return min(spatial_ndim, ndim)


def iter_blocks(shape: tuple[int, ...], spatial_ndim: int) -> Iterator[tuple[int, ...]]:
    """Yield the index of every plane (or volume) over the leading axes of ``shape``."""
    yield from np.ndindex(*shape[: len(shape) - spatial_ndim])  # one () for a single block


def check_memory(nbytes: int, what: str = "the result") -> None:
    """Raise a clear :class:`MemoryError` if ``nbytes`` would not fit in this machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    if nbytes > 0.8 * total:
        raise MemoryError(
            f"{what} would need {nbytes / 2**30:.1f} GiB but this machine has "
            f"{total / 2**30:.1f} GiB of memory; crop the image or process a smaller region"
        )


def apply_blockwise(
    func: Callable[[np.ndarray], np.ndarray],
    image: Any,
    *,
    spatial_ndim: int = 2,
    dtype: Any = np.int32,
    unique_ids: bool = False,
    with_index: bool = False,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Apply ``func`` to every 2D plane or 3D volume of ``image`` and stack the results.

    Parameters
    ----------
    func : callable
        ``func(block) -> labels`` on one numpy block of ``spatial_ndim`` dimensions; the result has
        the block's shape.
    image : array-like
        numpy or dask array of ``ndim >= 2`` (already reduced to one channel). Dask blocks are
        computed one at a time, so memory holds one input block plus the output.
    spatial_ndim : {2, 3}
        Process plane by plane (2) or volume by volume (3).
    dtype : dtype
        The output's dtype.
    unique_ids : bool
        Offset each block's labels past the previous blocks' largest label, so that an object ID is
        unique across the whole stack.
    with_index : bool
        Call ``func(block, index)`` with the block's index into ``image`` (from
        :func:`iter_blocks`), for a func that also writes per-block results elsewhere.
    progress : callable, optional
        ``progress(done, total)`` after each block.

    Returns
    -------
    numpy.ndarray
        Labels of ``image.shape``.
    """
    image = check_image(image)
    spatial_ndim = spatial_ndim_for(image.ndim, spatial_ndim)
    check_memory(int(np.prod(image.shape)) * np.dtype(dtype).itemsize, "the labels")
    blocks = list(iter_blocks(tuple(image.shape), spatial_ndim))
    call = func if with_index else (lambda block, _index: func(block))
    if len(blocks) == 1:  # a single plane/volume: no output copy
        out = np.asarray(call(np.asarray(image), blocks[0]))
        out = out if out.dtype == dtype else out.astype(dtype)
        report(progress, 1, 1)
        return out
    out = np.zeros(image.shape, dtype=dtype)
    offset = 0
    report(progress, 0, len(blocks))
    for i, idx in enumerate(blocks):
        res = np.asarray(call(np.asarray(image[idx]), idx))
        if unique_ids:
            top = int(res.max(initial=0))
            if offset:
                np.add(res, offset, out=out[idx], where=res > 0, casting="unsafe")
            else:
                out[idx] = res
            offset += top
            if offset > np.iinfo(dtype).max:
                raise ValueError(f"more objects ({offset}) than {np.dtype(dtype)} labels can hold")
        else:
            out[idx] = res
        report(progress, i + 1, len(blocks))
    return out


#: Axis labels that name time: a stack along such an axis is a time-lapse, not a z-stack.
TIME_LABELS = ("t", "time", "frame", "frames", "timepoint", "timepoints")


def stack_mode(
    shape: tuple[int, ...],
    *,
    axis_labels: Sequence[str] | None = None,
    rgb: bool = False,
    channel_axis: int | None = None,
) -> tuple[int, str]:
    """Decide how a stack is segmented: ``(spatial_ndim, reason)``.

    A 3D grey image is a z-stack, segmented as one volume (``spatial_ndim=3``), unless an axis
    label names time (``t``, ``time``, ``frame``): a time-lapse is segmented plane by plane
    (``spatial_ndim=2``), or time point by time point for 4D ``(T, Z, Y, X)``.

    Parameters
    ----------
    shape : tuple of int
        The data's shape, colour/channel axis included.
    axis_labels : sequence of str, optional
        One label per axis of ``shape`` (napari's ``layer.axis_labels``; a TIFF file's axes).
    rgb : bool
        The last axis is RGB(A) colour.
    channel_axis : int, optional
        The axis of the channels of a multichannel image.

    Examples
    --------
    >>> stack_mode((40, 256, 256))
    (3, '3D image: a z-stack, segmented as one volume')
    >>> stack_mode((40, 256, 256), axis_labels=("t", "y", "x"))
    (2, "time axis 't': a time-lapse, segmented plane by plane")
    >>> stack_mode((256, 256, 3), rgb=True)
    (2, '2D image')
    """
    axes = list(range(len(shape)))
    if rgb and axes:
        axes.pop()
    if channel_axis is not None:
        axes.remove(channel_axis % len(shape))
    labels = [None] * len(shape) if axis_labels is None else list(axis_labels)
    if len(labels) != len(shape):  # labels that do not fit the data tell nothing
        labels = [None] * len(shape)
    spatial = len(axes)
    if spatial < 3:
        return 2, "2D image"
    leading = [str(labels[a]).strip().lower() for a in axes[:-2] if labels[a] is not None]
    time = next((name for name in leading if name in TIME_LABELS), None)
    if time is not None:
        if spatial >= 4:
            return 3, f"time axis {time!r}: each time point's z-stack segmented as one volume"
        return 2, f"time axis {time!r}: a time-lapse, segmented plane by plane"
    if spatial == 3:
        return 3, "3D image: a z-stack, segmented as one volume"
    return 3, f"{spatial}D image: each 3D volume segmented as a whole"
