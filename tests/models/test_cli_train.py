"""``segkit train`` on files and folders (CPU, tiny network)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from napari_segkit.cli import main  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.models.checkpoints import read_metadata as read_unet_metadata  # noqa: E402

TINY = ["--depth", "1", "--width", "4", "--epochs", "2", "--steps-per-epoch", "2"]
TINY += ["--batch-size", "2", "--patch-size", "32", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _write_pairs(folder, n=2, label_suffix="_labels"):
    folder.mkdir(exist_ok=True)
    for i in range(n):
        img, lab = synthetic_nuclei((64, 64), n_nuclei=6, seed=i)
        tifffile.imwrite(folder / f"img{i}.tif", img)
        tifffile.imwrite(folder / f"img{i}{label_suffix}.tif", lab)
    return folder


def test_train_files_prints_epochs_and_saves(tmp_path, capsys):
    d = _write_pairs(tmp_path / "data")
    out = tmp_path / "m.safetensors"
    images = [str(d / "img0.tif"), str(d / "img1.tif")]
    labels = [str(d / "img0_labels.tif"), str(d / "img1_labels.tif")]
    rc = main(["train", *images, "--labels", *labels, "-o", str(out), *TINY])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "epoch 1/2" in text and "epoch 2/2" in text and "val AP@0.5" in text
    meta = read_unet_metadata(out)
    assert [i["name"] for i in meta["training"]["images"]] == ["img0.tif", "img1.tif"]


def test_train_a_folder_of_pairs(tmp_path, capsys):
    d = _write_pairs(tmp_path / "data", label_suffix="_masks")
    out = tmp_path / "m.safetensors"
    assert main(["train", str(d), "-o", str(out), *TINY]) == 0
    assert read_unet_metadata(out)["architecture"]["depth"] == 1
    # the same with the labels in a second folder, under the images' names
    imgs, labs = tmp_path / "imgs", tmp_path / "labs"
    imgs.mkdir()
    labs.mkdir()
    for i in range(2):
        (d / f"img{i}.tif").rename(imgs / f"img{i}.tif")
        (d / f"img{i}_masks.tif").rename(labs / f"img{i}.tif")
    argv = ["train", str(imgs), "--labels", str(labs), "-o", str(out), *TINY]
    assert main(argv) == 2  # the model exists
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_bad_input_exits_with_one_line(tmp_path, capsys):
    d = _write_pairs(tmp_path / "data", n=1)
    out = ["-o", str(tmp_path / "m.safetensors"), *TINY]
    labels = [str(d / "img0_labels.tif"), str(d / "img0.tif")]
    cases = [
        (["train", str(d / "img0.tif"), "--labels", *labels], "1 image(s) but 2 label file(s)"),
        (["train", str(d / "nope.tif"), "--labels", labels[0]], "does not exist"),
        (["train", str(tmp_path)], "no labels"),
    ]
    for argv, match in cases:
        rc = main([*argv, *out])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("segkit train:") and match in err, err
        assert err.count("\n") == 1


def test_mismatched_shapes_and_empty_labels(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(d / "a_labels.tif", np.zeros((64, 60), np.uint16))
    tifffile.imwrite(d / "b.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(d / "b_labels.tif", np.zeros((64, 64), np.uint16))
    out = str(tmp_path / "m.safetensors")
    assert main(["train", str(d / "a.tif"), "--labels", str(d / "a_labels.tif"), "-o", out]) == 2
    assert "differ" in capsys.readouterr().err
    assert main(["train", str(d / "b.tif"), "--labels", str(d / "b_labels.tif"), "-o", out]) == 2
    assert "labels are empty" in capsys.readouterr().err
