"""The segkit command line for the classic methods (Mask R-CNN's is in tests/models)."""

import numpy as np
import pytest
import tifffile
from skimage import data

from napari_segkit.algorithms.kmeans import kmeans_segment
from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.cli import main, parse_setting


@pytest.mark.parametrize(
    "text, expected",
    [
        ("min_size=20", ("min_size", 20)),
        ("offset=-0.5", ("offset", -0.5)),
        ("method=otsu", ("method", "otsu")),
        ("fill_holes=true", ("fill_holes", True)),
        ("value=None", ("value", None)),
        ("cut_points=mean, 0.5", ("cut_points", "mean, 0.5")),
    ],
)
def test_parse_setting(text, expected):
    assert parse_setting(text) == expected


def test_threshold_writes_the_same_labels_as_the_api(tmp_path, capsys):
    src, out = tmp_path / "coins.tif", tmp_path / "labels.tif"
    tifffile.imwrite(src, data.coins())
    code = main(
        ["threshold", str(src), "-o", str(out), "--set", "min_size=20", "--set", "fill_holes=true"]
    )
    assert code == 0
    expected = threshold_segment(data.coins(), min_size=20, fill_holes=True)
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    assert f"{expected.max()} label(s)" in capsys.readouterr().out


def test_threshold_z_stack_with_spacing_equals_the_api(tmp_path, capsys):
    from napari_segkit.datasets import realistic_nuclei_3d

    vol, _, _ = realistic_nuclei_3d((24, 64, 64), config="holdout", seed=7, return_spacing=True)
    src, out = tmp_path / "z.tif", tmp_path / "z_labels.tif"
    tifffile.imwrite(src, vol)
    args = ["threshold", str(src), "-o", str(out), "--overwrite"]
    assert main([*args, "--volume", "--spacing", "1.5,0.5,0.5"]) == 0  # um: only ratios count
    expected = threshold_segment(vol, spatial_ndim=3, spacing=(3.0, 1.0, 1.0))
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    assert main([*args, "--volume"]) == 0
    square = tifffile.imread(out)
    np.testing.assert_array_equal(square, threshold_segment(vol, spatial_ndim=3))
    assert not np.array_equal(square, expected)
    # planes have no z spacing; a malformed one is refused by the parser
    capsys.readouterr()
    assert main([*args, "--stack", "planes", "--spacing", "3,1,1"]) == 2
    assert "--spacing" in capsys.readouterr().err
    for bad in ("3,1", "0,1,1", "-3,1,1", "nan,1,1"):
        with pytest.raises(SystemExit):
            main([*args, f"--spacing={bad}"])
        assert "three positive numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a method that takes no spacing has no --spacing
        main(["edges", str(src), "-o", str(out), "--overwrite", "--spacing", "3,1,1"])


def test_kmeans_and_edges_rgb_and_volume(tmp_path):
    rgb = data.astronaut()[::4, ::4]
    src = tmp_path / "astro.tif"
    tifffile.imwrite(src, rgb)
    assert main(["kmeans", str(src), "-o", str(tmp_path / "k.tif"), "--rgb", "--set", "k=3"]) == 0
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "k.tif"), kmeans_segment(rgb, k=3, rgb=True)
    )
    vol = np.zeros((6, 32, 32), np.uint16)
    vol[1:5, 8:20, 8:20] = 1000
    tifffile.imwrite(tmp_path / "vol.tif", vol)
    assert (
        main(
            [
                "edges",
                str(tmp_path / "vol.tif"),
                "-o",
                str(tmp_path / "e.tif"),
                "--volume",
                "--set",
                "region_mode=watershed",
            ]
        )
        == 0
    )
    assert tifffile.imread(tmp_path / "e.tif").shape == vol.shape


def test_bad_parameters_are_a_clear_error_not_a_traceback(tmp_path, capsys):
    src = tmp_path / "coins.tif"
    tifffile.imwrite(src, data.coins())
    assert (
        main(["threshold", str(src), "-o", str(tmp_path / "x.tif"), "--set", "method=magic"]) == 2
    )
    assert "method must be one of" in capsys.readouterr().err
    assert main(["threshold", str(src), "-o", str(tmp_path / "x.tif"), "--set", "colour=red"]) == 2
    assert "colour" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["threshold", str(src), "-o", str(tmp_path / "x.tif"), "--set", "novalue"])
