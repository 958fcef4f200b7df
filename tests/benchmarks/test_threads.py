"""Groups ``threads`` and ``busy-cpu``: the default thread count against explicit ones.

Each variant is a whole ``fmclf run`` process (``--visualizer none``, a few
epochs); its figure is the median epoch of the run (the ``seconds`` of
metrics.jsonl, first epoch left out), the fastest such median over the
rounds, which are interleaved. ``threads`` runs them on the machine as it
is; ``busy-cpu`` first starts two CPU-bound processes of its own (a Python
loop each) and stops them after. The row that matters: the default against
the best explicit ``--threads`` value, measured in the same run.

The normal test run executes one short run per variant, untimed, and checks
only that the thread count each recorded is the one asked for.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tomllib
from typing import Self

import pytest

from whole_runs import fmclf_exe

EPOCHS = 4
ROUNDS = 3
HOGS = 2


def variants() -> dict[str, list[str]]:
    """Label -> extra flags: the default and every explicit count up to the CPUs (at least 1 and 2)."""
    cpus = max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 2)
    counts = sorted({1, 2, cpus})
    return {"default": [], **{f"--threads {n}": ["--threads", str(n)] for n in counts}}


def one_run(flags: list[str], data: pathlib.Path, out: pathlib.Path, epochs: int) -> tuple[float, int]:
    """(median epoch seconds, threads recorded in config.toml) of one whole run."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    cmd = [*fmclf_exe(), "run", "--epochs", str(epochs), "--seed", "0", "--visualizer", "none", "--data-root",
           str(data), "--out", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [row["seconds"] for row in rows[1:]] or [rows[0]["seconds"]]
    threads = tomllib.loads((out / "config.toml").read_text())["threads"]
    return statistics.median(seconds), threads


class Hogs:
    """``n`` CPU-bound processes (a Python loop each) for the length of a ``with`` block."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Self:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def measure(data: pathlib.Path, scratch: pathlib.Path, *, epochs: int, rounds: int) -> dict[str, dict]:
    """Every variant ``rounds`` times, interleaved: label -> {"best": s, "medians": [...], "threads": n}."""
    found = {label: {"medians": [], "threads": None} for label in variants()}
    for r in range(rounds):
        for label, flags in variants().items():
            median, threads = one_run(flags, data, scratch / f"{label.replace(' ', '')}-{r}", epochs)
            found[label]["medians"].append(median)
            found[label]["threads"] = threads
    for row in found.values():
        row["best"] = min(row["medians"])
    return found


_results: dict[str, dict] = {}


def _measured(group: str, real_data, tmp_path_factory, timed: bool) -> dict:
    if group not in _results:
        scratch = tmp_path_factory.mktemp(group)
        epochs, rounds = (EPOCHS, ROUNDS) if timed else (1, 1)
        if group == "busy-cpu" and timed:
            with Hogs(HOGS):
                _results[group] = measure(real_data, scratch, epochs=epochs, rounds=rounds)
        else:
            _results[group] = measure(real_data, scratch, epochs=epochs, rounds=rounds)
    return _results[group]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("group", ["threads", "busy-cpu"])
@pytest.mark.parametrize("label", list(variants()))
def test_thread_counts(benchmark, real_data, tmp_path_factory, group, label):
    benchmark.group = group
    found = _measured(group, real_data, tmp_path_factory, timed=not benchmark.disabled)
    row = found[label]
    if label != "default":  # what was asked is what ran, and is what config.toml records
        assert row["threads"] == int(label.split()[-1])
    benchmark.pedantic(lambda: row["best"], rounds=1, iterations=1)
    explicit = {k: v["best"] for k, v in found.items() if k != "default"}
    best_label = min(explicit, key=explicit.get)
    benchmark.extra_info.update(
        label=label if label != "default" else f"default ({row['threads']} thread{'s' if row['threads'] != 1 else ''})",
        time_s=row["best"], median_s=statistics.median(row["medians"]), threads=row["threads"],
        detail=f"median epoch of a {EPOCHS}-epoch fmclf run, fastest of {ROUNDS}"
               + (f", beside {HOGS} CPU-bound processes" if group == "busy-cpu" else ""),
    )
    if label == "default":
        benchmark.extra_info.update(vs=best_label if best_label != label else None, baseline=True)
