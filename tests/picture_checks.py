"""Checks that a picture file is a real, non-blank image of a sensible size."""

from __future__ import annotations

import pathlib

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RED = (214, 39, 40)  # fmclf.pictures.WRONG


def load_png(path: pathlib.Path) -> np.ndarray:
    """The PNG's RGB pixels, after checking its signature and that PIL can decode it whole."""
    from PIL import Image

    data = pathlib.Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG (starts {data[:8]!r})"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def assert_picture(path: pathlib.Path, *, min_size: tuple[int, int] = (300, 200),
                   max_size: tuple[int, int] = (6000, 6000)) -> np.ndarray:
    """A valid PNG, between ``min_size`` and ``max_size`` (width, height), not blank."""
    pixels = load_png(path)
    height, width = pixels.shape[:2]
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1], f"{path}: {width}x{height}"
    assert pixels.std() > 10, f"{path} is (nearly) blank"
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path} has only {len(colours)} colours"
    return pixels


def red_pixels(pixels: np.ndarray) -> int:
    """How many pixels are the red that marks a misclassified image."""
    return int((np.abs(pixels.astype(int) - RED).sum(axis=-1) < 30).sum())
