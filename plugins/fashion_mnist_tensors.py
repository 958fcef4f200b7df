"""Turning the IDX arrays into one device-resident float32 tensor per split."""

from __future__ import annotations

import torch

from fmclf.data import InMemoryDataset, TensorBatches, shard as shard_rows
from fmclf.errors import DataError


def _images(shape, payload, rows, device, resize, raw_pixels) -> torch.Tensor:
    u8 = torch.frombuffer(bytearray(payload), dtype=torch.uint8).reshape(shape[0], 1, *shape[1:])[rows]
    # Move the bytes, then widen on the device: a quarter of the traffic of moving floats.
    X = u8.to(device).to(torch.float32).contiguous()
    del u8  # the uint8 source is not kept
    if not raw_pixels:
        X.div_(255.0)
    if resize is not None and tuple(X.shape[-2:]) != (resize, resize):
        X = torch.cat([
            torch.nn.functional.interpolate(chunk, size=(resize, resize), mode="bilinear", antialias=True, align_corners=False)
            for chunk in X.split(8192)
        ])
        if not raw_pixels:
            X.clamp_(0.0, 1.0)
    return X


def _labels(shape, payload, rows, device) -> torch.Tensor:
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8)[rows].to(device).to(torch.int64)


def build_dataset(arrays, source: str, classes, *, batch_size: int, device, seed: int, shard, resize, raw_pixels) -> InMemoryDataset:
    """Both splits on ``device``; with ``shard=(rank, world)`` only that rank's rows."""
    splits = {}
    for split in ("train", "test"):
        shape, payload = arrays[f"{split}_images"]
        lshape, lpayload = arrays[f"{split}_labels"]
        if lshape[0] != shape[0]:
            raise DataError(f"{source}: {shape[0]} {split} images but {lshape[0]} labels; the files belong to different data sets.")
        rows = shard_rows(shape[0], shard, equal=split == "train")  # every test row is evaluated once
        X = _images(shape, payload, rows, device, resize, raw_pixels)
        y = _labels(lshape, lpayload, rows, device)
        if len(y) and int(y.max()) >= len(classes):
            raise DataError(f"{source}: a {split} label is {int(y.max())}, but there are only {len(classes)} classes.")
        splits[split] = TensorBatches(X, y, batch_size, shuffle=split == "train", seed=seed)
    return InMemoryDataset(splits["train"], splits["test"], classes, tuple(splits["train"].X.shape[1:]), source)
