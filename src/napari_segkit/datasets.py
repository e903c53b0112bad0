"""Images with known answers: a generated fluorescence-nuclei image and its ground-truth labels.

Pure numpy/scipy, seeded, made on the fly (nothing to download). Used by the sample-data commands,
the tests and the scripts that train the repo's small models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


# --------------------------------------------------------------------------------------------------
# Realistic generated nuclei (2D and 3D)
# --------------------------------------------------------------------------------------------------
#
# How an image is made (both dimensions, both configurations):
#   1. object sizes (log-uniform median per image, log-normal spread inside it), a coverage target
#      and a clumping level are drawn;
#   2. centres are placed one by one: a new clump starts at a free random position; a clump member is
#      put against an existing member, overlapping it a little;
#   3. every nucleus is a star-convex shape: a radius per direction (a table over angles in 2D, a
#      perturbed ellipsoid in 3D). Each pixel goes to the nucleus with the smallest normalized radial
#      distance rho = |p - c| / r(direction) below 1, so overlapping shapes are cut along a border
#      through their outline crossings (a weighted Voronoi partition): shared borders are flat-ish and
#      the labels never overlap;
#   4. intensity = brightness (log-normal with dim and bright subsets) x radial profile x texture +
#      nucleolus-like spots, blurred by the PSF; defocused nuclei, out-of-focus blobs and haze are
#      blurred much more; debris is added unlabelled; background = offset x gradient x smooth field;
#   5. optional resolution loss, gamma, then photon (Poisson) and camera (gain, offset, read noise)
#      noise, saturation and conversion to the requested dtype.

CONFIGS = ("train", "holdout")
_NLUT = 256  # angles in the 2D radius tables
_PI = np.float32(np.pi)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _blur(x: np.ndarray, sigma, *, fast_above: float = 3.0) -> np.ndarray:
    """Gaussian blur; large sigmas use three box filters (same variance, cost independent of size)."""
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (x.ndim,))
    if np.all(sigma <= fast_above):
        return ndi.gaussian_filter(x, sigma, truncate=3.0, mode="nearest")
    out = x
    for axis, s in enumerate(sigma):
        if s <= 0:
            continue
        if s <= fast_above:
            out = ndi.gaussian_filter1d(out, s, axis=axis, truncate=3.0, mode="nearest")
            continue
        width = max(
            int(round(np.sqrt(4.0 * s * s + 1.0))), 1
        )  # 3 boxes of width w: var 3(w^2-1)/12
        for _ in range(3):
            out = ndi.uniform_filter1d(out, width, axis=axis, mode="nearest")
    return out


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth random multiplicative field exp(strength * cubic polynomial) over the last 2 axes."""
    h, w = shape[-2:]
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    c = rng.normal(0, 1, 9).astype(np.float32)
    poly = (
        c[0] * x
        + c[1] * y
        + c[2] * x * x
        + c[3] * x * y
        + c[4] * y * y
        + c[5] * x * x * x
        + c[6] * y * y * y
        + c[7] * x * x * y
        + c[8] * x * y * y
    )
    poly /= max(float(np.abs(poly).max()), 1e-6)
    return np.exp(np.float32(strength) * poly)


def _gradient(shape: tuple[int, ...], rng: np.random.Generator, amount: float) -> np.ndarray:
    """1 + a linear ramp of total swing ``amount`` in a random direction (last 2 axes)."""
    h, w = shape[-2:]
    phi = rng.uniform(0, 2 * np.pi)
    y = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    return 1.0 + np.float32(amount) * (np.float32(np.cos(phi)) * x + np.float32(np.sin(phi)) * y)


_FAMILIES = {  # aspect range, harmonics, harmonic amplitude
    "round": ((1.0, 1.35), (3, 7), 0.04),  # mildly elongated, lumpy: not an ellipse
    "elongated": ((1.5, 2.6), (3, 6), 0.03),
    "kidney": ((1.3, 1.9), (3, 6), 0.03),  # + a dent in the middle of one long side
    "irregular": ((1.0, 1.6), (2, 9), 0.11),  # many lobes
}


