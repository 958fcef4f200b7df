"""Start-up under limits (issue 25, class 9): when torch cannot be imported (a `ulimit -v` too small for
its libraries, a broken install) a command says so in one paragraph and exits 1, with no traceback."""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from fmclf.train.blame import torch_failed


def _fmclf(*args: str, limit_kb: int = 1_500_000, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fmclf"]
    line = f"ulimit -v {limit_kb}; exec {shlex.join([*cmd, *args])}"
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300, env=os.environ,
                          cwd=cwd)


@pytest.mark.parametrize("args", [
    ("run", "--epochs", "1", "--device", "cpu"),
    ("bench", "loss", "fused", "--no-speed"),
    ("show", "--out", "show.png"),
])
def test_torch_that_cannot_load_under_ulimit_is_one_paragraph(tiny_data, tmp_path, args):
    args = (*args, "--data-root", str(tiny_data)) if args[0] in ("run", "show") else args
    result = _fmclf(*args, cwd=tmp_path)
    if result.returncode == 0:
        pytest.skip("torch loads within this limit on this machine")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: torch could not be imported"), result.stderr
    assert "ulimit -v" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "fault in that component" not in result.stderr  # the data set that imports torch is not to blame


def test_help_still_works_under_the_limit():
    assert _fmclf("--help").returncode == 0


def test_only_torchs_own_import_failing_is_taken_for_it():
    assert "torch could not be imported" in torch_failed(ImportError("libtorch_cpu.so: failed to map segment",
                                                                     name="torch._C"))
    assert torch_failed(ImportError("no module named yaml", name="yaml")) is None
    assert torch_failed(OSError("disk full")) is None
    assert torch_failed(ModuleNotFoundError("No module named 'torch.nope'", name="torch.nope")) is None


def test_a_signal_while_torch_loads_waits_for_it_then_stops():
    """A stop signal that lands in torch's import (its C++ set-up runs Python) would abort the process
    with SIGABRT; fmclf holds it back until torch is loaded, then it stops as usual (Stopped)."""
    script = (
        "import os, signal, sys, threading\n"
        "from fmclf.errors import Stopped\n"
        "from fmclf import signals\n"
        "signals.install()\n"
        "threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
        "try:\n"
        "    signals.import_torch()\n"
        "    import time; time.sleep(5)\n"
        "except Stopped as exc:\n"
        "    print('stopped by', exc.signal, 'with torch loaded:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped by SIGTERM with torch loaded: True", done.stdout + done.stderr
