"""Group ``startup``: how long the commands that never train take, in a fresh
process each time, beside ``import torch``, which they must not do."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

FMCLF = pathlib.Path(sys.executable).with_name("fmclf")
# Runs the CLI as the console script does, then says whether torch got imported.
PROBE = (
    "import sys\nfrom fmclf.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
)


def _command(args: list[str]) -> list[str]:
    return [str(FMCLF), *args] if FMCLF.exists() else [sys.executable, "-m", "fmclf", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("args", [["--help"], ["plugins"]], ids=["fmclf --help", "fmclf plugins"])
def test_startup_command(benchmark, args):
    benchmark.group = "startup"
    probe = _run([sys.executable, "-c", PROBE, *args])
    assert probe.stderr.strip().endswith("NO-TORCH"), probe.stderr[-500:]  # the promise behind the speed
    benchmark.pedantic(_run, args=(_command(args),), rounds=7, warmup_rounds=1)
    benchmark.extra_info.update(label=f"fmclf {' '.join(args)}", vs="import torch")


@pytest.mark.slow  # a benchmark, run once: nothing but the timing
def test_startup_import_fmclf(benchmark):
    benchmark.group = "startup"
    benchmark.pedantic(_run, args=([sys.executable, "-c", "import fmclf"],), rounds=7, warmup_rounds=1)
    benchmark.extra_info.update(label="import fmclf", vs="import torch")


@pytest.mark.slow  # a benchmark, run once: nothing but the timing
def test_startup_import_torch(benchmark):
    benchmark.group = "startup"
    benchmark.pedantic(_run, args=([sys.executable, "-c", "import torch"],), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(label="import torch", detail="for reference: what the commands above avoid")
