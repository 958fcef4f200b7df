"""Component options: typed from the factory's signature, parsed from -o text,
refused with the component's option list when unknown, ill-typed or missing."""

from __future__ import annotations

import pathlib
from typing import Literal, Optional

import pytest
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli
from fmclf.errors import OptionError
from fmclf.host.options import options_of, parse_assignment, resolve_options
from fmclf.host.registry import ComponentRecord, PluginInfo


def record(factory, kind="model", name="toy"):
    return ComponentRecord(kind, name, factory, "", PluginInfo("toy-plugin", "toy", "fmclf-toy", "0.3"))


def toy(
    *,
    num_inputs: int,
    num_classes: int,
    hidden: int = 256,
    rate: float = 0.5,
    bias: bool = True,
    act: Literal["relu", "tanh"] = "relu",
    width: int | None = None,
    depth: Optional[int] = 2,  # noqa: UP045 - the old spelling is what this covers
    sizes: list[int] = (8, 8),
    betas: tuple[float, float] = (0.9, 0.999),
    root: pathlib.Path | None = None,
    sloppy: int = None,
    untyped=3,
    name: str = "x",
):
    """A factory with one option of every kind.

    Options:
        hidden: units in the hidden layer
        rate (float): a rate
    """


def test_options_come_from_the_signature_minus_the_core_parameters():
    opts = {o.name: o for o in options_of(record(toy))}
    assert list(opts) == ["hidden", "rate", "bias", "act", "width", "depth", "sizes", "betas", "root", "sloppy",
                          "untyped", "name"]
    assert [str(opts[n].type) for n in opts] == [
        "int", "float", "bool", "one of relu|tanh", "int or none", "int or none", "comma-separated list of int",
        "float,float", "path or none", "int or none", "int", "str",
    ]
    assert opts["hidden"].default == 256 and opts["hidden"].help == "units in the hidden layer"
    assert opts["rate"].help == "a rate"


@pytest.mark.parametrize(("given", "expected"), [
    ({"hidden": "128"}, {"hidden": 128}),
    ({"rate": "1e-3", "bias": "off", "act": "tanh"}, {"rate": 0.001, "bias": False, "act": "tanh"}),
    ({"width": "none", "depth": "none", "sloppy": "4"}, {"width": None, "depth": None, "sloppy": 4}),
    ({"width": "12"}, {"width": 12}),
    ({"sizes": "[1, 2, 3]", "betas": "0.8,0.99"}, {"sizes": [1, 2, 3], "betas": (0.8, 0.99)}),
    ({"root": "~/data"}, {"root": pathlib.Path("~/data").expanduser()}),
    ({"untyped": "7", "name": "none of it"}, {"untyped": 7, "name": "none of it"}),
    ({"hidden": 64, "rate": 1, "betas": [0.5, 0.6]},
     {"hidden": 64, "rate": 1.0, "betas": (0.5, 0.6)}),  # values from TOML
])
def test_values_are_parsed_by_the_annotation_and_defaults_fill_the_rest(given, expected):
    values = resolve_options(record(toy), given)
    assert {k: values[k] for k in expected} == expected
    assert values["hidden"] == expected.get("hidden", 256)
    assert list(values) == [o.name for o in options_of(record(toy))]


@pytest.mark.parametrize(("given", "fragment"), [
    ({"hidden": "lots"}, "bad value for option 'hidden' of model 'toy' (fmclf-toy 0.3): 'lots' is not an integer. It "
                         "takes int."),
    ({"hidden": 1.5}, "1.5 is not an integer"),
    ({"hidden": True}, "True is not an integer"),
    ({"bias": "maybe"}, "'maybe' is not a boolean (use true or false)"),
    ({"act": "gelu"}, "'gelu' is not one of 'relu', 'tanh'"),
    ({"betas": "0.9"}, "expected 2 values, got 1"),
    ({"hidden": "none"}, "'none' is not an integer"),
    ({"sizes": "1,x"}, "'x' is not an integer"),
    ({"hiden": "3"}, "model 'toy' (fmclf-toy 0.3) has no option 'hiden'. Did you mean 'hidden'?"),
])
def test_bad_values_and_unknown_options_are_refused_with_the_option_list(given, fragment):
    with pytest.raises(OptionError) as caught:
        resolve_options(record(toy), given)
    message = str(caught.value)
    assert fragment in message
    assert "Its options: hidden (int, default 256); rate (float, default 0.5)" in message


