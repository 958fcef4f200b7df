"""Finding, checking, caching and (last) downloading the four Fashion-MNIST files."""

from __future__ import annotations

import hashlib
import os
import pathlib
from dataclasses import dataclass

from fmclf import atomic
from fmclf.errors import DataError

from .idx import parse_idx, read_bytes

SYSTEM_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")

#: key -> (file name without .gz, dimensions, shape, MD5 of the decompressed content).
#: The MD5s are of the IDX content itself, so they hold for the published .gz
#: files and for copies recompressed by a packager alike.
FILES = {
    "train_images": ("train-images-idx3-ubyte", 3, (60000, 28, 28), "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train_labels": ("train-labels-idx1-ubyte", 1, (60000,), "9018921c3c673c538a1fc5bad174d6f9"),
    "test_images": ("t10k-images-idx3-ubyte", 3, (10000, 28, 28), "8181f5470baa50b63fa0f6fddb340f0a"),
    "test_labels": ("t10k-labels-idx1-ubyte", 1, (10000,), "15d484375f8d13e6eb1aabb0c3f46965"),
}


@dataclass
class Place:
    """One folder that may hold the files, and what to do when its copy is bad."""

    label: str
    folder: pathlib.Path
    fix: str


def cache_dir() -> pathlib.Path:
    """The user cache: ``$XDG_CACHE_HOME/fmclf/fashion-mnist`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "fmclf" / "fashion-mnist"


def places(data_root: pathlib.Path | None) -> list[Place]:
    """Where to look, in order."""
    out = []
    if data_root is not None:
        out.append(Place("--data-root", pathlib.Path(data_root).expanduser(), "Check the folder given with --data-root (or -o dataset.data_root), or leave it out to use the other places."))
    if os.environ.get("FMCLF_DATA"):
        out.append(Place("$FMCLF_DATA", pathlib.Path(os.environ["FMCLF_DATA"]).expanduser(), "Fix or unset $FMCLF_DATA."))
    cache = cache_dir()
    out.append(Place("user cache", cache, f"Delete the cache folder ({cache}) and run again; fmclf rebuilds it from another copy."))
    out.append(Place("Debian package dataset-fashion-mnist", SYSTEM_DIR, "Reinstall it: apt-get install --reinstall dataset-fashion-mnist."))
    return out


def find_files(folder: pathlib.Path) -> dict[str, pathlib.Path] | str:
    """The four files in ``folder`` (or its torchvision layout ``FashionMNIST/raw``),
    raw preferred over ``.gz``; or a short reason why they are not all there."""
    if not folder.is_dir():
        return "no such folder" if not folder.exists() else "not a folder"
    best: dict[str, pathlib.Path] | None = None
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for key, (name, *_rest) in FILES.items():
            for candidate in (sub / name, sub / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
        if best is None or len(found) > len(best):
            best = found
    missing = [FILES[k][0] for k in FILES if k not in (best or {})]
    try:
        readable = os.access(folder, os.R_OK | os.X_OK)
    except OSError:
        readable = False
    if not readable:
        return "folder not readable (permissions)"
    return "empty" if len(missing) == len(FILES) else f"missing {', '.join(missing)}"


def read_checked(key: str, path: pathlib.Path, fix: str, verify: bool) -> tuple[tuple[int, ...], memoryview, bytes]:
    """Read one file; check its header, length and (with ``verify``) shape and checksum."""
    name, ndim, shape, md5 = FILES[key]
    data = read_bytes(path, fix)
    got_shape, payload = parse_idx(data, path, fix, magic_dims=ndim)
    if verify:
        if got_shape != shape:
            raise DataError(
                f"{path}: holds {'x'.join(map(str, got_shape))} values where Fashion-MNIST's {name} holds "
                f"{'x'.join(map(str, shape))}; it is another data set's file. {fix} (For other data in this "
                f"format, pass -o dataset.verify=false.)"
            )
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != md5:
            raise DataError(
                f"{path}: its content does not match Fashion-MNIST's published checksum (MD5 {digest}, "
                f"expected {md5}): the file is damaged or is not Fashion-MNIST. {fix} (For other data in "
                f"this format, pass -o dataset.verify=false.)"
            )
    return got_shape, payload, data


def _cache_copy(files: dict[str, bytes]) -> str | None:
    """Write decompressed copies into the user cache; return a note if that failed."""
    cache = cache_dir()
    try:
        for key, data in files.items():
            atomic.write_bytes(cache / FILES[key][0], data)
    except OSError as exc:
        return f"could not write the decompressed cache in {cache} ({exc}); later runs decompress again"
    return None


def torchvision_download(root: pathlib.Path) -> None:
    """Download through torchvision into ``root/FashionMNIST/raw`` (needs the internet)."""
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(root=str(root), train=train, download=True)


def load_idx_set(data_root: pathlib.Path | None, *, download: bool = True, verify: bool = True) -> tuple[dict[str, tuple[tuple[int, ...], memoryview]], str]:
    """The four arrays as ``key -> (shape, bytes)`` and a description of where they came from."""
    tried = []
    for place in places(data_root):
        found = find_files(place.folder)
        if isinstance(found, str):
            tried.append(f"{place.label}: {place.folder} ({found})")
            continue
        return _read_all(found, place, verify)
    if download:
        root = pathlib.Path(data_root).expanduser() if data_root is not None else cache_dir()
        place = Place("torchvision download", root, f"Delete {root / 'FashionMNIST'} and run again to download afresh.")
        try:
            torchvision_download(root)
        except Exception as exc:  # noqa: BLE001 - any network or mirror failure
            tried.append(f"torchvision download into {root} (failed: {type(exc).__name__}: {exc})")
        else:
            found = find_files(root)
            if not isinstance(found, str):
                return _read_all(found, place, verify)
            tried.append(f"torchvision download into {root} (finished but {found})")
    else:
        tried.append("torchvision download (switched off by -o dataset.download=false)")
    raise DataError(
        "Fashion-MNIST was not found. Places tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
        "To fix: install Debian's copy (apt-get install dataset-fashion-mnist), or pass --data-root "
        "FOLDER holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (.gz or not), or run once with internet access so torchvision can download them."
    )


def _read_all(found: dict[str, pathlib.Path], place: Place, verify: bool):
    arrays, compressed = {}, {}
    for key, path in found.items():
        shape, payload, data = read_checked(key, path, place.fix, verify)
        arrays[key] = (shape, payload)
        if path.suffix == ".gz":
            compressed[key] = data
    source = f"{place.label}: {place.folder}"
    if compressed and verify and place.folder != cache_dir():
        note = _cache_copy(compressed)
        if note:
            source += f" ({note})"
    return arrays, source
