"""Reading IDX files (the MNIST family's format), plain or gzip-compressed.

Every way a file can be wrong — missing, unreadable, not gzip, truncated,
a foreign magic number, dimensions that do not match its length — ends in a
:class:`fmclf.errors.DataError` that names the file, says what is wrong, and
says what to do (the caller supplies that last part: it knows where the file
came from).
"""

from __future__ import annotations

import gzip
import pathlib
import struct
import zlib

from fmclf.errors import DataError

#: IDX type codes, for messages; fmclf reads unsigned bytes (0x08) only.
_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_MAX_GZ = 1 << 30  # no Fashion-MNIST file is near this; a larger one is not what we want


def read_bytes(path: pathlib.Path, fix: str) -> bytes:
    """The content of ``path``, decompressed when it ends in ``.gz``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: the file does not exist. {fix}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc}). {fix}") from None
    if path.suffix != ".gz":
        return raw
    try:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out = d.decompress(raw, _MAX_GZ)
        if d.unconsumed_tail:
            raise DataError(f"{path}: decompresses to more than {_MAX_GZ} bytes, far more than any IDX file of this data set. {fix}")
        if not d.eof:
            raise DataError(f"{path}: the gzip stream is truncated (the file ends early; a download or copy was cut short). {fix}")
        if d.unused_data and d.unused_data.strip(b"\0"):
            out += gzip.decompress(d.unused_data)  # a second gzip member, as gzip itself allows
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc}). {fix}") from None


def parse_idx(data: bytes, path: pathlib.Path, fix: str, *, magic_dims: int | None = None) -> tuple[tuple[int, ...], memoryview]:
    """Check an IDX header against the file's length; return ``(shape, payload)``.

    ``magic_dims`` is the number of dimensions expected (1 for labels, 3 for images).
    """
    if len(data) < 4:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header. {fix}")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _TYPES or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file (its first four bytes are {data[:4].hex()}, an IDX file starts "
            f"0000 then a type code and a dimension count). It is a different file under this name. {fix}"
        )
    if code != 0x08:
        raise DataError(f"{path}: holds {_TYPES[code]} values; Fashion-MNIST files hold unsigned bytes. {fix}")
    if magic_dims is not None and ndim != magic_dims:
        raise DataError(f"{path}: has {ndim} dimension(s) where {magic_dims} are expected (magic {data[:4].hex()}). Its name does not match its content. {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: the header announces {ndim} dimensions but the file ends after {len(data)} bytes. {fix}")
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
    return tuple(shape), memoryview(data)[header:]
