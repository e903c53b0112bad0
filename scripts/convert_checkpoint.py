"""Convert a U-Net checkpoint of the first training format into the one checkpoint format.

The first U-Nets trained by ``scripts/train_nuclei_unet.py`` (before the shared model modules)
kept their metadata as separate safetensors header strings: ``format = "napari-segkit/unet"``,
``architecture``, ``class_names``, ``outputs``, ``normalization``, ``training``, ``metrics`` as
JSON, ``object_diameter`` (the objects' size in the data, ``null`` for the shipped models) and
``target_diameter`` (the size the model works at). The one format
(:mod:`napari_segkit.models.checkpoints`, :func:`napari_segkit.models.unet.unet_metadata`) keeps
one JSON dict whose ``object_diameter`` is the size the model works at: it takes
``target_diameter``. Everything else (training facts, metrics, version and date of the original
file) is kept; the tensors are copied unchanged (float16 stays float16).

Usage::

    python scripts/convert_checkpoint.py OLD.safetensors NEW.safetensors [--note "text"]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OLD_FORMAT = "napari-segkit/unet"
_JSON_KEYS = (
    "architecture",
    "class_names",
    "outputs",
    "normalization",
    "object_diameter",
    "target_diameter",
    "training",
    "metrics",
)


def read_old(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors and decoded metadata of a first-format U-Net file (ValueError if it is not one)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata() or {})
    if raw.get("format") != OLD_FORMAT or raw.get("family") != "unet":
        raise ValueError(
            f"{path} is not a first-format U-Net checkpoint (format={raw.get('format')!r}, "
            f"family={raw.get('family')!r})"
        )
    meta: dict[str, Any] = dict(raw)
    for key in _JSON_KEYS:
        if key in meta:
            meta[key] = json.loads(meta[key])
    return load_file(str(path)), meta


def convert(src: str | Path, dst: str | Path, *, note: str | None = None) -> Path:
    """Write ``src`` (first format) to ``dst`` in the one checkpoint format; return ``dst``."""
    from napari_segkit.models.checkpoints import save_checkpoint
    from napari_segkit.models.unet import unet_metadata

    state, old = read_old(src)
    working = old.get("target_diameter")
    if working is None:
        working = old.get("object_diameter")
    training = dict(old.get("training") or {})
    if old.get("object_diameter") is not None:
        training.setdefault("diameter", old["object_diameter"])
    if note:
        training["note"] = note
    training["converted_from"] = f"{Path(src).name} (format {OLD_FORMAT!r})"
    meta = unet_metadata(
        old["architecture"],
        task=old.get("task", "instance"),
        class_names=old.get("class_names"),
        normalization=old.get("normalization"),
        object_diameter=working,
        training=training,
        metrics=old.get("metrics"),
        outputs=old.get("outputs"),
    )
    for key in ("version", "date"):  # when and by which version it was trained
        if old.get(key):
            meta[key] = old[key]
    return save_checkpoint(state, dst, meta)  # tensors as stored (float16 stays float16)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--note", default=None, help="a line kept in the metadata's training dict")
    args = ap.parse_args(argv)
    out = convert(args.src, args.dst, note=args.note)
    from napari_segkit.models.unet import load_unet

    m = load_unet(out, "cpu", cache=False)
    n = sum(p.numel() for p in m.module.parameters())
    print(
        f"{out}: {m.ndim}D {m.task} U-Net, {n / 1e6:.2f} M parameters, object_diameter "
        f"{m.object_diameter}, classes {m.class_names}, {out.stat().st_size / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
