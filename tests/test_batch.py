"""segkit batch: folders of images, a corrupt file, resuming an interrupted batch, evaluation."""

import csv

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from napari_segkit import batch
from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.batch import find_ground_truth, find_inputs, run_batch
from napari_segkit.cli import main
from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.recipes import load_recipe, save_recipe


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def folder(tmp_path):
    """Three good images (TIFF, PNG, .npy), a corrupt TIFF, a recipe, ground truth."""
    src = tmp_path / "images"
    gt = tmp_path / "gt"
    src.mkdir()
    gt.mkdir()
    truths = {}
    for i, (name, write) in enumerate(
        [
            ("a.tif", tifffile.imwrite),
            ("b.png", lambda p, x: imsave(p, (x // 257).astype(np.uint8), check_contrast=False)),
            ("c.npy", np.save),
        ]
    ):
        img, truth = synthetic_nuclei((64, 72), n_nuclei=6, seed=i, noise=0.0)
        write(src / name, img)
        truths[name] = truth
        tifffile.imwrite(gt / f"{name.split('.')[0]}_labels.tif", truth)
    (src / "broken.tif").write_bytes(b"II*\x00 this is not really a tiff")
    (src / "notes.txt").write_text("not an image: not picked up")
    recipe = save_recipe(tmp_path / "otsu.yaml", "threshold", {"method": "otsu", "min_size": 5})
    return tmp_path, src, gt, recipe, truths


def test_a_corrupt_file_is_reported_and_the_batch_goes_on(folder, capsys):
    tmp, src, _, recipe, _ = folder
    out = tmp / "out"
    code = main(["batch", str(recipe), str(src), "-o", str(out)])
    assert code == 1  # one failed
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("segkit batch:")]
    assert len(lines) == 1 and "broken.tif" in lines[0] and "cannot be read" in lines[0]
    for stem in ("a", "b", "c"):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.max() > 0
        rows = read_csv(out / f"{stem}_objects.csv")
        assert len(rows) == labels.max() and {"label", "area", "centroid_y"} <= set(rows[0])
    np.testing.assert_array_equal(
        tifffile.imread(out / "a_labels.tif"),
        threshold_segment(tifffile.imread(src / "a.tif"), method="otsu", min_size=5),
    )
    summary = {r["input"].split("/")[-1]: r for r in read_csv(out / "batch_summary.csv")}
    assert set(summary) == {"a.tif", "b.png", "broken.tif", "c.npy"}
    assert summary["broken.tif"]["status"] == "failed" and summary["broken.tif"]["error"]
    assert summary["a.tif"]["status"] == "done" and int(summary["a.tif"]["n_objects"]) > 0
    assert not (out / "broken_labels.tif").exists()


class Interrupted(BaseException):
    """Stands for Ctrl+C or a killed job."""


def test_an_interrupted_batch_resumes_without_redoing_or_corrupting(folder, monkeypatch):
    tmp, src, _, recipe, _ = folder
    out = tmp / "out"

    # 1. interrupted after two files (from the progress callback)
    def stop_after_two(done, total):
        if done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_batch(recipe, [src], out, progress=stop_after_two, show_progress=False)
    assert (out / "a_labels.tif").exists() and (out / "b_labels.tif").exists()
    assert not (out / "c_labels.tif").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # 2. interrupted again in the middle of writing c's labels: nothing half-written stays
    real = tifffile.imwrite

    def dying_write(path, *args, **kwargs):
        real(path, *args, **kwargs)  # the bytes are on disk under the temporary name...
        raise Interrupted  # ...and the job dies before the rename

    monkeypatch.setattr(tifffile, "imwrite", dying_write)
    with pytest.raises(Interrupted):
        run_batch(recipe, [src], out, show_progress=False)
    monkeypatch.setattr(tifffile, "imwrite", real)
    assert not (out / "c_labels.tif").exists()
    assert not [p for p in out.iterdir() if ".part" in p.name]

    # 3. resumed: a and b are skipped (untouched), c is done, the corrupt file fails again
    report = run_batch(recipe, [src], out, show_progress=False, report_errors=False)
    status = {r.input.name: r.status for r in report.results}
    assert status == {
        "a.tif": "skipped",
        "b.png": "skipped",
        "broken.tif": "failed",
        "c.npy": "done",
    }
    for name in ("a_labels.tif", "a_objects.csv", "b_labels.tif", "b_objects.csv"):
        assert (out / name).stat().st_mtime_ns == stamps[name]
    assert tifffile.imread(out / "c_labels.tif").max() > 0
    skipped = next(r for r in report.results if r.input.name == "a.tif")
    assert skipped.n_objects == len(read_csv(out / "a_objects.csv"))
    assert skipped.shape == (64, 72)

    # 4. --overwrite redoes everything
    report = run_batch(recipe, [src], out, overwrite=True, show_progress=False, report_errors=False)
    assert [r.status for r in report.results].count("done") == 3


def test_evaluate_scores_every_output(folder, capsys):
    tmp, src, gt, recipe, truths = folder
    (src / "broken.tif").unlink()
    out = tmp / "out"
    (gt / "c_labels.tif").unlink()  # one image without ground truth
    code = main(["batch", str(recipe), str(src), "-o", str(out), "--evaluate", str(gt)])
    assert code == 1  # not every output could be scored
    assert "c.npy: not scored: no ground truth" in capsys.readouterr().err
    rows = {r["input"].split("/")[-1]: r for r in read_csv(out / "batch_scores.csv")}
    from napari_segkit.metrics import match_instances

    pred = tifffile.imread(out / "a_labels.tif")
    m = match_instances(pred, truths["a.tif"], iou_threshold=0.5)
    assert float(rows["a.tif"]["f1"]) == pytest.approx(m.f1)
    assert int(rows["a.tif"]["tp"]) == m.tp and 0 < m.f1 <= 1
    assert rows["c.npy"]["error"] and not rows["c.npy"]["f1"]
    mean = rows["(mean)"]
    assert float(mean["f1"]) == pytest.approx(
        np.mean([float(rows["a.tif"]["f1"]), float(rows["b.png"]["f1"])])
    )


def test_zarr_input_goes_block_by_block(tmp_path):
    import dask.array as da

    img, _ = synthetic_nuclei((120, 100), n_nuclei=20, seed=4)
    da.from_array(img, chunks=40).to_zarr(str(tmp_path / "big.zarr"))
    tifffile.imwrite(tmp_path / "small.tif", img)
    recipe = save_recipe(tmp_path / "r.yaml", "threshold", {"method": "li"})
    report = run_batch(
        recipe,
        [tmp_path / "big.zarr", tmp_path / "small.tif"],
        tmp_path / "out",
        chunk=32,
        show_progress=False,
        big_pixels=10**9,
    )
    assert [r.status for r in report.results] == ["done", "done"]
    big = np.asarray(da.from_zarr(str(tmp_path / "out" / "big_labels.zarr")))
    small = tifffile.imread(tmp_path / "out" / "small_labels.tif")
    # the same objects (IDs up to renumbering) and the same table
    assert len(np.unique(big)) == len(np.unique(small))
    pairs = np.unique(np.stack([big.ravel(), small.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(small))
    t_big = read_csv(tmp_path / "out" / "big_objects.csv")
    t_small = read_csv(tmp_path / "out" / "small_objects.csv")
    assert sorted(int(r["area"]) for r in t_big) == sorted(int(r["area"]) for r in t_small)
    # resumed: the zarr folder counts as done
    again = run_batch(recipe, [tmp_path / "big.zarr"], tmp_path / "out", show_progress=False)
    assert again.results[0].status == "skipped"


def test_inputs_and_ground_truth_lookup(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"")
    (tmp_path / "x_labels.tif").write_bytes(b"")  # our own output in the same folder
    (tmp_path / ".hidden.tif").write_bytes(b"")
    (tmp_path / "y.zarr").mkdir()
    assert [p.name for p in find_inputs([tmp_path])] == ["x.tif", "x_labels.tif", "y.zarr"]
    assert [p.name for p in find_inputs([tmp_path], outdir=tmp_path)] == ["x.tif", "y.zarr"]
    with pytest.raises(ValueError, match="no such file"):
        find_inputs([tmp_path / "nope"])
    assert find_ground_truth(tmp_path, "x").name == "x.tif"
    (tmp_path / "x_mask.png").write_bytes(b"")
    assert find_ground_truth(tmp_path, "x").name == "x.tif"  # the plain stem first
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="more than one"):
        find_ground_truth(tmp_path, "x")
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        find_ground_truth(tmp_path, "z")


def test_clear_errors_before_anything_runs(tmp_path, capsys):
    recipe = save_recipe(tmp_path / "r.yaml", "threshold", {})
    (tmp_path / "bad.yaml").write_text("format: something/else\nversion: 1\n")
    assert (
        main(["batch", str(tmp_path / "bad.yaml"), str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    )
    assert "not a napari-segkit recipe" in capsys.readouterr().err
    assert main(["batch", str(recipe), str(tmp_path / "none"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["batch", str(recipe), str(empty), "-o", str(tmp_path / "o")]) == 2
    assert "no input image found" in capsys.readouterr().err
    assert batch.BIG_PIXELS > 10**8


@pytest.mark.slow
def test_mask_rcnn_writes_its_own_table(tmp_path):
    pytest.importorskip("torch")
    img, _ = synthetic_nuclei((96, 96), n_nuclei=5, seed=1)
    tifffile.imwrite(tmp_path / "n.tif", img)
    recipe = save_recipe(tmp_path / "m.yaml", "maskrcnn", {"device": "cpu"})
    report = run_batch(recipe, [tmp_path / "n.tif"], tmp_path / "out", show_progress=False)
    assert report.results[0].status == "done", report.results[0].error
    rows = read_csv(tmp_path / "out" / "n_objects.csv")
    assert rows and {"class_id", "class_name", "score", "area"} <= set(rows[0])


def test_cnn_recipe_on_a_big_zarr_goes_block_by_block(tmp_path, capsys):
    pytest.importorskip("torch")
    import dask.array as da

    from napari_segkit.metrics import match_instances

    img, _ = synthetic_nuclei((320, 320), n_nuclei=60, seed=7)
    da.from_array(img, chunks=160).to_zarr(str(tmp_path / "big.zarr"))
    tifffile.imwrite(tmp_path / "small.tif", img)
    recipe = save_recipe(tmp_path / "cnn.yaml", "cnn", {"device": "cpu"})
    report = run_batch(
        recipe,
        [tmp_path / "big.zarr", tmp_path / "small.tif"],
        tmp_path / "out",
        chunk=128,
        big_pixels=50_000,  # both are "big": the zarr and the TIFF go block by block
        show_progress=False,
    )
    assert [r.status for r in report.results] == ["done", "done"], report.results
    big = np.asarray(da.from_zarr(str(tmp_path / "out" / "big_labels.zarr")))
    alone = load_recipe(recipe).run(img).labels
    assert match_instances(big, alone).f1 >= 0.95
    assert len(read_csv(tmp_path / "out" / "big_objects.csv")) == len(np.unique(big)) - 1
    # the command line: --chunk, and one way to run the blocks at a time
    code = main(
        [
            "batch",
            str(recipe),
            str(tmp_path / "small.tif"),
            "-o",
            str(tmp_path / "o2"),
            "--chunk",
            "128",
            "--gpus",
            "1",
            "--workers",
            "2",
        ]
    )
    assert code == 2 and "choose one of --workers, --gpus" in capsys.readouterr().err
