"""Reading images and writing labels safely (no napari, no Qt).

- :func:`read_image` gives one clear ``ImageReadError`` (naming the file and the problem) for a
  missing file, a folder, an empty file or a file that is not an image, and returns the axis letters
  TIFF files carry (``"ZYX"``, ``"TYX"``, ...) so that a z-stack and a time-lapse can be told apart.
- :func:`write_labels` never overwrites an existing file unless asked, checks that the folder exists,
  and writes through a temporary file in the same folder that is renamed into place when complete,
  so an interrupted run never leaves a half-written output (or destroys the previous one).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ImageReadError",
    "OutputExistsError",
    "LoadedImage",
    "read_image",
    "write_labels",
    "atomic_path",
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIXES",
    "find_training_pairs",
]

#: File types :func:`read_image` reads.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".npy", ".zarr")


#: Name endings of label files: ``X.tif`` has its labels in ``X_labels.tif`` (or ``X_masks.tif``...).
LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_seg")
#: File types :func:`find_training_pairs` looks at in folders.
PAIR_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy")


class ImageReadError(ValueError):
    """An input file is missing or is not an image this plugin can read."""


class OutputExistsError(FileExistsError):
    """The output file exists and overwriting was not asked for."""


@dataclass
class LoadedImage:
    """An image read from disk, with the axis letters its file declares (if any)."""

    data: Any
    axes: str | None
    path: Path

    @property
    def axis_labels(self) -> tuple[str, ...] | None:
        return None if self.axes is None else tuple(self.axes.lower())


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read an image file (TIFF, PNG, JPEG, ..., ``.npy``, a zarr array).

    Raises
    ------
    ImageReadError
        Naming the file: it does not exist, is a folder, is empty, or cannot be read as an image.

    Examples
    --------
    >>> read_image("no/such/file.tif")
    Traceback (most recent call last):
    ...
    napari_segkit.io.ImageReadError: no/such/file.tif: no such file
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if path.is_dir() and suffix != ".zarr":
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes = series.axes
                data = series.asarray()
            axes = axes if len(axes) == data.ndim else None
            return LoadedImage(data, _tiff_axes(axes), path)
        if suffix == ".npy":
            return LoadedImage(np.load(path, allow_pickle=False), None, path)
        if suffix == ".zarr":
            import dask.array as da

            return LoadedImage(da.from_zarr(str(path)), None, path)
        from skimage.io import imread

        return LoadedImage(imread(path), None, path)
    except ImageReadError:
        raise
    except Exception as err:  # every reader has its own exceptions: name the file
        kind = type(err).__name__
        raise ImageReadError(f"{path}: cannot be read as an image ({kind}: {err})") from err


def _tiff_axes(axes: str | None) -> str | None:
    """tifffile's axis letters, with 'Q' (unknown) and 'I' (image sequence) kept as unknown."""
    if axes is None or any(a in "QI" for a in axes):
        return None
    return axes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` only when the block completes.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; choose another name or pass --overwrite")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_labels(path: str | os.PathLike, labels: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a label image (TIFF, zlib-compressed; ``.npy`` also works), atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "labels.tif"
    >>> _ = write_labels(out, np.ones((4, 4), np.int32))
    >>> write_labels(out, np.ones((4, 4), np.int32))
    Traceback (most recent call last):
    ...
    napari_segkit.io.OutputExistsError: ...labels.tif: exists; choose another name or pass --overwrite
    """
    path = Path(path)
    labels = np.asarray(labels)
    with atomic_path(path, overwrite=overwrite) as tmp:
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, labels)
        else:
            import tifffile

            # one grey page per plane: a (3|4, Y, X) stack is not RGB
            tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack")
    return path


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PAIR_SUFFIXES)


def _base_name(path: Path) -> str:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem[:-4] if stem.lower().endswith(".ome") else stem


def _is_label_file(path: Path) -> bool:
    return _base_name(path).lower().endswith(LABEL_SUFFIXES)


def _pair_key(path: Path) -> str:
    stem = _base_name(path)
    for suffix in LABEL_SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def find_training_pairs(
    images: list[str | os.PathLike], labels: list[str | os.PathLike] | None = None
) -> list[tuple[Path, Path]]:
    """(image file, labels file) pairs from files or folders.

    Parameters
    ----------
    images : list of path
        Image files, or folders. Without ``labels``, folders hold both: each image ``X.tif`` has
        its labels in ``X_labels.tif`` (or ``X_label``, ``X_masks``, ``X_mask``, ``X_seg``).
    labels : list of path, optional
        Label files (one per image, same order), or folders (the labels under the images' names,
        with or without those endings).

    Raises
    ------
    ValueError
        A missing path, no labels, an image without labels, or counts that differ.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("a.tif", "a_labels.tif", "b.tif", "b_masks.tif"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [(i.name, lab.name) for i, lab in find_training_pairs([folder])]
    [('a.tif', 'a_labels.tif'), ('b.tif', 'b_masks.tif')]
    """
    images = [Path(p).expanduser() for p in images]
    labels = [Path(p).expanduser() for p in labels or []]
    for p in [*images, *labels]:
        if not p.exists():
            raise ValueError(f"{p} does not exist")
    if not labels:  # folders holding both
        found = [f for p in images for f in (_files_in(p) if p.is_dir() else [p])]
        labels = [f for f in found if _is_label_file(f)]
        images = [f for f in found if not _is_label_file(f)]
        if not labels:
            raise ValueError(
                "no labels: give label files, or folders where each image X.tif has its "
                f"labels as X_labels.tif (or {', '.join(LABEL_SUFFIXES[1:])})"
            )
    image_files = [f for p in images for f in (_files_in(p) if p.is_dir() else [p])]
    label_files = [f for p in labels for f in (_files_in(p) if p.is_dir() else [p])]
    if any(p.is_dir() for p in [*images, *labels]):
        by_key = {_pair_key(f): f for f in label_files}
        pairs = [(f, by_key.get(_pair_key(f))) for f in image_files if not _is_label_file(f)]
        missing = [str(f) for f, lab in pairs if lab is None]
        if missing:
            raise ValueError(f"no labels found for {', '.join(missing[:3])}")
        if not pairs:
            raise ValueError(f"no image files in {', '.join(str(p) for p in images)}")
        return pairs
    if len(image_files) != len(label_files):
        raise ValueError(
            f"{len(image_files)} image(s) but {len(label_files)} label file(s); give one "
            f"label file per image, in the same order"
        )
    return list(zip(image_files, label_files, strict=True))
