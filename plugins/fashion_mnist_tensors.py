"""Turning the IDX arrays into one device-resident float32 tensor per split."""

from __future__ import annotations

import warnings

import torch

from fmclf.data import InMemoryDataset, TensorBatches, empty_dataset_tensor, stratified_split
from fmclf.data import shard as shard_rows
from fmclf.errors import DataError
from fmclf.wording import option

_BLOCK = 2048  # rows widened at a time: 6 MB of float32 for 28x28 images


def _images(shape, payload, rows, device, resize, raw_pixels) -> torch.Tensor:
    u8 = _uint8(payload).reshape(shape[0], 1, *shape[1:])[rows]
    # Widened to float32 (and scaled to [0, 1] as ToTensor does: float / 255)
    # a block of rows at a time, straight into the one tensor that is kept: the
    # bytes are moved to the device before they are widened (a quarter of the
    # traffic), and no second full-size copy exists even for a moment.
    X = empty_dataset_tensor(u8.shape, dtype=torch.float32, device=device)
    for start in range(0, len(u8), _BLOCK):
        part = u8[start : start + _BLOCK].to(device)
        if raw_pixels:
            X[start : start + _BLOCK].copy_(part)
        else:
            torch.div(part, 255.0, out=X[start : start + _BLOCK])
    del u8  # the uint8 source is not kept
    if resize is not None and tuple(X.shape[-2:]) != (resize, resize):
        X = torch.cat([
            torch.nn.functional.interpolate(chunk, size=(resize, resize), mode="bilinear", antialias=True,
                                            align_corners=False)
            for chunk in X.split(8192)
        ])
        if not raw_pixels:
            X.clamp_(0.0, 1.0)
    return X


def _uint8(payload) -> torch.Tensor:
    """A uint8 tensor over the file's bytes, without copying them (47 MB for the
    training images). The buffer is read-only; it is only ever read, so torch's
    warning about writing to it does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        return torch.frombuffer(payload, dtype=torch.uint8)


def _labels(shape, payload, rows, device) -> torch.Tensor:
    return _uint8(payload)[rows].to(device).to(torch.int64)


#: The seed of the validation split: fixed, so every run (whatever its --seed) holds out the same rows.
VALID_SEED = 0


def build_dataset(arrays, source: str, classes, *, batch_size: int, device, seed: int, shard, resize, raw_pixels,
                  valid: float = 0.0) -> InMemoryDataset:
    """Both splits on ``device`` (three with a ``valid`` fraction held out of the training
    set); with ``shard=(rank, world)`` only that rank's rows of each."""
    if shard is not None and shard[1] > 1:
        # Each rank shuffles its own shard in its own order: with one shared
        # order, rows 2i and 2i+1 would always meet in the same global batch.
        seed = (seed * 1_000_033 + shard[0]) % (2**63 - 1)
    picked = {"train": None, "test": None}  # rows of the file each split takes; None: all
    if valid:
        lshape, lpayload = arrays["train_labels"]
        picked["train"], picked["valid"] = stratified_split(_uint8(lpayload).to(torch.int64), valid, seed=VALID_SEED)
    splits = {}
    for split, chosen in picked.items():
        shape, payload = arrays[f"{'test' if split == 'test' else 'train'}_images"]
        lshape, lpayload = arrays[f"{'test' if split == 'test' else 'train'}_labels"]
        if lshape[0] != shape[0]:
            raise DataError(f"{source}: {shape[0]} {split} images but {lshape[0]} labels; the files belong to "
                            f"different data sets.")
        n = shape[0] if chosen is None else len(chosen)
        rows = shard_rows(n, shard, equal=split == "train")  # every held-out row is evaluated once
        if chosen is not None:
            rows = chosen[rows]
            if not len(rows):
                raise DataError(f"{source}: the {split} split of this shard is empty; use a larger "
                                f"{option('dataset', 'valid')} or fewer processes.")
        X = _images(shape, payload, rows, device, resize, raw_pixels)
        y = _labels(lshape, lpayload, rows, device)
        if len(y) and int(y.max()) >= len(classes):
            raise DataError(f"{source}: a {split} label is {int(y.max())}, but there are only {len(classes)} classes.")
        splits[split] = TensorBatches(X, y, batch_size, shuffle=split == "train", seed=seed)
    return InMemoryDataset(splits["train"], splits["test"], classes, tuple(splits["train"].X.shape[1:]), source,
                           valid=splits.get("valid"))


def preview_rows(arrays, source: str, classes, *, split: str, n: int, seed: int, resize, raw_pixels):
    """The first ``n`` examples of ``split`` exactly as a run's data set yields them (the training
    split in the order of epoch 1 with ``seed``), converting only those rows: what ``fmclf show``
    draws, without building the whole set. Returns ``(X, y)`` on the CPU."""
    shape, payload = arrays[f"{split}_images"]
    lshape, lpayload = arrays[f"{split}_labels"]
    if lshape[0] != shape[0]:
        raise DataError(f"{source}: {shape[0]} {split} images but {lshape[0]} labels; the files belong to different "
                        f"data sets.")
    labels = _uint8(lpayload).to(torch.int64)
    if split == "train":  # the permutation TensorBatches draws, over a stand-in with no pixels
        order = TensorBatches(torch.empty((shape[0], 0)), labels, 1, shuffle=True, seed=seed)
        order.set_epoch(1)
        rows = order.order()[:n]
    else:
        rows = torch.arange(min(n, shape[0]))
    y = labels[rows]
    if len(y) and int(y.max()) >= len(classes):
        raise DataError(f"{source}: a {split} label is {int(y.max())}, but there are only {len(classes)} classes.")
    return _images(shape, payload, rows, torch.device("cpu"), resize, raw_pixels), y
