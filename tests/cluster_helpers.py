"""What the cluster tests share: the skip-or-fail rule, free ports, process trees, the tiny comparison."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import socket
import sys

import pytest

TESTS = pathlib.Path(__file__).parent

#: CI sets it where it installed the clusters (.ci/clusters.sh): then a missing piece fails instead of skipping.
REQUIRE = "FMCLF_REQUIRE_CLUSTER"


def require(what: str, present: bool, how: str) -> None:
    """Skip (or, with FMCLF_REQUIRE_CLUSTER=1, fail) saying what is missing and how to get it."""
    if present:
        return
    text = f"needs {what}, which this machine lacks ({how}; .ci/clusters.sh installs it)"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{text}, and {REQUIRE}=1 says it must be there")
    pytest.skip(text)


def require_module(name: str, extra: str) -> None:
    require(f"the Python package {name}", importlib.util.find_spec(name) is not None,
            f"pip install 'fmclf[{extra}]'")


def require_program(*names: str, package: str) -> None:
    missing = [n for n in names if shutil.which(n) is None and not pathlib.Path("/usr/sbin", n).exists()]
    require(", ".join(missing) or package, not missing, f"apt-get install -y {package}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """``pid`` and every process descending from it (read from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kill_tree(pid: int, signum: int = signal.SIGKILL) -> None:
    """Kill ``pid`` and all its descendants at once (collected first: a killed parent's children move)."""
    for p in tree(pid):
        try:
            os.kill(p, signum)
        except ProcessLookupError:
            pass


def fmclf_command() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fmclf"]


def env_with_tests(**extra: str) -> dict[str, str]:
    """This environment with tests/ on PYTHONPATH (for -p cluster_plugin in every run, on every node)."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def grid(data: pathlib.Path, out: pathlib.Path, *, epochs: int = 1, threads: int = 1) -> list[str]:
    """The small comparison the cluster tests run: 2 cells x 1 seed of the tiny data, on the CPU."""
    return ["-p", "cluster_plugin", "compare", "--model", "scratch", "--model", "nn", "--seeds", "1",
            "--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "16", "--device", "cpu",
            "--epochs", str(epochs), "--threads", str(threads), "--out", str(out)]


def metrics(out: pathlib.Path) -> dict[str, dict]:
    """compare.json's rows by cell, each with its metrics' values (what must not depend on where runs ran)."""
    doc = json.loads((out / "compare.json").read_text())
    skip = ("seconds", "time", "throughput", "per_s")
    return {row["cell"] if "cell" in row else json.dumps(row.get("settings"), sort_keys=True):
            {m: s["values"] for m, s in row["metrics"].items() if not any(k in m for k in skip)}
            for row in doc["rows"]}


def whole(run: pathlib.Path, epochs: int) -> bool:
    """The run folder holds a finished run of ``epochs`` epochs."""
    rows = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    return len(rows) == epochs and all((run / f).is_file() for f in ("model.pt", "summary.json", "report.md"))
