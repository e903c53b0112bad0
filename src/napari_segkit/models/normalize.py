"""Input normalization shared by the models (pure numpy; no torch).

Every segkit model sees its input scaled per image (per plane or per volume) and per channel so
that the ``percentiles`` (1 and 99.8 by default) map to 0 and 1: the same nuclei image in uint8,
uint16 or float gives the same input. The models' checkpoints keep the rule under the metadata key
``"normalization"`` (a dict; see :data:`DEFAULT_PERCENTILES`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Percentiles mapped to 0 and 1.
DEFAULT_PERCENTILES = (1.0, 99.8)
#: Values sampled per image to estimate the percentiles (a strided subset of larger images).
SAMPLE_SIZE = 65536


def normalization_range(block: np.ndarray, norm: dict[str, Any] | None = None) -> tuple:
    """Per-channel ``(lo, scale)`` so that ``(block - lo) * scale`` is about 0..1.

    Parameters
    ----------
    block : ndarray, shape (..., C)
        One plane ``(Y, X, C)`` or volume ``(Z, Y, X, C)``, channels last.
    norm : dict, optional
        ``{"percentiles": [lo, hi]}`` (default :data:`DEFAULT_PERCENTILES`); with
        ``"uint8_rgb": "divide_255"`` an 8-bit 3-channel block is divided by 255 instead; with
        ``"range": [lo, scale]`` (one value per channel each) these fixed values are returned
        whatever the block holds (block-by-block segmentation measures them once over the
        whole image: :func:`fixed_range`).

    Returns
    -------
    lo, scale : ndarray of float32, shape (C,)
        NaN and infinite values are ignored; a constant channel gets ``scale = 1``.

    Examples
    --------
    >>> lo, scale = normalization_range(np.arange(1000.0).reshape(10, 100, 1))
    >>> round(float(lo[0]), 2), round(float(1 / scale[0]), 2)
    (9.99, 987.01)
    """
    norm = norm or {}
    c = block.shape[-1]
    if norm.get("range") is not None:
        lo, scale = (np.array(v, np.float32).reshape(-1) for v in norm["range"])
        if lo.shape != (c,) or scale.shape != (c,):
            raise ValueError(
                f"normalization range has {lo.size} and {scale.size} values for {c} channel(s)"
            )
        return lo, scale
    block = np.asarray(block)
    if c == 3 and block.dtype == np.uint8 and norm.get("uint8_rgb") == "divide_255":
        return np.zeros(3, np.float32), np.full(3, 1 / 255, np.float32)
    p_lo, p_hi = norm.get("percentiles", DEFAULT_PERCENTILES)
    spatial = block.shape[:-1]
    step = max(1, int((math.prod(spatial) / SAMPLE_SIZE) ** (1 / len(spatial))))
    sub = block[tuple(slice(None, None, step) for _ in spatial)].reshape(-1, c).astype(np.float32)
    lo = np.zeros(c, np.float32)
    scale = np.ones(c, np.float32)
    for k in range(c):
        values = sub[:, k]
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        a, b = np.percentile(values, (p_lo, p_hi))
        lo[k] = a
        scale[k] = 1.0 / (b - a) if b > a else 1.0
    return lo, scale


def normalize(block: np.ndarray, norm: dict[str, Any] | None = None) -> np.ndarray:
    """``block`` (channels last) scaled by :func:`normalization_range`, float32, NaN set to 0.

    Examples
    --------
    >>> x = normalize(np.linspace(0, 100, 64 * 64).reshape(64, 64, 1))
    >>> bool(-0.1 < x.min() < 0.0 and 1.0 < x.max() < 1.1)
    True
    """
    lo, scale = normalization_range(block, norm)
    block = np.asarray(block)
    out = block.astype(np.float32)  # a copy: the passes below work in place
    out -= lo
    out *= scale
    if block.dtype.kind in "fc":  # integers have no NaN or infinity
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def strided_sample(block: Any, size: int = SAMPLE_SIZE) -> np.ndarray:
    """The strided subset of a channels-last block that :func:`normalization_range` reads.

    ``block`` may be a dask array: only the sample is computed (every chunk is read once).
    :func:`normalization_range` of the sample equals that of the whole block.
    """
    spatial = block.shape[:-1]
    step = max(1, int((math.prod(spatial) / size) ** (1 / len(spatial))))
    sub = block[tuple(slice(None, None, step) for _ in spatial)]
    if hasattr(sub, "compute"):
        sub = sub.compute()
    return np.asarray(sub)


def fixed_range(sample: np.ndarray, norm: dict[str, Any] | None = None) -> dict[str, Any]:
    """``norm`` with the ``"range"`` of ``sample`` fixed, so that every block of an image is
    scaled as the whole image is (see :func:`strided_sample`).

    Examples
    --------
    >>> img = np.arange(1000.0).reshape(10, 100, 1)
    >>> norm = fixed_range(strided_sample(img))
    >>> lo, scale = normalization_range(img[:2], norm)
    >>> round(float(lo[0]), 2)
    9.99
    """
    lo, scale = normalization_range(sample, {k: v for k, v in (norm or {}).items() if k != "range"})
    return {**(norm or {}), "range": [lo.tolist(), scale.tolist()]}
