"""--executor slurm: the grid as one job array through submitit, first with submitit's local executor
(no SLURM needed), then on a real single-node SLURM started on this machine (Debian's slurm-wlm and
munge, no cgroups): --detach, scancel of one task mid-run, and the same command collecting and resuming."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from click.testing import CliRunner
from cluster_helpers import (
    TESTS,
    env_with_tests,
    fmclf_command,
    free_port,
    grid,
    metrics,
    require_module,
    require_program,
    whole,
)

pytestmark = pytest.mark.cluster

CELLS = ("scratch-fused-sgd-fashion-mnist-seed0", "nn-fused-sgd-fashion-mnist-seed0")


def test_the_array_through_submitits_local_executor_gives_the_local_metrics(tiny_data, tmp_path, monkeypatch):
    """submitit's LocalExecutor runs the array's tasks as processes of this machine: the same code path as
    on SLURM up to sbatch; the metrics equal those of the same comparison run by the local executor."""
    require_module("submitit", "slurm")
    from fmclf.cli import cli
    from fmclf.compare.executors import slurm_array

    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", env_with_tests()["PYTHONPATH"])
    monkeypatch.setattr(slurm_array, "SlurmExecutor",
                        functools.partial(slurm_array.SlurmExecutor, cluster="local", poll_seconds=0.2))
    array = CliRunner().invoke(cli, [*grid(tiny_data, tmp_path / "array"), "--executor", "slurm"],
                               catch_exceptions=False)
    assert array.exit_code == 0, array.output
    assert "SLURM: 2 task(s) submitted" in array.output
    local = CliRunner().invoke(cli, grid(tiny_data, tmp_path / "local"), catch_exceptions=False)
    assert local.exit_code == 0, local.output
    assert metrics(tmp_path / "array") == metrics(tmp_path / "local")
    record = json.loads((tmp_path / "array" / "jobs" / "slurm.json").read_text())
    assert sorted(record) == sorted(CELLS)
    assert all(whole(tmp_path / "array" / "runs" / c, 1) for c in CELLS)


# --- a real SLURM on this machine -------------------------------------------------------------------------------

_CONF = """\
ClusterName=fmclf
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=120
MinJobAge=600
NodeName={host} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _daemon(program: str) -> str:
    found = shutil.which(program)
    return found if found else str(pathlib.Path("/usr/sbin", program))


def _stop_pid(path: pathlib.Path) -> None:
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 15)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pathlib.Path(f"/proc/{pid}").exists():
        time.sleep(0.2)


@pytest.fixture
def slurm():
    """munged, slurmctld and slurmd on localhost as root, each with this test's own files and ports."""
    require_module("submitit", "slurm")
    require_program("munged", package="munge")
    require_program("slurmctld", "slurmd", "sbatch", package="slurm-wlm")
    if os.geteuid() != 0:
        pytest.skip("a single-node SLURM is started as root (slurmd runs the tasks as their user); not root here")
    root = pathlib.Path(tempfile.mkdtemp(prefix="fs", dir="/tmp"))
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(_CONF.format(host=socket.gethostname().split(".")[0], ctld=free_port(), slurmd=free_port(),
                                 root=root))
    env = env_with_tests(SLURM_CONF=str(conf))
    try:
        subprocess.run([_daemon("munged"), "-f", f"--socket={root}/munge.sock", f"--key-file={key}",
                        f"--log-file={root}/munged.log", f"--pid-file={root}/munged.pid",
                        f"--seed-file={root}/munged.seed"], check=True, capture_output=True, timeout=60)
        subprocess.run([_daemon("slurmctld"), "-f", str(conf)], env=env, check=True, capture_output=True, timeout=60)
        subprocess.run([_daemon("slurmd"), "-f", str(conf)], env=env, check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 90
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                           text=True, timeout=30).stdout:
            assert time.monotonic() < deadline, (root / "slurmctld.log").read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        yield env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=60)
        for name in ("slurmd", "slurmctld", "munged"):
            _stop_pid(root / f"{name}.pid")
        shutil.rmtree(root, ignore_errors=True)


def _queued(env: dict[str, str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30)
    return out.stdout.split()


def test_a_real_slurm_array_detached_scancelled_then_collected_and_resumed(slurm, tiny_data, tmp_path):
    """--detach submits the array and returns; one task is scancelled mid-run (its run checkpoints,
    exit 130); the same command then waits for the task still running (not submitting it again) and
    submits the stopped run anew, which resumes from its checkpoint."""
    out, release = tmp_path / "cmp", tmp_path / "release"
    command = [*fmclf_command(), *grid(tiny_data, out, epochs=2), "--executor", "slurm", "--slurm-time", "10",
               "--slurm-partition", "debug", "--slurm-option", "mem=0", "--visualizer", "hold-at",
               "-o", "visualizer.hold-at.epoch=1", "-o", "visualizer.hold-at.batch=3",
               "-o", f"visualizer.hold-at.release={release}"]
    detached = subprocess.run([*command, "--detach"], capture_output=True, text=True, env=slurm, timeout=300)
    assert detached.returncode == 0, detached.stdout + detached.stderr
    assert "Run the same command again to collect" in detached.stdout
    first = json.loads((out / "jobs" / "slurm.json").read_text())
    assert sorted(first) == sorted(CELLS) and all("_" in i for i in first.values())  # one array, two tasks
    logs = {c: out / "jobs" / f"{c}.log" for c in CELLS}
    deadline = time.monotonic() + 240
    while not all(p.exists() and "HELD" in p.read_text(errors="replace") for p in logs.values()):
        assert time.monotonic() < deadline, {c: p.read_text() if p.exists() else None for c, p in logs.items()}
        time.sleep(0.3)
    stopped, running = CELLS
    subprocess.run(["scancel", first[stopped]], env=slurm, check=True, timeout=60)
    while first[stopped] in _queued(slurm):  # the run checkpoints, then the task leaves the queue
        assert time.monotonic() < deadline + 120, logs[stopped].read_text()
        time.sleep(0.3)
    import torch

    state = torch.load(out / "runs" / stopped / "checkpoint.pt", map_location="cpu", weights_only=True)["state"]
    assert (state["epoch"], state["batch"]) == (0, 3)
    release.touch()
    collected = subprocess.run(command, capture_output=True, text=True, env=slurm, timeout=400)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert all(whole(out / "runs" / c, 2) for c in CELLS), collected.stdout + collected.stderr
    second = json.loads((out / "jobs" / "slurm.json").read_text())
    assert second[stopped] != first[stopped]  # submitted anew, to resume
    assert "resum" in logs[stopped].read_text().rpartition("$ fmclf")[2]
    assert json.loads((out / "compare.json").read_text())["complete"] is True
