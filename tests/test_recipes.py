"""Recipes: save -> load gives the same parameters; bad files give clear errors."""

import numpy as np
import pytest
import yaml

from napari_segkit import params
from napari_segkit.algorithms.kmeans import kmeans_segment
from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.recipes import (
    FORMAT,
    ModelChangedWarning,
    RecipeError,
    load_recipe,
    make_recipe,
    recipe_from_metadata,
    save_recipe,
)


@pytest.mark.parametrize(
    "method, values",
    [
        ("threshold", {"method": "cut_points", "cut_points": "mean, 0.5", "min_size": 7}),
        ("threshold", {"method": "manual", "value": 0.25, "dark": True, "output": "classes"}),
        ("edges", {"region_mode": "watershed", "min_distance": 4, "show_edge_map": False}),
        ("kmeans", {"k": 5, "seed": 3, "smoothing": 1.5}),
        ("maskrcnn", {"score_threshold": 0.3, "classes": "1, 2", "device": "cpu"}),
    ],
)
def test_save_load_round_trip(tmp_path, method, values):
    path = save_recipe(tmp_path / "r.yaml", method, values, stack="planes", channel=1)
    recipe = load_recipe(path)
    spec = params.get(method)
    expected = spec.applicable(spec.validate(values))
    assert recipe.method == method
    assert recipe.params == expected
    assert recipe.stack == "planes" and recipe.channel == 1 and recipe.rgb is None
    # human-readable: the values are plain YAML
    data = yaml.safe_load(path.read_text())
    assert data["format"] == FORMAT and data["version"] == 1
    assert data["parameters"] == expected
    # saving the loaded recipe again gives the same file
    again = recipe.save(tmp_path / "again.yaml")
    assert again.read_text() == path.read_text()


