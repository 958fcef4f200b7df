"""The Fashion-MNIST data set, held whole on the run's device.

Where the files come from, in order: the ``data_root`` option (``--data-root``),
``$FMCLF_DATA``, the user cache, Debian's ``dataset-fashion-mnist`` package,
and last torchvision's download. The first place holding all four files is
used; a file there that is damaged is an error, not a reason to look further.
Files found compressed are decompressed once into the user cache.

:func:`load_fashion_mnist` is public, for data-set plugins built on these images
(corrupted, subsampled, relabelled): the same search and checks, as tensors.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import fmclf
from fmclf import Range
from fmclf.errors import OptionError
from fmclf.wording import option

if TYPE_CHECKING:
    import torch

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


@fmclf.hookimpl
def register_datasets(register):
    register("fashion-mnist", fashion_mnist, help="Zalando's Fashion-MNIST: 60000 train / 10000 test 28x28 grey "
                                                  "images, 10 classes")


@fmclf.batchable()  # TensorBatches: one copy of the data serves every seed of a group
def fashion_mnist(
    *,
    batch_size: int,
    device,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
    data_root: pathlib.Path | None = None,
    resize: Annotated[int, Range(max=1024)] | None = None,
    raw_pixels: bool = False,
    download: bool = True,
    verify: bool = True,
    valid: float = 0.0,
):
    """Fashion-MNIST as one float32 tensor on the device, batches sliced from a seeded permutation.

    Options:
        data_root: folder holding the four *-ubyte(.gz) files; looked at first
        resize: resize images to resize x resize pixels (bilinear, antialiased), as the textbook's resize
        raw_pixels: feed pixel values 0-255 instead of 0-1 (pushes logits up; shows the naive loss overflow)
        download: let torchvision download the files when no copy is found
        verify: check the files against Fashion-MNIST's checksums and shapes (off for other IDX data)
        valid: fraction of the training set held out for validation (0.1: 6000), stratified; the same whatever --seed
    """
    check_fashion_mnist(resize=resize, valid=valid)
    from .fashion_mnist_files import load_idx_set
    from .fashion_mnist_tensors import build_dataset

    arrays, source = load_idx_set(data_root, download=download, verify=verify)
    return build_dataset(arrays, source, CLASSES, batch_size=batch_size, device=device, seed=seed, shard=shard,
                         resize=resize, raw_pixels=raw_pixels, valid=valid)


@fmclf.checks(fashion_mnist)
def check_fashion_mnist(*, resize: int | None = None, valid: float = 0.0, verify: bool = True) -> dict:
    """Before any data is read: the options ``resize`` and ``valid``, and what the data set will have,
    for the other components' checks (its ten classes always; its image shape when the files are
    checked to be Fashion-MNIST's 28x28, or resized)."""
    if resize is not None and resize < 1:
        raise OptionError(
            f"option 'resize' of dataset 'fashion-mnist' must be at least 1 (pixels a side), got {resize}. "
            f"Leave it out to keep 28x28, or pass e.g. {option('dataset', 'resize', 64)}."
        )
    if not 0.0 <= valid < 1.0:
        raise OptionError(
            f"option 'valid' of dataset 'fashion-mnist' is the fraction of the training set held out for "
            f"validation, from 0 (none) to below 1; got {valid}. Try {option('dataset', 'valid', 0.1)}."
        )
    side = resize or 28
    return {"classes": CLASSES, **({"input_shape": (1, side, side)} if verify or resize else {})}


def preview(*, n: int, split: str, seed: int = 0, data_root: pathlib.Path | None = None, resize: int | None = None,
            raw_pixels: bool = False, download: bool = True, verify: bool = True, valid: float = 0.0):
    """The first ``n`` images of ``split`` as the data set yields them, converting only those (``fmclf show``).
    The files are found and checked exactly as for a run. With a validation split the training rows
    are chosen by the stratified split, so the set is built whole, as a run builds it."""
    check_fashion_mnist(resize=resize, valid=valid)
    if split not in ("train", "test") and not (split == "valid" and valid):
        raise OptionError(f"dataset 'fashion-mnist' has no {split!r} split"
                          + (f" unless {option('dataset', 'valid', 0.1)} (say) holds one out." if split == "valid"
                             else "."))
    if valid:
        import torch

        data = fashion_mnist(batch_size=n, device=torch.device("cpu"), seed=seed, data_root=data_root, resize=resize,
                             raw_pixels=raw_pixels, download=download, verify=verify, valid=valid)
        batches = getattr(data, split)
        batches.set_epoch(1)  # the order the first training epoch sees
        X, y = next(iter(batches))
        return X[:n], y[:n], CLASSES
    from .fashion_mnist_files import load_idx_set
    from .fashion_mnist_tensors import preview_rows

    arrays, source = load_idx_set(data_root, download=download, verify=verify)
    X, y = preview_rows(arrays, source, CLASSES, split=split, n=n, seed=seed, resize=resize, raw_pixels=raw_pixels)
    return X, y, CLASSES


fashion_mnist.preview = preview  # the data-set contract's optional light path for a few images


@dataclass(frozen=True)
class FashionMNISTTensors:
    """The four Fashion-MNIST arrays as CPU tensors of their own (writable), and where they came from."""

    train_images: torch.Tensor  #: uint8, (60000, 28, 28), pixel values 0-255
    train_labels: torch.Tensor  #: int64, (60000,), class indices into ``classes``
    test_images: torch.Tensor  #: uint8, (10000, 28, 28)
    test_labels: torch.Tensor  #: int64, (10000,)
    classes: tuple[str, ...]
    source: str  #: the folder the files were read from, and how it was found (``--data-root``, ...)


def load_fashion_mnist(data_root: str | pathlib.Path | None = None, *, download: bool = True,
                       verify: bool = True) -> FashionMNISTTensors:
    """Fashion-MNIST as tensors, found and checked exactly as the ``fashion-mnist`` data set finds them:
    ``data_root``, ``$FMCLF_DATA``, the user cache, ``/usr/share/datasets/fashion-mnist``, and last a
    download through torchvision (unless ``download`` is False). With ``verify`` the files must match
    Fashion-MNIST's checksums and shapes. Raises :class:`fmclf.errors.DataError` saying where it looked.

    A data-set plugin turns them into its batches with :mod:`fmclf.data`, for instance::

        from fmclf.data import InMemoryDataset, TensorBatches
        from fmclf_plugins.fashion_mnist import load_fashion_mnist

        t = load_fashion_mnist(data_root)
        X = t.test_images.unsqueeze(1).float().div(255)          # (N, 1, 28, 28) in 0..1, as the built-in
        test = TensorBatches(X.to(device), t.test_labels.to(device), batch_size, shuffle=False)
    """
    import torch

    from .fashion_mnist_files import load_idx_set
    from .fashion_mnist_tensors import _labels, _uint8

    root = pathlib.Path(data_root) if data_root is not None else None
    arrays, source = load_idx_set(root, download=download, verify=verify)
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        shape, payload = arrays[f"{split}_images"]
        lshape, lpayload = arrays[f"{split}_labels"]
        out[f"{split}_images"] = _uint8(payload).reshape(shape).clone()  # its own memory: the files' bytes stay
        out[f"{split}_labels"] = _labels(lshape, lpayload, slice(None), torch.device("cpu"))
    return FashionMNISTTensors(**out, classes=CLASSES, source=source)
