"""The figure fmclf draws on: a plain matplotlib ``Figure`` (no pyplot) with a ``_repr_png_``, so that a
notebook cell whose value it is shows it without ``%matplotlib inline``, and an atomic :meth:`Picture.save`."""

from __future__ import annotations

import pathlib

from matplotlib.figure import Figure

#: Pixels per inch of the picture a notebook shows: matplotlib_inline's, small enough for a committed notebook.
INLINE_DPI = 72


class Picture(Figure):
    """A figure that displays inline in Jupyter and saves as ``.png``, ``.svg`` or ``.pdf``."""

    def _repr_png_(self) -> bytes:
        from .pictures import render

        return render(self, "png", dpi=INLINE_DPI)

    def save(self, path: str | pathlib.Path, dpi: int | None = None) -> pathlib.Path:
        """Write the picture to ``path`` (atomically), in the format its extension names."""
        from . import pictures

        return pictures.save(self, path, dpi or pictures.DPI)
