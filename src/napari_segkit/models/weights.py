"""Where model weights come from: shipped files, torchvision's pretrained weights, user models.

- **Shipped** models (:data:`SHIPPED_MODELS`): small safetensors files trained by the repo's
  scripts on generated images, in ``models/weights/``, per family.
- **torchvision** pretrained weights (:data:`TORCHVISION_WEIGHTS`: the COCO Mask R-CNNs, and FCN,
  DeepLabV3 and LR-ASPP trained on COCO with the VOC labels) live in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints`` by default). Nothing is
  downloaded unless asked (:func:`download_weights`, ``segkit weights download NAME``); offline,
  :func:`offline_message` says exactly where to put the file.
- **User** models: checkpoints trained in napari-segkit, saved in :func:`user_models_dir`
  (``NAPARI_SEGKIT_MODELS`` overrides it) and listed by :func:`list_user_models`.

torch and torchvision are imported inside the functions.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The folder of the shipped weights.
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Shipped models: family -> name -> file. A file may be missing (not trained yet).
SHIPPED_MODELS: dict[str, dict[str, Path]] = {
    "maskrcnn": {"nuclei": WEIGHTS_DIR / "nuclei_maskrcnn_small.safetensors"},
    "unet": {
        "nuclei": WEIGHTS_DIR / "nuclei_unet_2d.safetensors",
        "nuclei_3d": WEIGHTS_DIR / "nuclei_unet_3d.safetensors",
    },
}
#: How each shipped model is (re)made, for the message when its file is missing.
SHIPPED_HOW = {
    "maskrcnn": "scripts/train_nuclei_maskrcnn.py",
    "unet": "the U-Net training script (scripts/) on a GPU",
}
#: torchvision pretrained weights: name -> (module, weights enum, member).
TORCHVISION_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "maskrcnn_resnet50_fpn": (
        "torchvision.models.detection",
        "MaskRCNN_ResNet50_FPN_Weights",
        "DEFAULT",
    ),
    "maskrcnn_resnet50_fpn_v2": (
        "torchvision.models.detection",
        "MaskRCNN_ResNet50_FPN_V2_Weights",
        "DEFAULT",
    ),
    "fcn_resnet50": (
        "torchvision.models.segmentation",
        "FCN_ResNet50_Weights",
        "COCO_WITH_VOC_LABELS_V1",
    ),
    "fcn_resnet101": (
        "torchvision.models.segmentation",
        "FCN_ResNet101_Weights",
        "COCO_WITH_VOC_LABELS_V1",
    ),
    "deeplabv3_resnet50": (
        "torchvision.models.segmentation",
        "DeepLabV3_ResNet50_Weights",
        "COCO_WITH_VOC_LABELS_V1",
    ),
    "deeplabv3_resnet101": (
        "torchvision.models.segmentation",
        "DeepLabV3_ResNet101_Weights",
        "COCO_WITH_VOC_LABELS_V1",
    ),
    "deeplabv3_mobilenet_v3_large": (
        "torchvision.models.segmentation",
        "DeepLabV3_MobileNet_V3_Large_Weights",
        "COCO_WITH_VOC_LABELS_V1",
    ),
    "lraspp_mobilenet_v3_large": (
        "torchvision.models.segmentation",
        "LRASPP_MobileNet_V3_Large_Weights",
        "COCO_WITH_VOC_LABELS_V1",
    ),
}
#: Environment variable that overrides :func:`user_models_dir`.
MODELS_DIR_ENV = "NAPARI_SEGKIT_MODELS"


class WeightsUnavailableError(RuntimeError):
    """The pretrained weights are not cached and cannot be downloaded (offline)."""


# --------------------------------------------------------------------------------------------
# shipped models


def shipped_path(family: str, name: str) -> Path:
    """The file of a shipped model; a ValueError saying how to get it if it is missing.

    Examples
    --------
    >>> shipped_path("maskrcnn", "nuclei").name
    'nuclei_maskrcnn_small.safetensors'
    """
    models = SHIPPED_MODELS.get(family)
    if models is None:
        raise ValueError(f"family must be one of {sorted(SHIPPED_MODELS)}; got {family!r}")
    if name not in models:
        raise ValueError(f"no shipped {family} model named {name!r}; shipped: {sorted(models)}")
    path = models[name]
    if not path.is_file():
        raise ValueError(
            f"the shipped {family} model {name!r} is missing ({path}): it is not part of this "
            f"installation yet (made by {SHIPPED_HOW.get(family, 'a training script')}). "
            f"Reinstall napari-segkit, or choose a checkpoint file or one of your own models."
        )
    return path


# --------------------------------------------------------------------------------------------
# torchvision weights and the torch hub cache


def hub_dir() -> Path:
    """torch's hub folder (``$TORCH_HOME/hub``; ``torch.hub.set_dir`` changes it)."""
    import torch

    return Path(torch.hub.get_dir())


def torchvision_weights(name: str) -> Any:
    """The torchvision weights enum member of ``name`` (its ``url`` and ``meta["categories"]``).

    Examples
    --------
    >>> torchvision_weights("fcn_resnet50").meta["categories"][15]
    'person'
    """
    if name not in TORCHVISION_WEIGHTS:
        raise ValueError(
            f"name must be one of the torchvision weights {sorted(TORCHVISION_WEIGHTS)}; "
            f"got {name!r}"
        )
    module, enum, member = TORCHVISION_WEIGHTS[name]
    return getattr(getattr(importlib.import_module(module), enum), member)


