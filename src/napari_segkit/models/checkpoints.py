"""Checkpoint files shared by every model family: safetensors (written), safetensors or ``.pt``/``.pth``
(read, never an arbitrary pickle).

A checkpoint written by :func:`save_checkpoint` is one ``.safetensors`` file: the tensors, and in
its header (string metadata) ``format`` (:data:`FORMAT`), ``family`` and ``segkit``, the JSON of
the metadata dict. The metadata describes everything needed to rebuild and feed the model:

- ``family``: ``"maskrcnn"``, ``"unet"``, ``"semantic"``... (which module loads it);
- ``architecture``: the name or config of the network (a U-Net's ``net.config``);
- ``class_names``: name of every class, the background (id 0) first;
- ``normalization``: how inputs are scaled (``{"percentiles": [1.0, 99.8], ...}``);
- ``object_diameter``: the object size in pixels the model works best at (None if unknown);
- ``training``: anything about how it was trained (data, epochs, scores), JSON-able.

The first Mask R-CNN checkpoints (``format = "napari-segkit/maskrcnn"``, the shipped nuclei model)
kept ``class_names``, ``normalisation`` and ``extra`` as separate JSON strings in the header; they
are read as family ``"maskrcnn"``. The British key ``normalisation`` (those files, and checkpoints
written before the key was renamed) is read as ``normalization``.

:func:`save_checkpoint` also records ``version`` (of napari-segkit) and ``date`` (UTC) unless the
metadata already holds them.

torch and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

#: Tag written into the header of every checkpoint.
FORMAT = "napari-segkit/checkpoint-1"
#: Tag of the first Mask R-CNN checkpoints (still read).
LEGACY_MASKRCNN_FORMAT = "napari-segkit/maskrcnn"
#: Suffixes :func:`read_checkpoint` understands.
SUFFIXES = (".safetensors", ".pt", ".pth")
_LEGACY_JSON_KEYS = ("class_names", "normalisation", "normalization", "extra")
#: Old metadata keys -> their current names.
_RENAMED_KEYS = {"normalisation": "normalization"}


def save_checkpoint(
    state_dict: dict[str, Any],
    path: str | os.PathLike,
    metadata: dict[str, Any],
    *,
    half: bool = False,
) -> Path:
    """Write ``state_dict`` and ``metadata`` to a ``.safetensors`` file, atomically.

    The file is written to a temporary file in the same folder, then renamed over ``path``
    (:func:`os.replace`): a crash or a full disk never leaves a half-written checkpoint behind.

    Parameters
    ----------
    state_dict : dict of str to torch.Tensor
        ``module.state_dict()``; tensors are copied to the CPU.
    path : path
        Destination; must end with ``.safetensors``. Its folder is created if needed.
    metadata : dict
        JSON-able; must hold ``family`` (see the module docstring for the usual keys).
    half : bool
        Store floating-point tensors as float16 (half the size; loaded back as float16, which
        ``load_state_dict`` casts to the model's dtype).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> p = save_checkpoint({"w": torch.ones(2)}, folder + "/m.safetensors", {"family": "unet"})
    >>> state, meta = read_checkpoint(p)
    >>> meta["family"], state["w"].tolist()
    ('unet', [1.0, 1.0])
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end with .safetensors; got {str(path)!r}")
    if not isinstance(metadata, dict) or not metadata.get("family"):
        raise ValueError(f"metadata must be a dict with a 'family'; got {metadata!r}")
    metadata = {"version": _version(), "date": _now(), **metadata}
    try:
        meta_json = json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-able: {exc}") from exc
    if not state_dict:
        raise ValueError("state_dict is empty: nothing to save")
    state = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous().clone()  # no shared storage (safetensors refuses it)
    header = {"format": FORMAT, "family": str(metadata["family"]), "segkit": meta_json}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint, reading only the header of a ``.safetensors`` file.

    ``.pt``/``.pth`` files are loaded whole (safely) to find it. A file without segkit metadata
    gives ``{}``.

    Raises
    ------
    ValueError
        Naming the file, if it is missing, empty, corrupt or unsafe.
    """
    path = _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"checkpoint {path} is not a valid safetensors file: {exc}") from exc
        return _decode_header(raw, path)
    return read_checkpoint(path)[1]


def read_checkpoint(
    path: str | os.PathLike, *, family: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state dict (CPU tensors) and metadata of a checkpoint, never unpickling arbitrary objects.

    Parameters
    ----------
    path : path
        ``.safetensors`` (any; segkit metadata read if present) or ``.pt``/``.pth`` read with
        ``torch.load(weights_only=True)``: a state dict, or a dict holding one under
        ``state_dict`` / ``model_state_dict`` / ``model`` and optionally metadata under
        ``segkit`` / ``metadata``. ``model.`` and ``module.`` prefixes (Lightning,
        DataParallel) are removed.
    family : str, optional
        Refuse a checkpoint whose metadata names another family.

    Returns
    -------
    state : dict of str to torch.Tensor
    metadata : dict
        ``{}`` for a plain state dict.

    Raises
    ------
    ValueError
        Naming the file: missing, empty, corrupt, unsafe (a pickle that would run code), holding
        no tensors, or of another family.
    """
    import torch

    path = _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"checkpoint {path} is not a valid safetensors file: {exc}") from exc
        meta = _decode_header(raw, path)
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for unsafe globals, RuntimeError/EOFError
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ValueError(
                f"checkpoint {path} could not be loaded safely ({type(exc).__name__}: {first}). "
                f"Only files holding tensors and plain data are read "
                f"(torch.load(weights_only=True)); use a .safetensors file or a state_dict saved "
                f"with torch.save(model.state_dict(), path)"
            ) from exc
        if not isinstance(obj, dict):
            raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
        meta = {}
        for key in ("segkit", "metadata"):
            if isinstance(obj.get(key), dict):
                meta = dict(obj[key])
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"checkpoint {path} holds no tensors")
    for prefix in ("model.", "module."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if family is not None:
        check_family(meta, family, path)
    return state, meta


def check_family(meta: dict[str, Any], family: str, path: str | os.PathLike) -> None:
    """Raise a ValueError naming ``path`` if ``meta`` says the checkpoint is of another family."""
    got = meta.get("family")
    if got and got != family:
        raise ValueError(
            f"checkpoint {path} holds a {got!r} model, not a {family!r} one; choose a {family} "
            f"checkpoint"
        )


def load_state(module: Any, state: dict[str, Any], path: str | os.PathLike, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a ValueError naming the file on mismatch.

    ``what`` describes the architecture in the message (``"a U-Net of depth 4"``).
    """
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ValueError(
            f"checkpoint {path} does not match {what}: " + " ".join(lines[:3])[:500]
        ) from exc


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes)")
    if path.suffix not in SUFFIXES:
        raise ValueError(
            f"checkpoint {path}: unknown file type {path.suffix!r}; expected one of {SUFFIXES}"
        )
    return path


def _decode_header(raw: dict[str, str], path: Path) -> dict[str, Any]:
    """Metadata dict from a safetensors header (this format, the legacy one, or a foreign file)."""
    if "segkit" in raw:
        try:
            meta = json.loads(raw["segkit"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"checkpoint {path}: its segkit metadata is not JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"checkpoint {path}: its segkit metadata is not a JSON object")
        meta.setdefault("family", raw.get("family"))
        return _renamed(meta)
    meta: dict[str, Any] = dict(raw)
    for key in _LEGACY_JSON_KEYS:
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except json.JSONDecodeError as exc:
                raise ValueError(f"checkpoint {path}: metadata {key!r} is not JSON: {exc}") from exc
    if meta.get("format") == LEGACY_MASKRCNN_FORMAT:
        meta.setdefault("family", "maskrcnn")
    return _renamed(meta)


def _renamed(meta: dict[str, Any]) -> dict[str, Any]:
    """Old keys (``normalisation``) under their current names; the current key wins."""
    for old, new in _RENAMED_KEYS.items():
        if old in meta:
            value = meta.pop(old)
            meta.setdefault(new, value)
    return meta


def _version() -> str:
    from .. import __version__

    return str(__version__)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
