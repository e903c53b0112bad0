"""FCN vs U-Net: the same encoder, a coarse upsampled output vs fine boundaries.

Both are *fully convolutional*: convolutions and poolings turn the image into a small map of
features (here 1/8 of the image's size) and a class score per location. The difference is how they
get back to full resolution:

- an **FCN** (Long et al. 2015; torchvision's ``fcn_resnet50``) scores the small map and
  upsamples the scores bilinearly by 8: one score per 8 x 8 block, smoothed. The boundaries come
  out round and blurred, and small gaps between objects vanish.
- a **U-Net** (Ronneberger et al. 2015) has a decoder that upsamples step by step and joins, at
  each step, the encoder's features of the same size (the "skip connections"): the fine detail
  the poolings discarded comes back, and the boundaries follow the objects.

This example trains both on the CPU, the same way (same generated nuclei, same loss, same number
of steps, same encoder: two 3 x 3 convolutions per stage, three poolings), and segments a new
image with each. The FCN is torchvision's ``FCN`` class (``FCNHead``, bilinear upsampling) on this
small encoder: ``fcn_resnet50`` itself (35 million parameters) takes far too long to train on a
CPU for an example, and its pretrained COCO/VOC weights are for photos (people, cars, ...), not
nuclei; they are also not available offline. The U-Net is napari-segkit's ``build_unet``.

If the shipped nuclei U-Net (``models/weights/nuclei_unet_2d.safetensors``, trained much longer on
a GPU) is installed, its result through ``segment_cnn(image, model="nuclei", output="semantic")``
is shown too.

Run: ``python examples/fcn_vs_unet.py [--out DIR] [--small]``
"""

import time

import numpy as np
import torch
from _figure import arguments, figure, outlines, rgb8, save
from torch import nn
from torchvision.models.segmentation.fcn import FCN, FCNHead

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import semantic_scores
from napari_segkit.models.normalize import normalize
from napari_segkit.models.unet import build_unet
from napari_segkit.models.weights import SHIPPED_MODELS, weights_available

DEPTH = 3  # three poolings: the encoder's last map is 1/8 of the image


def block(cin: int, cout: int) -> nn.Sequential:
    """Two 3 x 3 convolutions, as in a U-Net stage."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """The U-Net's encoder alone, as an FCN backbone (torchvision's FCN wants ``{"out": x}``)."""

    def __init__(self, width: int):
        super().__init__()
        chans = [width * 2**i for i in range(DEPTH + 1)]
        self.stages = nn.ModuleList(
            [block(1, chans[0])] + [block(chans[i], chans[i + 1]) for i in range(DEPTH)]
        )
        self.pool = nn.MaxPool2d(2)
        self.out_channels = chans[-1]

    def forward(self, x):
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
        return {"out": x}


def make_fcn(width: int) -> nn.Module:
    encoder = Encoder(width)
    return FCN(encoder, FCNHead(encoder.out_channels, 2))  # scores at 1/8, bilinear x 8


def make_unet(width: int) -> nn.Module:
    return build_unet(in_channels=1, out_channels=2, depth=DEPTH, width=width)


def training_images(n: int, size: int, seed: int = 0):
    """``n`` generated nuclei images (normalized as napari-segkit's models see them) and masks."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        img, lab = synthetic_nuclei(
            (size, size),
            n_nuclei=int(rng.integers(3, 9)),
            radius=(5, 11),
            touching=bool(rng.random() < 0.5),
            noise=float(rng.uniform(0.02, 0.08)),
            seed=int(rng.integers(2**31)),
        )
        xs.append(normalize(img[..., None])[..., 0])
        ys.append(lab > 0)
    return torch.tensor(np.array(xs))[:, None], torch.tensor(np.array(ys)).long()