def _radius_tables(rng: np.random.Generator, families: Sequence[str]) -> np.ndarray:
    """Relative radius r(theta)^2 on ``_NLUT`` angles in [-pi, pi), one row per shape, scaled so
    that mean(r^2) == 1 (the area is then pi r_eq^2 once multiplied by r_eq^2).

    Each row: an ellipse of random aspect and orientation, times 1 + a few random Fourier
    harmonics (higher ones weaker); kidney shapes get a Gaussian dent on one long side.
    """
    families = np.asarray(families)
    n = len(families)
    out = np.empty((n, _NLUT), np.float32)
    theta = np.arange(_NLUT) * (2 * np.pi / _NLUT) - np.pi
    for family, ((a_lo, a_hi), (k_lo, k_hi), amp) in _FAMILIES.items():
        rows = np.flatnonzero(families == family)
        m = len(rows)
        if m == 0:
            continue
        rot = rng.uniform(0, np.pi, (m, 1))
        aspect = rng.uniform(a_lo, a_hi, (m, 1))
        t = theta[None, :] - rot
        r = 1.0 / np.sqrt(np.cos(t) ** 2 + (aspect * np.sin(t)) ** 2)  # ellipse, major axis 1
        ks = np.arange(k_lo, k_hi)
        coef = rng.normal(0, 1, (m, len(ks))) * (amp * ks[0] / ks)
        phase = rng.uniform(0, 2 * np.pi, (m, len(ks)))
        # sum_k c cos(k theta + phi) = (c cos phi) @ cos(k theta) - (c sin phi) @ sin(k theta)
        kt = ks[:, None] * theta[None, :]
        r = r * (1.0 + (coef * np.cos(phase)) @ np.cos(kt) - (coef * np.sin(phase)) @ np.sin(kt))
        if family == "kidney":
            side = rot + np.pi / 2 + np.pi * (rng.random((m, 1)) < 0.5)
            d = np.angle(np.exp(1j * (theta[None, :] - side)))
            depth = rng.uniform(0.2, 0.4, (m, 1))
            width = rng.uniform(0.35, 0.6, (m, 1))
            r = r * (1.0 - depth * np.exp(-0.5 * (d / width) ** 2))
        r = np.maximum(r, 0.25 * r.mean(1, keepdims=True))
        r2 = r * r
        out[rows] = r2 / r2.mean(1, keepdims=True)
    return out


def _stamp_2d(
    best: np.ndarray,
    lab: np.ndarray,
    cy: float,
    cx: float,
    lut2: np.ndarray,
    value: int,
) -> None:
    """Write the star-convex shape (squared radius table ``lut2``) centred at (cy, cx).

    ``best`` holds the smallest rho^2 so far (1 outside every shape); a pixel takes ``value`` where
    the shape's rho^2 is smaller.
    """
    rmax = float(np.sqrt(lut2.max())) + 1.0
    h, w = best.shape
    y0, y1 = max(int(cy - rmax), 0), min(int(cy + rmax) + 2, h)
    x0, x1 = max(int(cx - rmax), 0), min(int(cx + rmax) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    idx = ((np.arctan2(dy, dx) + _PI) * np.float32(_NLUT / (2 * np.pi))).astype(np.intp)
    np.minimum(idx, _NLUT - 1, out=idx)
    rho2 = (dy * dy + dx * dx) / lut2[idx]
    sub = best[y0:y1, x0:x1]
    win = rho2 < sub
    sub[win] = rho2[win]
    lab[y0:y1, x0:x1][win] = value


def _place(
    rng: np.random.Generator,
    radii: np.ndarray,
    extent: np.ndarray,
    *,
    p_clump: float,
    clump_mean: float,
    overlap: tuple[float, float],
    margin: float,
) -> np.ndarray:
    """Centres (physical units) for objects of ``radii``, in clumps of touching objects.

    A new clump (or an isolated object) starts at a random position at least ``1.05 (ri + rj)``
    from every placed object; a clump member goes against a random member of the current clump at
    ``U(*overlap) (ri + rj)``, and at least ``overlap[0] (ri + rk)`` from all others. Objects that
    find no place after 8 tries are dropped (their centre is NaN). Neighbours are looked up in a
    grid of cells as wide as the largest distance checked, so the cost grows linearly with n.
    """
    n, nd = len(radii), len(extent)
    tries = 8
    centres = np.full((n, nd), np.nan)
    if n == 0:
        return centres
    lo = -margin * radii[:, None] * np.ones(nd)
    span = extent[None, :] + 2 * margin * radii[:, None]
    # all random numbers drawn up front (vectorized)
    starts = lo[:, None, :] + rng.random((n, tries, nd)) * span[:, None, :]
    dirs = rng.normal(size=(n, tries, nd))
    if nd == 3:
        dirs[..., 0] *= 0.5  # clumps spread mostly in the plane
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True) + 1e-12
    gaps = rng.uniform(overlap[0], overlap[1], (n, tries))
    picks = rng.random((n, tries))
    in_clump = rng.random(n) < p_clump
    sizes = rng.geometric(1.0 / clump_mean, n)
    cell = 1.05 * 2 * float(radii.max())
    grid: dict[tuple[int, ...], list[int]] = {}
    offsets = list(np.ndindex(*(3,) * nd))
    c_list = [None] * n
    r_list = radii.tolist()
    lo_list, hi_list = lo.tolist(), (lo + span).tolist()
    clump: list[int] = []
    clump_left = 0
    for i in range(n):
        r = r_list[i]
        if clump_left <= 0 or not clump:
            clump = []
            clump_left = int(sizes[i]) if in_clump[i] else 1
        for k in range(tries):
            if not clump:
                pos = starts[i, k].tolist()
                factor = 1.05
            else:
                j = clump[int(picks[i, k] * len(clump))]
                step = (r + r_list[j]) * gaps[i, k]
                pos = [c + step * u for c, u in zip(c_list[j], dirs[i, k].tolist(), strict=True)]
                if any(p < a or p > b for p, a, b in zip(pos, lo_list[i], hi_list[i], strict=True)):
                    continue
                factor = overlap[0]
            key = tuple(math.floor(p / cell) for p in pos)
            clash = False
            for off in offsets:
                for m in grid.get(tuple(a + b - 1 for a, b in zip(key, off, strict=True)), ()):
                    d2 = sum((p - q) ** 2 for p, q in zip(pos, c_list[m], strict=True))
                    lim = factor * (r + r_list[m])
                    if d2 < lim * lim:
                        clash = True
                        break
                if clash:
                    break
            if clash:
                continue
            c_list[i] = pos
            grid.setdefault(key, []).append(i)
            clump.append(i)
            clump_left -= 1
            break
        else:
            clump_left = 0  # could not grow this clump: start another one
    for i, c in enumerate(c_list):
        if c is not None:
            centres[i] = c
    return centres


