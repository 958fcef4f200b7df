"""Fuzzing the IDX reader: random bytes, truncated and damaged .gz files give
either the right array or a clear DataError naming the file — nothing else."""

from __future__ import annotations

import gzip
import itertools
import pathlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmclf.errors import DataError
from fmclf_plugins.idx import parse_idx, read_bytes

from helpers import idx_bytes

FIX = "FIX-HINT"
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD = idx_bytes((3, 4, 4), bytes(range(48)))
GOOD_GZ = gzip.compress(GOOD, mtime=0)
_count = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("fuzz")


def outcome(folder: pathlib.Path, name: str, data: bytes, dims: int | None = None):
    """Read ``data`` as a file called ``name``: ``(shape, payload)``, or the DataError.
    Any other exception escapes and fails the test."""
    path = folder / f"{next(_count)}-{name}"
    path.write_bytes(data)
    try:
        shape, payload = parse_idx(read_bytes(path, FIX), path, FIX, magic_dims=dims)
    except DataError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and FIX in message, message
        assert "\n" not in message
        return exc
    finally:
        path.unlink()
    size = 1
    for d in shape:
        size *= d
    assert len(payload) == size > 0
    return shape, bytes(payload)


@FUZZ
@given(data=st.binary(max_size=400), gz=st.booleans(), dims=st.sampled_from([None, 1, 3]))
def test_random_bytes(folder, data, gz, dims):
    outcome(folder, "x.gz" if gz else "x", data, dims)


@FUZZ
@given(header=st.tuples(st.integers(0, 3), st.sampled_from([0x08, 0x09, 0x0D, 0x42]), st.integers(0, 4)),
       dims=st.lists(st.integers(0, 6), max_size=4), extra=st.integers(-8, 8), gz=st.booleans())
def test_plausible_headers_with_wrong_lengths(folder, header, dims, extra, gz):
    """Near-IDX files: right-looking magic, random dimensions, a payload a little off."""
    zero, code, ndim = header
    size = 1
    for d in dims[:ndim]:
        size *= d
    payload = bytes(max(size + extra, 0))
    data = struct.pack(">HBB", zero, code, ndim) + struct.pack(f">{len(dims)}I", *dims) + payload
    result = outcome(folder, "x.gz" if gz else "x", gzip.compress(data) if gz else data)
    if not isinstance(result, DataError):  # accepted only when header and length agree
        assert (zero, code) == (0, 0x08) and len(result[0]) == ndim
        if ndim == len(dims):
            assert result[0] == tuple(dims) and extra == 0


@FUZZ
@given(cut=st.integers(0, len(GOOD_GZ) - 1))
def test_every_truncated_gz_is_refused(folder, cut):
    result = outcome(folder, "x.gz", GOOD_GZ[:cut])
    assert isinstance(result, DataError)


@FUZZ
@given(cut=st.integers(0, len(GOOD) - 1), gz=st.booleans())
def test_every_truncated_idx_is_refused(folder, cut, gz):
    data = GOOD[:cut]
    result = outcome(folder, "x.gz" if gz else "x", gzip.compress(data) if gz else data)
    assert isinstance(result, DataError)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, len(GOOD_GZ) - 1), st.integers(1, 255)), min_size=1, max_size=3))
def test_damaged_gz_is_refused_or_read_intact(folder, flips):
    """A damaged .gz either fails, or (damage in a header field gzip ignores) reads the very same content."""
    data = bytearray(GOOD_GZ)
    for at, mask in flips:
        data[at] ^= mask
    result = outcome(folder, "x.gz", bytes(data))
    if not isinstance(result, DataError):
        assert result == ((3, 4, 4), GOOD[16:])