def cached_weights_path(name: str) -> Path:
    """Where torchvision keeps (or would keep) the pretrained weights of ``name``.

    ``<torch hub dir>/checkpoints/<file name of the weights' URL>``.

    Examples
    --------
    >>> cached_weights_path("maskrcnn_resnet50_fpn").name
    'maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth'
    """
    url = torchvision_weights(name).url
    return hub_dir() / "checkpoints" / os.path.basename(url)


def weights_available(name: str) -> bool:
    """Whether the pretrained weights of ``name`` are already in the torch hub cache."""
    return cached_weights_path(name).is_file()


def offline_message(name: str, reason: str = "") -> str:
    """What to do when the pretrained weights of ``name`` are neither cached nor downloadable.

    Examples
    --------
    >>> "segkit weights download fcn_resnet50" in offline_message("fcn_resnet50")
    True
    """
    url = torchvision_weights(name).url
    path = cached_weights_path(name)
    why = f" ({reason})" if reason else ""
    return (
        f"The pretrained weights of {name} are not in the torch hub cache and could not be "
        f"downloaded{why}. Either:\n"
        f"  1. on a machine that is online, run `segkit weights download {name}` (or press "
        f"'Download weights' in the widget), then copy {path.name} into {path.parent} "
        f"on this machine;\n"
        f"  2. download {url} yourself and save it as {path} (set TORCH_HOME to use another "
        f"cache folder);\n"
        f"  3. or choose a local checkpoint file (.safetensors, .pt or .pth) as the model."
    )


def download_weights(name: str, *, progress: bool = True) -> Path:
    """Fetch the pretrained weights of ``name`` into the torch hub cache (once); return the file.

    Raises
    ------
    WeightsUnavailableError
        When the download fails (offline, proxy, disk), with :func:`offline_message`.

    Examples
    --------
    >>> download_weights("maskrcnn_resnet50_fpn")  # doctest: +SKIP
    PosixPath('/home/me/.cache/torch/hub/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth')
    """
    import torch

    path = cached_weights_path(name)
    if path.is_file():
        return path
    url = torchvision_weights(name).url
    try:
        torch.hub.load_state_dict_from_url(
            url, progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as exc:  # URLError, HTTPError, socket timeouts, hash mismatch, disk full...
        raise WeightsUnavailableError(
            offline_message(name, f"{type(exc).__name__}: {exc}")
        ) from exc
    return path


def load_cached_state(name: str, *, download: bool = False) -> dict[str, Any]:
    """The state dict of torchvision's pretrained ``name`` from the hub cache (never a pickle).

    Raises
    ------
    WeightsUnavailableError
        Not cached and ``download`` is False, or the download failed.
    ValueError
        The cached file is corrupt (naming it).
    """
    import torch

    path = cached_weights_path(name)
    if not path.is_file():
        if not download:
            raise WeightsUnavailableError(offline_message(name, "not downloaded yet"))
        download_weights(name)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"the cached weights {path} are corrupt ({type(exc).__name__}: {exc}); delete the "
            f"file and download again"
        ) from exc


# --------------------------------------------------------------------------------------------
# user models


def user_models_dir(*, create: bool = False) -> Path:
    """The folder of the user's own models (checkpoints trained in napari-segkit).

    ``$NAPARI_SEGKIT_MODELS`` if set, else the platform's user data folder
    (``~/.local/share/napari-segkit/models`` on Linux, ``~/Library/Application
    Support/napari-segkit/models`` on macOS, ``%LOCALAPPDATA%\\napari-segkit\\models`` on
    Windows).

    Examples
    --------
    >>> import os
    >>> os.environ["NAPARI_SEGKIT_MODELS"] = "/tmp/my-models"
    >>> str(user_models_dir())
    '/tmp/my-models'
    >>> del os.environ["NAPARI_SEGKIT_MODELS"]
    """
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        from platformdirs import user_data_path

        path = user_data_path("napari-segkit", appauthor=False) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class UserModel:
    """A checkpoint in :func:`user_models_dir`: its name (the file's stem), path and metadata."""

    name: str
    path: Path
    family: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


def list_user_models(family: str | None = None) -> list[UserModel]:
    """The ``.safetensors`` checkpoints in :func:`user_models_dir`, sorted by name.

    Only the files' headers are read. Unreadable files are skipped.

    Parameters
    ----------
    family : str, optional
        Keep the models of this family only (``"unet"``, ``"maskrcnn"``...).

    Examples
    --------
    >>> [m.name for m in list_user_models("unet")]  # doctest: +SKIP
    ['my_cells']
    """
    from .checkpoints import read_metadata

    folder = user_models_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.safetensors")):
        try:
            meta = read_metadata(path)
        except ValueError:
            continue
        fam = meta.get("family")
        if family is None or fam == family:
            out.append(UserModel(path.stem, path, fam, meta))
    return out


def find_user_model(name: str, family: str | None = None) -> Path | None:
    """The path of the user model called ``name`` (of ``family``), or None."""
    for m in list_user_models(family):
        if m.name == name:
            return m.path
    return None
