"""Bounds a component declares (``Annotated[float, fmclf.Range(0, 1)]``) are shown by `fmclf plugins` and
enforced for every component, built-in or not; a factory's own checks (``@fmclf.checks``) run before any
work, with the classes the data set's check announces."""

from __future__ import annotations

import json
import math
import types
from typing import Annotated

import pytest
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli
from fmclf.errors import OptionError
from fmclf.host.options import options_of, resolve_options

TINY = ["-o", "dataset.verify=false", "--epochs", "1", "--batch-size", "32", "--visualizer", "none", "--seed", "1"]


def drop(*, rate: Annotated[float, fmclf.Range(0, 1, max_open=True)] = 0.5,
         width: Annotated[int, fmclf.Range(1)] = 8,
         scale: Annotated[float, fmclf.Range(0, min_open=True, inf=True)] = 1.0,
         cap: float = math.inf, plain: float = 0.0,
         steps: list[Annotated[int, fmclf.Range(1, 10)]] | None = None):
    """Options:
        rate: a rate below 1
    """
    return lambda logits, y: logits.sum(1) * 0


def _plugin():
    return types.SimpleNamespace(register_losses=fmclf.hookimpl(lambda register: register("drop", drop)))


def _invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_a_plugins_bounds_are_shown_by_fmclf_plugins(fmclf_plugin):
    fmclf_plugin(_plugin(), name="bounds-plugin")
    text = " ".join(_invoke("plugins", "--kind", "loss").output.split())  # the columns' widths aside
    assert "rate float in [0, 1) = 0.5" in text
    assert "width int >= 1 = 8" in text and "scale float > 0 = 1.0" in text
    assert "steps comma-separated list of int in [1, 10] or none" in text
    data = json.loads(_invoke("plugins", "--json", "--kind", "loss").output)
    options = {o["name"]: o for c in data["components"] if c["name"] == "drop" for o in c["options"]}
    assert options["rate"]["bounds"] == {"min": 0, "max": 1, "min_open": False, "max_open": True, "inf": False}
    assert options["scale"]["bounds"]["inf"] and options["cap"]["bounds"]["inf"]  # a default of inf allows inf
    assert not options["plain"]["bounds"]["inf"]


@pytest.mark.parametrize("text,why", [
    ("rate=1", "1 is not in [0, 1)"), ("rate=-0.1", "-0.1 is not in [0, 1)"), ("rate=nan", "nan is not a number"),
    ("width=0", "0 is not >= 1"), ("scale=0", "0 is not > 0"), ("scale=-inf", "-inf is not > 0"),
    ("plain=inf", "inf is not a finite number"), ("plain=-inf", "not a finite number"), ("cap=nan", "nan"),
    ("steps=1,11", "11 is not in [1, 10]"),
])
def test_values_outside_a_plugins_bounds_are_refused_before_any_work(fmclf_plugin, tiny_data, tmp_path, text, why):
    fmclf_plugin(_plugin(), name="bounds-plugin")
    out = tmp_path / "run"
    result = _invoke("run", "--data-root", str(tiny_data), *TINY, "--loss", "drop", "-o", f"loss.{text}",
                     "--out", str(out))
    assert result.exit_code == 2, result.output
    assert f"bad value for option '{text.split('=')[0]}' of loss 'drop' (plugin 'bounds-plugin')" in result.stderr
    assert why in result.stderr and not out.exists()


def test_values_inside_the_bounds_pass(fmclf_plugin):
    fmclf_plugin(_plugin(), name="bounds-plugin")
    record = fmclf.get_component("loss", "drop")
    got = resolve_options(record, {"rate": "0.999", "width": "1", "scale": "inf", "cap": "inf", "steps": "1,10"})
    assert got["rate"] == 0.999 and got["scale"] == math.inf and got["cap"] == math.inf and got["steps"] == [1, 10]
    assert resolve_options(record, {"cap": 1e300})["cap"] == 1e300  # config-file values are checked the same way
    with pytest.raises(OptionError, match="nan is not a number"):
        resolve_options(record, {"rate": float("nan")})


