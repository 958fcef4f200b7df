"""Reading IDX files (the MNIST family's format), plain or gzip-compressed.

Every way a file can be wrong — missing, unreadable, empty, not gzip,
truncated, a foreign magic number, dimensions that do not match its length —
ends in a :class:`fmclf.errors.DataError` that names the file, says what is
wrong, and says what to do (the caller supplies that last part, ``fix``: it
knows where the file came from).
"""

from __future__ import annotations

import pathlib
import struct
import zlib

from fmclf.errors import DataError

#: IDX type codes, for messages; fmclf reads unsigned bytes (0x08) only.
_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_MAX_GZ = 1 << 30  # no Fashion-MNIST file is near this; a larger one is not what we want
_GZIP_MAGIC = b"\x1f\x8b"


def read_raw(path: pathlib.Path, fix: str) -> bytes:
    """The bytes of ``path`` as stored (still compressed when it is a ``.gz``)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: the file does not exist. {fix}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc}). {fix}") from None
    if not raw:
        raise DataError(f"{path}: the file is empty (0 bytes); a download or copy did not finish. {fix}")
    return raw


def gunzip(raw: bytes, path: pathlib.Path, fix: str) -> bytes:
    """Decompress ``raw`` (every gzip member, as gzip itself does), at most 1 GiB."""
    if raw[:2] != _GZIP_MAGIC:
        raise DataError(
            f"{path}: not gzip-compressed although its name ends in .gz (it starts {raw[:4].hex()}, "
            f"a gzip file starts 1f8b){_looks_like(raw)}. {fix}"
        )
    out = bytearray()
    rest = raw
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            # max_length bounds the output, so a tiny "zip bomb" cannot exhaust memory
            out += d.decompress(rest, _MAX_GZ + 1 - len(out))
        except zlib.error as exc:
            raise DataError(f"{path}: the gzip data is corrupt ({exc}); the file is damaged. {fix}") from None
        if len(out) > _MAX_GZ:
            raise DataError(f"{path}: decompresses to more than {_MAX_GZ} bytes, far more than any IDX file of this "
                            f"data set. {fix}")
        if not d.eof:
            raise DataError(f"{path}: the gzip stream is truncated (the file ends early; a download or copy was cut "
                            f"short). {fix}")
        rest = d.unused_data
        if not rest.strip(b"\0"):  # the end, or zero padding after it (which gzip ignores too)
            return bytes(out)
        if rest[:2] != _GZIP_MAGIC:
            raise DataError(f"{path}: has {len(rest)} bytes of garbage after the gzip data; the file is damaged. {fix}")


def read_bytes(path: pathlib.Path, fix: str) -> bytes:
    """The content of ``path``, decompressed when its name ends in ``.gz``."""
    raw = read_raw(path, fix)
    return gunzip(raw, path, fix) if path.suffix == ".gz" else raw


def _looks_like(data: bytes) -> str:
    """A hint about what a file that is not what we expected might be instead."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "; it looks like a web page, as a failed download leaves"
    if data[:4] == b"PK\x03\x04":
        return "; it looks like a zip archive"
    if data[:2] == _GZIP_MAGIC:
        return "; it is gzip-compressed, so its name should end in .gz (or gunzip it)"
    return ""


def parse_idx(data: bytes, path: pathlib.Path, fix: str, *,
              magic_dims: int | None = None) -> tuple[tuple[int, ...], memoryview]:
    """Check an IDX header against the file's length; return ``(shape, payload)``.

    ``magic_dims`` is the number of dimensions expected (1 for labels, 3 for images).
    """
    if len(data) < 4:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header. {fix}")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _TYPES or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file (its first four bytes are {data[:4].hex()}, an IDX file starts "
            f"0000 then a type code and a dimension count){_looks_like(data)}. It is a different file "
            f"under this name. {fix}"
        )
    if code != 0x08:
        raise DataError(f"{path}: holds {_TYPES[code]} values; Fashion-MNIST files hold unsigned bytes. {fix}")
    if magic_dims is not None and ndim != magic_dims:
        raise DataError(
            f"{path}: has {ndim} dimension(s) where {magic_dims} are expected (magic {data[:4].hex()}); "
            f"its name does not match its content (label files have 1, image files 3). {fix}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: the header announces {ndim} dimensions but the file ends after {len(data)} bytes. "
                        f"{fix}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = 1
    for d in shape:
        size *= d
    if len(data) - header != size:
        state = "truncated" if len(data) - header < size else "longer than its header says"
        raise DataError(
            f"{path}: the header says {'x'.join(map(str, shape))} = {size} values but the file holds "
            f"{len(data) - header}: it is {state}. {fix}"
        )
    if size == 0:
        raise DataError(f"{path}: a well-formed IDX file of shape {'x'.join(map(str, shape))}, which holds no values. "
                        f"{fix}")
    return tuple(shape), memoryview(data)[header:]
