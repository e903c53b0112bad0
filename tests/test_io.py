"""Reading images and writing labels: clear errors, no silent overwrite, atomic writes."""

import numpy as np
import pytest
import tifffile

from napari_segkit import io
from napari_segkit.cli import main


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(io.ImageReadError, match="no such file"):
        io.read_image(tmp_path / "missing.tif")
    with pytest.raises(io.ImageReadError, match="is a folder"):
        io.read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(io.ImageReadError, match="empty"):
        io.read_image(tmp_path / "empty.png")
    (tmp_path / "text.tif").write_text("not an image at all")
    with pytest.raises(io.ImageReadError, match="text.tif: cannot be read as an image"):
        io.read_image(tmp_path / "text.tif")


def test_tiff_axes_are_kept(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((3, 8, 8), np.uint8), metadata={"axes": "TYX"})
    assert io.read_image(tmp_path / "t.tif").axis_labels == ("t", "y", "x")


def test_write_refuses_to_overwrite_and_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "labels.tif"
    io.write_labels(out, np.ones((4, 4), np.int32))
    with pytest.raises(io.OutputExistsError, match="--overwrite"):
        io.write_labels(out, np.zeros((4, 4), np.int32))
    np.testing.assert_array_equal(tifffile.imread(out), 1)

    def broken(path, data, **kw):  # the writer dies half-way
        open(path, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(KeyboardInterrupt):
        io.write_labels(out, np.zeros((4, 4), np.int32), overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(tifffile.imread(out), 1)  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]  # no temporary left
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.write_labels(tmp_path / "no" / "dir" / "x.tif", np.ones((2, 2), np.int32))


@pytest.mark.parametrize(
    "setup, argv_image, message",
    [
        (None, "missing.tif", "missing.tif: no such file"),
        ("text", "notimage.tif", "cannot be read as an image"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, argv_image, message):
    if setup == "text":
        (tmp_path / argv_image).write_text("hello")
    rc = main(["threshold", str(tmp_path / argv_image), "-o", str(tmp_path / "o.tif")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_never_overwrites_unless_asked(tmp_path, capsys):
    img = np.zeros((32, 32), np.uint8)
    img[8:20, 8:20] = 200
    tifffile.imwrite(tmp_path / "in.tif", img)
    edited = np.full((32, 32), 7, np.int32)  # the user's hand-corrected labels
    tifffile.imwrite(tmp_path / "labels.tif", edited)
    rc = main(["threshold", str(tmp_path / "in.tif"), "-o", str(tmp_path / "labels.tif")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), edited)
    rc = main(
        ["threshold", str(tmp_path / "in.tif"), "-o", str(tmp_path / "labels.tif"), "--overwrite"]
    )
    assert rc == 0 and tifffile.imread(tmp_path / "labels.tif").max() == 1
    rc = main(["threshold", str(tmp_path / "in.tif"), "-o", str(tmp_path / "nodir" / "l.tif")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_cli_auto_stack_reads_the_time_axis(tmp_path):
    vol = np.zeros((4, 16, 16), np.uint8)
    vol[1:3, 4:10, 4:10] = 200  # one blob over two planes
    tifffile.imwrite(tmp_path / "z.tif", vol, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "t.tif", vol, metadata={"axes": "TYX"})
    common = ["--min-size", "0"]
    assert (
        main(["threshold", str(tmp_path / "z.tif"), "-o", str(tmp_path / "z_l.tif"), *common]) == 0
    )
    assert (
        main(["threshold", str(tmp_path / "t.tif"), "-o", str(tmp_path / "t_l.tif"), *common]) == 0
    )
    assert tifffile.imread(tmp_path / "z_l.tif").max() == 1  # one 3D object
    assert tifffile.imread(tmp_path / "t_l.tif").max() == 2  # one object per frame


def test_cli_table(tmp_path):
    img = np.zeros((32, 32), np.uint8)
    img[2:10, 2:10] = img[20:30, 20:25] = 200
    tifffile.imwrite(tmp_path / "in.tif", img)
    rc = main(
        [
            "threshold",
            str(tmp_path / "in.tif"),
            "-o",
            str(tmp_path / "l.tif"),
            "--table",
            str(tmp_path / "t.csv"),
        ]
    )
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert rc == 0 and lines[0].startswith("label,area,centroid_y,centroid_x") and len(lines) == 3
