"""Screenshots of every dock widget of napari-segkit, for the README: docs/images/<widget>.png.

Each widget is docked in a real napari window through the plugin manifest (as napari does), on an
image that suits it, Run is pressed with the default settings, the worker is waited for, and the
window is saved as a small PNG (1000 px wide, 256 colors).

Run it under a virtual X server::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/make_screenshots.py --out docs/images

Images: coins (Threshold, Edges), astronaut (K-means), generated nuclei (Mask R-CNN, CNN,
Evaluate, Train; Batch: six of them as TIFF files, with their ground truth and a threshold recipe,
the first one and its labels shown). Evaluate compares an Otsu threshold with the ground truth.
Train fine-tunes the shipped U-Net for 4 x 5 steps instead of the default 30 x 50, to finish in minutes on a CPU. The
CNN widget uses the shipped nuclei U-Net when its file is installed; otherwise a small U-Net is
trained here first (a minute on a CPU) and the widget points at that checkpoint file.

The napari settings and the user-models folder are temporary: nothing of the user's changes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
# a throw-away napari settings file and models folder: nothing of the user's is read or changed
_SCRATCH = tempfile.TemporaryDirectory(prefix="segkit-screenshots-")
os.environ["NAPARI_CONFIG"] = os.path.join(_SCRATCH.name, "napari-settings.yaml")
os.environ["NAPARI_SEGKIT_MODELS"] = os.path.join(_SCRATCH.name, "models")

import napari  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

PLUGIN = "napari-segkit"
WINDOW = (1700, 1050)
MAX_KB = 150


def manifest_widgets() -> list[str]:
    """The display names of the plugin's widgets, from its manifest (npe2, as napari reads it)."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    return [w.display_name for w in manifest.contributions.widgets or []]


def wait(predicate, timeout: float = 600.0) -> None:
    """Process Qt events until ``predicate()`` is true (a worker finished)."""
    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not predicate():
        app.processEvents()
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        time.sleep(0.05)
    for _ in range(20):  # let the new layers draw
        app.processEvents()
        time.sleep(0.02)


def tiny_unet(folder: Path) -> Path | None:
    """A small instance U-Net trained on generated nuclei (when the shipped one is missing)."""
    try:
        from napari_segkit.models.training import train
    except ImportError:
        return None
    from napari_segkit.datasets import synthetic_nuclei

    pairs = [
        synthetic_nuclei(
            (256, 256), n_nuclei=40, radius=(7, 14), touching=True, background_gradient=0.3, seed=s
        )
        for s in range(6)
    ]
    print("the shipped nuclei U-Net is missing: training a small one on generated nuclei...")
    res = train(
        pairs,
        epochs=6,
        steps_per_epoch=30,
        batch_size=8,
        patch_size=128,
        learning_rate=1e-2,
        architecture={"depth": 3, "width": 16},
        device="cpu",
        checkpoint=folder / "nuclei_small_unet.safetensors",
    )
    print(f"  validation {res.metric_name} {res.best_metric}")
    return res.checkpoint


def batch_folders(viewer: napari.Viewer, scratch: Path) -> dict:
    """Six generated nuclei images, their ground truth and a threshold recipe, in files."""
    import tifffile

    from napari_segkit.datasets import synthetic_nuclei
    from napari_segkit.recipes import save_recipe

    images, truth, output = (scratch / d for d in ("images", "truth", "labels"))
    for folder in (images, truth):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        img, lab = synthetic_nuclei(
            (256, 256), n_nuclei=30, radius=(7, 14), touching=True, seed=100 + i
        )
        tifffile.imwrite(images / f"nuclei_{i}.tif", img)
        tifffile.imwrite(truth / f"nuclei_{i}_labels.tif", lab)
        if i == 0:
            viewer.add_image(img, name="nuclei_0.tif")
    recipe = save_recipe(scratch / "threshold.yaml", "threshold", {}, overwrite=True)
    return {
        "recipe": str(recipe),
        "inputs": str(images),
        "output": str(output),
        "ground_truth": str(truth),
    }