def test_save_refuses_bad_parameters_and_never_overwrites(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter.*nonsense"):
        save_recipe(tmp_path / "r.yaml", "threshold", {"nonsense": 1})
    with pytest.raises(ValueError, match="k must be <= 32; got 99"):
        save_recipe(tmp_path / "r.yaml", "kmeans", {"k": 99})
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        save_recipe(tmp_path / "r.yaml", "magic", {})
    with pytest.raises(ValueError, match="stack must be one of"):
        save_recipe(tmp_path / "r.yaml", "threshold", {}, stack="cube")
    assert not (tmp_path / "r.yaml").exists()
    save_recipe(tmp_path / "r.yaml", "threshold", {"method": "li"})
    with pytest.raises(FileExistsError):
        save_recipe(tmp_path / "r.yaml", "threshold", {"method": "yen"})
    save_recipe(tmp_path / "r.yaml", "threshold", {"method": "yen"}, overwrite=True)
    assert load_recipe(tmp_path / "r.yaml").params["method"] == "yen"


def _write(path, text):
    path.write_text(text)
    return path


def _good(**changes):
    data = {
        "format": FORMAT,
        "version": 1,
        "method": "threshold",
        "parameters": {"method": "otsu"},
        "input": {"stack": "auto"},
    }
    data.update(changes)
    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    "text, match",
    [
        ("method: [threshold\n  - : :", "not valid YAML"),
        ("just some words", "not a napari-segkit recipe"),
        (_good(format="cellpose/recipe"), "format is 'cellpose/recipe'"),
        (_good(version=2), "recipe version 2 was written by a newer napari-segkit"),
        (_good(version="one"), "bad recipe version 'one'"),
        (_good(method="magic"), "unknown method 'magic'"),
        (_good(parameters={"method": "otsu", "min_sise": 3}), "unknown parameter.*min_sise"),
        (_good(parameters={"min_size": -4}), "min_size must be >= 0; got -4"),
        (_good(parameters={"method": "bogus"}), "method must be one of"),
        (_good(input={"stack": "sideways"}), "stack must be one of"),
        (_good(input={"channel": -1}), "channel must be an integer >= 0"),
        (_good(extra=1), "unknown key.*extra"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, text, match):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(RecipeError, match=match) as info:
        load_recipe(path)
    assert str(path) in str(info.value)  # names the file
    assert isinstance(info.value, ValueError)


def test_binary_and_missing_files(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(RecipeError, match="not a text"):
        load_recipe(tmp_path / "bin.yaml")
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(tmp_path / "none.yaml")


def test_run_matches_the_api():
    img = np.zeros((40, 40), np.uint16)
    img[4:14, 4:14] = 900
    img[20:34, 18:30] = 1200
    img[20:22, 2:4] = 1000
    recipe = make_recipe("threshold", {"method": "mean", "min_size": 5})
    out = recipe.run(img)
    np.testing.assert_array_equal(out.labels, threshold_segment(img, method="mean", min_size=5))
    assert out.table is None
    rgb = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    recipe = make_recipe("kmeans", {"k": 3, "cluster_colors": True})
    np.testing.assert_array_equal(recipe.run(rgb).labels, kmeans_segment(rgb, k=3))
    assert recipe.output_options() == {"cluster_colors": True}


def test_stack_auto_reads_the_axis_labels():
    stack = np.zeros((3, 20, 20))
    stack[:, 5:15, 5:15] = 1
    stack[1, 8:12, 8:12] = 0  # a hole in the middle plane only
    recipe = make_recipe("threshold", {"min_size": 0, "fill_holes": False, "split_touching": False})
    # a z-stack: one volume, so one object through all planes
    assert int(recipe.run(stack).labels.max()) == 1
    # a time-lapse: plane by plane, one object per plane
    assert int(recipe.run(stack, axis_labels=("t", "y", "x")).labels.max()) == 3
    assert recipe.spatial_ndim(stack.shape, ("t", "y", "x")) == 2


def test_recipe_from_layer_metadata(tmp_path):
    meta = {
        "napari-segkit": {
            "method": "edges",
            "version": "0.1.0",
            "source": "cells",
            "params": {
                "region_mode": "fill",
                "filter": "sobel",
                "sigma": 2.0,
                "show_edge_map": True,
                "channel_axis": 0,
                "channel": 1,
                "spatial_ndim": 3,
            },
        }
    }
    recipe = recipe_from_metadata(meta)
    assert recipe.method == "edges" and recipe.params["sigma"] == 2.0
    assert (recipe.stack, recipe.channel_axis, recipe.channel) == ("volume", 0, 1)
    assert "channel" not in recipe.params
    # an extra layer of the method, and the Mask R-CNN widget's title
    meta["napari-segkit"]["method"] = "edges edge map"
    assert recipe_from_metadata(meta).method == "edges"
    assert recipe_from_metadata({"method": "Mask R-CNN", "params": {}}).method == "maskrcnn"
    # a z-stack's voxel spacing (the layer's scale) is recorded but is not part of a recipe
    spaced = {"method": "threshold", "params": {"spatial_ndim": 3, "spacing": [3.0, 1.0, 1.0]}}
    assert (
        recipe_from_metadata(spaced).to_dict() == make_recipe("threshold", stack="volume").to_dict()
    )
    with pytest.raises(ValueError, match="no napari-segkit result"):
        recipe_from_metadata({"other": 1})
    path = recipe_from_metadata(meta).save(tmp_path / "r.yaml")
    assert load_recipe(path).params == recipe.params


def test_model_file_checksum(tmp_path):
    model = tmp_path / "net.safetensors"
    model.write_bytes(b"weights v1")
    path = save_recipe(tmp_path / "r.yaml", "maskrcnn", {"model": str(model)})
    recipe = load_recipe(path)
    assert recipe.models["model"]["path"] == str(model.resolve())
    assert len(recipe.models["model"]["sha256"]) == 64
    model.write_bytes(b"weights v2")  # retrained in place
    with pytest.raises(RecipeError, match="has changed since the recipe was made"):
        load_recipe(path)
    with pytest.warns(ModelChangedWarning, match="has changed"):
        load_recipe(path, on_model_change="warn")
    # moved beside the recipe: found there; gone: a clear error
    moved = tmp_path / "moved"
    moved.mkdir()
    model.write_bytes(b"weights v1")
    (tmp_path / "r.yaml").rename(moved / "r.yaml")
    model.rename(moved / "net.safetensors")
    recipe = load_recipe(moved / "r.yaml")
    assert recipe.params["model"] == str(moved / "net.safetensors")
    (moved / "net.safetensors").unlink()
    with pytest.raises(RecipeError, match="model file of 'model' is missing"):
        load_recipe(moved / "r.yaml")
    with pytest.raises(RecipeError, match="does not exist"):
        save_recipe(tmp_path / "x.yaml", "maskrcnn", {"model": str(tmp_path / "gone.pt")})
