"""A tiny instance U-Net trained on generated nuclei during the test run (CPU, a few seconds).

Used through the ``tiny_unet_path`` fixture of ``tests/conftest.py``."""

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.models import unet
from napari_segkit.models.normalize import normalize

TINY_DIAMETER = 12.0  # the training nuclei: radius 4..8 px


def _targets(lab):
    """Minimal stand-in for algorithms.targets.instance_targets (classes, normalized distance)."""
    rim = find_boundaries(lab, mode="inner") & (lab > 0)
    classes = np.where(lab > 0, np.where(rim, 2, 1), 0)
    dist = ndi.distance_transform_edt((lab > 0) & ~rim) + (lab > 0)
    top = np.asarray(ndi.maximum(dist, lab, np.arange(lab.max() + 1)))
    top[top == 0] = 1
    return classes, (dist / top[lab]) * (lab > 0)


def _train_tiny(steps=60, seed=0):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(15):
        xs, cs, ds = [], [], []
        for _ in range(8):
            img, lab = synthetic_nuclei(
                (64, 64),
                n_nuclei=int(rng.integers(3, 10)),
                radius=(4, 8),
                touching=bool(rng.random() < 0.5),
                noise=0.05,
                seed=int(rng.integers(2**31)),
            )
            c, d = _targets(lab)
            xs.append(normalize(img[..., None])[..., 0])
            cs.append(c)
            ds.append(d)
        batches.append(
            (
                torch.tensor(np.array(xs))[:, None],
                torch.tensor(np.array(cs)).long(),
                torch.tensor(np.array(ds)).float(),
            )
        )
    torch.manual_seed(seed)
    net = unet.build_unet(depth=2, width=8, norm="batch")
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    weight = torch.tensor([1.0, 1.0, 2.0])
    for step in range(steps):
        x, c, d = batches[step % len(batches)]
        y = net(x)
        loss = torch.nn.functional.cross_entropy(y[:, :3], c, weight=weight)
        loss = loss + 5 * ((y[:, 3] - d) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def make_tiny_unet(folder):
    """Train the tiny U-Net and save it as ``folder/tiny.safetensors``; return the path."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the model tests run: the same numerics, the same tiny model
    try:
        net = _train_tiny()
    finally:
        torch.set_num_threads(threads)
    path = folder / "tiny.safetensors"
    unet.save_unet(
        net,
        path,
        class_names=["background", "nucleus"],
        object_diameter=TINY_DIAMETER,
        training={"steps": 60, "data": "synthetic_nuclei 64x64"},
        # its distance channel was trained as is (the training engine trains it through a sigmoid)
        outputs={**unet.INSTANCE_OUTPUTS, "distance_activation": "none"},
    )
    return path