def setup(viewer: napari.Viewer, name: str, scratch: Path) -> dict:
    """Load the widget's image; return what to set on the widget before Run."""
    if name in ("Threshold", "Edges"):
        viewer.open_sample(PLUGIN, "coins")
        return {}
    if name == "K-means":
        from skimage import data

        viewer.add_image(data.astronaut(), name="astronaut", rgb=True)
        return {}
    if name == "Batch":
        return batch_folders(viewer, scratch)
    viewer.open_sample(PLUGIN, "nuclei")  # generated nuclei + their ground truth (hidden)
    if name == "CNN":
        from napari_segkit.models.weights import SHIPPED_MODELS

        if SHIPPED_MODELS["unet"]["nuclei"].is_file():
            return {}
        path = tiny_unet(scratch)
        return {"model": "file", "checkpoint": str(path)} if path else {"skip_run": True}
    if name == "Train":
        # the defaults, except the length: 4 short epochs fine-tuning the shipped U-Net (a
        # few minutes on a CPU) so that the plot shows a curve; the training labels shown
        viewer.layers["nuclei ground truth"].visible = True
        return {"epochs": 4, "steps": 5, "batch_size": 4}
    if name == "Evaluate":
        from napari_segkit.algorithms.threshold import threshold_segment

        image = viewer.layers["nuclei"].data
        viewer.add_labels(threshold_segment(image, method="otsu"), name="nuclei threshold")
        return {}
    return {}


def shoot(name: str, out: Path, scratch: Path, width: int) -> Path:
    viewer = napari.Viewer(title=f"napari-segkit: {name}")
    viewer.window._qt_window.resize(*WINDOW)
    settings = setup(viewer, name, scratch)
    skip_run = settings.pop("skip_run", False)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    for key, value in settings.items():
        getattr(widget, key).value = value
    started = time.perf_counter()
    press = getattr(widget, "run", None) or getattr(widget, "train", None)
    if not skip_run and press is not None:
        worker = press()
        if worker is None:
            print(f"  {name}: Run did not start (see the widget's status)")
        wait(lambda: not widget.running)
    took = time.perf_counter() - started
    if name == "Batch":  # the first image's labels, as written by the batch
        import tifffile

        written = sorted(Path(settings["output"]).glob("nuclei_0*.tif"))
        if written:
            viewer.add_labels(tifffile.imread(written[0]), name=written[0].name)
    status = getattr(getattr(widget, "status", None), "value", "")
    print(f"  {name}: ran in {took:.1f} s; status: {status!r}; layers: {list(viewer.layers)}")
    viewer.reset_view()
    close_notifications(viewer)
    wait(lambda: True)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    full = Image.fromarray(np.asarray(shot)[..., :3])
    slug = name.lower().replace(" ", "").replace("-", "")
    path = out / f"{slug}.png"
    # the most pixels and colors that fit in MAX_KB (noisy images need fewer)
    for w, colors in [(width, 256), (width, 128), (width, 64), (width * 9 // 10, 64)]:
        img = full.resize((w, round(full.height * w / full.width)), Image.LANCZOS)
        img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        img.save(path, optimize=True)
        if path.stat().st_size <= MAX_KB * 1024:
            break
    print(f"  wrote {path} ({w} px, {colors} colors, {path.stat().st_size // 1024} kB)")
    viewer.close()
    return path


def close_notifications(viewer: napari.Viewer) -> None:
    """Close the notification toasts that would cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--width", type=int, default=1000, help="PNG width in pixels")
    parser.add_argument("--only", nargs="*", help="display names of the widgets to shoot")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"  # fewer toasts over the canvas
    names = manifest_widgets()
    chosen = [n for n in names if not args.only or n in args.only]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        print(f"not in the manifest: {unknown}; it has {names}")
        return 1
    if len(chosen) == 1:
        shoot(chosen[0], args.out, Path(_SCRATCH.name), args.width)
        return 0
    print(f"widgets in the manifest: {names}")
    failed = []
    for name in chosen:  # one process per widget: a fresh napari, nothing carried over
        cmd = [sys.executable, __file__, "--out", str(args.out), "--width", str(args.width)]
        if subprocess.run([*cmd, "--only", name]).returncode:
            failed.append(name)
    if failed:
        print(f"FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
