"""Group ``epoch``: one epoch (train + test accuracy) four ways, side by side, in one process.

The reference is the plain torch loop (:mod:`plain_loop`): what someone who
knows torch writes by hand for this job. Every other row is a ratio to it:
its numpy twin with the analytic gradient (the floor for Python), fmclf's
loop on the default components, and the textbook's pipeline.

``tox -e bench`` times them on the real data; the normal test run executes
each once, untimed (``--benchmark-disable``), the textbook pipeline then on
the first 2048 training and 512 test images only, to stay quick. On a CUDA
machine the same comparison runs as group ``epoch-cuda``.
"""

from __future__ import annotations

import time

import pytest
import torch

from fmclf.data import epoch_seed
from fmclf.train.engine import TrainState

from pipelines import Textbook, engine_parts, engine_trainer, plain_loops

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
TEXTBOOK, PLAIN, NUMPY, ENGINE = "textbook pipeline", "plain torch loop", "numpy, analytic gradient", "fmclf engine"


@pytest.fixture(scope="module")
def parts_on():
    """Assembled components per device, built once per module (loading is benchmarked elsewhere)."""
    built = {}

    def get(device: str, data_root):
        if device not in built:
            built[device] = engine_parts(data_root, device=device, seed=0)
        return built[device]

    return get


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _group(device: str) -> str:
    return "epoch" if device == "cpu" else f"epoch-{device}"


def _check(result) -> None:
    train_loss, train_acc, test_acc = result
    assert 0 < train_loss < 5 and 0 < train_acc <= 1 and 0 < test_acc <= 1, result


def _engine_epoch(trainer):
    def epoch():
        history = trainer.fit(TrainState()).history[-1]
        return history["train_loss"], history["train_acc"], history["test_acc"]

    return epoch


def interleaved(runs: dict, device: str, rounds: int = 10) -> dict[str, float]:
    """The fastest round of each callable, the rounds interleaved so that load from
    other processes falls on all of them alike."""
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@pytest.mark.slow  # a benchmark, run once: epochs on the real data
@pytest.mark.realdata
@pytest.mark.parametrize("device", DEVICES)
def test_epoch_plain_torch_loop(benchmark, real_data, parts_on, device):
    benchmark.group = _group(device)
    plain, _ = plain_loops(parts_on(device, real_data))
    result = benchmark.pedantic(lambda: (plain.epoch(), _sync(device))[0], rounds=15, warmup_rounds=2)
    _check(result)
    benchmark.extra_info.update(label=PLAIN, device=device, baseline=True,
                                detail="F.linear + F.cross_entropy(sum), the textbook's SGD, "
                                       "metrics read once an epoch")


@pytest.mark.slow  # a benchmark, run once: epochs on the real data
@pytest.mark.realdata
def test_epoch_numpy_loop(benchmark, real_data, parts_on):
    benchmark.group = "epoch"
    _, numpy_loop = plain_loops(parts_on("cpu", real_data))
    result = benchmark.pedantic(numpy_loop.epoch, rounds=15, warmup_rounds=2)
    _check(result)
    benchmark.extra_info.update(label=NUMPY, device="cpu", detail="numpy, X^T (softmax - onehot): no autograd")


@pytest.mark.slow  # a benchmark, run once: epochs on the real data
@pytest.mark.realdata
@pytest.mark.parametrize("device", DEVICES)
def test_epoch_engine(benchmark, real_data, parts_on, device):
    benchmark.group = _group(device)
    parts = parts_on(device, real_data)
    epoch = _engine_epoch(engine_trainer(parts, device=device))
    result = benchmark.pedantic(epoch, rounds=15, warmup_rounds=2)
    _check(result)
    benchmark.extra_info.update(label=ENGINE, device=device, detail="Trainer.fit on the default components")
    if not benchmark.disabled:
        # Against the reference again, rounds interleaved: the ratio least disturbed by other work.
        plain, _ = plain_loops(parts)
        best = interleaved({"engine": epoch, "plain": plain.epoch}, device)
        benchmark.extra_info["vs_reference_interleaved"] = round(best["engine"] / best["plain"], 4)


@pytest.mark.cuda
@pytest.mark.realdata
def test_epoch_engine_cuda_eager(benchmark, real_data, parts_on):
    """The engine on the GPU with CUDA graphs off: what ``--no-cuda-graphs`` gives."""
    benchmark.group = "epoch-cuda"
    epoch = _engine_epoch(engine_trainer(parts_on("cuda", real_data), device="cuda", cuda_graphs=False))
    result = benchmark.pedantic(lambda: (epoch(), _sync("cuda"))[0], rounds=15, warmup_rounds=2)
    _check(result)
    benchmark.extra_info.update(label="fmclf engine, --no-cuda-graphs", device="cuda", vs=ENGINE,
                                detail="every step launched kernel by kernel from Python")


@pytest.mark.realdata
@pytest.mark.parametrize("device", DEVICES)
# what the textbook's code does, warned about by today's torch: 4 workers on fewer
# cores, and float() of the loss, which still requires grad
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning",
                            "ignore:Converting a tensor with requires_grad:UserWarning")
@pytest.mark.slow  # a benchmark, run once: epochs on the real data
def test_epoch_textbook(benchmark, torchvision_root, device):
    benchmark.group = _group(device)
    subset = (2048, 512) if benchmark.disabled else None
    pipeline = Textbook(torchvision_root, device=device, subset=subset)
    result = benchmark.pedantic(lambda: (pipeline.epoch(), _sync(device))[0], rounds=3, warmup_rounds=1)
    _check(result)
    benchmark.extra_info.update(label=TEXTBOOK, device=device,
                                detail="torchvision FashionMNIST + per-item ToTensor, DataLoader(num_workers=4), "
                                       "naive loss, d2l sgd")


def _same_start(parts, seed: int):
    """The reference loops starting where the engine starts: its initial weights and its batch order."""
    train = parts.dataset.train
    order = {"epoch": 1}

    def perm():
        g = torch.Generator().manual_seed(epoch_seed(train.seed, order["epoch"]))
        return torch.randperm(len(train.X), generator=g)

    plain, numpy_loop = plain_loops(parts, seed=seed)
    with torch.no_grad():
        plain.W.copy_(parts.model.W.t())
        plain.b.copy_(parts.model.b)
    numpy_loop.W[...] = parts.model.W.detach().numpy()
    numpy_loop.b[...] = parts.model.b.detach().numpy()
    plain.order = perm
    numpy_loop.order = lambda: perm().numpy()
    return plain, numpy_loop


def test_the_reference_loops_do_the_engines_job(tiny_data):
    """What makes the comparison fair: from the same weights, in the same order, one epoch
    of the plain torch loop, of the numpy loop and of the engine give the same numbers
    (up to float rounding: three ways of computing the same softmax regression)."""
    parts = engine_parts(tiny_data, seed=3, verify=False)
    plain, numpy_loop = _same_start(parts, seed=3)
    torch_row, numpy_row = plain.epoch(), numpy_loop.epoch()
    history = engine_trainer(parts).fit(TrainState()).history[-1]
    engine_row = (history["train_loss"], history["train_acc"], history["test_acc"])
    for row in (torch_row, numpy_row):
        assert row[0] == pytest.approx(engine_row[0], rel=1e-5)
        assert row[1:] == engine_row[1:]
    torch.testing.assert_close(plain.W.detach().t(), parts.model.W.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(numpy_loop.W), parts.model.W.detach(), rtol=1e-5, atol=1e-6)
