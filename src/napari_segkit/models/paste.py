"""Pasting box-relative instance masks into label images on the device (Mask R-CNN's output).

torch is imported inside the function.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
    import torch.nn.functional as F

    h, w = int(shape[0]), int(shape[1])
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
        parts.append((b, d["masks"].detach(), d["ids"], slots))
    if not parts:
        dev = next((d["boxes"].device for _, d, _ in regions), None)
        return torch.zeros((n, h, w), dtype=torch.int32, device=dev)
    boxes = torch.cat([p[0] for p in parts])
    masks = torch.cat([p[1].float() for p in parts])
    ids = torch.cat([p[2] for p in parts]).to(torch.int32)
    slots = torch.cat([p[3] for p in parts])
    # pixel windows around each box (one pixel of margin for the bilinear fall-off), clipped
    lo = torch.floor(boxes[:, :2] - 1).clamp(min=0)
    hi = torch.ceil(boxes[:, 2:] + 1)
    hi = torch.minimum(hi, torch.tensor([w, h], device=dev, dtype=torch.float32))
    size = (hi - lo).clamp(min=0)
    size_np = size.cpu().numpy().astype(np.int64)  # (N, 2) as (w, h); the one sync of the paste
    side = np.maximum(size_np.max(axis=1), 1)
    order = np.argsort(side, kind="stable")
    cost_side = side[order].astype(np.float64) ** 2  # a window of side x side bounds each box
    fill = torch.iinfo(torch.int32).max
    out = torch.full((n * h * w + 1,), fill, dtype=torch.int32, device=dev)
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
        valid = (prob > mask_threshold) & inside_y[:, :, None] & inside_x[:, None, :]
        flat = (slots[idx][:, None, None] * h + ys.long()[:, :, None]) * w + xs.long()[:, None, :]
        # samples outside their mask write the no-op value `fill` to their own pixel (clamped into
        # the buffer): no atomics piling up on one address, and no sync to compact them away
        flat = flat.clamp_(max=n * h * w)
        vals = torch.where(valid, ids[idx][:, None, None], fill)
        out.scatter_reduce_(0, flat.reshape(-1), vals.reshape(-1), reduce="amin")
        start = end
    out = out[:-1]
    out = torch.where(out == fill, 0, out)
    return out.view(n, h, w)
