"""The plain loops fmclf is measured against: the same job with no framework.

The job is the default ``fmclf run``'s: softmax regression on Fashion-MNIST,
batch 256, lr 0.1, the textbook's minibatch SGD, the training loss and
accuracy of every epoch and the test accuracy after it.

- :class:`PlainTorch`: what someone who knows torch writes by hand. The whole
  set as one float32 tensor, a fresh permutation each epoch and one
  ``index_select`` per batch, ``F.linear`` + ``F.cross_entropy(reduction="sum")``,
  ``p -= lr * p.grad / n``, the loss and correct count summed on the device
  and read once an epoch, the test accuracy at the training batch size.
- :class:`PlainNumpy`: the same in numpy with the analytic gradient
  ``X^T (softmax - onehot) / n``: no autograd, no dispatch; the floor of what
  Python can do with these two matrix products a batch.

Both read the four raw (decompressed) IDX files from a folder, as fmclf reads
its cache, without checksums. Run as a script, each is one whole process, the
unit ``tests/benchmarks/whole_runs.py`` times::

    python tests/benchmarks/plain_loop.py torch FOLDER --epochs 12 [--threads N] [--out model.pt]
    python tests/benchmarks/plain_loop.py numpy FOLDER --epochs 12
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(folder: pathlib.Path) -> list[bytes]:
    """The payloads of the four files (IDX header skipped: 16 bytes for images, 8 for labels)."""
    return [(folder / name).read_bytes()[16 if "images" in name else 8 :] for name in NAMES]


class PlainTorch:
    """The plain torch loop over tensors already loaded: ``X`` (N, 784) float32 in [0, 1], ``y`` int64."""

    def __init__(self, X, y, Xt, yt, *, batch_size: int = 256, lr: float = 0.1, seed: int = 0, order=None) -> None:
        import torch

        torch.manual_seed(seed)
        self.X, self.y, self.Xt, self.yt = X, y, Xt, yt
        dev = X.device
        self.W = torch.normal(0, 0.01, size=(10, X.shape[1]), device=dev).requires_grad_()
        self.b = torch.zeros(10, device=dev, requires_grad=True)
        self.batch_size, self.lr = batch_size, lr
        #: the epoch's permutation; by default torch.randperm (tests pass the engine's, to compare the numbers)
        self.order = order or (lambda: torch.randperm(len(X), device=dev))

    def epoch(self) -> tuple[float, float, float]:
        """One epoch: (train loss, train acc, test acc)."""
        import torch
        import torch.nn.functional as F

        X, y, Xt, yt, W, b, B, lr = self.X, self.y, self.Xt, self.yt, self.W, self.b, self.batch_size, self.lr
        dev, n = X.device, len(X)
        perm = self.order()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for i in range(0, n, B):
            idx = perm[i : i + B]
            xb, yb = X.index_select(0, idx), y.index_select(0, idx)
            logits = F.linear(xb, W, b)
            loss = F.cross_entropy(logits, yb, reduction="sum")
            loss.backward()
            with torch.no_grad():
                for p in (W, b):
                    p -= lr * p.grad / len(yb)
                    p.grad.zero_()
            loss_sum += loss.detach()
            correct += (logits.argmax(dim=1) == yb).sum()
        right = torch.zeros((), dtype=torch.int64, device=dev)
        with torch.no_grad():
            for i in range(0, len(Xt), B):
                right += (F.linear(Xt[i : i + B], W, b).argmax(dim=1) == yt[i : i + B]).sum()
        return float(loss_sum) / n, int(correct) / n, int(right) / len(Xt)


class PlainNumpy:
    """The same in numpy with the analytic gradient; arrays as :class:`PlainTorch` takes them."""

    def __init__(self, X, y, Xt, yt, *, batch_size: int = 256, lr: float = 0.1, seed: int = 0, order=None) -> None:
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.X, self.y, self.Xt, self.yt = X, y, Xt, yt
        self.W = self.rng.normal(0, 0.01, size=(X.shape[1], 10)).astype(np.float32)
        self.b = np.zeros(10, dtype=np.float32)
        self.batch_size, self.lr = batch_size, lr
        self.order = order or (lambda: self.rng.permutation(len(X)))

    def epoch(self) -> tuple[float, float, float]:
        """One epoch: (train loss, train acc, test acc)."""
        import numpy as np

        X, y, Xt, yt, W, b, B = self.X, self.y, self.Xt, self.yt, self.W, self.b, self.batch_size
        n = len(X)
        perm = self.order()
        loss_sum, correct = 0.0, 0
        for i in range(0, n, B):
            idx = perm[i : i + B]
            xb, yb = X[idx], y[idx]
            rows = np.arange(len(yb))
            logits = xb @ W + b
            z = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1, keepdims=True)
            loss_sum += float(np.log(s[:, 0]).sum() - z[rows, yb].sum())
            correct += int((logits.argmax(axis=1) == yb).sum())
            g = e / s
            g[rows, yb] -= 1
            g *= np.float32(self.lr / len(yb))
            W -= xb.T @ g
            b -= g.sum(axis=0)
        right = sum(int(((Xt[i : i + B] @ W + b).argmax(axis=1) == yt[i : i + B]).sum()) for i in range(0, len(Xt), B))
        return loss_sum / n, correct / n, right / len(Xt)


def torch_tensors(folder: pathlib.Path, device: str = "cpu"):
    """The four files as the plain torch loop holds them: (X, y, Xt, yt) on ``device``."""
    import torch

    raw = read_idx(folder)
    dev = torch.device(device)

    def images(data: bytes):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(-1, 784).to(dev).float().div_(255)

    def labels(data: bytes):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev).long()

    return images(raw[0]), labels(raw[1]), images(raw[2]), labels(raw[3])


def numpy_arrays(folder: pathlib.Path):
    """The four files as numpy arrays: (X, y, Xt, yt)."""
    import numpy as np

    raw = read_idx(folder)

    def images(data: bytes):
        return np.frombuffer(data, dtype=np.uint8).reshape(-1, 784).astype(np.float32) / np.float32(255)

    return images(raw[0]), np.frombuffer(raw[1], dtype=np.uint8).astype(np.int64), images(raw[2]), \
        np.frombuffer(raw[3], dtype=np.uint8).astype(np.int64)


def train(loop, epochs: int, echo=print) -> list[tuple[float, float, float]]:
    """Run ``epochs`` epochs of ``loop``, printing a line each."""
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        row = loop.epoch()
        history.append(row)
        echo(f"epoch {epoch}  train loss {row[0]:.4f}  train acc {row[1]:.4f}  test acc {row[2]:.4f}  "
             f"({time.perf_counter() - start:.3f} s)")
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("torch", "numpy"))
    parser.add_argument("folder", type=pathlib.Path, help="folder with the four raw IDX files")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (torch only)")
    parser.add_argument("--device", default="cpu", help="torch only")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="save the final weights here (torch only)")
    args = parser.parse_args(argv)
    if args.kind == "numpy":
        train(PlainNumpy(*numpy_arrays(args.folder)), args.epochs)
        return
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    loop = PlainTorch(*torch_tensors(args.folder, args.device))
    train(loop, args.epochs)
    if args.out is not None:
        torch.save({"W": loop.W.detach().t(), "b": loop.b.detach()}, args.out)


if __name__ == "__main__":
    sys.exit(main())