def train(net: nn.Module, x, y, steps: int, batch: int = 8, seed: int = 0) -> float:
    """Adam on the pixel-wise cross-entropy (background / nucleus); returns the last loss."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        out = net(x[idx])
        out = out["out"] if isinstance(out, dict) else out
        loss = nn.functional.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@torch.no_grad()
def nucleus_probability(net: nn.Module, image: np.ndarray) -> np.ndarray:
    net.eval()
    x = torch.from_numpy(normalize(image[..., None])[..., 0])[None, None]
    out = net(x)
    out = out["out"] if isinstance(out, dict) else out
    return torch.softmax(out, 1)[0, 1].numpy()


@torch.no_grad()
def fcn_score_map(fcn: nn.Module, image: np.ndarray) -> np.ndarray:
    """The FCN's own output before upsampling: one nucleus probability per 8 x 8 block."""
    x = torch.from_numpy(normalize(image[..., None])[..., 0])[None, None]
    scores = fcn.classifier(fcn.backbone(x)["out"])
    return torch.softmax(scores, 1)[0, 1].numpy()


def nucleus_iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """IoU of the nucleus class (1) with the truth's (semantic_scores' ``iou[1]``)."""
    scores = semantic_scores((mask > 0).astype(np.uint8), (truth > 0).astype(np.uint8))
    return float(scores.iou[1])


def grey(p: np.ndarray) -> np.ndarray:
    return rgb8(p, percentiles=(0, 100)) if p.max() > p.min() else rgb8(p)


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    torch.manual_seed(0)
    steps, width, n_train = (60, 8, 48) if args.small else (240, 8, 160)
    x, y = training_images(n_train, 64)
    image, truth = synthetic_nuclei(
        (128, 128),  # small: enlarged in the figure, the FCN's 8 x 8 blocks show
        n_nuclei=12,
        radius=(5, 11),
        touching=True,
        noise=0.05,
        seed=1234,
    )
    results = {}
    for name, net in (("FCN", make_fcn(width)), ("U-Net", make_unet(width))):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        loss = train(net, x, y, steps)
        prob = nucleus_probability(net, image)
        n_params = sum(p.numel() for p in net.parameters())
        results[name] = (net, prob, nucleus_iou(prob > 0.5, truth))
        print(
            f"{name}: {n_params:,} parameters, {steps} steps in {time.perf_counter() - t0:.1f} s, "
            f"last loss {loss:.3f}, nucleus IoU on a new image {results[name][2]:.3f}"
        )
    fcn, p_fcn, iou_fcn = results["FCN"]
    _, p_unet, iou_unet = results["U-Net"]
    coarse = fcn_score_map(fcn, image)
    panels = [
        ("new image (generated)", rgb8(image)),
        (f"FCN's scores: {coarse.shape[0]} x {coarse.shape[1]}", grey(coarse)),
        ("FCN: scores upsampled x 8", grey(p_fcn)),
        ("U-Net: decoder + skips", grey(p_unet)),
        ("true outlines", outlines(rgb8(image), truth)),
        (f"FCN mask, IoU {iou_fcn:.2f}", outlines(rgb8(image), (p_fcn > 0.5).astype(np.uint8))),
        (f"U-Net mask, IoU {iou_unet:.2f}", outlines(rgb8(image), (p_unet > 0.5).astype(np.uint8))),
    ]
    shipped = SHIPPED_MODELS["unet"]["nuclei"]
    if shipped.is_file():
        from napari_segkit.models.cnn import segment_cnn

        res = segment_cnn(image, model="nuclei", output="semantic", device="cpu")
        iou = nucleus_iou(res.labels, truth)
        print(f"shipped nuclei U-Net (segment_cnn): nucleus IoU {iou:.3f}")
        panels.append((f"shipped U-Net, IoU {iou:.2f}", outlines(rgb8(image), res.labels)))
    else:
        panels.append(("", np.full((*image.shape, 3), 255, np.uint8)))
    pretrained = "cached" if weights_available("fcn_resnet50") else "not available offline"
    caption = (
        f"Both trained here on the CPU the same way ({steps} steps of 8 generated 64 x 64 images, "
        "cross-entropy), with the same encoder (three poolings: features at 1/8 size). The FCN "
        "scores that small map and upsamples the scores bilinearly: round, blurred outlines; the "
        "U-Net's decoder with skip connections restores the detail. Nucleus probability (white = "
        f"1) and masks (p > 0.5, yellow outlines; IoU with the truth). torchvision's pretrained "
        f"fcn_resnet50 (COCO/VOC photo classes): {pretrained}."
    )
    save(figure(panels, caption=caption, columns=4), args.out, "fcn_vs_unet", started)


if __name__ == "__main__":
    main()
