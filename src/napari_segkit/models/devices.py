"""Devices shared by every model: importing torch safely, choosing the device and the precision.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def hide_triton() -> None:
    """Hide triton from torch inside napari (unless ``NAPARI_SEGKIT_ALLOW_TRITON=1``).

    torchvision imports ``torch._dynamo``, which imports triton when it is installed; triton's own
    LLVM crashes the process (segfault) when it is loaded after an OpenGL context that runs on
    Mesa's LLVM (llvmpipe, radeonsi), as napari's canvas may. triton only serves torch.compile,
    which this plugin does not use, so an ``import triton`` is made to raise ImportError instead.
    Call it before torch is first imported (it does nothing once triton is loaded).
    """
    if "triton" not in sys.modules and not os.environ.get("NAPARI_SEGKIT_ALLOW_TRITON"):
        sys.modules["triton"] = None  # type: ignore[assignment]


def import_torch() -> None:
    """Import torch and torchvision now (call it on the main thread).

    Their first import from a worker thread can crash the process (native libraries that torch
    pulls in, such as triton's, initialise badly off the main thread), so GUIs import them on the
    GUI thread before starting a worker (after :func:`hide_triton`).
    """
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    import torchvision.models.detection  # noqa: F401
    import torchvision.models.segmentation  # noqa: F401


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"`` (CUDA, else Apple MPS, else CPU), ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``.

    Raises
    ------
    ValueError
        For an unknown name, or a device this machine does not have.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available on this machine")
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device='mps' but Apple MPS is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cuda', 'mps' or 'cpu'; got {device!r}")


def use_half(device: Any, half: bool = True) -> bool:
    """Whether to run float16 autocast: asked for, and on a CUDA device (never on the CPU/MPS).

    Examples
    --------
    >>> import torch
    >>> use_half(torch.device("cpu"), True)
    False
    """
    return bool(half) and getattr(device, "type", str(device)) == "cuda"


#: cuDNN autotunes a new input size in about a second: worth it from this many equal tiles on.
AUTOTUNE_TILES = 16


def configure_cudnn(device: Any, *, fixed_size: bool = True) -> None:
    """cuDNN autotuning on a CUDA device when many batches have the same size (tiles).

    With an automatic object size every image is rescaled differently, so a call with a few
    tiles (an estimating pass, one image in the viewer) would autotune a new size each time.
    """
    if getattr(device, "type", None) != "cuda":
        return
    import torch

    torch.backends.cudnn.benchmark = bool(fixed_size)
