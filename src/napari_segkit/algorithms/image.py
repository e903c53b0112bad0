"""Input handling shared by every segmentation method.

One place turns whatever an Image layer holds (grey, RGB/RGBA, multichannel; 2D, 3D, time stacks;
numpy or dask; any numeric dtype; NaN) into the arrays the algorithms work on, and runs an algorithm
plane by plane or volume by volume over a stack. Pure numpy: no napari, no Qt, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    """Return ``image`` with its color/channel axis last, or with a length-1 channel axis if grey.

    Parameters
    ----------
    image : array-like
        Grey, RGB/RGBA (channels last) or multichannel image, numpy or dask.
    rgb : bool, optional
        Whether the last axis holds RGB(A) color. ``None`` guesses as napari does.
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
        raise ValueError("rgb=True and channel_axis are exclusive: an RGB image has its color last")
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


def check_spacing(spacing: Any, ndim: int) -> tuple[float, ...] | None:
    """``spacing`` (the pixel/voxel size along each of ``ndim`` spatial axes, e.g. ``(dz, dy,
    dx)``) as floats; None stays None. The one check of a ``spacing`` argument in the package:
    the algorithms and the models call it.

    Raises
    ------
    ValueError
        Naming ``spacing``, unless it is ``ndim`` finite numbers > 0.

    Examples
    --------
    >>> check_spacing([2, 0.5, 0.5], 3)
    (2.0, 0.5, 0.5)
    >>> check_spacing(None, 3) is None
    True
    """
    if spacing is None:
        return None
    message = f"spacing must be {ndim} positive numbers (one per spatial axis); got {spacing!r}"
    try:
        values = tuple(float(s) for s in np.atleast_1d(spacing))
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(message)
    return values


