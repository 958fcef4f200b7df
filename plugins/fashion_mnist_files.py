"""Finding, checking, caching and (last) downloading the four Fashion-MNIST files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import zlib
from dataclasses import dataclass

from fmclf import atomic
from fmclf.errors import DataError
from fmclf.wording import flag, option

from .idx import gunzip, parse_idx, read_raw

SYSTEM_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")

#: key -> (file name without .gz, dimensions, shape, MD5 of the published .gz, MD5 of its content).
#: Zalando publishes the MD5 of each .gz file (github.com/zalandoresearch/fashion-mnist,
#: the same values torchvision checks). A packager who recompresses the files, as
#: Debian's dataset-fashion-mnist does, changes those bytes but not the content, so a
#: copy is also accepted when its decompressed content has the MD5 of the published
#: files decompressed (`gunzip *.gz && md5sum *` on Zalando's files gives these).
FILES = {
    "train_images": ("train-images-idx3-ubyte", 3, (60000, 28, 28), "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train_labels": ("train-labels-idx1-ubyte", 1, (60000,), "25c81989df183df01b3e8a0aad5dffbe",
                     "9018921c3c673c538a1fc5bad174d6f9"),
    "test_images": ("t10k-images-idx3-ubyte", 3, (10000, 28, 28), "bef4ecab320f06d8554ea6380940ec79",
                    "8181f5470baa50b63fa0f6fddb340f0a"),
    "test_labels": ("t10k-labels-idx1-ubyte", 1, (10000,), "bb300cfdad3c16e7a12a480ee83cd310",
                    "15d484375f8d13e6eb1aabb0c3f46965"),
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
        out.append(Place(flag("data_root"), pathlib.Path(data_root).expanduser(),
                         f"Check the folder given with {flag('data_root')} (or {option('dataset', 'data_root')}), or "
                         f"leave it out to use the other places."))
    if os.environ.get("FMCLF_DATA"):
        out.append(Place("$FMCLF_DATA", pathlib.Path(os.environ["FMCLF_DATA"]).expanduser(),
                         "Fix or unset $FMCLF_DATA."))
    cache = cache_dir()
    out.append(Place("user cache", cache, f"Delete the cache folder ({cache}) and run again; fmclf rebuilds it from "
                                          f"another copy."))
    out.append(Place("Debian package dataset-fashion-mnist", SYSTEM_DIR,
                     "Reinstall it: apt-get install --reinstall dataset-fashion-mnist."))
    return out


def find_files(folder: pathlib.Path) -> dict[str, pathlib.Path] | str:
    """The four files in ``folder`` (or its torchvision layout ``FashionMNIST/raw``),
    raw preferred over ``.gz``; or a short reason why they are not all there."""
    try:
        return _find_files(folder)
    except OSError as exc:  # a folder we may not list, a broken mount ...
        return f"cannot be read: {exc.strerror or exc}"


def _find_files(folder: pathlib.Path) -> dict[str, pathlib.Path] | str:
    if not folder.is_dir():
        return "no such folder" if not folder.exists() else "not a folder"
    if not os.access(folder, os.R_OK | os.X_OK):
        return "folder not readable (permissions)"
    best: dict[str, pathlib.Path] = {}
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for key, (name, *_rest) in FILES.items():
            for candidate in (sub / name, sub / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
        if len(found) > len(best):
            best = found
    missing = [FILES[k][0] for k in FILES if k not in best]
    return "empty" if len(missing) == len(FILES) else f"missing {', '.join(missing)}"


#: In the user cache: ``{file name: [size, CRC-32]}`` of the files whose MD5 matched Zalando's. A
#: later run that finds the same size and CRC-32 skips the MD5 (CRC-32 is some 3x faster here, and
#: as sure to catch a damaged file), saving a few tens of milliseconds a run.
STAMP = ".verified.json"


def read_stamp(folder: pathlib.Path) -> dict[str, list[int]]:
    """The cache's record of verified files ({} when there is none, or it is unreadable)."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def fingerprint(data: bytes) -> list[int]:
    """What the stamp keeps of a verified file: its size and CRC-32."""
    return [len(data), zlib.crc32(data)]


