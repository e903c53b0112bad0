"""Images with known answers: a generated fluorescence-nuclei image and its ground-truth labels.

Pure numpy/scipy, seeded, made on the fly (nothing to download). Used by the sample-data commands,
the tests and the scripts that train the repo's small models.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def synthetic_nuclei(
    shape: tuple[int, ...] = (256, 256),
    *,
    n_nuclei: int = 40,
    radius: tuple[float, float] = (6.0, 12.0),
    touching: bool = False,
    background_gradient: float = 0.0,
    noise: float = 0.03,
    dtype=np.uint16,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image of elliptical nuclei and its ground-truth instance labels.

    Parameters
    ----------
    shape : tuple of int
        2D ``(Y, X)`` or 3D ``(Z, Y, X)`` (ellipsoids).
    n_nuclei : int
        How many nuclei to place. Unless ``touching``, nuclei do not overlap, so fewer may fit.
    radius : (float, float)
        Range of the semi-axes, in pixels.
    touching : bool
        Allow nuclei to touch and overlap (a later nucleus covers an earlier one in the labels).
    background_gradient : float
        Strength of a linear illumination ramp across x (0: flat), as a fraction of the signal.
    noise : float
        Standard deviation of the Gaussian noise, as a fraction of the signal.
    dtype : dtype
        ``uint16`` (0..~40000), ``uint8`` or a float dtype (0..~1).
    seed : int
        Random seed: the same seed gives the same image.

    Returns
    -------
    image : ndarray
    labels : ndarray of int32
        0 is background; nuclei are 1..N in placement order.

    Examples
    --------
    >>> img, lab = synthetic_nuclei((64, 64), n_nuclei=5, seed=1)
    >>> img.shape, int(lab.max()) <= 5
    ((64, 64), True)
    """
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be 2D or 3D; got {shape}")
    if n_nuclei < 0:
        raise ValueError(f"n_nuclei must be >= 0; got {n_nuclei}")
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    labels = np.zeros(shape, dtype=np.int32)
    signal = np.zeros(shape, dtype=np.float32)
    r_lo, r_hi = radius
    label_id = 0
    attempts = 0
    while label_id < n_nuclei and attempts < 50 * max(n_nuclei, 1):
        attempts += 1
        radii = rng.uniform(r_lo, r_hi, size=ndim)
        centre = np.array([rng.uniform(0, s) for s in shape])
        lo = np.maximum(np.floor(centre - radii - 1).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radii + 2).astype(int), shape)
        if np.any(hi - lo < 2):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grids = np.ogrid[box]
        if ndim == 2:  # a random rotation in the plane
            theta = rng.uniform(0, np.pi)
            dy, dx = grids[0] - centre[0], grids[1] - centre[1]
            u = dy * np.cos(theta) + dx * np.sin(theta)
            v = -dy * np.sin(theta) + dx * np.cos(theta)
            inside = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1
        else:
            inside = (
                sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1
            )
        if inside.sum() < 4:
            continue
        if not touching:
            # keep a one-pixel gap: nuclei that do not touch separate by connectivity
            grown = ndi.binary_dilation(labels[box] > 0, iterations=2)
            if (grown & inside).any():
                continue
        label_id += 1
        labels[box][inside] = label_id
        brightness = rng.uniform(0.6, 1.0)
        signal[box][inside] = brightness
    signal = ndi.gaussian_filter(signal, 1.0)
    if background_gradient:
        ramp = np.linspace(0, background_gradient, shape[-1], dtype=np.float32)
        signal += ramp
    signal += 0.05 + rng.normal(0, noise, size=shape).astype(np.float32)
    np.clip(signal, 0, None, out=signal)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        image = signal.astype(dtype)
    else:
        scale = {np.dtype(np.uint8): 200.0}.get(dtype, 40000.0)
        image = np.clip(signal * scale, 0, np.iinfo(dtype).max).astype(dtype)
    return image, labels