def relative_spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    """Pixel (voxel) size per axis relative to the last axis, x = 1 (all 1.0 for ``None``):
    sizes given in x pixels become, along each axis, ``size / relative_spacing[axis]`` pixels.

    Examples
    --------
    >>> relative_spacing((2.0, 0.5, 0.5), 3)
    (4.0, 1.0, 1.0)
    >>> relative_spacing(None, 2)
    (1.0, 1.0)
    """
    values = check_spacing(spacing, ndim)
    if values is None:
        return (1.0,) * ndim
    return tuple(v / values[-1] for v in values)


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
        The data's shape, color/channel axis included.
    axis_labels : sequence of str, optional
        One label per axis of ``shape`` (a TIFF file's axes), or napari's ``layer.axis_labels``
        (which has none for an RGB axis).
    rgb : bool
        The last axis is RGB(A) color.
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
    if rgb and len(labels) == len(shape) - 1:  # napari's axis_labels leave out the RGB axis
        labels.append("rgb")
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


# ---- the one place that reads an image's layout (widget, command line, recipes) -----------------

#: ``stack`` option values: what the user may pick, as text (command line, recipes) or as the
#: widget's numbers (0 auto, 2 plane by plane, 3 whole volumes)
STACK_OPTIONS = {"auto": 0, "planes": 2, "volume": 3, 0: 0, 2: 2, 3: 3}
#: level 0 of a multiscale image above this size (bytes) is "huge": a note tells the user
HUGE_BYTES = 2**30


@dataclass
class InputImage:
    """An image ready for a method, and how it is read: what :func:`prepare_input` returns.

    ``data`` is level 0 of a multiscale image, numpy or dask (still lazy), float16 converted to
    float32. ``rgb``, ``channel_axis`` (non-negative or None), ``channel`` and ``spatial_ndim``
    are the keywords every method takes; ``stack_reason`` says why ``stack="auto"`` chose
    ``spatial_ndim``; ``notes`` are lines the user should see (e.g. a huge multiscale level 0).
    """

    data: Any
    rgb: bool = False
    channel_axis: int | None = None
    channel: int = 0
    spatial_ndim: int = 2
    stack_reason: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """The shape of the labels a method gives: the data's without its color/channel axis."""
        shape = list(self.data.shape)
        if self.rgb:
            shape.pop()
        elif self.channel_axis is not None:
            del shape[self.channel_axis]
        return tuple(int(n) for n in shape)

    def as_params(self) -> dict:
        """The input options recorded next to a method's parameters (layer metadata)."""
        return {
            "channel_axis": self.channel_axis,
            "channel": self.channel,
            "spatial_ndim": self.spatial_ndim,
        }


def guess_channel_axis(shape: Sequence[int], *, rgb: bool = False) -> int | None:
    """The channel axis a layout implies, or None: a short last axis (2 to 8) after a long one.

    napari shows a ``(Y, X, 2)`` image as 64 planes of ``(X, 2)`` pixels; such a last axis is
    almost surely channels (microscopes write channels last as often as first). A leading axis
    is not guessed: ``(2, Y, X)`` may be two channels or two z-planes.

    Examples
    --------
    >>> guess_channel_axis((64, 64, 2))
    2
    >>> guess_channel_axis((5, 64, 64)) is None, guess_channel_axis((64, 64, 3), rgb=True) is None
    (True, True)
    """
    shape = tuple(int(n) for n in shape)
    if rgb or len(shape) < 3:
        return None
    if 2 <= shape[-1] <= 8 and shape[-2] >= 4 * shape[-1]:
        return len(shape) - 1
    return None


def _level0(image: Any, multiscale: bool | None) -> tuple[Any, list[str]]:
    """Level 0 of a multiscale image (a sequence of arrays), and a note if it is huge."""
    if multiscale is None:
        multiscale = (
            isinstance(image, list | tuple)
            and len(image) > 0
            and all(hasattr(level, "shape") and hasattr(level, "dtype") for level in image)
        )
    if not multiscale:
        return image, []
    levels = list(image)
    if not levels:
        raise ValueError("image is an empty multiscale pyramid (no level)")
    data = levels[0]
    notes = []
    nbytes = int(np.prod(data.shape, dtype=np.float64)) * np.dtype(data.dtype).itemsize
    if nbytes > HUGE_BYTES:
        notes.append(
            f"multiscale image: segmenting its full-resolution level 0 of {len(levels)} "
            f"({' x '.join(str(n) for n in data.shape)}, {nbytes / 2**30:.1f} GiB); "
            "this takes a while: crop it for a quicker try"
        )
    return data, notes


def _lazy(data: Any) -> Any:
    """numpy and dask arrays as they are; another array (zarr, h5py, ...) as a lazy dask array."""
    if isinstance(data, np.ndarray) or hasattr(data, "dask"):
        return data
    if hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__"):
        import dask.array as da

        return da.from_array(data, chunks="auto")
    return np.asarray(data)


def _has_finite(data: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Whether a float array has a finite value: read slab by slab, stopping at the first."""
    step = max(1, chunk // max(1, int(np.prod(data.shape[1:]))))
    return any(np.isfinite(data[i : i + step]).any() for i in range(0, data.shape[0], step))


def prepare_input(
    image: Any,
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    stack: str | int = "auto",
    axis_labels: Sequence[str] | None = None,
    multiscale: bool | None = None,
    uses_all_channels: bool = False,
    supports_volume: bool = True,
) -> InputImage:
    """Read how a method should see ``image``: the one place for the widget, CLI and recipes.

    Nothing is computed (dask stays lazy); the layout is checked, and a numpy float image must
    have a finite value (read until the first one is found).

    Parameters
    ----------
    image : array-like or sequence of array-like
        Grey, RGB/RGBA (channels last) or multichannel; any number of dimensions; numpy, dask or
        another array (zarr: read lazily through dask); or the levels of a multiscale image, of
        which level 0 (full resolution) is used. float16 becomes float32; bool stays bool.
    rgb : bool, optional
        The last axis is RGB(A) color; ``None`` guesses as napari does (last axis of 3 or 4).
    channel_axis : int, optional
        The axis of the channels of a multichannel image (exclusive with ``rgb``).
    channel : int
        The channel a single-channel method segments (checked against the channel axis).
    stack : {'auto', 'planes', 'volume'} or {0, 2, 3}
        Stacks: each 2D plane on its own, each 3D volume as a whole, or decided from the axes
        (``auto``: see :func:`stack_mode`).
    axis_labels : sequence of str, optional
        One label per axis (napari's ``layer.axis_labels``, which leaves out an RGB axis; a
        TIFF file's axes), read by ``stack='auto'``.
    multiscale : bool, optional
        ``image`` is a list of levels; ``None`` decides from its type (a list of arrays).
    uses_all_channels : bool
        The method uses every channel (``channel`` is not checked).
    supports_volume : bool
        The method can process whole 3D volumes (otherwise always plane by plane).

    Returns
    -------
    InputImage

    Raises
    ------
    ValueError
        Naming the problem: not an image (empty, non-numeric, fewer than 2 dimensions; a numpy
        image without a finite value: dask is not read here), ``rgb``
        with a last axis that is not 3 or 4 long, a channel axis or channel out of range, fewer
        than 2 spatial dimensions once the channel axis is set aside, an unknown ``stack``.

    Examples
    --------
    >>> inp = prepare_input(np.zeros((64, 64, 2), np.float16), channel_axis=-1)
    >>> inp.channel_axis, inp.data.dtype, inp.labels_shape, inp.spatial_ndim
    (2, dtype('float32'), (64, 64), 2)
    >>> prepare_input(np.zeros((40, 64, 64))).stack_reason
    '3D image: a z-stack, segmented as one volume'
    >>> prepare_input(np.zeros((2, 64, 64)), channel_axis=0, channel=2)
    Traceback (most recent call last):
    ...
    ValueError: channel=2 is out of range: axis 0 has 2 channels (0..1)
    """
    data, notes = _level0(image, multiscale)
    data = check_image(_lazy(data))
    if np.dtype(data.dtype) == np.float16:  # few algorithms take float16; exact in float32
        data = data.astype(np.float32)
    if isinstance(data, np.ndarray) and data.dtype.kind == "f" and not _has_finite(data):
        raise ValueError("image has no finite value (all NaN or infinite)")
    shape = tuple(int(n) for n in data.shape)
    if rgb is None:
        rgb = channel_axis is None and guess_rgb(shape)
    rgb = bool(rgb)
    if rgb and channel_axis is not None:
        raise ValueError("rgb=True and channel_axis are exclusive: an RGB image has its color last")
    if rgb and shape[-1] not in (3, 4):
        raise ValueError(f"rgb=True but the last axis has length {shape[-1]}; RGB needs 3, RGBA 4")
    if channel_axis is not None:
        channel_axis = _check_axis(int(channel_axis), len(shape), "channel_axis")
        n = shape[channel_axis]
        if not uses_all_channels and not -n <= int(channel) < n:
            raise ValueError(
                f"channel={channel} is out of range: axis {channel_axis} has {n} channels "
                f"(0..{n - 1})"
            )
    spatial = len(shape) - (1 if rgb or channel_axis is not None else 0)
    if spatial < 2:
        raise ValueError(
            f"image of shape {shape} has {spatial} spatial dimension(s) once its "
            f"{'color' if rgb else 'channel'} axis is set aside; at least 2 are needed"
        )
    if stack not in STACK_OPTIONS:
        raise ValueError(f"stack must be one of 'auto', 'planes', 'volume'; got {stack!r}")
    spatial_ndim, reason = 2, ""
    if supports_volume:
        spatial_ndim = STACK_OPTIONS[stack]
        if spatial_ndim == 0:
            spatial_ndim, reason = stack_mode(
                shape, axis_labels=axis_labels, rgb=rgb, channel_axis=channel_axis
            )
        if spatial < 3:
            spatial_ndim = 2
    return InputImage(
        data=data,
        rgb=rgb,
        channel_axis=channel_axis,
        channel=int(channel),
        spatial_ndim=spatial_ndim,
        stack_reason=reason,
        notes=tuple(notes),
    )
