"""The IDX reader on tiny files the tests write, raw and gzip-compressed."""

from __future__ import annotations

import pytest

from fmclf.errors import DataError
from fmclf_plugins.idx import parse_idx, read_bytes

from helpers import write_idx


@pytest.mark.parametrize("gz", [False, True])
def test_reads_images_and_labels(tmp_path, gz):
    pixels = bytes(range(2 * 3 * 4))
    images = write_idx(tmp_path / "imgs", (2, 3, 4), pixels, gz=gz)
    labels = write_idx(tmp_path / "labels", (2,), bytes([7, 1]), gz=gz)
    shape, payload = parse_idx(read_bytes(images, "fix"), images, "fix", magic_dims=3)
    assert shape == (2, 3, 4) and bytes(payload) == pixels
    shape, payload = parse_idx(read_bytes(labels, "fix"), labels, "fix", magic_dims=1)
    assert shape == (2,) and list(payload) == [7, 1]


def test_wrong_dimension_count_names_the_file(tmp_path):
    path = write_idx(tmp_path / "labels", (2, 2), bytes(4))
    with pytest.raises(DataError) as info:
        parse_idx(read_bytes(path, "Do X."), path, "Do X.", magic_dims=1)
    assert str(path) in str(info.value) and "Do X." in str(info.value)


def test_length_must_match_the_header(tmp_path):
    path = write_idx(tmp_path / "imgs", (3, 2, 2), bytes(11))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(read_bytes(path, ""), path, "", magic_dims=3)
