"""Group ``epoch``: one epoch (train + test accuracy) three ways, side by side.

``tox -e bench`` times them on the real data; the normal test run executes
each once, untimed (``--benchmark-disable``), the textbook pipeline then on
the first 2048 training and 512 test images only, to stay quick. On a CUDA
machine the same comparison runs as group ``epoch-cuda``.
See :mod:`pipelines` for what each one does.
"""

from __future__ import annotations

import time

import pytest
import torch

from pipelines import HandLoop, Textbook, engine_parts, engine_trainer

from fmclf.train.engine import TrainState

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
TEXTBOOK, HAND, ENGINE = "textbook pipeline", "hand-written loop", "fmclf engine"
_best: dict[tuple[str, str], float] = {}  # (device, pipeline) -> fastest round, for the ratios


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


def _record(benchmark, device: str, name: str, **info) -> None:
    benchmark.extra_info.update(label=name, device=device, **info)
    if benchmark.disabled or benchmark.stats is None:
        return
    best = benchmark.stats.stats.min
    _best[(device, name)] = best
    if name != TEXTBOOK and (device, TEXTBOOK) in _best:
        benchmark.extra_info["speedup_vs_textbook"] = round(_best[(device, TEXTBOOK)] / best, 2)


def _check(result) -> None:
    train_loss, train_acc, test_acc = result
    assert 0 < train_loss < 5 and 0 < train_acc <= 1 and 0 < test_acc <= 1, result


@pytest.mark.realdata
@pytest.mark.parametrize("device", DEVICES)
# what the textbook's code does, warned about by today's torch: 4 workers on fewer
# cores, and float() of the loss, which still requires grad
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning", "ignore:Converting a tensor with requires_grad:UserWarning")
def test_epoch_textbook(benchmark, torchvision_root, device):
    benchmark.group = "epoch" if device == "cpu" else f"epoch-{device}"
    subset = (2048, 512) if benchmark.disabled else None
    pipeline = Textbook(torchvision_root, device=device, subset=subset)
    result = benchmark.pedantic(lambda: (pipeline.epoch(), _sync(device))[0], rounds=3, warmup_rounds=1)
    _check(result)
    _record(benchmark, device, TEXTBOOK, baseline=True, detail="torchvision FashionMNIST + per-item ToTensor, DataLoader(num_workers=4), naive loss, d2l sgd")


@pytest.mark.realdata
@pytest.mark.parametrize("device", DEVICES)
def test_epoch_hand_loop(benchmark, real_data, parts_on, device):
    benchmark.group = "epoch" if device == "cpu" else f"epoch-{device}"
    hand = HandLoop(parts_on(device, real_data))
    result = benchmark.pedantic(lambda: (hand.epoch(), _sync(device))[0], rounds=15, warmup_rounds=2)
    _check(result)
    _record(benchmark, device, HAND, detail="the engine's math with no framework: same tensors, ops and metrics")


@pytest.mark.realdata
@pytest.mark.parametrize("device", DEVICES)
def test_epoch_engine(benchmark, real_data, parts_on, device):
    benchmark.group = "epoch" if device == "cpu" else f"epoch-{device}"
    parts = parts_on(device, real_data)
    trainer = engine_trainer(parts, device=device)

    def epoch():
        history = trainer.fit(TrainState()).history[-1]
        return history["train_loss"], history["train_acc"], history["test_acc"]

    result = benchmark.pedantic(epoch, rounds=15, warmup_rounds=2)
    _check(result)
    _record(benchmark, device, ENGINE, vs=HAND, detail="Trainer.fit: scratch + fused + sgd, visualizer none")
    if not benchmark.disabled:
        # The overhead over the hand-written loop again, rounds interleaved, so
        # that load from other processes falls on both alike.
        hand = HandLoop(parts)
        engine_t, hand_t = [], []
        for _ in range(10):
            for run, times in ((epoch, engine_t), (hand.epoch, hand_t)):
                start = time.perf_counter()
                run()
                _sync(device)
                times.append(time.perf_counter() - start)
        benchmark.extra_info["overhead_vs_hand_interleaved"] = round(min(engine_t) / min(hand_t) - 1, 4)


@pytest.mark.cuda
@pytest.mark.realdata
def test_epoch_engine_cuda_graphs(benchmark, real_data, parts_on):
    benchmark.group = "epoch-cuda"
    trainer = engine_trainer(parts_on("cuda", real_data), device="cuda", cuda_graphs=True)

    def epoch():
        history = trainer.fit(TrainState()).history[-1]
        return history["train_loss"], history["train_acc"], history["test_acc"]

    result = benchmark.pedantic(epoch, rounds=15, warmup_rounds=2)
    _check(result)
    _record(benchmark, "cuda", "fmclf engine, --cuda-graphs", vs=ENGINE, detail="Trainer.fit with each training step replayed as one CUDA graph")


def test_the_hand_loop_is_the_engines_math(tiny_data):
    """What makes the comparison fair: from the same start, one epoch of each gives the same numbers."""
    parts = engine_parts(tiny_data, seed=3, verify=False)
    hand = HandLoop(parts, seed=3)  # copies the initial weights
    history = engine_trainer(parts).fit(TrainState()).history[-1]
    assert hand.epoch(1) == (history["train_loss"], history["train_acc"], history["test_acc"])
    assert torch.equal(hand.W, parts.model.W) and torch.equal(hand.b, parts.model.b)


@pytest.mark.realdata
def test_epoch_engine_cpu_one_thread(benchmark, real_data, parts_on):
    """The engine again with one intra-op thread: what torch's threads bring here (and,
    on a busy machine, cost: threads that wait for each other at every operation)."""
    benchmark.group = "epoch"
    trainer = engine_trainer(parts_on("cpu", real_data), device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = benchmark.pedantic(lambda: trainer.fit(TrainState()).history[-1], rounds=15, warmup_rounds=2)
    finally:
        torch.set_num_threads(threads)
    _check((history["train_loss"], history["train_acc"], history["test_acc"]))
    _record(benchmark, "cpu", "fmclf engine, 1 thread", vs=ENGINE, detail=f"torch.set_num_threads(1) instead of {threads}")
