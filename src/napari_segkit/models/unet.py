"""U-Net: the encoder-decoder network with skip connections, in 2D and 3D.

torch is imported inside :func:`build_unet`, so importing this module stays cheap.

The network is the classic U-Net (Ronneberger et al., 2015): an encoder of ``depth`` stages that
halve the resolution and double the features, a decoder that upsamples and concatenates the
encoder's features of the same resolution (the skip connections that carry fine detail), and a
1x1 convolution head. Padding keeps the output the size of the input, so any input whose size is a
multiple of ``2**depth`` works (the inference code pads to that).

Output channels by task (see :data:`TASKS`):

- ``"instance"``: 4 channels: logits of background / interior / boundary, then a distance map
  (each object's distance transform normalised to 1 at its centre); a seeded watershed turns them
  into objects.
- ``"semantic"``: one logit channel per class, class 0 the background.
"""

from __future__ import annotations

from typing import Any

#: What the network predicts -> how many output channels it needs (semantic: ``n_classes``).
TASKS = ("instance", "semantic")
#: Output channels of an instance U-Net: background, interior, boundary logits + distance.
INSTANCE_CHANNELS = 4


def build_unet(
    *,
    ndim: int = 2,
    in_channels: int = 1,
    out_channels: int = INSTANCE_CHANNELS,
    depth: int = 4,
    width: int = 32,
    norm: str = "batch",
) -> Any:
    """Build an untrained U-Net (a ``torch.nn.Module``).

    Parameters
    ----------
    ndim : {2, 3}
        2D (images) or 3D (volumes) convolutions.
    in_channels : int
        Input channels (1 for grey).
    out_channels : int
        Output channels (4 for the instance task, the number of classes for semantic labels).
    depth : int
        Number of poolings (the input size must be a multiple of ``2**depth``).
    width : int
        Features of the first stage; each stage doubles them.
    norm : {'batch', 'group', 'none'}
        Normalisation after every convolution. 'group' (8 groups) suits tiny batches.

    Examples
    --------
    >>> import torch
    >>> net = build_unet(ndim=2, in_channels=1, out_channels=4, depth=2, width=8)
    >>> tuple(net(torch.zeros(1, 1, 32, 32)).shape)
    (1, 4, 32, 32)
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3; got {ndim!r}")
    for name, value, lo in (
        ("in_channels", in_channels, 1),
        ("out_channels", out_channels, 1),
        ("depth", depth, 1),
        ("width", width, 1),
    ):
        if not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    if norm not in ("batch", "group", "none"):
        raise ValueError(f"norm must be 'batch', 'group' or 'none'; got {norm!r}")

    import torch
    from torch import nn

    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    pool = nn.MaxPool2d if ndim == 2 else nn.MaxPool3d
    up = nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d

    def normalise(ch: int) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm2d(ch) if ndim == 2 else nn.BatchNorm3d(ch)
        if norm == "group":
            return nn.GroupNorm(min(8, ch), ch)
        return nn.Identity()

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            conv(cin, cout, 3, padding=1, bias=norm == "none"),
            normalise(cout),
            nn.ReLU(inplace=True),
            conv(cout, cout, 3, padding=1, bias=norm == "none"),
            normalise(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [width * 2**i for i in range(depth + 1)]
            self.encoders = nn.ModuleList(
                [block(in_channels, chans[0])]
                + [block(chans[i], chans[i + 1]) for i in range(depth)]
            )
            self.pool = pool(2)
            self.ups = nn.ModuleList(
                [up(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))]
            )
            self.decoders = nn.ModuleList(
                [block(2 * chans[i], chans[i]) for i in reversed(range(depth))]
            )
            self.head = conv(chans[0], out_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, enc in enumerate(self.encoders):
                x = enc(x if i == 0 else self.pool(x))
                skips.append(x)
            skips.pop()
            for upsample, dec in zip(self.ups, self.decoders, strict=True):
                x = dec(torch.cat([upsample(x), skips.pop()], dim=1))
            return self.head(x)

    net = UNet()
    net.config = {
        "ndim": ndim,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "depth": depth,
        "width": width,
        "norm": norm,
    }
    return net
