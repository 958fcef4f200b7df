"""A third-party-style plugin written against fmclf's public API alone, as a plugin author would
write it from the docs: a plateau callback that lowers the learning rate through
``event.control``, a corrupted Fashion-MNIST built on the public loader, and an updater that
returns ``(optimizer, scheduler)``.

Loaded like any plugin: ``fmclf -p authors_plugin run ...`` (with this folder on PYTHONPATH),
or ``fmclf.fit(..., plugins=[authors_plugin])``.
"""

from __future__ import annotations

import pathlib
from typing import Annotated

import fmclf
from fmclf import Range


@fmclf.hookimpl
def register_callbacks(register):
    register("plateau", Plateau, help="multiplies the learning rate by factor when a metric stops improving")
    register("halve", Halve, help="halves the learning rate after every epoch")
    register("set-lr-at", SetLrAt, help="sets the learning rate to value after epoch at")


@fmclf.hookimpl
def register_datasets(register):
    register("corrupted-fashion-mnist", corrupted, help="Fashion-MNIST with seeded Gaussian noise on its images")


@fmclf.hookimpl
def register_updaters(register):
    register("sgd-cosine", sgd_cosine, help="torch.optim.SGD with a cosine schedule over the run, per batch")


class Plateau:
    """Scale the rate by ``factor`` when ``monitor`` has not fallen by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, *, monitor: str = "train_loss", factor: Annotated[float, Range(0, 1, min_open=True)] = 0.5,
                 patience: int = 1, min_delta: float = 0.0) -> None:
        self.monitor, self.factor, self.patience, self.min_delta = monitor, factor, patience, min_delta
        self.best: float | None = None
        self.waited = 0

    def on_epoch_end(self, event) -> None:
        value = event.metrics[self.monitor]
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            event.control.scale_lr(self.factor)
            self.waited = 0

    def state_dict(self) -> dict:
        return {"best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.waited = state["best"], state["waited"]


class Halve:
    """After every epoch, half the rate."""

    def on_epoch_end(self, event) -> None:
        event.control.scale_lr(0.5)


class SetLrAt:
    """After epoch ``at``, set the rate to ``value``; with ``when`` another event, try it there."""

    def __init__(self, *, at: int = 1, value: float = 0.01, when: str = "on_epoch_end") -> None:
        self.at, self.value = at, value
        setattr(self, when, self._maybe)

    def _maybe(self, event) -> None:
        if getattr(event, "epoch", self.at) == self.at:
            event.control.set_lr(self.value)


def corrupted(*, batch_size: int, device, seed: int = 0, data_root: pathlib.Path | None = None,
              severity: Annotated[float, Range(0)] = 0.5, verify: bool = True):
    """Fashion-MNIST through the public loader, with Gaussian noise of std ``severity`` (pixels 0-1)
    drawn from a fixed seed, so every run sees the same corrupted images.

    Options:
        data_root: folder holding the four Fashion-MNIST files
        severity: the noise's standard deviation, in pixel values from 0 to 1
        verify: check the files against Fashion-MNIST's checksums (off for other IDX files)
    """
    import torch

    from fmclf.data import InMemoryDataset, TensorBatches
    from fmclf_plugins.fashion_mnist import load_fashion_mnist

    t = load_fashion_mnist(data_root, download=False, verify=verify)
    noise = torch.Generator().manual_seed(1234)

    def images(raw: torch.Tensor) -> torch.Tensor:
        X = raw.unsqueeze(1).float().div(255)
        return (X + severity * torch.randn(X.shape, generator=noise)).clamp(0, 1).to(device)

    train = TensorBatches(images(t.train_images), t.train_labels.to(device), batch_size, shuffle=True, seed=seed)
    test = TensorBatches(images(t.test_images), t.test_labels.to(device), batch_size, shuffle=False)
    return InMemoryDataset(train, test, t.classes, tuple(train.X.shape[1:]), f"{t.source}, noise {severity}")


def sgd_cosine(*, params, lr: float, epochs: int, steps_per_epoch: int):
    """torch.optim.SGD whose rate falls along a cosine to 0 over the run's steps (torch's CosineAnnealingLR)."""
    import torch

    optimizer = torch.optim.SGD(params, lr=lr)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
