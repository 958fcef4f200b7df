"""The figure fmclf draws on: a matplotlib ``Figure`` that shows itself in Jupyter.

It is a plain ``Figure`` (no pyplot, see :mod:`fmclf.draw.pictures`) with two additions: a
``_repr_png_``, so a notebook cell whose value it is displays it as an image without
``%matplotlib inline``, and :meth:`Picture.save`, which writes it atomically.
"""

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
