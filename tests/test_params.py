"""The one declaration of every method's parameters, and everything that reads it."""

import inspect

import numpy as np
import pytest

from napari_segkit import params
from napari_segkit.cli import build_parser, method_parameters
from napari_segkit.params import MethodSpec, Param, checked

SPECS = params.all_specs()


def test_every_method_is_declared():
    assert [s.name for s in SPECS] == ["threshold", "edges", "kmeans", "maskrcnn"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_function_defaults_are_the_declared_ones(spec):
    func = spec.resolve()
    assert func.spec is spec  # the function is wrapped by params.checked(spec)
    sig = inspect.signature(inspect.unwrap(func))
    for p in spec.params:
        if p.group == "method" and p.name in sig.parameters:
            assert sig.parameters[p.name].default == p.default, p.name
        if p.choices:
            assert p.default in p.values or p.default is None, p.name
        if p.type in (int, float) and p.default is not None:
            assert p.check(p.default) == p.default, p.name


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_cli_defaults_are_the_declared_ones(spec, tmp_path):
    args = build_parser().parse_args([spec.name, "in.tif", "-o", str(tmp_path / "o.tif")])
    assert method_parameters(spec, args) == spec.split(spec.applicable(spec.defaults()))[0]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_cli_options_reach_the_parameters(spec, tmp_path):
    """Each option given on the command line arrives, checked, under its own name."""
    for p in spec.params:
        if p.group != "method" or p.widget == "model":
            continue
        flag = p.cli or "--" + p.name.replace("_", "-")
        if p.type is bool:
            argv, expected = [flag if not p.default else "--no-" + flag[2:]], not p.default
        elif p.choices:
            expected = p.values[-1]
            argv = [flag, str(expected)]
        elif p.type in (int, float):
            base = p.default if p.default is not None else (p.min or 0) + 1
            expected = p.type(min(base + (2 if p.odd else 1), p.max) if p.max else base + 1)
            argv = [flag, str(expected)]
        else:
            expected = "1, 2"
            argv = [flag, expected]
        args = build_parser().parse_args([spec.name, "in.tif", "-o", "o.tif", *argv])
        given = {k[len("param_") :]: v for k, v in vars(args).items() if k.startswith("param_")}
        assert given == {p.name: expected}, p.name


def test_bad_values_name_the_parameter():
    spec = params.get("threshold")
    with pytest.raises(ValueError, match="min_size must be >= 0; got -1"):
        spec.validate({"min_size": -1})
    with pytest.raises(ValueError, match="block_size must be odd"):
        spec.validate({"block_size": 4})
    with pytest.raises(ValueError, match="unknown parameter.*colour"):
        spec.validate({"colour": "red"})
    with pytest.raises(ValueError, match="must be a number"):
        spec.validate({"offset": "a lot"})
    with pytest.raises(ValueError, match="finite"):
        spec.validate({"offset": float("nan")})
    assert spec.validate({"min_size": np.int64(3)})["min_size"] == 3


def test_checked_refuses_a_drifting_default():
    spec = MethodSpec("demo", "Demo", "x:y", (Param("k", int, 3, "k"),))
    with pytest.raises(AssertionError, match="differs from the declared default"):

        @checked(spec)
        def f(image, *, k=4):
            return k

    @checked(spec)
    def g(image, *, k=3):
        return k

    with pytest.raises(ValueError, match="k must be an integer"):
        g(None, k=2.5)


def test_applicable_follows_the_rules():
    spec = params.get("threshold")
    assert "value" not in spec.applicable({"method": "otsu"})
    assert spec.applicable({"method": "manual", "value": 3.0})["value"] == 3.0
    assert "min_size" not in spec.applicable({"output": "classes"})


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_docs_table_lists_every_parameter(spec):
    table = params.markdown_table(spec)
    for p in spec.params:
        assert f"`{p.name}`" in table
