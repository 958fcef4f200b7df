"""No test rests on luck: the suite sets FMCLF_REQUIRE_SEED=1 (tests/conftest.py), under which a run that
would draw its seed refuses in words, from the command line, from fmclf.fit, in a subprocess and in the
notebook kernels the tests start. Tests of seed drawing itself unset it, as the last ones here do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli
from fmclf.errors import UsageError
from fmclf.run.plan import REQUIRE_SEED

TINY = ["-o", "dataset.verify=false", "--epochs", "1", "--batch-size", "32", "--visualizer", "none", "--device", "cpu"]


def test_the_suite_requires_a_seed_of_every_run():
    assert os.environ.get(REQUIRE_SEED) == "1"


def test_a_run_without_a_seed_refuses_in_words(tiny_data, tmp_path):
    done = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), *TINY, "--out", str(tmp_path / "run")])
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert "FMCLF_REQUIRE_SEED=1" in done.stderr and "Pass --seed N" in done.stderr
    assert not (tmp_path / "run").exists()  # refused before any work
    given = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), *TINY, "--seed", "3",
                                     "--out", str(tmp_path / "seeded")])
    assert given.exit_code == 0, given.output


def test_fit_without_a_seed_refuses_in_pythons_words(tiny_data):
    with pytest.raises(UsageError, match=r"FMCLF_REQUIRE_SEED=1 .* Pass seed=N") as info:
        fmclf.fit(data_root=str(tiny_data), epochs=1, batch_size=32, visualizers=["none"], out=False,
                  options={"dataset": {"verify": False}})
    assert "--seed" not in str(info.value)


def test_a_subprocess_inherits_the_requirement(tiny_data, tmp_path):
    done = subprocess.run([sys.executable, "-m", "fmclf", "run", "--data-root", str(tiny_data), *TINY,
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "FMCLF_REQUIRE_SEED" in done.stderr, done.stderr


def test_the_notebook_kernel_requires_it_whatever_the_environment(tmp_path, monkeypatch):
    """tests/notebooks.py's executor (the notebook test's, and the regeneration's) sets it in the kernel itself."""
    import nbformat

    from notebooks import execute

    monkeypatch.delenv(REQUIRE_SEED)
    path = tmp_path / "probe.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"import os; print(os.environ['{REQUIRE_SEED}'])")])
    nbformat.write(nb, path)
    done = execute(path, tmp_path, timeout=120)
    assert done.cells[0].outputs[0]["text"].strip() == "1"


def test_unset_a_run_draws_and_records_its_seed(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv(REQUIRE_SEED)
    done = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), *TINY, "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    assert "seed = " in (tmp_path / "run" / "config.toml").read_text()