def read_checked(key: str, path: pathlib.Path, fix: str, verify: bool,
                 stamp: dict[str, list[int]] | None = None) -> tuple[tuple[int, ...], memoryview, bytes]:
    """Read one file; check its header, length and (with ``verify``) shape and checksum.
    ``stamp`` (a cache's, see :data:`STAMP`): a file whose fingerprint it holds is not checked by
    MD5 again, and one checked by MD5 now is added to it. Returns ``(shape, payload, decompressed content)``."""
    name, ndim, shape, gz_md5, md5 = FILES[key]
    raw = read_raw(path, fix)
    compressed = path.suffix == ".gz"
    data = gunzip(raw, path, fix) if compressed else raw
    got_shape, payload = parse_idx(data, path, fix, magic_dims=ndim)
    if verify:
        if got_shape != shape:
            raise DataError(
                f"{path}: holds {'x'.join(map(str, got_shape))} values where Fashion-MNIST's {name} holds "
                f"{'x'.join(map(str, shape))}; it is another data set's file. {fix} (For other data in this "
                f"format, pass {option('dataset', 'verify', False)}.)"
            )
        mark = fingerprint(data) if stamp is not None and not compressed else None
        if mark is not None and stamp.get(path.name) == mark:
            return got_shape, payload, data
        published = compressed and _md5(raw) == gz_md5  # Zalando's own .gz, byte for byte
        if not published and _md5(data) != md5:
            raise DataError(
                f"{path}: does not match Fashion-MNIST's published checksums (the MD5 of its content is "
                f"{_md5(data)}, expected {md5}{f'; of the .gz file, expected {gz_md5}' if compressed else ''}): "
                f"the file is damaged or is not Fashion-MNIST. {fix} (For other data in this format, pass "
                f"{option('dataset', 'verify', False)}.)"
            )
        if mark is not None:
            stamp[path.name] = mark
    return got_shape, payload, data


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _cache_copy(files: dict[str, bytes]) -> str | None:
    """Write decompressed copies into the user cache, with their stamp; return a note if that failed."""
    cache = cache_dir()
    try:
        for key, data in files.items():
            atomic.write_bytes(cache / FILES[key][0], data)
        atomic.write_text(cache / STAMP, json.dumps({FILES[k][0]: fingerprint(d) for k, d in files.items()}))
    except OSError as exc:
        return f"could not write the decompressed cache in {cache} ({exc}); later runs decompress again"
    return None


def torchvision_download(root: pathlib.Path) -> None:
    """Download through torchvision into ``root/FashionMNIST/raw`` (needs the internet)."""
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(root=str(root), train=train, download=True)


def load_idx_set(data_root: pathlib.Path | None, *, download: bool = True,
                 verify: bool = True) -> tuple[dict[str, tuple[tuple[int, ...], memoryview]], str]:
    """The four arrays as ``key -> (shape, bytes)`` and a description of where they came from.

    The first place holding all four files is used; a damaged file there is an
    error (naming the file and the fix), not a reason to look further.
    """
    tried: list[str] = []
    skipped: list[str] = []  # places the user named that did not hold the files
    for place in places(data_root):
        found = find_files(place.folder)
        if isinstance(found, str):
            tried.append(f"{place.label}: {place.folder} ({found})")
            if place.label.startswith(("--", "$")):
                skipped.append(tried[-1])
            continue
        return _read_all(found, place, verify, skipped)
    if download:
        root = pathlib.Path(data_root).expanduser() if data_root is not None else cache_dir()
        place = Place("torchvision download", root, f"Delete {root / 'FashionMNIST'} and run again to download afresh.")
        try:
            torchvision_download(root)
        except Exception as exc:  # noqa: BLE001 - any network or mirror failure
            why = " ".join(str(exc).split())[:400]
            tried.append(f"torchvision download into {root} (failed: {type(exc).__name__}: {why})")
        else:
            found = find_files(root)
            if not isinstance(found, str):
                return _read_all(found, place, verify, skipped)
            tried.append(f"torchvision download into {root} (finished but {found})")
    else:
        tried.append(f"torchvision download (switched off by {option('dataset', 'download', False)})")
    raise DataError(
        "Fashion-MNIST was not found. Places tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
        f"To fix: install Debian's copy (apt-get install dataset-fashion-mnist), or pass {flag('data_root', 'FOLDER')} "
        "holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (.gz or not), or run once with internet access so torchvision can download them."
    )


def _read_all(found: dict[str, pathlib.Path], place: Place, verify: bool, skipped: list[str]):
    arrays, compressed = {}, {}
    stamp = read_stamp(place.folder) if place.folder == cache_dir() and verify else None
    before = dict(stamp or {})
    for key, path in found.items():
        shape, payload, data = read_checked(key, path, place.fix, verify, stamp)
        arrays[key] = (shape, payload)
        if path.suffix == ".gz":
            compressed[key] = data
    if stamp is not None and stamp != before:  # checked by MD5 just now: the next run need not
        with contextlib.suppress(OSError):
            atomic.write_text(place.folder / STAMP, json.dumps(stamp))
    source = f"{place.label}: {place.folder}"
    if skipped:  # say so: the user named a place and got another
        source += f"; not in {'; '.join(skipped)}"
    if compressed and verify and place.folder != cache_dir():
        note = _cache_copy(compressed)
        if note:
            source += f" ({note})"
    return arrays, source
