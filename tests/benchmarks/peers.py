"""The job done with PyTorch Lightning and with Keras 3 (torch backend), as their users would write it.

Softmax regression on Fashion-MNIST, batch 256, SGD with lr 0.1, the
training loss and accuracy of each epoch and the test accuracy after it;
the data read from the four raw IDX files (as :mod:`plain_loop` reads them).

- Lightning: a ``LightningModule`` around ``nn.Linear(784, 10)`` with
  ``F.cross_entropy``, ``TensorDataset`` + ``DataLoader(shuffle=True)``,
  ``Trainer(enable_progress_bar=False, logger=False, enable_checkpointing=False,
  enable_model_summary=False)``, the test set as its validation loader.
- Keras: ``Sequential([Input((784,)), Dense(10)])``, ``SGD(0.1)``,
  ``SparseCategoricalCrossentropy(from_logits=True)``, ``fit(..., verbose=0)``
  with the test set as ``validation_data``.

``tox -e peers`` installs both; as scripts (what ``whole_runs.py --peers`` times)::

    python tests/benchmarks/peers.py lightning FOLDER --epochs 12
    python tests/benchmarks/peers.py keras FOLDER --epochs 12
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from plain_loop import numpy_arrays, torch_tensors  # noqa: E402


def lightning_run(folder: pathlib.Path, epochs: int, *, batch_size: int = 256, lr: float = 0.1, seed: int = 0,
                  echo=print) -> list[float]:
    """Train with PyTorch Lightning; returns the seconds of each epoch (train + validation)."""
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    pl.seed_everything(seed, verbose=False)
    X, y, Xt, yt = torch_tensors(folder)

    class Softmax(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(784, 10)

        def training_step(self, batch, _):
            xb, yb = batch
            logits = self.net(xb)
            loss = F.cross_entropy(logits, yb)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            self.log("train_acc", (logits.argmax(dim=1) == yb).float().mean(), on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch, _):
            xb, yb = batch
            self.log("test_acc", (self.net(xb).argmax(dim=1) == yb).float().mean(), on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr)

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.start = 0.0

        def on_train_epoch_start(self, trainer, module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:  # after the epoch's validation
            self.seconds.append(time.perf_counter() - self.start)
            m = trainer.callback_metrics
            echo(f"epoch {len(self.seconds)}  train loss {float(m.get('train_loss', float('nan'))):.4f}  "
                 f"train acc {float(m.get('train_acc', float('nan'))):.4f}  test acc {float(m['test_acc']):.4f}  "
                 f"({self.seconds[-1]:.3f} s)")

    clock = Clock()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[clock])
    train = DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True)
    test = DataLoader(TensorDataset(Xt, yt), batch_size=batch_size)
    trainer.fit(Softmax(), train, test)
    return clock.seconds


def keras_run(folder: pathlib.Path, epochs: int, *, batch_size: int = 256, lr: float = 0.1, seed: int = 0,
              echo=print) -> list[float]:
    """Train with Keras 3 on its torch backend; returns the seconds of each epoch (train + validation)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(seed)
    X, y, Xt, yt = numpy_arrays(folder)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.start = 0.0

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(time.perf_counter() - self.start)
            logs = logs or {}
            echo(f"epoch {epoch + 1}  train loss {logs.get('loss', float('nan')):.4f}  "
                 f"train acc {logs.get('accuracy', float('nan')):.4f}  test acc {logs.get('val_accuracy', 0):.4f}  "
                 f"({self.seconds[-1]:.3f} s)")

    clock = Clock()
    model.fit(X, y, batch_size=batch_size, epochs=epochs, validation_data=(Xt, yt), shuffle=True, verbose=0,
              callbacks=[clock])
    return clock.seconds


RUNS = {"lightning": lightning_run, "keras": keras_run}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(RUNS))
    parser.add_argument("folder", type=pathlib.Path, help="folder with the four raw IDX files")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    RUNS[args.kind](args.folder, args.epochs)


if __name__ == "__main__":
    main()
