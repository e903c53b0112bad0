"""The model commands (`segkit maskrcnn`, `segkit cnn`, `segkit weights`) on the CPU, no download."""

import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from napari_segkit.cli import main  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402


def test_maskrcnn_writes_labels_and_table(tmp_path, capsys):
    img, truth = synthetic_nuclei((160, 160), n_nuclei=20, seed=99)
    src, out, table = tmp_path / "in.tif", tmp_path / "out.tif", tmp_path / "t.csv"
    tifffile.imwrite(src, img)
    assert (
        main(["maskrcnn", str(src), "-o", str(out), "--device", "cpu", "--table", str(table)]) == 0
    )
    labels = tifffile.imread(out)
    assert labels.dtype == np.int32 and match_instances(labels, truth).f1 >= 0.9
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


def test_cnn_z_stack_with_spacing_equals_the_api(tmp_path, capsys):
    from napari_segkit.datasets import realistic_nuclei_3d
    from napari_segkit.models.cnn import segment_cnn

    vol, _, spacing = realistic_nuclei_3d((16, 48, 48), seed=6, return_spacing=True)
    src, out = tmp_path / "z.tif", tmp_path / "z_labels.tif"
    tifffile.imwrite(src, vol)
    text = f"{spacing[0]},1,1"
    args = ["cnn", str(src), "-o", str(out), "--device", "cpu", "--diameter", "20"]
    assert main([*args, "--volume", "--spacing", text]) == 0
    api = segment_cnn(vol, spatial_ndim=3, spacing=spacing, diameter=20, device="cpu")
    np.testing.assert_array_equal(tifffile.imread(out), api.labels)
    # planes have no z spacing; a malformed one is refused by the parser
    assert main([*args, "--stack", "planes", "--spacing", text, "--overwrite"]) == 2
    assert "--spacing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--spacing", "1,2", "--overwrite"])
    assert "three positive numbers" in capsys.readouterr().err
