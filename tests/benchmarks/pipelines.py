"""The ways of running one epoch that the ``epoch`` benchmarks compare.

An epoch is what the textbook's ``train_ch3`` does per epoch: one pass of
minibatch SGD over the 60000 training images, then the accuracy on the 10000
test images.

- :class:`Textbook`: *Dive into Deep Learning* ch. 3 as written: torchvision's
  ``FashionMNIST`` with a per-item ``ToTensor``, ``DataLoader(num_workers=4)``,
  ``softmax(X @ W + b)`` with W stored (784, 10), the naive cross-entropy,
  ``d2l.sgd`` and a ``float(...)`` per batch for the metrics.
- :func:`engine_trainer`: fmclf's own loop (``Trainer.fit``) on the built-in
  components, as ``fmclf run --model scratch --loss fused --updater sgd
  --visualizer none`` assembles them.
- :func:`plain_loops`: the reference, the plain torch loop of
  :mod:`plain_loop` (``F.linear`` + ``F.cross_entropy``, the textbook's SGD,
  metrics summed on the device) and its numpy twin with the analytic
  gradient, on the same tensors the engine trains on.
"""

from __future__ import annotations

import gzip
import pathlib
import shutil

import torch

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def torchvision_root(source: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """A root torchvision's ``FashionMNIST`` reads without downloading:
    ``dest/FashionMNIST/raw/`` holding the four files, decompressed."""
    raw = dest / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = raw / name
        if target.exists():
            continue
        if (source / name).exists():
            shutil.copyfile(source / name, target)
        else:
            with gzip.open(source / f"{name}.gz", "rb") as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return dest


class Textbook:
    """d2l ch. 3 softmax regression from scratch, one ``epoch()`` at a time.

    ``subset`` keeps the first rows of each split (for the untimed pass of the
    normal test run, which only checks that the pipeline still works). On a
    GPU each batch is moved to the device as d2l's later chapters do.
    """

    def __init__(self, root: pathlib.Path, *, device: str = "cpu", batch_size: int = 256, lr: float = 0.1,
                 workers: int = 4, subset: tuple[int, int] | None = None, seed: int = 0) -> None:
        from torch.utils import data
        from torchvision import datasets, transforms

        trans = transforms.ToTensor()
        train = datasets.FashionMNIST(root=str(root), train=True, transform=trans, download=False)
        test = datasets.FashionMNIST(root=str(root), train=False, transform=trans, download=False)
        if subset is not None:
            train = data.Subset(train, range(subset[0]))
            test = data.Subset(test, range(subset[1]))
        self.train_iter = data.DataLoader(train, batch_size, shuffle=True, num_workers=workers)
        self.test_iter = data.DataLoader(test, batch_size, shuffle=False, num_workers=workers)
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.W = torch.normal(0, 0.01, size=(784, 10), device=self.device, requires_grad=True)
        self.b = torch.zeros(10, device=self.device, requires_grad=True)
        self.lr = lr

    # The textbook's functions, as it writes them.
    @staticmethod
    def softmax(X):
        X_exp = torch.exp(X)
        partition = X_exp.sum(1, keepdim=True)
        return X_exp / partition

    def net(self, X):
        return self.softmax(torch.matmul(X.reshape((-1, self.W.shape[0])), self.W) + self.b)

    @staticmethod
    def cross_entropy(y_hat, y):
        return -torch.log(y_hat[range(len(y_hat)), y])

    @staticmethod
    def accuracy(y_hat, y):
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        cmp = y_hat.type(y.dtype) == y
        return float(cmp.type(y.dtype).sum())

    def sgd(self, batch_size):
        with torch.no_grad():
            for param in (self.W, self.b):
                param -= self.lr * param.grad / batch_size
                param.grad.zero_()

    def epoch(self) -> tuple[float, float, float]:
        """``train_epoch_ch3`` then ``evaluate_accuracy``: (train loss, train acc, test acc)."""
        loss_sum = correct = n = 0.0
        for X, y in self.train_iter:
            X, y = X.to(self.device), y.to(self.device)
            y_hat = self.net(X)
            l = self.cross_entropy(y_hat, y)  # noqa: E741 - train_epoch_ch3's own name, kept as the book has it
            l.sum().backward()
            self.sgd(X.shape[0])
            loss_sum, correct, n = loss_sum + float(l.sum()), correct + self.accuracy(y_hat, y), n + y.numel()
        right = total = 0.0
        with torch.no_grad():
            for X, y in self.test_iter:
                X, y = X.to(self.device), y.to(self.device)
                right, total = right + self.accuracy(self.net(X), y), total + y.numel()
        return loss_sum / n, correct / n, right / total


def engine_parts(data_root: pathlib.Path, *, device: str = "cpu", seed: int = 0, verify: bool = True):
    """The components ``fmclf run --model scratch --loss fused --updater sgd --visualizer none`` builds."""
    from helpers import assemble_parts

    return assemble_parts(data_root, device=device, seed=seed, verify=verify, model="scratch", loss="fused",
                          updater="sgd")


def engine_trainer(parts, *, device: str = "cpu", **options):
    """A Trainer for one epoch; ``trainer.fit(TrainState())`` runs it (train + test)."""
    from fmclf.train.engine import Trainer

    return Trainer(parts, device=torch.device(device), epochs=1, **options)


def plain_loops(parts, *, seed: int = 0):
    """The reference loops of :mod:`plain_loop` on the same tensors the engine trains on:
    ``(torch loop, numpy loop)``, each with its own weights."""
    from plain_loop import PlainNumpy, PlainTorch

    train, test = parts.dataset.train, parts.dataset.test
    flat = [t.reshape(len(t), -1) if t.is_floating_point() else t for t in (train.X, train.y, test.X, test.y)]
    cpu = [t.cpu().numpy() for t in flat] if flat[0].device.type == "cpu" else None
    return PlainTorch(*flat, seed=seed), (PlainNumpy(*cpu, seed=seed) if cpu is not None else None)
