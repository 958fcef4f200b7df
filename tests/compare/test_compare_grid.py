"""The grid of fmclf compare: axes, option grids, paired seeds, folder names."""

from __future__ import annotations

import pytest

from fmclf.compare.grid import build_cells, option_axes, seeds_from, varying
from fmclf.errors import UsageError
from fmclf.host.loading import load_plugins
from fmclf.run.config import RunConfig


@pytest.fixture(scope="module")
def host():
    return load_plugins(autoload=False)


def test_cells_are_the_product_of_the_axes_in_a_fixed_order(host):
    cells = build_cells(RunConfig(), {"loss": ["fused", "naive"], "model": ["scratch", "nn"]}, {}, host)
    assert [(c.components["model"], c.components["loss"]) for c in cells] == [
        ("scratch", "fused"), ("scratch", "naive"), ("nn", "fused"), ("nn", "naive")]
    assert [c.config.model for c in cells] == ["scratch", "scratch", "nn", "nn"]
    assert cells[0].name == "scratch-fused-sgd-fashion-mnist"
    assert varying(cells) == ["model", "loss"]


def test_a_repeated_option_key_is_a_grid_axis_and_a_single_one_is_fixed():
    fixed, axes = option_axes([("loss", "label_smoothing", "0"), ("model", "hidden", "8"),
                               ("loss", "label_smoothing", "0.1"), ("loss", "weight", "1,1,2")])
    assert fixed == {"model": {"hidden": "8"}, "loss": {"weight": "1,1,2"}}  # a list value is one value
    assert axes == {"loss.label_smoothing": ["0", "0.1"]}
    with pytest.raises(UsageError, match="given twice"):
        option_axes([("loss", "label_smoothing", "0"), ("loss", "label_smoothing", "0")])


def test_an_option_goes_only_to_the_components_that_have_it(host):
    """naive has no label_smoothing: it runs once, fused once per value."""
    cells = build_cells(RunConfig(), {"loss": ["naive", "fused"]}, {"loss.label_smoothing": ["0", "0.1"]}, host)
    assert [(c.components["loss"], c.options) for c in cells] == [
        ("naive", {}), ("fused", {"loss.label_smoothing": "0"}), ("fused", {"loss.label_smoothing": "0.1"})]
    assert cells[2].config.options["loss"] == {"label_smoothing": "0.1"}
    assert cells[2].name == "scratch-fused-sgd-fashion-mnist-label_smoothing=0.1"
    assert len({c.name for c in cells}) == 3
    fixed = build_cells(RunConfig(options={"loss": {"label_smoothing": "0.2"}}), {"loss": ["naive", "fused"]}, {}, host)
    assert [c.config.options.get("loss") for c in fixed] == [{}, {"label_smoothing": "0.2"}]


def test_an_option_no_component_has_is_refused(host):
    with pytest.raises(UsageError, match="no loss of this comparison has option 'smoothing'"):
        build_cells(RunConfig(), {"loss": ["naive", "fused"]}, {"loss.smoothing": ["0", "0.1"]}, host)
    with pytest.raises(UsageError, match="repeats a value"):
        build_cells(RunConfig(), {"loss": ["fused", "fused"]}, {}, host)


def test_seeds_are_the_same_in_every_cell_and_grow_from_the_base():
    assert seeds_from(0, 3) == [0, 1, 2]
    assert seeds_from(10, 5)[:3] == seeds_from(10, 3)  # asking for more seeds keeps the first ones
    with pytest.raises(UsageError, match="--seeds must be at least 1"):
        seeds_from(0, 0)
