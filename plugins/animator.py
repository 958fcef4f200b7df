"""The textbook's Animator: train loss, train acc and test acc, one point per epoch."""

from __future__ import annotations

import io
import pathlib

from fmclf import atomic


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (where the figure can be redrawn in place)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Animator:
    """Redraws in place inside Jupyter; elsewhere writes curves.png (and .svg) to the run folder."""

    LEGEND = ("train loss", "train acc", "test acc")
    FMTS = ("-", "m--", "g-.")

    def __init__(self, run_dir: pathlib.Path | None, *, svg: bool = True, ylim: tuple[float, float] = (0.3, 0.9)) -> None:
        self.run_dir = pathlib.Path(run_dir) if run_dir is not None else None
        self.svg = svg
        self.ylim = ylim
        self.epochs = 10
        self.X: list[int] = []
        self.Y: list[list[float]] = [[], [], []]
        self.jupyter = in_jupyter()
        self.fig = None

    def on_fit_start(self, event) -> None:
        self.epochs = event.epochs
        for row in event.history:  # resumed: redraw what came before
            self._add(row)

    def on_epoch_end(self, event) -> None:
        self._add(event.metrics)
        self.draw()

    def _add(self, row) -> None:
        self.X.append(row["epoch"])
        for ys, key in zip(self.Y, ("train_loss", "train_acc", "test_acc")):
            ys.append(row[key])

    def _figure(self):
        if self.fig is None:
            if self.jupyter:
                import matplotlib.pyplot as plt

                self.fig, self.ax = plt.subplots(figsize=(3.5, 2.5))
            else:  # headless-safe: no pyplot, no display needed
                from matplotlib.figure import Figure

                self.fig = Figure(figsize=(3.5, 2.5))
                self.ax = self.fig.subplots()
        return self.fig, self.ax

    def draw(self) -> None:
        fig, ax = self._figure()
        ax.cla()
        for ys, fmt in zip(self.Y, self.FMTS):
            ax.plot(self.X, ys, fmt)
        ax.set_xlabel("epoch")
        ax.set_xlim(1, max(self.epochs, 2))
        ax.set_ylim(*self.ylim)
        ax.legend(self.LEGEND)
        ax.grid()
        fig.tight_layout()
        if self.jupyter:
            from IPython import display

            display.display(fig)
            display.clear_output(wait=True)
        if self.run_dir is not None:
            self._save(fig, "png")
            if self.svg:
                self._save(fig, "svg")

    def _save(self, fig, fmt: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150)
        atomic.write_bytes(self.run_dir / f"curves.{fmt}", buf.getvalue())