def _photons_and_camera(
    clean: np.ndarray, rng: np.random.Generator, cam: dict, dtype
) -> np.ndarray:
    """Photon noise (Poisson; Gaussian with variance lambda above 20 photons), camera gain, offset,
    read noise, optional fixed-pattern/hot-pixel noise, saturation, then the output dtype."""
    lam = clean * np.float32(cam["photons"])
    counts = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
    low = lam < 20
    counts[low] = rng.poisson(lam[low])
    if cam.get("speckle", 0.0):
        counts *= 1.0 + np.float32(cam["speckle"]) * rng.standard_normal(
            lam.shape, dtype=np.float32
        )
    adu = counts * np.float32(cam["gain"])
    adu += np.float32(cam["offset"])
    adu += np.float32(cam["read"] * cam["gain"]) * rng.standard_normal(lam.shape, dtype=np.float32)
    if cam.get("columns", 0.0):  # sCMOS column offsets
        adu += np.float32(cam["columns"] * cam["gain"]) * rng.standard_normal(
            lam.shape[-1], dtype=np.float32
        )
    if cam.get("hot", 0.0):
        hot = rng.random(lam.shape, dtype=np.float32) < cam["hot"]
        adu[hot] += np.float32(cam["gain"] * cam["photons"]) * rng.uniform(
            0.5, 3, int(hot.sum())
        ).astype(np.float32)
    np.maximum(adu, 0, out=adu)
    if cam.get("saturate"):
        top = float(np.quantile(adu[:: max(1, adu.size // 20000)], cam["saturate"]))
        np.minimum(adu, top, out=adu)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        ref = float(np.quantile(adu[:: max(1, adu.size // 20000)], 0.999)) or 1.0
        return (adu / np.float32(ref)).astype(dtype)
    if dtype.kind not in "ui":
        raise ValueError(f"dtype must be an integer or float dtype; got {dtype}")
    info = np.iinfo(dtype)
    if info.max < 2**16 - 1:  # 8-bit: a camera/export that maps the bright end near the top
        ref = float(np.quantile(adu[:: max(1, adu.size // 20000)], 0.999)) or 1.0
        adu *= np.float32(rng.uniform(150, 250) / ref)
    np.clip(adu, max(info.min, 0), info.max, out=adu)
    return np.rint(adu).astype(dtype)


def _check_common(shape, config, diameter, ndim):
    if len(shape) != ndim or any(int(s) < 8 for s in shape):
        raise ValueError(f"shape must be {ndim} sizes of at least 8 pixels; got {shape}")
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS}; got {config!r}")
    if diameter is not None and not (np.isfinite(diameter) and diameter > 0):
        raise ValueError(f"diameter must be a positive number or None; got {diameter!r}")


def realistic_nuclei(
    shape: tuple[int, int] = (256, 256),
    *,
    config: str = "train",
    diameter: float | None = None,
    seed: int = 0,
    dtype=np.uint16,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D fluorescence-nuclei image that varies what real microscopy varies, and its labels.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(Y, X)``.
    config : {'train', 'holdout'}
        'train': median diameter log-uniform over 10-60 px, +-25 % inside an image; lumpy, mildly
        elongated star-convex outlines; 4-55 % coverage, most nuclei in clumps cut along flat shared
        borders; log-normal brightness with dim (down to ~0.1x) and bright (up to ~4x) subsets;
        texture, nucleolus-like spots, darker rims; PSF blur, some defocused nuclei, unlabelled
        out-of-focus blobs and debris; offset, gradient and smooth background, haze; Poisson noise
        (3-300 photons on a typical nucleus) with camera gain, offset and read noise; sometimes
        saturation and resolution loss; gamma 0.8-1.25.
        'holdout' (never train on it; for validation): median diameter 5-100 px, +-35 %; elongated,
        kidney-shaped and irregular (lobed) outlines; looser placement; rim-bright nuclei with fine
        granular texture and a cytoplasm halo; vignetting; multiplicative (speckle), sCMOS column
        and hot-pixel noise on top of photon and read noise; other blur and gamma ranges.
    diameter : float, optional
        Fix the image's median nucleus diameter (pixels; the equivalent diameter ``2 sqrt(A / pi)``
        of the whole shapes, before neighbours and the image border cut them).
    seed : int
        The same seed (and arguments) gives the same image.
    dtype : dtype
        ``uint16`` (raw camera counts: offset + gain x photons), ``uint8`` (bright end near 200) or
        a float dtype (0..~1: divided by the 99.9th percentile).

    Returns
    -------
    image : ndarray of ``dtype``
    labels : ndarray of int32
        0 is background; nuclei 1..N (labels never overlap; out-of-focus blobs and debris are 0).

    Examples
    --------
    >>> img, lab = realistic_nuclei((128, 128), seed=3)
    >>> img.shape, img.dtype.name, lab.dtype.name, int(lab.max()) > 0
    ((128, 128), 'uint16', 'int32', True)
    >>> img2, _ = realistic_nuclei((128, 128), seed=3)
    >>> bool((img == img2).all())
    True
    """
    shape = tuple(int(s) for s in shape)
    _check_common(shape, config, diameter, 2)
    rng = np.random.default_rng(seed)
    train = config == "train"
    h, w = shape

    # -- sizes, coverage, clumping
    med = (
        float(diameter)
        if diameter is not None
        else (_loguniform(rng, 10, 60) if train else _loguniform(rng, 5, 100))
    )
    spread = 0.12 if train else 0.18
    coverage = rng.uniform(0.05, 0.55) if train else rng.uniform(0.03, 0.6)
    n = max(1, int(round(coverage * h * w / (np.pi * med * med / 4))))
    n = min(n, 4000)
    diam = med * np.exp(np.clip(rng.normal(0, spread, n), -2.2 * spread, 2.2 * spread))
    radii = diam / 2
    if train:
        families = ["round"] * n
        p_clump, clump_mean, overlap = rng.uniform(0.5, 0.95), rng.uniform(2.0, 6.0), (0.8, 0.95)
    else:
        mix = rng.dirichlet(np.ones(3))
        families = list(rng.choice(["elongated", "kidney", "irregular"], size=n, p=mix))
        p_clump, clump_mean, overlap = rng.uniform(0.2, 0.7), rng.uniform(1.5, 3.0), (0.85, 1.0)
    centres = _place(
        rng,
        radii,
        np.array(shape, float),
        p_clump=p_clump,
        clump_mean=clump_mean,
        overlap=overlap,
        margin=0.5,
    )

    # -- shapes: a weighted Voronoi partition of star-convex outlines
    best = np.ones(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    ok = np.flatnonzero(~np.isnan(centres[:, 0]))
    tables = _radius_tables(rng, [families[i] for i in ok])
    for value, (i, table) in enumerate(zip(ok, tables, strict=True), start=1):
        _stamp_2d(
            best, labels, centres[i, 0], centres[i, 1], table * np.float32(radii[i] ** 2), value
        )
    n_lab = len(ok)

    # -- per-nucleus brightness: log-normal with dim and bright subsets
    bright = np.exp(rng.normal(0, rng.uniform(0.2, 0.5), n_lab + 1)).astype(np.float32)
    u = rng.random(n_lab + 1)
    p_dim, p_bright = rng.uniform(0.03, 0.2), rng.uniform(0.02, 0.1)
    bright[u < p_dim] *= rng.uniform(0.12, 0.4, int((u < p_dim).sum())).astype(np.float32)
    big = u > 1 - p_bright
    bright[big] *= rng.uniform(2, 4, int(big.sum())).astype(np.float32)
    bright[0] = 0
    inside = labels > 0
    rho2 = np.where(inside, best, np.float32(1))

    # -- texture, radial profile, spots
    sig_tex = max(0.8, med * rng.uniform(0.04, 0.1)) if train else rng.uniform(0.6, 1.2)
    tex = _blur(rng.standard_normal(shape, dtype=np.float32), sig_tex)
    tex *= np.float32(rng.uniform(0.08, 0.35) / (float(tex.std()) + 1e-6))
    if train:
        profile = 1 - np.float32(rng.uniform(0.0, 0.45)) * rho2 * rho2
    else:
        profile = 0.7 + np.float32(rng.uniform(0.3, 0.9)) * rho2**3
    sharp = bright[labels] * profile * (1 + tex)
    np.maximum(sharp, 0, out=sharp)
    if n_lab:
        spots = np.zeros(shape, np.float32)
        per = rng.poisson(rng.uniform(0.5, 3.0), n_lab)
        sel = np.repeat(ok, per)
        k = len(sel)
        if k:
            sig_spot = max(0.7, med * rng.uniform(0.04, 0.09))
            off = rng.normal(0, 0.3, (k, 2)) * radii[sel, None]
            pos = np.rint(centres[sel] + off).astype(int)
            good = (pos[:, 0] >= 0) & (pos[:, 0] < h) & (pos[:, 1] >= 0) & (pos[:, 1] < w)
            sign = 1.0 if rng.random() < (0.7 if train else 0.3) else -0.6
            amp = sign * rng.uniform(0.3, 0.8, k) * 2 * np.pi * sig_spot**2
            lab_of = np.repeat(np.arange(1, n_lab + 1), per)
            np.add.at(spots, (pos[good, 0], pos[good, 1]), (amp * bright[lab_of])[good])
            spots = _blur(spots, sig_spot)
            sharp += spots * inside
            np.maximum(sharp, 0, out=sharp)

    # -- debris (unlabelled, sharp)
    n_debris = int(rng.poisson(rng.uniform(0, 12)))
    if n_debris:
        dbest = np.ones(shape, np.float32)
        dlab = np.zeros(shape, np.int32)
        tables = _radius_tables(rng, ["round"] * n_debris)
        for j in range(n_debris):
            r = rng.uniform(0.8, min(3.0, max(1.2, 0.12 * med)))
            lut2 = tables[j] * np.float32(r * r)
            _stamp_2d(dbest, dlab, rng.uniform(0, h), rng.uniform(0, w), lut2, j + 1)
        dval = np.concatenate([[0], np.exp(rng.normal(0.3, 0.6, n_debris))]).astype(np.float32)
        sharp += dval[dlab]

    # -- blur: PSF on the sharp part; defocused nuclei, out-of-focus blobs and haze blur more
    # PSF sigma in pixels; small nuclei come from low magnifications, where the PSF is sub-pixel
    psf = rng.uniform(0.5, 1.8) if train else rng.uniform(1.0, 2.5)
    psf = min(psf, (0.12 if train else 0.16) * med)
    far = np.zeros(shape, np.float32)
    if n_lab:
        defocus = np.zeros(n_lab + 1, bool)
        defocus[1:] = rng.random(n_lab) < rng.uniform(0.0, 0.2)
        if defocus.any():
            moved = sharp * defocus[labels]
            sharp -= moved
            far += moved * np.float32(rng.uniform(0.5, 1.0))
    n_blobs = int(rng.poisson(rng.uniform(0, 4)))
    if n_blobs:
        bbest = np.ones(shape, np.float32)
        blab = np.zeros(shape, np.int32)
        tables = _radius_tables(rng, ["round"] * n_blobs)
        for j in range(n_blobs):
            r = med * rng.uniform(0.4, 0.8)
            lut2 = tables[j] * np.float32(r * r)
            _stamp_2d(bbest, blab, rng.uniform(0, h), rng.uniform(0, w), lut2, j + 1)
        bval = np.concatenate([[0], rng.uniform(0.1, 0.4, n_blobs)]).astype(np.float32)
        far += bval[blab]
    far += sharp * np.float32(rng.uniform(0.03, 0.2))  # haze: out-of-focus light of the sample
    if not train:  # cytoplasm halo around each nucleus
        far += inside * np.float32(rng.uniform(0.05, 0.2))
    signal = _blur(sharp, psf)
    signal += _blur(far, max(2.0, med * rng.uniform(0.2, 0.35)))

    # -- background: offset x gradient x smooth field (x vignetting in holdout)
    bg = np.float32(_loguniform(rng, 0.02, 0.4))
    back = _gradient(shape, rng, rng.uniform(0, 0.8)) * _smooth_field(
        shape, rng, rng.uniform(0, 0.4)
    )
    if not train:
        yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
        xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        back = back * (1 - np.float32(rng.uniform(0.2, 0.6)) * (yy * yy + xx * xx) / 2)
        signal *= 1 - np.float32(rng.uniform(0.0, 0.4)) * (yy * yy + xx * xx) / 2
    signal += bg * back

    # -- resolution loss, gamma
    if rng.random() < 0.25 and med > 12:
        f = rng.uniform(max(0.4, 6 / med), 0.75)
        small = ndi.zoom(signal, f, order=1, grid_mode=True, mode="nearest")
        signal = ndi.zoom(
            small,
            (h / small.shape[0], w / small.shape[1]),
            order=1,
            grid_mode=True,
            mode="nearest",
        )[:h, :w]
    gamma = rng.uniform(0.8, 1.25) if train else rng.uniform(0.65, 1.5)
    signal = np.power(np.maximum(signal, 0), np.float32(gamma))

    # -- photons and camera
    if train:
        cam = {
            "photons": _loguniform(rng, 3, 300),
            "gain": _loguniform(rng, 0.5, 20),
            "offset": rng.uniform(0, 500),
            "read": rng.uniform(0.5, 3),
            "saturate": rng.uniform(0.995, 0.9995) if rng.random() < 0.3 else None,
        }
    else:
        cam = {
            "photons": _loguniform(rng, 30, 3000),
            "gain": _loguniform(rng, 0.2, 5),
            "offset": rng.uniform(50, 2000),
            "read": rng.uniform(2, 12),
            "speckle": rng.uniform(0.02, 0.12),
            "columns": rng.uniform(0, 3),
            "hot": rng.uniform(0, 5e-4),
            "saturate": rng.uniform(0.99, 0.999) if rng.random() < 0.2 else None,
        }
    image = _photons_and_camera(signal, rng, cam, dtype)
    return image, labels


def _shape_3d(rng: np.random.Generator, amount: float, elongation: tuple[float, float]) -> dict:
    """Random star-convex 3D shape: an ellipsoid turned in the plane, times a smooth radial factor
    g(u) = 1 + sum of low-order polynomial bumps of the direction u (a few percent to ~20 %)."""
    dirs = rng.normal(size=(6, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return {
        "aspect": rng.uniform(*elongation),
        "phi": rng.uniform(0, np.pi),
        "dirs": dirs.astype(np.float32),
        "amp": (rng.normal(0, amount, 4)).astype(np.float32),
    }


def _stamp_3d(
    best: np.ndarray,
    lab: np.ndarray,
    centre: np.ndarray,
    r_xy: float,
    r_z: float,
    shape: dict,
    value: int,
) -> None:
    """Write one star-convex nucleus (semi-axes r_z slices, r_xy pixels) where its rho^2 is smallest."""
    s = np.sqrt(shape["aspect"])
    ry, rx = r_xy * s, r_xy / s
    gmax = 1.0 + float(np.abs(shape["amp"]).sum())
    ext = np.array([r_z, max(ry, rx), max(ry, rx)]) * gmax + 1.0
    lo = np.maximum(np.floor(centre - ext).astype(int), 0)
    hi = np.minimum(np.ceil(centre + ext).astype(int) + 1, best.shape)
    if np.any(hi <= lo):
        return
    cz, cy, cx = (np.float32(c) for c in centre)
    dz = ((np.arange(lo[0], hi[0], dtype=np.float32) - cz) / np.float32(r_z))[:, None, None]
    dy = (np.arange(lo[1], hi[1], dtype=np.float32) - cy)[:, None]
    dx = (np.arange(lo[2], hi[2], dtype=np.float32) - cx)[None, :]
    c, sn = np.float32(np.cos(shape["phi"])), np.float32(np.sin(shape["phi"]))
    yr = (dy * c + dx * sn) / np.float32(ry)
    xr = (dx * c - dy * sn) / np.float32(rx)
    q = dz * dz + (yr * yr + xr * xr)[None]
    inv = 1.0 / np.sqrt(q + np.float32(1e-6))
    v = shape["dirs"]
    a = shape["amp"]

    def dot(k):
        return (dz * v[k, 0]) * inv + (yr * v[k, 1] + xr * v[k, 2])[None] * inv

    p0, p1, p2, p3 = dot(0), dot(1), dot(2), dot(3)
    g = (
        1.0
        + a[0] * p0 * p0 * p0
        + a[1] * (p1 * p1 - 1 / 3)
        + a[2] * p2 * p3
        + a[3] * (p3 * p3 * p3 * p3 - 0.2)
    )
    np.maximum(g, np.float32(0.4), out=g)
    rho2 = q / (g * g)
    box = tuple(slice(a_, b_) for a_, b_ in zip(lo, hi, strict=True))
    sub = best[box]
    win = rho2 < sub
    sub[win] = rho2[win]
    lab[box][win] = value


def realistic_nuclei_3d(
    shape: tuple[int, int, int] = (48, 128, 128),
    *,
    config: str = "train",
    diameter: float | None = None,
    seed: int = 0,
    dtype=np.uint16,
    return_spacing: bool = False,
):
    """A 3D fluorescence z-stack of nuclei, as a widefield/confocal crop, and its labels.

    Parameters
    ----------
    shape : (int, int, int)
        ``(Z, Y, X)``.
    config : {'train', 'holdout'}
        'train': 2-40 nuclei per crop (log-uniform: many sparse crops, some dense), some in
        touching clumps cut along flat shared borders; xy radius 7-22 px (median per crop, +-20 %
        per nucleus), z radius 6-21 slices; lumpy star-convex ellipsoids turned in the plane;
        voxels 1-2x longer in z than in xy; log-normal brightness with dim nuclei; texture and
        nucleolus-like spots; PSF blur with the z sigma 2-4x the xy sigma; depth attenuation, haze,
        xy gradient and smooth background; photon and camera noise.
        'holdout' (validation only): xy radius 5-30 px, z radius 3-14 slices (voxels 2-4x longer
        in z), elongated and irregular shapes, 5-60 nuclei, rim-bright nuclei with granular
        texture, strong attenuation, speckle, sCMOS column and hot-pixel noise.
    diameter : float, optional
        Fix the median xy diameter (2 x xy radius, pixels) of the nuclei.
    seed : int
        The same seed gives the same volume.
    dtype : dtype
        As :func:`realistic_nuclei`.
    return_spacing : bool
        Also return the voxel spacing ``(z, y, x)`` relative to the xy pixel size, e.g.
        ``(1.6, 1.0, 1.0)``: the anisotropy the volume was generated with (use it as napari's
        ``scale`` or as ``spacing`` for 3D algorithms).

    Returns
    -------
    image : ndarray of ``dtype``, shape ``shape``
    labels : ndarray of int32
    spacing : tuple of float
        Only with ``return_spacing=True``.

    Examples
    --------
    >>> img, lab, spacing = realistic_nuclei_3d((24, 64, 64), seed=2, return_spacing=True)
    >>> img.shape, lab.dtype.name, spacing[1:], spacing[0] >= 1
    ((24, 64, 64), 'int32', (1.0, 1.0), True)
    """
    shape = tuple(int(s) for s in shape)
    _check_common(shape, config, diameter, 3)
    rng = np.random.default_rng(seed)
    train = config == "train"
    zdim = shape[0]

    # -- anisotropy, sizes, count, clumping
    aniso = rng.uniform(1.0, 2.0) if train else rng.uniform(2.0, 4.0)
    med_r = (
        diameter / 2
        if diameter is not None
        else (_loguniform(rng, 7, 22) if train else _loguniform(rng, 5, 30))
    )
    n = int(round(_loguniform(rng, 2, 40) if train else _loguniform(rng, 5, 60)))
    r_xy = med_r * np.exp(np.clip(rng.normal(0, 0.1, n), -0.2, 0.2))
    k = rng.uniform(0.7, 1.1, n) if train else rng.uniform(0.5, 1.0, n)
    r_z = np.clip(r_xy * k / aniso, 6, 21) if train else np.clip(r_xy * k / aniso, 3, 14)
    r_phys = np.cbrt(r_xy * r_xy * r_z * aniso)
    extent = np.array([zdim * aniso, shape[1], shape[2]], float)
    centres = _place(
        rng,
        r_phys,
        extent,
        p_clump=rng.uniform(0.2, 0.8) if train else rng.uniform(0.4, 0.9),
        clump_mean=rng.uniform(1.5, 4.0),
        overlap=(0.8, 0.95),
        margin=0.4,
    )
    best = np.ones(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    ok = np.flatnonzero(~np.isnan(centres[:, 0]))
    for value, i in enumerate(ok, start=1):
        sh = _shape_3d(rng, 0.07 if train else 0.15, (1.0, 1.4) if train else (1.3, 2.4))
        c = centres[i] / np.array([aniso, 1.0, 1.0])
        _stamp_3d(best, labels, c, r_xy[i], r_z[i], sh, value)
    # a nucleus cut away entirely by its neighbours or the crop: renumber 1..N
    present = np.zeros(len(ok) + 1, bool)
    present[np.unique(labels)] = True
    lut = np.zeros(len(ok) + 1, np.int32)
    lut[present] = np.arange(int(present.sum()), dtype=np.int32)
    labels = lut[labels]
    n_lab = int(labels.max(initial=0))
    inside = labels > 0
    rho2 = np.where(inside, best, np.float32(1))

    # -- brightness, profile, texture, spots
    bright = np.exp(rng.normal(0, rng.uniform(0.2, 0.45), n_lab + 1)).astype(np.float32)
    dim = rng.random(n_lab + 1) < rng.uniform(0.05, 0.25)
    bright[dim] *= rng.uniform(0.15, 0.45, int(dim.sum())).astype(np.float32)
    bright[0] = 0
    s_tex = rng.uniform(1.0, 2.5) if train else rng.uniform(0.6, 1.0)
    tex = _blur(rng.standard_normal(shape, dtype=np.float32), (s_tex / aniso, s_tex, s_tex))
    tex *= np.float32(rng.uniform(0.08, 0.3) / (float(tex.std()) + 1e-6))
    if train:
        profile = 1 - np.float32(rng.uniform(0.0, 0.4)) * rho2 * rho2
    else:
        profile = 0.7 + np.float32(rng.uniform(0.3, 0.8)) * rho2**3
    sharp = bright[labels] * profile * (1 + tex)
    np.maximum(sharp, 0, out=sharp)
    if n_lab and train:
        zz, yy, xx = np.nonzero(inside[:, ::3, ::3])  # candidate spot positions inside nuclei
        n_spots = min(int(rng.poisson(1.5 * n_lab)), len(zz))
        if n_spots:
            pick = rng.choice(len(zz), n_spots, replace=False)
            spots = np.zeros(shape, np.float32)
            sig = rng.uniform(1.0, 2.0)
            amp = rng.uniform(0.3, 0.8, n_spots) * (2 * np.pi) ** 1.5 * sig**3 / aniso
            idx = (zz[pick], 3 * yy[pick], 3 * xx[pick])
            np.add.at(spots, idx, (amp * bright[labels[idx]]).astype(np.float32))
            sharp += _blur(spots, (sig / aniso, sig, sig)) * inside

    # -- depth attenuation, PSF (z blur 2-4x xy blur), haze
    att = rng.uniform(0.0, 1.2) if train else rng.uniform(0.8, 2.0)
    depth = np.exp(-att * np.linspace(0, 1, zdim, dtype=np.float32))
    if rng.random() < 0.5:
        depth = depth[::-1]
    sharp *= depth[:, None, None]
    s_xy = rng.uniform(0.6, 1.5) if train else rng.uniform(1.0, 2.0)
    # train: z sigma 2-4x the xy sigma in voxels; holdout: 3-5x in physical units
    s_z = s_xy * rng.uniform(2.0, 4.0) if train else s_xy * rng.uniform(3.0, 5.0) / aniso
    signal = _blur(sharp, (s_z, s_xy, s_xy))
    haze = rng.uniform(0.05, 0.3) if train else rng.uniform(0.1, 0.4)
    signal += np.float32(haze) * _blur(sharp, (max(2.0, 2 * s_z), med_r * 0.6, med_r * 0.6))

    # -- background
    bg = np.float32(_loguniform(rng, 0.02, 0.3))
    back = _gradient(shape, rng, rng.uniform(0, 0.6)) * _smooth_field(
        shape, rng, rng.uniform(0, 0.4)
    )
    if not train:
        yy2 = np.linspace(-1, 1, shape[1], dtype=np.float32)[:, None]
        xx2 = np.linspace(-1, 1, shape[2], dtype=np.float32)[None, :]
        back = back * (1 - np.float32(rng.uniform(0.2, 0.5)) * (yy2 * yy2 + xx2 * xx2) / 2)
    zramp = 1 + np.float32(rng.uniform(-0.3, 0.3)) * np.linspace(-0.5, 0.5, zdim, dtype=np.float32)
    signal += bg * back[None] * zramp[:, None, None]
    gamma = rng.uniform(0.85, 1.2) if train else rng.uniform(0.7, 1.4)
    signal = np.power(signal, np.float32(gamma))

    if train:
        cam = {
            "photons": _loguniform(rng, 5, 300),
            "gain": _loguniform(rng, 0.5, 20),
            "offset": rng.uniform(0, 500),
            "read": rng.uniform(0.5, 3),
            "saturate": rng.uniform(0.999, 0.9999) if rng.random() < 0.2 else None,
        }
    else:
        cam = {
            "photons": _loguniform(rng, 50, 2000),
            "gain": _loguniform(rng, 0.2, 5),
            "offset": rng.uniform(50, 2000),
            "read": rng.uniform(2, 8),
            "speckle": rng.uniform(0.02, 0.1),
            "columns": rng.uniform(0, 1.5),
            "hot": rng.uniform(0, 3e-4),
        }
    image = _photons_and_camera(signal, rng, cam, dtype)
    if return_spacing:
        return image, labels, (float(aniso), 1.0, 1.0)
    return image, labels
