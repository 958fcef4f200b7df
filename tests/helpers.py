"""Test helpers: tiny IDX files written through the real format, run commands."""

from __future__ import annotations

import gzip
import os
import pathlib
import random
import struct
import subprocess
import sys

NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(shape: tuple[int, ...], payload: bytes, type_code: int = 0x08) -> bytes:
    """An IDX file: magic (0, 0, type, ndim), big-endian dims, then the payload."""
    return struct.pack(">HBB", 0, type_code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + payload


def write_idx(path: pathlib.Path, shape: tuple[int, ...], payload: bytes, *, gz: bool = False) -> pathlib.Path:
    """Write an IDX file (gzip-compressed when ``gz``; the name gets .gz)."""
    data = idx_bytes(shape, payload)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_tiny_fashion(folder: pathlib.Path, *, n_train: int = 96, n_test: int = 40, side: int = 28, gz: bool = False,
                       seed: int = 0) -> pathlib.Path:
    """Four small Fashion-MNIST-shaped IDX files whose classes are learnable:
    class k lights up row band k of the image."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = [i % 10 for i in range(n)]
        rng.shuffle(labels)
        pixels = bytearray()
        for label in labels:
            img = bytearray(rng.randrange(0, 40) for _ in range(side * side))
            band = (label * side) // 10
            for r in range(band, min(band + max(side // 10, 1), side)):
                for c in range(side):
                    img[r * side + c] = 200 + rng.randrange(0, 55)
            pixels += img
        write_idx(folder / NAMES[f"{split}_images"], (n, side, side), bytes(pixels), gz=gz)
        write_idx(folder / NAMES[f"{split}_labels"], (n,), bytes(labels), gz=gz)
    return folder


def run_fmclf(*args: str, env: dict[str, str] | None = None, cwd: pathlib.Path | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``fmclf`` console script in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fmclf"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def assemble_parts(data_root: pathlib.Path, *, device: str = "cpu", verify: bool = False,
                   dataset_options: dict | None = None, **settings):
    """The components ``fmclf run`` would build (visualizer none unless given), from
    the data in ``data_root``; ``settings`` are RunConfig fields (loss, lr, batch_size...)."""
    import torch

    from fmclf.host.loading import load_plugins
    from fmclf.run.config import RunConfig
    from fmclf.run.plan import assemble, resolve

    settings.setdefault("visualizers", ["none"])
    settings.setdefault("seed", 0)
    options = {"dataset": {"data_root": str(data_root), "verify": verify, **(dataset_options or {})}}
    plan = resolve(RunConfig(device=device, options=options, **settings), load_plugins())
    return assemble(plan, device=torch.device(device))
