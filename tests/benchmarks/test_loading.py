"""Group ``loading``: from the imports done to the first batch (``assemble``: the
data set on the device, model, loss, updater), the first time (decompress,
verify, write the cache) and every later time (read the cache)."""

from __future__ import annotations

import itertools

import pytest
import torch

from fmclf.host.loading import load_plugins
from fmclf.run.config import RunConfig
from fmclf.run.plan import assemble, resolve

_fresh = itertools.count()


def _plan():
    return resolve(RunConfig(visualizers=["none"], device="cpu", seed=0), load_plugins())


def _first_batch(plan):
    parts = assemble(plan, device=torch.device("cpu"))
    X, y = next(iter(parts.dataset.train))
    return parts.dataset.source, X.shape


@pytest.mark.slow  # a benchmark, run once: loads the real data
@pytest.mark.realdata
def test_loading_first_run(benchmark, real_data, tmp_path, monkeypatch):
    benchmark.group = "loading"
    monkeypatch.setenv("FMCLF_DATA", str(real_data))
    plan = _plan()

    def empty_cache():
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache-{next(_fresh)}"))
        return (plan,), {}

    source, shape = benchmark.pedantic(_first_batch, setup=empty_cache, rounds=3)
    assert source.startswith("$FMCLF_DATA") and shape == (256, 1, 28, 28)
    benchmark.extra_info.update(label="first run: decompress, verify, cache", baseline=True)


@pytest.mark.slow  # a benchmark, run once: loads the real data
@pytest.mark.realdata
def test_loading_later_runs(benchmark, real_data, tmp_path, monkeypatch):
    benchmark.group = "loading"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FMCLF_DATA", str(real_data))
    _first_batch(_plan())  # fills the cache (when the files there are compressed)
    monkeypatch.delenv("FMCLF_DATA")
    plan = _plan()
    if not any((tmp_path / "cache").rglob("*-ubyte")):  # nothing to decompress: they are read where they are
        monkeypatch.setenv("FMCLF_DATA", str(real_data))
    source, shape = benchmark.pedantic(_first_batch, args=(plan,), rounds=5, warmup_rounds=1)
    assert shape == (256, 1, 28, 28)
    benchmark.extra_info.update(label="later runs: from the cache", source=source)