def test_range_refuses_impossible_bounds():
    with pytest.raises(ValueError, match="min 2 is above max 1"):
        fmclf.Range(2, 1)
    with pytest.raises(TypeError):
        fmclf.Range(float("nan"))


# --- a factory's own checks: before any work, with the data set's classes -----------------------------------

def weighted(*, weights: list[float] | None = None, num_classes: int | None = None):
    return lambda logits, y: logits.sum(1) * 0


@fmclf.checks(weighted)
def _check_weighted(*, weights=None, num_classes=None):
    if weights is not None and num_classes is not None and len(weights) != num_classes:
        raise ValueError(f"weights has {len(weights)} entries for {num_classes} classes")


def few(*, batch_size: int, device, classes: int = 3):
    import torch

    from fmclf.data import InMemoryDataset, TensorBatches

    X, y = torch.rand(30, 1, 4, 4), torch.arange(30) % 3
    return InMemoryDataset(TensorBatches(X, y, batch_size, shuffle=False),
                           TensorBatches(X, y, batch_size, shuffle=False),
                           ["a", "b", "c"], (1, 4, 4))


@fmclf.checks(few)
def _check_few(*, classes=3, batch_size=None):
    assert batch_size is not None  # a data set's check is given the batch size
    return {"classes": [str(i) for i in range(classes)], "input_shape": (1, 4, 4)}


def broken(*, x: int = 0):
    return lambda logits, y: logits.sum(1) * 0


@fmclf.checks(broken)
def _check_broken(*, x=0):
    raise RuntimeError("the check itself is buggy")


def _checked_plugin():
    def losses(register):
        register("weighted", weighted)
        register("broken", broken)

    return types.SimpleNamespace(register_losses=fmclf.hookimpl(losses),
                                 register_datasets=fmclf.hookimpl(lambda register: register("few", few)))


def test_a_check_gets_the_classes_the_data_sets_check_announces(fmclf_plugin, tmp_path):
    fmclf_plugin(_checked_plugin(), name="checked")
    result = _invoke("run", "--dataset", "few", "--model", "nn", "--loss", "weighted", "-o", "loss.weights=1,2",
                     "--visualizer", "none", "--epochs", "1", "--seed", "1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert ("bad options for loss 'weighted' (plugin 'checked'): weights has 2 entries for 3 classes. "
            "Its options: weights") in result.stderr
    assert not (tmp_path / "run").exists()
    good = _invoke("run", "--dataset", "few", "--model", "nn", "--loss", "weighted", "-o", "loss.weights=1,2,3",
                   "--visualizer", "none", "--epochs", "1", "--seed", "1", "--out", str(tmp_path / "run"))
    assert good.exit_code == 0, good.output


def test_a_data_set_that_is_not_what_its_check_announced_is_its_fault(fmclf_plugin, tmp_path):
    fmclf_plugin(_checked_plugin(), name="checked")
    result = _invoke("run", "--dataset", "few", "-o", "dataset.classes=4", "--model", "nn", "--visualizer", "none",
                     "--epochs", "1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1, result.output
    assert ("dataset 'few' (plugin 'checked'): its option check said the data set has num classes 4, but the "
            "data set it built has 3") in result.stderr


def test_a_check_that_raises_something_else_is_that_components_fault(fmclf_plugin, tmp_path):
    fmclf_plugin(_checked_plugin(), name="checked")
    result = _invoke("run", "--dataset", "few", "--loss", "broken", "--model", "nn", "--visualizer", "none",
                     "--out", str(tmp_path / "run"))
    assert result.exit_code == 1, result.output
    assert "loss 'broken' (plugin 'checked'): its option check raised RuntimeError: the check itself is buggy" \
        in result.stderr


def test_the_builtin_options_declare_their_bounds():
    shown = {(r.name, o.name): str(o.type) for r in fmclf.list_components() for o in options_of(r)}
    assert shown[("fused", "label_smoothing")] == "float in [0, 1]"
    assert shown[("fused", "weight")] == "comma-separated list of float >= 0 or none"
    assert shown[("torch-sgd", "momentum")] == "float in [0, 1]"
    assert shown[("tqdm", "interval")] == "float >= 0" and shown[("fashion-mnist", "resize")] == "int <= 1024 or none"
