"""The fast paths keep their promises: layouts, no per-batch host reads,
one copy of the data, peak memory reported, and the CUDA options' errors."""

from __future__ import annotations

import gc
import json
import math
import sys

import pytest
import torch
from click.testing import CliRunner
from torch.overrides import TorchFunctionMode

import fmclf.train.engine as engine
from fmclf.cli import cli
from fmclf.data import TensorBatches, epoch_seed
from fmclf.dist.comm import Solo
from fmclf.errors import DivergenceError, UsageError
from fmclf.train.engine import LossWatch, Trainer, TrainState
from fmclf.train.heldout import HeldOut

from helpers import assemble_parts, write_tiny_fashion

CPU = torch.device("cpu")


# -- the scratch model's layout ---------------------------------------------------


def test_scratch_W_has_the_textbook_shape_and_its_gradient_the_fast_layout():
    from fmclf_plugins.softmax import SoftmaxScratch

    torch.manual_seed(0)
    model = SoftmaxScratch(784, 10)
    X = torch.rand(32, 1, 28, 28)
    out = model(X)
    assert model.W.shape == (784, 10)
    torch.testing.assert_close(out, X.reshape(32, 784) @ model.W + model.b)
    out.sum().backward()
    # Stored as (classes, inputs) transposed: autograd then computes the weight
    # gradient as g^T X and hands it back in W's own layout.
    assert model.W.stride() == (1, 784)
    assert model.W.grad.stride() == (1, 784)
    torch.testing.assert_close(model.W.grad, X.reshape(32, 784).t() @ torch.ones(32, 10))


# -- batches ------------------------------------------------------------------------


def test_an_epoch_visits_every_example_once_with_its_label_in_the_seeded_order():
    n = 103
    X = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    y = torch.arange(n) * 7 % 10
    batches = TensorBatches(X, y, 16, shuffle=True, seed=5)
    orders = []
    for epoch in (1, 2, 1):
        batches.set_epoch(epoch)
        got = list(batches)
        assert [len(b[1]) for b in got] == [16] * 6 + [7]
        rows = torch.cat([b[0][:, 0, 0, 0] for b in got]).long()
        labels = torch.cat([b[1] for b in got])
        assert torch.equal(labels, y[rows])  # each image keeps its own label
        assert sorted(rows.tolist()) == list(range(n))
        expected = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(5, epoch)))
        assert torch.equal(rows, expected)
        orders.append(rows)
    assert not torch.equal(orders[0], orders[1]) and torch.equal(orders[0], orders[2])


# -- evaluation ---------------------------------------------------------------------


def test_evaluate_counts_the_confusion_matrix_exactly():
    torch.manual_seed(1)
    model = torch.nn.Linear(6, 4)
    X, y = torch.randn(50, 6), torch.randint(0, 4, (50,))
    batches = [(X[i : i + 16], y[i : i + 16]) for i in range(0, 50, 16)]  # ragged last batch

    def loss(logits, y):
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")

    def evaluate(model, batches, num_classes):  # as a run evaluates: two batches' logits at a time
        result = HeldOut(model, loss, [], num_classes, Solo(), chunk=16 * 4 * 2).evaluate("test", batches)
        return result.values["acc"], result.confusion

    acc, confusion = evaluate(model, batches, 4)
    pred = model(X).argmax(dim=1)
    expected = torch.bincount(y * 4 + pred, minlength=16).reshape(4, 4)
    assert torch.equal(confusion, expected)
    assert acc == pytest.approx((pred == y).float().mean().item())
    soft = torch.nn.functional.one_hot(y, 4).float() * 0.7 + 0.075  # probability targets
    _, confusion_soft = evaluate(model, [(X, soft)], 4)
    assert torch.equal(confusion_soft, expected)


# -- divergence watch ---------------------------------------------------------------


