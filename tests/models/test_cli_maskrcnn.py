"""The ``segkit maskrcnn`` and ``segkit weights`` commands (CPU, no download)."""

import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from napari_segkit.algorithms.instances import match_instances  # noqa: E402
from napari_segkit.cli import main  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402


def test_maskrcnn_writes_labels_and_table(tmp_path, capsys):
    img, truth = synthetic_nuclei((160, 160), n_nuclei=20, seed=99)
    src, out, table = tmp_path / "in.tif", tmp_path / "out.tif", tmp_path / "t.csv"
    tifffile.imwrite(src, img)
    assert (
        main(["maskrcnn", str(src), "-o", str(out), "--device", "cpu", "--table", str(table)]) == 0
    )
    labels = tifffile.imread(out)
    assert labels.dtype == np.int32 and match_instances(labels, truth)["f1"] >= 0.9
    assert table.read_text().splitlines()[0].startswith("label,class_id,class_name,score,area")
    assert "label(s)" in capsys.readouterr().out


def test_bad_model_file_exits_with_a_message(tmp_path, capsys):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.zeros((64, 64), np.uint16))
    rc = main(
        ["maskrcnn", str(src), "-o", str(tmp_path / "o.tif"), "--model", str(tmp_path / "x.pt")]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_weights_download_offline_and_where(hub, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["weights", "download", "maskrcnn_resnet50_fpn", "-q"]) == 1
    err = capsys.readouterr().err
    assert "segkit weights download maskrcnn_resnet50_fpn" in err and str(hub) in err
    assert main(["weights", "where", "maskrcnn_resnet50_fpn_v2"]) == 0
    assert "missing" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["weights", "download", "resnet9000"])
