"""Pasting box-relative instance masks into label images on the device (Mask R-CNN's output).

:func:`paste_masks` paints instance IDs (thresholded masks); :func:`paste_scores` keeps the
continuous evidence instead (per pixel, the highest mask probability x detection score, and the
class of that detection), the input of 3D object building. Both sample every mask bilinearly at
the pixel centres of its box in the output grid, whatever the resolution the boxes were detected
at: boxes scaled back to the full-resolution grid give smooth full-resolution outlines.

torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

#: bits of :func:`paste_scores`' packed value that hold the class id (the rest hold the score)
CLASS_BITS = 9
#: levels of the score packed by :func:`paste_scores`
SCORE_LEVELS = (1 << (31 - CLASS_BITS)) - 1


def _gather(regions: list[tuple[int, dict[str, Any], tuple[int, int]]], keys: tuple[str, ...]):
    """Concatenate the detections of every region, boxes shifted into their output image."""
    import torch

    dev = None
    parts = []
    for slot, d, (oy, ox) in regions:
        if d["boxes"].shape[0] == 0:
            continue
        dev = d["boxes"].device
        b = d["boxes"].detach().float() - torch.tensor(
            [ox, oy, ox, oy], device=dev, dtype=torch.float32
        )
        slots = torch.full((b.shape[0],), int(slot), device=dev, dtype=torch.int64)
        parts.append((b, d["masks"].detach(), slots, *(d[k] for k in keys)))
    if not parts:
        dev = next((d["boxes"].device for _, d, _ in regions), None)
        return dev, None
    boxes = torch.cat([p[0] for p in parts])
    masks = torch.cat([p[1].float() for p in parts])
    slots = torch.cat([p[2] for p in parts])
    extra = [torch.cat([p[3 + i] for p in parts]) for i in range(len(keys))]
    return dev, (boxes, masks, slots, *extra)


def _sampled_chunks(
    boxes: Any, masks: Any, shape: tuple[int, int], budget: int
) -> Iterator[tuple[Any, Any, Any, Any, Any]]:
    """Bilinear samples of the masks at the pixel centres of their boxes, chunk by chunk.

    Yields ``(idx, ys, xs, prob, inside)``: the detections of the chunk, the rows ``(k, mh)`` and
    columns ``(k, mw)`` of their pixel windows, the probabilities ``(k, mh, mw)`` and which
    samples lie inside the window and the image.
    """
    import torch
    import torch.nn.functional as F

    h, w = shape
    dev = boxes.device
    # pixel windows around each box (one pixel of margin for the bilinear fall-off), clipped
    lo = torch.floor(boxes[:, :2] - 1).clamp(min=0)
    hi = torch.ceil(boxes[:, 2:] + 1)
    hi = torch.minimum(hi, torch.tensor([w, h], device=dev, dtype=torch.float32))
    size = (hi - lo).clamp(min=0)
    size_np = size.cpu().numpy().astype(np.int64)  # (N, 2) as (w, h); the one sync of the paste
    side = np.maximum(size_np.max(axis=1), 1)
    order = np.argsort(side, kind="stable")
    cost_side = side[order].astype(np.float64) ** 2  # a window of side x side bounds each box
    start = 0
    total = len(order)
    while start < total:
        # the longest run from start whose (count x largest window) stays within the budget
        counts = np.arange(1, total - start + 1)
        end = start + max(1, int(np.searchsorted(counts * cost_side[start:] > budget, True)))
        mw, mh = size_np[order[start:end]].max(axis=0)
        if mw == 0 or mh == 0:
            start = end
            continue
        idx = torch.as_tensor(order[start:end], device=dev)
        bx, lo_c, sz = boxes[idx], lo[idx], size[idx]
        xs = lo_c[:, 0:1] + torch.arange(int(mw), device=dev, dtype=torch.float32)  # (k, mw)
        ys = lo_c[:, 1:2] + torch.arange(int(mh), device=dev, dtype=torch.float32)  # (k, mh)
        bw = (bx[:, 2] - bx[:, 0]).clamp(min=1e-3)[:, None]
        bh = (bx[:, 3] - bx[:, 1]).clamp(min=1e-3)[:, None]
        gx = ((xs + 0.5 - bx[:, 0:1]) / bw) * 2 - 1
        gy = ((ys + 0.5 - bx[:, 1:2]) / bh) * 2 - 1
        k = idx.shape[0]
        grid = torch.stack(
            (
                gx[:, None, :].expand(k, int(mh), int(mw)),
                gy[:, :, None].expand(k, int(mh), int(mw)),
            ),
            dim=-1,
        )
        prob = F.grid_sample(
            masks[idx][:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[:, 0]
        inside_x = torch.arange(int(mw), device=dev)[None, :] < sz[:, 0:1]
        inside_y = torch.arange(int(mh), device=dev)[None, :] < sz[:, 1:2]
        inside = inside_y[:, :, None] & inside_x[:, None, :]
        yield idx, ys, xs, prob, inside
        start = end


def paste_masks(
    regions: list[tuple[int, dict[str, Any], tuple[int, int]]],
    n: int,
    shape: tuple[int, int],
    mask_threshold: float = 0.5,
    *,
    budget: int = 1 << 25,
) -> Any:
    """Paste box-relative instance masks into ``n`` label images at once; the lowest ID wins a pixel.

    Parameters
    ----------
    regions : list of (int, dict, (int, int))
        ``(slot, detections, (y0, x0))``: the detections (``boxes`` (N, 4) ``x0, y0, x1, y1`` in
        plane pixels, ``masks`` (N, M, M) probabilities over their boxes, ``ids`` (N,) int32) go to
        output image ``slot``, whose top-left pixel is ``(y0, x0)`` of the plane.
    n : int
        Number of output images.
    shape : (int, int)
        Their ``(h, w)``.
    mask_threshold : float
        Probability above which a pixel is inside.
    budget : int
        Samples per chunk: device memory stays bounded whatever the number and size of the boxes.

    Returns
    -------
    torch.Tensor
        ``(n, h, w)`` int32 on the detections' device, 0 for background.

    Notes
    -----
    Each mask is sampled bilinearly at the pixel centres of its box (zero outside the mask grid,
    as torchvision's ``paste_masks_in_image``), all boxes of a chunk in one ``grid_sample``; the
    pixels above threshold are written with one ``scatter_reduce(amin)``, so a pixel covered by
    several instances takes the lowest ID, i.e. the highest score.

    Examples
    --------
    >>> lab = paste_masks([(0, dets, (0, 0))], 1, (256, 256))  # doctest: +SKIP
    """
    import torch

    h, w = int(shape[0]), int(shape[1])
    dev, got = _gather(regions, ("ids",))
    if got is None:
        return torch.zeros((n, h, w), dtype=torch.int32, device=dev)
    boxes, masks, slots, ids = got
    ids = ids.to(torch.int32)
    fill = torch.iinfo(torch.int32).max
    out = torch.full((n * h * w + 1,), fill, dtype=torch.int32, device=dev)
    for idx, ys, xs, prob, inside in _sampled_chunks(boxes, masks, (h, w), budget):
        valid = (prob > mask_threshold) & inside
        flat = (slots[idx][:, None, None] * h + ys.long()[:, :, None]) * w + xs.long()[:, None, :]
        # samples outside their mask write the no-op value `fill` to their own pixel (clamped into
        # the buffer): no atomics piling up on one address, and no sync to compact them away
        flat = flat.clamp_(max=n * h * w)
        vals = torch.where(valid, ids[idx][:, None, None], fill)
        out.scatter_reduce_(0, flat.reshape(-1), vals.reshape(-1), reduce="amin")
    out = out[:-1]
    out = torch.where(out == fill, 0, out)
    return out.view(n, h, w)


def paste_scores(
    regions: list[tuple[int, dict[str, Any], tuple[int, int]]],
    n: int,
    shape: tuple[int, int],
    *,
    budget: int = 1 << 25,
) -> tuple[Any, Any]:
    """Per pixel, the strongest evidence of an object: max over detections of mask prob x score.

    Parameters
    ----------
    regions : list of (int, dict, (int, int))
        As :func:`paste_masks`, the detections holding ``boxes``, ``masks``, ``scores`` (N,) and
        ``labels`` (N,) class ids (below ``2**9``).
    n : int
        Number of output images.
    shape : (int, int)
        Their ``(h, w)``.
    budget : int
        Samples per chunk.

    Returns
    -------
    foreground : torch.Tensor
        ``(n, h, w)`` float32 in 0..1 (quantised to ``1 / 2**22``), 0 where no detection reaches.
    classes : torch.Tensor
        ``(n, h, w)`` int32: the class id of the detection giving the maximum (0 where none).

    Notes
    -----
    The sampling is :func:`paste_masks`'; the maximum and its class are written with one
    ``scatter_reduce(amax)`` of the score packed above the class id in an int32.

    Examples
    --------
    >>> fg, cls = paste_scores([(0, dets, (0, 0))], 1, (256, 256))  # doctest: +SKIP
    """
    import torch

    h, w = int(shape[0]), int(shape[1])
    dev, got = _gather(regions, ("scores", "labels"))
    if got is None:
        zeros = torch.zeros((n, h, w), dtype=torch.int32, device=dev)
        return zeros.float(), zeros
    boxes, masks, slots, scores, labels = got
    if labels.numel() and int(labels.max()) >= 1 << CLASS_BITS:
        raise ValueError(f"class ids must be below {1 << CLASS_BITS}; got {int(labels.max())}")
    scores = scores.float().clamp(0, 1)
    labels = labels.to(torch.int32)
    out = torch.zeros((n * h * w + 1,), dtype=torch.int32, device=dev)
    for idx, ys, xs, prob, inside in _sampled_chunks(boxes, masks, (h, w), budget):
        value = (prob.clamp(0, 1) * scores[idx][:, None, None] * SCORE_LEVELS).round()
        packed = (value.to(torch.int32) << CLASS_BITS) | labels[idx][:, None, None]
        flat = (slots[idx][:, None, None] * h + ys.long()[:, :, None]) * w + xs.long()[:, None, :]
        flat = flat.clamp_(max=n * h * w)
        packed = torch.where(inside & (value > 0), packed, 0)
        out.scatter_reduce_(0, flat.reshape(-1), packed.reshape(-1), reduce="amax")
    out = out[:-1].view(n, h, w)
    foreground = (out >> CLASS_BITS).float() / SCORE_LEVELS
    classes = torch.where(out > 0, out & ((1 << CLASS_BITS) - 1), 0)
    return foreground, classes
