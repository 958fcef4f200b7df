"""Each built-in component against its contract (on tiny data, on the CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from fmclf.data import TensorBatches
from fmclf.host.loading import load_plugins
from fmclf.host.registry import ComponentRecord
from fmclf.run.plan import call_factory
from fmclf.train.updaters import OptimizerUpdater, adapt_updater


@pytest.fixture(scope="module")
def registry():
    return load_plugins(autoload=False).registry


def build(registry, kind, name, core=None, **options):
    record: ComponentRecord = registry.get(kind, name)
    from fmclf.host.options import resolve_options

    return call_factory(record, core or {}, resolve_options(record, options))


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_contract(registry, tmp_path, gz):
    from helpers import write_tiny_fashion

    folder = write_tiny_fashion(tmp_path / "d", n_train=50, n_test=21, gz=gz)
    ds = build(registry, "dataset", "fashion-mnist", {"batch_size": 16, "device": torch.device("cpu"), "seed": 3},
               data_root=folder, verify=False, download=False)
    assert list(ds.classes)[:3] == ["t-shirt", "trouser", "pullover"] and len(ds.classes) == 10
    assert tuple(ds.input_shape) == (1, 28, 28)
    train = list(ds.train)
    assert [len(y) for _, y in train] == [16, 16, 16, 2]  # the last partial batch is kept
    X, y = train[0]
    assert X.dtype == torch.float32 and X.shape == (16, 1, 28, 28) and y.dtype == torch.int64
    assert 0.0 <= float(X.min()) and float(X.max()) <= 1.0 and float(X.max()) > 0.5
    # training batches come from a seeded permutation: same seed, same epoch -> same order
    ds.train.set_epoch(1)
    first = torch.cat([y for _, y in ds.train])
    ds.train.set_epoch(1)
    assert torch.equal(first, torch.cat([y for _, y in ds.train]))
    ds.train.set_epoch(2)
    assert not torch.equal(first, torch.cat([y for _, y in ds.train]))
    assert sorted(first.tolist()) == sorted(ds.train.y.tolist())
    # the test set is not shuffled
    assert torch.equal(torch.cat([y for _, y in ds.test]), ds.test.y)
    assert [len(y) for _, y in ds.test] == [16, 5]


def test_resize_and_raw_pixels(registry, tiny_data):
    ds = build(registry, "dataset", "fashion-mnist", {"batch_size": 8, "device": "cpu", "seed": 0},
               data_root=tiny_data, verify=False, download=False, resize=14, raw_pixels=True)
    X, _ = next(iter(ds.test))
    assert tuple(ds.input_shape) == (1, 14, 14) and X.shape == (8, 1, 14, 14)
    assert float(X.max()) > 100  # 0-255, not 0-1


@pytest.mark.parametrize("name", ["scratch", "nn"])
def test_models_return_logits(registry, name):
    torch.manual_seed(0)
    model = build(registry, "model", name, {"num_inputs": 784, "num_classes": 10})
    assert isinstance(model, torch.nn.Module)
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10) and out.dtype == torch.float32
    assert not torch.allclose(out.sum(dim=1), torch.ones(5))  # logits, not probabilities
    weight = next(p for p in model.parameters() if p.dim() == 2)
    assert 0.005 < float(weight.detach().std()) < 0.015  # N(0, 0.01)


def test_scratch_has_the_textbooks_parameters(registry):
    model = build(registry, "model", "scratch", {"num_inputs": 784, "num_classes": 10})
    assert model.W.shape == (784, 10) and model.b.shape == (10,)
    assert torch.equal(model.b, torch.zeros(10))
    X = torch.rand(3, 1, 28, 28)
    assert torch.allclose(model(X), X.reshape(3, 784) @ model.W + model.b)


@pytest.mark.parametrize("name", ["naive", "fused"])
def test_losses_are_per_example_cross_entropy(registry, name):
    loss = build(registry, "loss", name)
    logits = torch.randn(7, 10, requires_grad=True)
    y = torch.randint(0, 10, (7,))
    out = loss(logits, y)
    assert out.shape == (7,)
    expected = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(out, expected, atol=1e-5)
    out.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_naive_overflows_where_fused_does_not(registry):
    naive, fused = build(registry, "loss", "naive"), build(registry, "loss", "fused")
    logits = torch.tensor([[100.0, 0.0, -5.0]])
    y = torch.tensor([0])
    assert not torch.isfinite(naive(logits, y)).all()
    assert math.isclose(float(fused(logits, y)), 0.0, abs_tol=1e-6)


def test_sgd_is_the_textbook_update(registry):
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    sgd = build(registry, "updater", "sgd", {"params": [w], "lr": 0.5})
    assert adapt_updater(sgd) is sgd and getattr(sgd, "reduction", "sum") == "sum"
    (w * torch.tensor([4.0, 8.0])).sum().backward()
    sgd.step(4)  # p -= lr * grad / batch_size
    assert torch.equal(w.detach(), torch.tensor([0.5, 1.0]))
    sgd.zero_grad()
    assert w.grad is None or not w.grad.any()


def test_torch_sgd_is_adapted_and_takes_momentum(registry):
    w = torch.tensor([1.0], requires_grad=True)
    opt = build(registry, "updater", "torch-sgd", {"params": [w], "lr": 0.1, "epochs": 1, "steps_per_epoch": 2},
                momentum=0.9)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    updater = adapt_updater(opt)
    assert isinstance(updater, OptimizerUpdater) and updater.reduction == "mean"
    for _ in range(2):
        updater.zero_grad()
        (w * 1.0).sum().backward()
        updater.step(256)  # the batch size is ignored: the optimizer averages itself
    assert torch.allclose(w.detach(), torch.tensor([1.0 - 0.1 - 0.19]))


@pytest.mark.parametrize("name", ["tqdm", "animator", "none"])
def test_visualizers_accept_every_event(registry, name, tmp_path):
    from fmclf import events

    vis = build(registry, "visualizer", name, {"run_dir": tmp_path})
    loss_sum, correct = torch.tensor(2.0), torch.tensor(3)
    metrics = {"epoch": 1, "train_loss": 0.6, "train_acc": 0.7, "test_acc": 0.72, "per_class_test_acc": {},
               "seconds": 0.1}
    for method, event in [
        ("on_fit_start", events.FitStart(1, 1, 2, ["a", "b"], "cpu", tmp_path)),
        ("on_batch_end", events.BatchEnd(1, 1, 2, 4, loss_sum, correct)),
        ("on_batch_end", events.BatchEnd(1, 2, 2, 8, loss_sum, correct)),
        ("on_epoch_end", events.EpochEnd(1, 1, metrics, [metrics])),
        ("on_fit_end", events.FitEnd([metrics], metrics, [[1, 0], [0, 1]], ["a", "b"], None, tmp_path)),
    ]:
        if hasattr(vis, method):
            getattr(vis, method)(event)


def test_tensor_batches_check_lengths():
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        TensorBatches(torch.zeros(3, 2), torch.zeros(2), 2, shuffle=False)


def test_a_dataset_whose_train_batches_have_no_len_is_refused_clearly():
    from fmclf.errors import ComponentError
    from fmclf.host.registry import PluginInfo
    from fmclf.kinds import BY_NAME

    class NoLen:
        train = iter([])
        test, classes, input_shape = [], ["a"], (1,)

    record = ComponentRecord("dataset", "odd", lambda: None, "", PluginInfo("odd", "odd"))
    with pytest.raises(ComponentError, match="no len\\(\\); .* __len__"):
        BY_NAME["dataset"].accept(record, NoLen())


def test_shards_shuffle_in_different_orders(registry, tiny_data):
    core = {"batch_size": 8, "device": "cpu", "seed": 4}
    orders = []
    for rank in (0, 1):
        ds = build(registry, "dataset", "fashion-mnist", {**core, "shard": (rank, 2)}, data_root=tiny_data,
                   verify=False, download=False)
        ds.train.set_epoch(1)
        orders.append(ds.train.order().tolist())
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
