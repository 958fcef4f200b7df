"""The training loop on a CUDA GPU: the CPU's numbers, no host synchronisation
per batch, CUDA graphs that change nothing but the speed, one copy of the data.
Every test here is marked ``cuda`` and skips on a machine without a GPU; the
messages these options give without one are tested in test_speed_paths.py."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.errors import DivergenceError
from fmclf.train.engine import Trainer, TrainState

from helpers import assemble_parts, write_tiny_fashion

pytestmark = pytest.mark.cuda


def _fit(data, device, epochs=2, cuda_graphs=False, **settings):
    parts = assemble_parts(data, device=device, **settings)
    state = Trainer(parts, device=torch.device(device), epochs=epochs, cuda_graphs=cuda_graphs).fit(TrainState())
    return state.history, parts.model


def _close(a, b, tol=1e-4):
    for x, y in zip(a, b):
        for key in ("train_loss", "train_acc", "test_acc"):
            assert x[key] == pytest.approx(y[key], rel=tol, abs=tol), (key, x, y)


@pytest.fixture
def ragged_data(tmp_path):
    """100 training images: 12 batches of 8 and a last one of 4 (run eagerly under graphs)."""
    return write_tiny_fashion(tmp_path / "ragged", n_train=100, n_test=40)


def test_a_cuda_run_gives_the_cpu_numbers_and_reports_its_memory(tiny_data, tmp_path):
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                          "--device", device, "--epochs", "2", "--batch-size", "8", "--seed", "3",
                                          "--visualizer", "none", "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[device] = json.loads((out / "summary.json").read_text())
    # Same seed: the same initial weights and batch order, so the same numbers up to float rounding.
    _close([runs["cuda"]], [runs["cpu"]])
    assert runs["cuda"]["device"].startswith("cuda") and runs["cuda"]["peak_memory"]["peak_cuda_mb"] > 0


def test_cuda_graphs_give_the_eager_numbers(ragged_data):
    eager, eager_model = _fit(ragged_data, "cuda", batch_size=8, epochs=3)
    graphed, graphed_model = _fit(ragged_data, "cuda", batch_size=8, epochs=3, cuda_graphs=True)
    _close(graphed, eager, tol=1e-5)
    for p, q in zip(graphed_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["eager", "graphs"])
def test_no_host_synchronisation_per_batch(tiny_data, cuda_graphs):
    def syncs(batch_size):
        parts = assemble_parts(tiny_data, device="cuda", batch_size=batch_size)
        trainer = Trainer(parts, device=torch.device("cuda"), epochs=1, cuda_graphs=cuda_graphs)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trainer.fit(TrainState())
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchronizing" in str(w.message) for w in caught)

    # 96 training examples: 12 batches of 8 or 24 of 4; the syncs (once per epoch) must not follow.
    assert syncs(8) == syncs(4)


@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["eager", "graphs"])
def test_divergence_on_cuda_names_the_batch_the_cpu_names(tiny_data, cuda_graphs):
    settings = dict(loss="naive", lr=1e4, batch_size=8, dataset_options={"raw_pixels": True}, epochs=3)
    found = {}
    for device in ("cpu", "cuda"):
        with pytest.raises(DivergenceError) as info:
            _fit(tiny_data, device, cuda_graphs=cuda_graphs and device == "cuda", **settings)
        found[device] = (info.value.epoch, info.value.batch)
    # On the GPU the loss sums are read at the epoch's end, and still name the exact batch.
    assert found["cuda"] == found["cpu"]


@pytest.mark.realdata
def test_the_data_set_is_one_copy_on_the_gpu(real_data):
    from fmclf_plugins.fashion_mnist import fashion_mnist

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    ds = fashion_mnist(batch_size=256, device=torch.device("cuda"), data_root=real_data)
    torch.cuda.synchronize()
    held = sum(t.nbytes for t in (ds.train.X, ds.train.y, ds.test.X, ds.test.y))
    assert held == (60000 + 10000) * (784 * 4 + 8)
    assert 0 <= torch.cuda.memory_allocated() - before - held < 2**20  # allocator rounding, not a copy