@pytest.mark.parametrize("defer", [False, True])
def test_loss_watch_names_the_first_bad_batch(defer):
    seen = []

    def diverged(value, b):
        seen.append((value, b))
        raise DivergenceError("x", batch=b)

    watch = LossWatch(CPU, 6, 2, diverged, defer=defer)  # resumed after 2 batches
    with pytest.raises(DivergenceError) as info:
        for b, v in zip(range(3, 7), [1.0, float("inf"), float("nan"), 2.0]):
            watch.add(b, torch.tensor(v))
        watch.check(6)
    assert info.value.batch == 4 and seen[0][0] == math.inf
    if defer:  # read once, at the end, not as the batches came
        assert len(seen) == 1


def test_cpu_divergence_stops_before_the_bad_update(tiny_data):
    parts = assemble_parts(tiny_data, loss="naive", lr=1e4, batch_size=8, dataset_options={"raw_pixels": True})
    steps = []
    step = parts.updater.step
    parts.updater.step = lambda n: (steps.append(n), step(n))
    trainer = Trainer(parts, device=CPU, epochs=5)
    with pytest.raises(DivergenceError) as info:
        trainer.fit(TrainState())
    e, b = info.value.epoch, info.value.batch
    assert len(steps) == (e - 1) * len(parts.dataset.train) + b - 1  # every batch before the bad one, not it