def test_a_required_option_must_be_given_and_says_how():
    def needs(*, run_dir=None, path: str, every: int = 1):
        pass

    with pytest.raises(OptionError, match=r"visualizer 'toy' \(fmclf-toy 0.3\) needs option 'path' \(str\); set it "
                                          r"with `-o visualizer.toy.path=VALUE`"):
        resolve_options(record(needs, "visualizer"), {})
    assert resolve_options(record(needs, "visualizer"), {"path": "a.csv"}) == {"path": "a.csv", "every": 1}
    (path, every) = options_of(record(needs, "visualizer"))
    assert path.required and path.describe() == "path (str, required)" and not every.required


def test_a_component_without_options_says_so():
    with pytest.raises(OptionError, match=r"has no option 'x'\. Model '[\w-]+' itself has no options\."):
        resolve_options(record(lambda *, num_inputs, num_classes: None), {"x": "1"})


@pytest.mark.parametrize(("text", "expected"), [
    ("model.hidden=128", ("model", "hidden", "128")),
    ("updater.momentum=0.9", ("updater", "momentum", "0.9")),
    ("visualizer.animator.svg=false", ("visualizer.animator", "svg", "false")),
    ("dataset.data_root=/a=b", ("dataset", "data_root", "/a=b")),
    ("visualizer.zope.plot:csv.v2.every=3", ("visualizer.zope.plot:csv.v2", "every", "3")),
])
def test_assignments_name_a_kind_or_a_visualizer(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("hidden=128", "write KIND.OPTION=VALUE"),
    ("model.hidden", "write KIND.OPTION=VALUE"),
    ("net.hidden=3", "'net' is not a component kind"),
    ("visualizer.svg=false", "visualizer options name the visualizer"),
    ("model.a.b=1", "write model.OPTION=VALUE"),
])
def test_malformed_assignments_are_refused(text, fragment):
    with pytest.raises(OptionError, match=fragment):
        parse_assignment(text)


def run_cli(*args, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--out", str(out), *args])
    return result, out


def test_cli_refuses_an_unknown_option_before_any_work(tmp_path):
    result, out = run_cli("--updater", "torch-sgd", "-o", "updater.momentom=0.9", tmp_path=tmp_path)
    assert result.exit_code == 2
    assert "updater 'torch-sgd' (fmclf 0.1.0) has no option 'momentom'. Did you mean 'momentum'?" in result.stderr
    assert "Its options: momentum (float in [0, 1], default 0.0); weight_decay" in result.stderr
    assert not out.exists()


def test_cli_refuses_an_ill_typed_option(tmp_path):
    result, out = run_cli("-o", "visualizer.tqdm.leave=sometimes", tmp_path=tmp_path)
    assert result.exit_code == 2
    assert ("bad value for option 'leave' of visualizer 'tqdm' (fmclf 0.1.0): 'sometimes' is not a boolean"
            in result.stderr)
    assert not out.exists()


def test_cli_refuses_options_for_a_component_the_run_does_not_use(tmp_path):
    result, _ = run_cli("-o", "visualizer.animator.svg=false", tmp_path=tmp_path)
    assert result.exit_code == 2
    assert "visualizer.animator" in result.stderr and "does not use" in result.stderr


def test_cli_needs_a_required_option_of_a_plugin_component(tmp_path, fmclf_plugin):
    class Plugin:
        @fmclf.hookimpl
        def register_losses(self, register):
            register("weighted", self.weighted)

        @staticmethod
        def weighted(*, weight: float):
            """A loss that needs its weight."""

    fmclf_plugin(Plugin(), "weights")
    result, _ = run_cli("--loss", "weighted", tmp_path=tmp_path)
    assert result.exit_code == 2
    assert ("loss 'weighted' (plugin 'weights') needs option 'weight' (float); set it with `-o loss.weight=VALUE`"
            in result.stderr)
