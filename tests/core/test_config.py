"""Run configuration files: TOML out and back, precedence (defaults < --config <
command line), and a run folder's config.toml repeating its run."""

from __future__ import annotations

import json
import math
import pathlib
import tomllib

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fmclf.cli import cli
from fmclf.errors import ConfigError
from fmclf.host.options import resolve_options
from fmclf.host.registry import ComponentRecord, PluginInfo
from fmclf.run.config import RunConfig, dumps, load_config, merge


def write(tmp_path, text: str) -> pathlib.Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                       st.one_of(scalars, st.lists(st.integers(-5, 5), max_size=3)), max_size=5))
def test_dumps_writes_what_tomllib_reads_back(values):
    doc = {"model": "x", "options": {"model": values, "visualizer": {"a:b": {"k": 1}}}}
    back = tomllib.loads(dumps(doc))
    assert back["options"]["model"] == values and back["options"]["visualizer"] == {"a:b": {"k": 1}}


def test_a_config_round_trips_every_option_value_including_none_and_tuples(tmp_path):
    def factory(*, num_inputs, num_classes, width: int | None = 4, betas: tuple[float, float] = (0.9, 0.99),
                root: pathlib.Path | None = None, label: str = "a \"quoted\"\nline", rate: float = math.inf,
                obj: object = object()):
        pass

    rec = ComponentRecord("model", "m", factory, "", PluginInfo("p", "p"))
    values = resolve_options(rec, {"width": "none", "betas": "0.5,0.25", "root": "/data/x"})
    config = RunConfig(model="m", options={"model": values})
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml({"plugins": {"p": "p 1.0"}}, "# header\n"), encoding="utf-8")
    settings_, options = load_config(path)
    assert settings_["model"] == "m"
    assert "obj" not in options["model"]  # a default TOML cannot hold: left out, so it stays the default
    assert resolve_options(rec, options["model"]) == values


@pytest.mark.parametrize(("text", "fragment"), [
    ("model = ", "is not valid TOML"),
    ("modle = 'nn'", "unknown setting(s) modle"),
    ("visualizers = 3", "visualizers must be a list of names"),
    ("options = 3", "'options' must be a table"),
    ("[options]\nmodel = 3", "options.model must be a table"),
    ("[options.visualizer]\nsvg = false", "visualizer options go in [options.visualizer.NAME] tables"),
])
def test_bad_config_files_are_refused_with_the_fix(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert fragment in str(caught.value)


def test_a_missing_config_file_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="does not exist. Pass the path of a TOML file"):
        load_config(tmp_path / "nope.toml")


def test_visualizer_names_with_dots_and_qualifiers_survive_the_file(tmp_path):
    config = RunConfig(visualizers=["zope.plot:csv.v2"], options={"visualizer.zope.plot:csv.v2": {"every": 3}})
    settings_, options = load_config(write(tmp_path, config.to_toml()))
    assert settings_["visualizers"] == ["zope.plot:csv.v2"]
    assert options == {"visualizer.zope.plot:csv.v2": {"every": 3}}


def test_provenance_is_recorded_but_never_read_back(tmp_path):
    settings_, _ = load_config(write(tmp_path, "epochs = 3\n[provenance]\nfmclf = '0.1.0'\n"
                                               "[provenance.plugins]\nx = 'y'\n"))
    assert settings_ == {"epochs": 3}


def test_the_command_line_wins_over_the_file_which_wins_over_defaults():
    cli_config = RunConfig(epochs=7, lr=0.5, options={"model": {"hidden": "9"}})
    settings_ = {"epochs": 2, "lr": 0.01, "batch_size": 64, "model": "mlp"}
    merged = merge(cli_config, {"epochs"}, settings_, {"model": {"hidden": 128, "dropout": 0.5}})
    assert (merged.epochs, merged.lr, merged.batch_size, merged.model) == (7, 0.01, 64, "mlp")
    assert merged.options == {"model": {"hidden": "9", "dropout": 0.5}}


def test_a_components_file_options_are_dropped_when_the_command_line_replaces_it():
    settings_ = {"model": "mlp", "visualizers": ["tqdm", "csv"]}
    file_options = {"model": {"hidden": 128}, "visualizer.csv": {"per_class": False},
                    "visualizer.tqdm": {"leave": True}, "loss": {"smoothing": 0.1}}
    merged = merge(RunConfig(model="nn", visualizers=["tqdm"]), {"model", "visualizers"}, settings_, file_options)
    assert merged.model == "nn" and merged.visualizers == ["tqdm"]
    assert merged.options == {"visualizer.tqdm": {"leave": True}, "loss": {"smoothing": 0.1}}
    kept = merge(RunConfig(), set(), settings_, file_options)
    assert kept.options == file_options


def test_a_run_folders_config_repeats_the_run_exactly(tmp_path, tiny_data):
    runner = CliRunner()
    first = tmp_path / "first"
    args = ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--updater", "torch-sgd",
            "-o", "updater.momentum=0.5", "--visualizer", "none", "--epochs", "2", "--batch-size", "32", "--seed", "11",
            "--out", str(first)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    recorded = tomllib.loads((first / "config.toml").read_text())
    assert recorded["options"]["updater"]["momentum"] == 0.5 and recorded["seed"] == 11
    assert recorded["options"]["dataset"]["data_root"] == str(tiny_data)
    assert recorded["provenance"]["plugins"]["fmclf.models"].startswith("fmclf 0.1.0")
    assert recorded["provenance"]["components"]["updater"] == "fmclf:torch-sgd 0.1.0"

    again = tmp_path / "again"
    result = runner.invoke(cli, ["run", "--config", str(first / "config.toml"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    repeated = tomllib.loads((again / "config.toml").read_text())
    recorded.pop("provenance"), repeated.pop("provenance")
    assert repeated == recorded

    def metrics(folder):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (folder / "metrics.jsonl").read_text().splitlines()]

    assert metrics(again) == metrics(first)  # same seed, same settings, on the CPU: the same numbers

    longer = tmp_path / "longer"
    result = runner.invoke(cli, ["run", "--config", str(first / "config.toml"), "--epochs", "3", "-o",
                                 "updater.momentum=0.25", "--out", str(longer)])
    assert result.exit_code == 0, result.output
    changed = tomllib.loads((longer / "config.toml").read_text())
    assert (changed["epochs"], changed["options"]["updater"]["momentum"], changed["batch_size"]) == (3, 0.25, 32)


def test_config_options_are_checked_like_command_line_ones(tmp_path):
    path = write(tmp_path, "updater = 'torch-sgd'\n[options.updater]\nmomentum = 'high'\n")
    result = CliRunner().invoke(cli, ["run", "--config", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert ("bad value for option 'momentum' of updater 'torch-sgd'" in result.stderr
            and "'high' is not a number" in result.stderr)
