"""The Fashion-MNIST data set, held whole on the run's device.

Where the files come from, in order: the ``data_root`` option (``--data-root``),
``$FMCLF_DATA``, the user cache, Debian's ``dataset-fashion-mnist`` package,
and last torchvision's download. The first place holding all four files is
used; a file there that is damaged is an error, not a reason to look further.
Files found compressed are decompressed once into the user cache.
"""

from __future__ import annotations

import pathlib

import fmclf
from fmclf.errors import OptionError

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


@fmclf.hookimpl
def register_datasets(register):
    register("fashion-mnist", fashion_mnist, help="Zalando's Fashion-MNIST: 60000 train / 10000 test 28x28 grey images, 10 classes")


def fashion_mnist(
    *,
    batch_size: int,
    device,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
    data_root: pathlib.Path | None = None,
    resize: int | None = None,
    raw_pixels: bool = False,
    download: bool = True,
    verify: bool = True,
):
    """Fashion-MNIST as one float32 tensor on the device, batches sliced from a seeded permutation.

    Options:
        data_root: folder holding the four *-ubyte(.gz) files; looked at first
        resize: resize images to resize x resize pixels (bilinear, antialiased), as the textbook's resize
        raw_pixels: feed pixel values 0-255 instead of 0-1 (pushes logits up; shows the naive loss overflow)
        download: let torchvision download the files when no copy is found
        verify: check the files against Fashion-MNIST's checksums and shapes (off for other IDX data)
    """
    _check_resize(resize)
    from .fashion_mnist_files import load_idx_set
    from .fashion_mnist_tensors import build_dataset

    arrays, source = load_idx_set(data_root, download=download, verify=verify)
    return build_dataset(arrays, source, CLASSES, batch_size=batch_size, device=device, seed=seed, shard=shard, resize=resize, raw_pixels=raw_pixels)


def _check_resize(resize: int | None) -> None:
    if resize is not None and resize < 1:
        raise OptionError(
            f"option 'resize' of dataset 'fashion-mnist' must be at least 1 (pixels a side), got {resize}. "
            f"Leave it out to keep 28x28, or pass e.g. -o dataset.resize=64."
        )


def preview(*, n: int, split: str, seed: int = 0, data_root: pathlib.Path | None = None, resize: int | None = None,
            raw_pixels: bool = False, download: bool = True, verify: bool = True):
    """The first ``n`` images of ``split`` as the data set yields them, converting only those (``fmclf show``).
    The files are found and checked exactly as for a run."""
    _check_resize(resize)
    from .fashion_mnist_files import load_idx_set
    from .fashion_mnist_tensors import preview_rows

    arrays, source = load_idx_set(data_root, download=download, verify=verify)
    X, y = preview_rows(arrays, source, CLASSES, split=split, n=n, seed=seed, resize=resize, raw_pixels=raw_pixels)
    return X, y, CLASSES


fashion_mnist.preview = preview  # the data-set contract's optional light path for a few images
