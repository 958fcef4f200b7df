"""`--data-root` is the data set's `data_root` option: for a data set without one,
`run`, `show`, `predict`, `eval` and `report` refuse the flag in words, before any work starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli


class NoRootPlugin:
    """A data set that finds its data itself: it has an option, but no data_root."""

    @fmclf.hookimpl
    def register_datasets(self, register):
        register("synthetic", self.synthetic, help="made-up images")

    @staticmethod
    def synthetic(*, batch_size: int, device, size: int = 8):
        raise AssertionError("never built: --data-root is refused first")


@pytest.fixture
def no_root(fmclf_plugin):
    fmclf_plugin(NoRootPlugin(), "noroot")


def refused(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr
    assert "data set 'synthetic' (plugin 'noroot') takes no data_root option, so --data-root cannot apply" in message
    assert "size (int, default 8)" in message  # what it does take
    assert "has no option 'data_root'" not in message
    return message


def test_run_refuses_data_root_for_a_data_set_without_one(no_root, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--dataset", "synthetic", "--data-root", str(tmp_path),
                                      "--out", str(tmp_path / "run")])
    refused(result)
    assert not (tmp_path / "run").exists()


def test_run_refuses_it_for_the_data_set_a_config_file_names(no_root, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('dataset = "synthetic"\n')
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--data-root", str(tmp_path),
                                      "--out", str(tmp_path / "run")])
    refused(result)


def test_show_refuses_data_root_for_a_data_set_without_one(no_root, tmp_path):
    result = CliRunner().invoke(cli, ["show", "--dataset", "synthetic", "--data-root", str(tmp_path),
                                      "--out", str(tmp_path / "s.png")])
    refused(result)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("command", ["predict", "eval", "report"])
def test_the_run_folder_commands_refuse_data_root_for_the_data_set_the_run_used(no_root, tmp_path, command):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text('dataset = "synthetic"\nvisualizers = ["none"]\n')
    result = CliRunner().invoke(cli, [command, str(run_dir), "--data-root", str(tmp_path)])
    refused(result)


def test_a_data_set_without_options_says_so(fmclf_plugin, tmp_path):
    class Bare:
        @fmclf.hookimpl
        def register_datasets(self, register):
            register("bare", lambda *, batch_size, device: None)

    fmclf_plugin(Bare(), "bare")
    result = CliRunner().invoke(cli, ["show", "--dataset", "bare", "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    assert "data set 'bare' (plugin 'bare') takes no data_root option" in result.stderr
    assert "It has no options." in result.stderr


def test_data_root_still_reaches_a_data_set_that_has_it(tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["show", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "-n", "4", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").exists()
