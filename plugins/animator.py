"""The textbook's Animator: train loss, train acc and test acc, one point per epoch."""

from __future__ import annotations

import pathlib

from fmclf import atomic
from fmclf.draw import pictures
from fmclf.interactive import in_jupyter
from fmclf.run import folder


class Animator:
    """Redraws in place inside Jupyter; writes curves.png (and .svg) to the run folder
    after every epoch, atomically, so the file can be watched while a run trains.

    The textbook shows each frame with ``display`` and ``clear_output(wait=True)``.
    That clears the whole cell, so the epoch lines printed between frames vanish and
    the last frame is wiped by the first line printed after it. Here the figure is
    displayed once with a display id and each epoch *updates* that output in place:
    the same live picture, and everything else the cell prints stays.
    """

    def __init__(self, run_dir: pathlib.Path | None, *, svg: bool = True,
                 ylim: tuple[float, float] = pictures.TEXTBOOK_YLIM) -> None:
        self.run_dir = pathlib.Path(run_dir) if run_dir is not None else None
        self.svg = svg
        self.ylim = ylim
        self.epochs = 10
        self.X: list[int] = []
        self.Y: list[list[float]] = [[] for _ in pictures.CURVE_KEYS]
        self.jupyter = in_jupyter()
        self.fig = self.ax = None
        self._handle = None  # the notebook output this animator updates

    def on_fit_start(self, event) -> None:
        self.epochs = event.epochs
        for row in event.history:  # resumed: redraw what came before
            self._add(row)
        if event.history:
            self.draw()

    def on_epoch_end(self, event) -> None:
        self._add(event.metrics)
        self.draw()

    def _add(self, row) -> None:
        self.X.append(row["epoch"])
        for ys, key in zip(self.Y, pictures.CURVE_KEYS):
            ys.append(row[key])

    def draw(self) -> None:
        """Redraw the curves; show them in the notebook and/or write the files."""
        if self.fig is None:
            self.fig = pictures.new_figure(3.5, 2.5)  # the textbook's figsize
            self.ax = self.fig.subplots()
        pictures.draw_curves(self.ax, self.X, self.Y, epochs=self.epochs, ylim=self.ylim)
        svg = pictures.render(self.fig, "svg") if (self.jupyter or self.svg) else None
        if self.jupyter:
            self._show(svg)
        if self.run_dir is not None:
            atomic.write_bytes(self.run_dir / folder.CURVES, pictures.render(self.fig, "png"))
            if self.svg:
                atomic.write_bytes(self.run_dir / folder.CURVES_SVG, svg)

    def _show(self, svg: bytes) -> None:
        from IPython import display

        picture = display.SVG(svg)  # SVG as the textbook's use_svg_display(): sharp at any zoom
        if self._handle is None:
            self._handle = display.display(picture, display_id=True)
        else:
            self._handle.update(picture)
