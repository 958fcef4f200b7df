"""Tuning's pieces without training: the search space, the studies in the journal, the choice."""

from __future__ import annotations

import pytest

from fmclf.compare import tuning
from fmclf.compare.grid import MAX_SEEDS, Cell
from fmclf.errors import UsageError
from fmclf.host.loading import load_plugins
from fmclf.run.config import RunConfig


@pytest.fixture(scope="module")
def host():
    return load_plugins(autoload=False)


def cell(updater: str) -> Cell:
    return Cell({"updater": updater}, {}, RunConfig(updater=updater))


def test_spaces_parse_into_dimensions(host):
    base = RunConfig()
    lr = tuning.parse_dimension("lr=log:1e-3..1", base, host)
    assert (lr.scale, lr.low, lr.high, lr.integer, lr.setting) == ("log", 1e-3, 1.0, False, "lr")
    batch = tuning.parse_dimension("batch_size=64,128,256", base, host)
    assert batch.values == (64, 128, 256) and batch.integer
    momentum = tuning.parse_dimension("updater.torch-sgd.momentum=lin:0..0.99", base, host)
    assert momentum.target() == ("updater", "torch-sgd", "momentum") and momentum.scale == "lin"
    assert momentum.applies(RunConfig(updater="torch-sgd")) and not momentum.applies(RunConfig(updater="sgd"))
    config = RunConfig(updater="torch-sgd")
    config = lr.apply(momentum.apply(config, 0.9), 0.05)  # settings are frozen: each returns a changed copy
    assert config.options["updater"] == {"momentum": "0.9"} and config.lr == 0.05
    with pytest.raises(UsageError, match="no updater named sgd has an option 'momentum'"):
        tuning.parse_dimension("updater.sgd.momentum=0.1,0.2", base, host)
    with pytest.raises(UsageError, match="every value must be an integer"):
        tuning.parse_dimension("batch_size=6.5,7", base, host)


def test_trial_seeds_are_never_a_reported_seed():
    assert tuning.trial_seed(0, 0) == MAX_SEEDS and tuning.trial_seed(5, 3) == 5 + MAX_SEEDS + 3


@pytest.mark.parametrize("sampler", ["qmc", "tpe"])
def test_every_cell_gets_the_same_points_and_a_new_invocation_finds_them_by_number(host, tmp_path, sampler):
    protocol = tuning.Protocol((tuning.parse_dimension("lr=log:0.01..1", RunConfig(), host),), 3, sampler)
    studies = tuning.Studies(tmp_path, protocol, maximize=True)
    first = {u: studies.trials(cell(u)) for u in ("sgd", "torch-sgd")}
    assert [t["number"] for t in first["sgd"]] == [0, 1, 2]
    if sampler == "qmc":  # a seeded Sobol sequence: the same points in every cell
        assert [t["params"] for t in first["sgd"]] == [t["params"] for t in first["torch-sgd"]]
    studies.tell(cell("sgd"), 0, 0.8)
    studies.tell(cell("sgd"), 1, None)  # a failed trial
    studies.tell(cell("sgd"), 1, 0.9)  # told once: a second tell changes nothing
    again = tuning.Studies(tmp_path / ".", protocol, maximize=True).trials(cell("sgd"))
    assert [t["params"] for t in again] == [t["params"] for t in first["sgd"]]
    assert [t["state"] for t in again] == ["complete", "fail", "running"] and again[0]["value"] == 0.8
    assert (tmp_path / tuning.JOURNAL).is_file()


def test_the_best_trial_is_the_best_value_then_the_lowest_number():
    trials = [{"number": 0, "value": 0.8}, {"number": 1, "value": 0.9}, {"number": 2, "value": 0.9},
              {"number": 3, "value": None}]
    assert tuning.best(trials, maximize=True)["number"] == 1
    assert tuning.best(trials, maximize=False)["number"] == 0
    assert tuning.best([{"number": 0, "value": None}], maximize=True) is None


def test_the_settings_tune_takes_are_the_grids_scalar_axes_with_the_types_the_settings_hold():
    from fmclf.compare.grid import SCALAR_AXES
    from fmclf.run.config import OWN_SETTINGS

    assert tuple(tuning.TUNABLE_SETTINGS) == SCALAR_AXES
    assert all(tuning.TUNABLE_SETTINGS[name] is OWN_SETTINGS[name][0] for name in SCALAR_AXES)
    assert tuning.TUNABLE_SETTINGS == {"lr": float, "batch_size": int}
