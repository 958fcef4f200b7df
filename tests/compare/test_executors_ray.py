"""--executor ray on a real two-node Ray cluster started on this machine (1 CPU each): the same
metrics as a local comparison, a node killed mid-grid, Ctrl-C and the same command again."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from cluster_helpers import env_with_tests, fmclf_command, free_port, grid, kill_tree, metrics, require_module, whole

pytestmark = pytest.mark.cluster

CELLS = ("scratch-fused-sgd-fashion-mnist-seed0", "nn-fused-sgd-fashion-mnist-seed0")


@dataclasses.dataclass
class Cluster:
    address: str
    env: dict[str, str]
    log: pathlib.Path  #: the second node's output
    worker: subprocess.Popen | None = None  #: its `ray start --block`: killing its process tree kills the node

    def ensure_two_nodes(self) -> None:
        """Start the second node if it is not running (a test killed it), and wait until it has joined."""
        if self.worker is not None and self.worker.poll() is None:
            return
        if self.worker is not None:
            deadline = time.monotonic() + 60
            while _alive_nodes(self.env, self.address) > 1 and time.monotonic() < deadline:
                time.sleep(1)  # the head notices the dead node first
        with open(self.log, "ab") as log:
            self.worker = subprocess.Popen([_ray(), "start", "--address", self.address, "--node-ip-address",
                                            "127.0.0.1", "--block", *_COMMON, *_node_ports()], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while _alive_nodes(self.env, self.address) < 2:
            assert self.worker.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(1)


#: Each node: 1 CPU, no GPU, a small object store.
_COMMON = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(80 * 2**20), "--disable-usage-stats"]


def _ray() -> str:
    exe = pathlib.Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else "ray"


def _node_ports() -> list[str]:
    """Every port a node would otherwise take at a fixed default (two nodes share this machine)."""
    return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
            "--min-worker-port", "0", "--max-worker-port", "0"]


def _alive_nodes(cluster_env: dict[str, str], address: str) -> int:
    status = subprocess.run([_ray(), "status", "--address", address], capture_output=True, text=True,
                            env=cluster_env, timeout=60)
    active = status.stdout.partition("Active:")[2].partition("Pending:")[0]
    return sum(1 for line in active.splitlines() if "node_" in line)


@pytest.fixture(scope="module")
def _ray_head():
    """The head node, started once for this module's tests; stopped (every Ray process here) at the end."""
    require_module("ray", "ray")
    temp = tempfile.mkdtemp(prefix="fr", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    env = env_with_tests(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", RAY_health_check_period_ms="1000",
                         RAY_health_check_failure_threshold="3", RAY_ADDRESS="")
    cluster = Cluster(f"127.0.0.1:{port}", env, pathlib.Path(temp) / "join.log")
    try:
        head = subprocess.run([_ray(), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                               "--temp-dir", temp, "--include-dashboard=false", "--ray-client-server-port",
                               str(free_port()), *_COMMON, *_node_ports()], env=env, capture_output=True, text=True,
                              timeout=180)
        assert head.returncode == 0, head.stdout + head.stderr
        yield cluster
    finally:
        subprocess.run([_ray(), "stop", "--force"], env=env, capture_output=True, timeout=120)
        if cluster.worker is not None:
            kill_tree(cluster.worker.pid)
            cluster.worker.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_cluster(_ray_head):
    """Two nodes of 1 CPU each on this machine."""
    _ray_head.ensure_two_nodes()
    return _ray_head


def _compare(cluster: Cluster, data: pathlib.Path, out: pathlib.Path, *extra: str, epochs: int = 1):
    return [*fmclf_command(), *grid(data, out, epochs=epochs), "--executor", "ray", "--ray-address", cluster.address,
            *extra]


def _wait_for(paths: list[pathlib.Path], text: str, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.exists() and text in p.read_text(errors="replace") for p in paths):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, [p.read_text(errors="replace") if p.exists() else None for p in paths]
        time.sleep(0.3)


def test_a_comparison_on_ray_gives_the_metrics_of_the_same_comparison_run_locally(ray_cluster, tiny_data, tmp_path):
    """Same seeds, same thread counts: compare.json's metrics do not depend on where the runs trained."""
    env = ray_cluster.env
    on_ray = subprocess.run(_compare(ray_cluster, tiny_data, tmp_path / "ray"), capture_output=True, text=True,
                            env=env, timeout=400)
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    local = subprocess.run([*fmclf_command(), *grid(tiny_data, tmp_path / "local"), "--jobs", "2"],
                           capture_output=True, text=True, env=env, timeout=400)
    assert local.returncode == 0, local.stdout + local.stderr
    assert metrics(tmp_path / "ray") == metrics(tmp_path / "local")
    assert all(whole(tmp_path / "ray" / "runs" / c, 1) for c in CELLS)
    for cell in CELLS:  # each run's output reached its log through the Ray task
        assert "(1 thread)" in (text := (tmp_path / "ray" / "jobs" / f"{cell}.log").read_text()) and "test acc" in text


def test_ctrl_c_stops_every_ray_task_with_its_checkpoint_and_the_same_command_continues(ray_cluster, tiny_data,
                                                                                          tmp_path):
    out, release = tmp_path / "cmp", tmp_path / "release"
    hold = ["--visualizer", "hold-at", "-o", "visualizer.hold-at.epoch=1", "-o", "visualizer.hold-at.batch=3",
            "-o", f"visualizer.hold-at.release={release}"]
    command = _compare(ray_cluster, tiny_data, out, *hold, epochs=2)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_cluster.env)
    logs = [out / "jobs" / f"{c}.log" for c in CELLS]
    try:
        _wait_for(logs, "HELD", proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "Run the same command again to continue" in stderr and "Traceback" not in stderr
    import torch

    deadline = time.monotonic() + 120  # each run writes its checkpoint as its task ends
    while not all((out / "runs" / c / "checkpoint.pt").exists() for c in CELLS):
        assert time.monotonic() < deadline, [log.read_text() for log in logs]
        time.sleep(0.3)
    for cell in CELLS:
        state = torch.load(out / "runs" / cell / "checkpoint.pt", map_location="cpu", weights_only=True)["state"]
        assert (state["epoch"], state["batch"]) == (0, 3)
    release.touch()
    again = subprocess.run(command, capture_output=True, text=True, env=ray_cluster.env, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(2 to resume)" in again.stdout
    assert all(whole(out / "runs" / c, 2) for c in CELLS)
    assert (out / "compare.json").is_file()


def test_a_node_killed_mid_grid_has_its_run_resumed_on_the_other_node(ray_cluster, tiny_data, tmp_path):
    """Both runs wait in epoch 2; the second node dies (its whole process tree, the run with it); Ray
    runs that task again on the head node, where it resumes from the epoch-1 checkpoint."""
    out, release = tmp_path / "cmp", tmp_path / "release"
    hold = ["--visualizer", "hold-at", "-o", "visualizer.hold-at.epoch=2", "-o", "visualizer.hold-at.batch=3",
            "-o", f"visualizer.hold-at.release={release}"]
    proc = subprocess.Popen(_compare(ray_cluster, tiny_data, out, *hold, epochs=2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ray_cluster.env)
    try:
        logs = [out / "jobs" / f"{c}.log" for c in CELLS]
        _wait_for(logs, "HELD", proc)  # one run on each node, both in the middle of epoch 2
        assert ray_cluster.worker is not None
        kill_tree(ray_cluster.worker.pid)
        ray_cluster.worker.wait(timeout=60)
        release.touch()
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    assert all(whole(out / "runs" / c, 2) for c in CELLS), stdout + stderr
    texts = [log.read_text() for log in logs]
    resumed = [t for t in texts if t.count("$ fmclf") == 2]
    assert len(resumed) == 1, texts  # the killed node's run started twice: the second time with --resume
    assert "run --resume" in resumed[0].split("$ fmclf")[2] and "resum" in resumed[0].split("$ fmclf")[2]
    assert json.loads((out / "compare.json").read_text())["complete"] is True