class _HostReads(TorchFunctionMode):
    """Counts the tensor reads to the host made from the engine's and data's own code."""

    READS = {"item", "__float__", "__int__", "__bool__", "tolist", "numpy", "__index__"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            frame = sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__", "").startswith("torch"):
                frame = frame.f_back  # torch's own wrappers: find who called them
            if frame is not None and frame.f_globals.get("__name__") in ("fmclf.engine", "fmclf.data"):
                self.count += 1
        return func(*args, **(kwargs or {}))


def _reads_per_epoch(data, batch_size, monkeypatch):
    class Deferred(LossWatch):  # what the engine does on an accelerator
        def __init__(self, *args, **kwargs):
            super().__init__(*args, defer=True, **kwargs)

    monkeypatch.setattr(engine, "LossWatch", Deferred)
    parts = assemble_parts(data, batch_size=batch_size)
    trainer = Trainer(parts, device=CPU, epochs=1)
    with _HostReads() as reads:
        trainer.fit(TrainState())
    return reads.count


def test_the_loop_reads_nothing_back_per_batch_where_it_defers(tiny_data, monkeypatch):
    # 96 training examples: 12 batches of 8, or 24 of 4. On an accelerator every
    # read would stall the device; the count must not grow with the batches.
    few, many = _reads_per_epoch(tiny_data, 8, monkeypatch), _reads_per_epoch(tiny_data, 4, monkeypatch)
    assert few == many
    assert few < 12


# -- the data set in memory ---------------------------------------------------------


def test_the_data_set_is_held_once_as_float32_and_no_uint8_copy_survives(tmp_path):
    from fmclf_plugins.fashion_mnist import fashion_mnist

    n_train, n_test = 97, 41  # sizes no other tensor in the session has
    folder = write_tiny_fashion(tmp_path / "data", n_train=n_train, n_test=n_test)
    ds = fashion_mnist(batch_size=16, device=CPU, data_root=folder, verify=False)
    gc.collect()
    sizes = {n_train * 784, n_test * 784}
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = (obj.dtype, storage.nbytes())
    uint8 = [v for v in storages.values() if v[0] == torch.uint8 and v[1] in sizes]
    floats = [v for v in storages.values() if v[0] == torch.float32 and v[1] // 4 in sizes]
    assert uint8 == []
    assert sorted(floats) == sorted([(torch.float32, n_train * 784 * 4), (torch.float32, n_test * 784 * 4)])
    assert ds.train.X.is_contiguous() and ds.train.X.untyped_storage().nbytes() == ds.train.X.nbytes
    assert not any(type(o) is memoryview and o.nbytes in sizes for o in gc.get_objects())
    # an epoch of batches makes no second copy of the set
    ds.train.set_epoch(1)
    assert sum(len(X) for X, _ in ds.train) == n_train
    assert float(ds.train.X.max()) <= 1.0 and float(ds.train.X.min()) >= 0.0


def test_pixels_are_scaled_exactly_as_ToTensor_does(tmp_path):
    from fmclf_plugins.fashion_mnist import fashion_mnist
    from fmclf_plugins.idx import parse_idx

    folder = write_tiny_fashion(tmp_path / "data", n_train=2100, n_test=10)  # more than one block of rows
    ds = fashion_mnist(batch_size=16, device=CPU, data_root=folder, verify=False)
    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    shape, payload = parse_idx(raw, folder, "", magic_dims=3)
    u8 = torch.tensor(list(bytes(payload)), dtype=torch.uint8).reshape(shape[0], 1, 28, 28)
    assert torch.equal(ds.train.X, u8.float().div(255))  # torchvision's ToTensor
    raw_ds = fashion_mnist(batch_size=16, device=CPU, data_root=folder, verify=False, raw_pixels=True)
    assert torch.equal(raw_ds.train.X, u8.float())


# -- the run's summary ---------------------------------------------------------------


def test_a_run_reports_its_peak_memory(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--seed", "1",
                                      "--epochs", "1", "--visualizer", "none", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["peak_memory"]["peak_rss_mb"] > 50  # torch alone takes more
    assert f"peak memory: {summary['peak_memory']['peak_rss_mb']:.0f} MB resident" in result.output


# -- CUDA options: their errors, here where there is no GPU -------------------------


def test_cuda_graphs_off_cuda_is_a_usage_error(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--seed", "1",
                                      "--device", "cpu", "--cuda-graphs", "--out", str(out)])
    assert result.exit_code == 2
    assert "--cuda-graphs needs a CUDA device, and this run is on cpu" in result.output
    assert not (out / "config.toml").exists()  # refused before any work


def test_cuda_graphs_refuses_what_a_graph_cannot_replay(tiny_data):
    from fmclf.dist.comm import Comm, Solo
    from fmclf.dist.launch import Launch
    from fmclf.train.graphs import check_supported

    parts = assemble_parts(tiny_data, updater="torch-sgd")
    with pytest.raises(UsageError, match="--cuda-graphs needs a CUDA device"):
        Trainer(parts, device=CPU, epochs=1, cuda_graphs=True)
    cuda = torch.device("cuda", 0)  # only its type is looked at
    with pytest.raises(UsageError, match=r"capturable = True.*fmclf:torch-sgd|torch-sgd.*does not"):
        check_supported(cuda, parts.updater, Solo(), parts.records["updater"].describe())
    with pytest.raises(UsageError, match="distributed"):
        check_supported(cuda, assemble_parts(tiny_data).updater, Comm(Launch(0, 2, 0, 2), "gloo", 10.0))
    check_supported(cuda, assemble_parts(tiny_data).updater, Solo())  # the built-in sgd is accepted


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_device_cuda_without_a_gpu_says_what_to_do(tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--device", "cuda", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "device 'cuda' is not available" in result.output and "Use --device cpu or --device auto" in result.output
    assert "Traceback" not in result.output


def test_cuda_graphs_is_recorded_and_may_be_set_on_resume(tiny_data, tmp_path):
    out = tmp_path / "run"
    first = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                     "--seed", "1",
                                     "--epochs", "1", "--visualizer", "none", "--device", "cpu", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "cuda_graphs = false" in (out / "config.toml").read_text()
    again = CliRunner().invoke(cli, ["run", "--resume", str(out), "--epochs", "2", "--cuda-graphs"])
    assert again.exit_code == 2 and "--cuda-graphs needs a CUDA device" in again.output


# -- threads ------------------------------------------------------------------------


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_threads_are_applied_and_recorded(tiny_data, tmp_path, keep_threads):
    import tomllib

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--seed", "1",
                                      "--epochs", "1", "--visualizer", "none", "--device", "cpu", "--threads", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["threads"] == 1 and config["provenance"]["threads"] == 1
    bad = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "--threads", "0",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--threads must be a whole number from 1 to" in bad.output
