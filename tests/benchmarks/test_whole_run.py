"""Groups ``whole-run`` and ``peers``: whole processes, what a user waits for (see :mod:`whole_runs`).

``whole-run``: the default ``fmclf run`` against the plain torch loop and the
numpy loop, each as a fresh process for 2 and for 12 epochs, three rounds
interleaved; per-epoch time and fixed cost from the fastest of each.
``peers`` adds PyTorch Lightning and Keras 3 (torch backend) when installed
(``tox -e peers`` installs them). The plain torch loop is the reference.

The normal test run starts each pipeline once for one epoch, untimed: that
they run, and that fmclf's run folder is complete.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

import whole_runs as W

SHORT, LONG, ROUNDS = 2, 12, 3
GROUPS = {
    "whole-run": ["fmclf", "torch", "numpy"],
    "peers": ["fmclf", "torch", "lightning", "keras"],
}
NEEDS = {"lightning": "pytorch_lightning", "keras": "keras"}
_found: dict[str, dict[str, W.Timing]] = {}


def _pipelines(group: str) -> list[W.Pipeline]:
    every = {p.name: p for p in W.standard(peers=True)}
    return [every[name] for name in GROUPS[group] if name not in NEEDS or importlib.util.find_spec(NEEDS[name])]


def _measured(group: str, real_data, tmp_path_factory) -> dict[str, W.Timing]:
    if group not in _found:
        scratch = W.prepare(tmp_path_factory.mktemp(group), real_data)
        _found[group] = W.measure(_pipelines(group), scratch, short=SHORT, long=LONG, rounds=ROUNDS)
    return _found[group]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(("group", "name"), [(g, n) for g, names in GROUPS.items() for n in names])
def test_whole_run(benchmark, real_data, tmp_path_factory, group, name):
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed (`tox -e peers` installs it)")
    pipeline = next(p for p in _pipelines(group) if p.name == name)
    benchmark.group = group
    if benchmark.disabled:  # untimed: it runs, and fmclf leaves a complete run folder
        scratch = W.prepare(tmp_path_factory.mktemp(f"{group}-{name}"), real_data)
        W.run_once(pipeline, 1, scratch)
        if name == "fmclf":
            (run,) = [p for p in scratch.iterdir() if p.name.startswith("run-")]
            summary = json.loads((run / "summary.json").read_text())
            assert (summary["epochs"] == 1
                    and {"model.pt", "report.md", "checkpoint.pt"} <= {p.name for p in run.iterdir()})
        return
    found = _measured(group, real_data, tmp_path_factory)
    t = found[name]
    benchmark.pedantic(lambda: t.epoch, rounds=1, iterations=1)
    ref = found.get("torch")
    benchmark.extra_info.update(
        label=t.label, time_s=t.epoch, fixed_s=t.fixed, noise=round(t.spread, 3), cpu_epoch_s=t.cpu_epoch,
        cpu_fixed_s=t.cpu_fixed,
        detail=f"whole processes, {SHORT} vs {LONG} epochs, fastest of {ROUNDS}: per epoch, and the fixed cost",
    )
    if name == "torch":
        benchmark.extra_info["baseline"] = True
    elif ref is not None:
        benchmark.extra_info["fixed_vs_reference_s"] = round(t.fixed - ref.fixed, 3)
        benchmark.extra_info["cpu_vs_reference"] = [t.cpu_epoch / ref.cpu_epoch, round(t.cpu_fixed - ref.cpu_fixed, 3)]
