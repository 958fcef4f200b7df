"""Every way an IDX file can be wrong ends in one DataError that names the file,
says what is wrong and what to do."""

from __future__ import annotations

import gzip
import hashlib
import pathlib

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.errors import DataError
from fmclf_plugins import fashion_mnist_files as files
from fmclf_plugins.idx import parse_idx, read_bytes

from helpers import idx_bytes

FIX = "Do the thing that fixes it."
LABELS = idx_bytes((5,), bytes([1, 2, 3, 4, 5]))


def read(path: pathlib.Path, *, dims: int | None = 1):
    return parse_idx(read_bytes(path, FIX), path, FIX, magic_dims=dims)


def fails(path: pathlib.Path, *words: str, dims: int | None = 1) -> str:
    with pytest.raises(DataError) as info:
        read(path, dims=dims)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and message.rstrip().endswith(FIX), message
    for word in words:
        assert word in message
    return message


def write(tmp_path: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_good_file_plain_and_gzipped(tmp_path):
    for path in (write(tmp_path, "l", LABELS), write(tmp_path, "l.gz", gzip.compress(LABELS))):
        shape, payload = read(path)
        assert shape == (5,) and bytes(payload) == bytes([1, 2, 3, 4, 5])


def test_two_gzip_members_and_zero_padding_are_read_as_gzip_reads_them(tmp_path):
    data = gzip.compress(LABELS[:6]) + gzip.compress(LABELS[6:]) + b"\0" * 16
    assert read(write(tmp_path, "l.gz", data))[0] == (5,)


@pytest.mark.parametrize("name,data,words", [
    ("l", b"", ["the file is empty (0 bytes)"]),
    ("l.gz", b"", ["the file is empty"]),
    ("l.gz", LABELS, ["not gzip-compressed although its name ends in .gz", "starts 00000801"]),
    ("l.gz", b"<!DOCTYPE html><html><body>rate limited</body></html>",
     ["not gzip-compressed", "looks like a web page"]),
    ("l.gz", gzip.compress(LABELS, mtime=0)[:-6], ["gzip stream is truncated"]),
    ("l.gz", gzip.compress(LABELS, mtime=0)[:12], ["gzip stream is truncated"]),
    ("l.gz", gzip.compress(LABELS, mtime=0) + b"trailing junk", ["garbage after the gzip data"]),
    ("l", gzip.compress(LABELS, mtime=0), ["not an IDX file", "its name should end in .gz"]),
    ("l", b"\x89PNG\r\n\x1a\n" + bytes(40), ["not an IDX file", "89504e47", "a different file under this name"]),
    ("l", b"\0\0", ["only 2 bytes, too short for an IDX header"]),
    ("l", idx_bytes((5,), bytes(20), type_code=0x0D), ["holds float values", "unsigned bytes"]),
    ("l", idx_bytes((1, 2, 2), bytes(4)),
     ["has 3 dimension(s) where 1 are expected", "name does not match its content"]),
    ("l", LABELS[:6], ["the header announces 1 dimensions but the file ends after 6 bytes"]),
    ("l", LABELS[:-2], ["the header says 5 = 5 values but the file holds 3: it is truncated"]),
    ("l", LABELS + b"\0", ["holds 6: it is longer than its header says"]),
    ("l", idx_bytes((0,), b""), ["holds no values"]),
])
def test_bad_file(tmp_path, name, data, words):
    fails(write(tmp_path, name, data), *words)


def test_corrupt_gzip_data(tmp_path):
    data = bytearray(gzip.compress(bytes(range(256)) * 20))
    data[len(data) // 2] ^= 0xFF
    fails(write(tmp_path, "x.gz", bytes(data)), "the gzip data is corrupt", dims=None)


def test_missing_and_unreadable_files(tmp_path):
    fails(tmp_path / "nothing", "the file does not exist")
    (tmp_path / "a-folder").mkdir()
    fails(tmp_path / "a-folder", "cannot read the file")


def test_decompression_is_bounded(tmp_path, monkeypatch):
    """A small .gz that expands without end (a "zip bomb") stops at the bound."""
    import fmclf_plugins.idx as idx

    monkeypatch.setattr(idx, "_MAX_GZ", 1000)
    fails(write(tmp_path, "bomb.gz", gzip.compress(bytes(5000))), "decompresses to more than 1000 bytes", dims=None)


# --- checksums ----------------------------------------------------------------------------


def _tiny_spec(path: pathlib.Path, raw_md5: str, gz_md5: str):
    content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    shape, _ = parse_idx(content, path, FIX)
    return ("t10k-labels-idx1-ubyte", 1, shape, gz_md5, raw_md5), content


def test_a_gz_matching_the_published_gz_checksum_is_accepted(tiny_data_gz, monkeypatch):
    path = tiny_data_gz / "t10k-labels-idx1-ubyte.gz"
    spec, _ = _tiny_spec(path, "0" * 32, hashlib.md5(path.read_bytes()).hexdigest())
    monkeypatch.setitem(files.FILES, "test_labels", spec)
    assert files.read_checked("test_labels", path, FIX, verify=True)[0] == spec[2]


def test_a_recompressed_gz_is_accepted_by_its_content_checksum(tiny_data_gz, monkeypatch):
    path = tiny_data_gz / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))  # other bytes, same content
    spec, _ = _tiny_spec(path, hashlib.md5(content).hexdigest(), "0" * 32)
    monkeypatch.setitem(files.FILES, "test_labels", spec)
    assert files.read_checked("test_labels", path, FIX, verify=True)[0] == spec[2]


def test_a_file_matching_neither_checksum_is_refused(tiny_data_gz, monkeypatch):
    path = tiny_data_gz / "t10k-labels-idx1-ubyte.gz"
    spec, content = _tiny_spec(path, "1" * 32, "2" * 32)
    monkeypatch.setitem(files.FILES, "test_labels", spec)
    with pytest.raises(DataError) as info:
        files.read_checked("test_labels", path, FIX, verify=True)
    message = str(info.value)
    assert f"{path}: does not match Fashion-MNIST's published checksums" in message
    assert hashlib.md5(content).hexdigest() in message and "1" * 32 in message and "2" * 32 in message
    assert FIX in message and "-o dataset.verify=false" in message


def test_verify_rejects_another_data_sets_shape(tiny_data):
    path = tiny_data / "t10k-labels-idx1-ubyte"
    with pytest.raises(DataError, match=r"holds 40 values where Fashion-MNIST's t10k-labels-idx1-ubyte holds 10000; it "
                                        r"is another data set's file"):
        files.read_checked("test_labels", path, FIX, verify=True)


@pytest.mark.realdata
def test_the_real_files_pass_and_one_changed_label_does_not(real_data, tmp_path):
    """Debian's recompressed copy passes by content; flip one label and it fails."""
    gz = real_data / "t10k-labels-idx1-ubyte.gz"
    if not gz.exists():
        gz = real_data / "t10k-labels-idx1-ubyte"
    shape, payload, content = files.read_checked("test_labels", gz, FIX, verify=True)
    assert shape == (10000,)
    changed = bytearray(content)
    changed[-1] = (changed[-1] + 1) % 10
    bad = write(tmp_path, "t10k-labels-idx1-ubyte", bytes(changed))
    with pytest.raises(DataError, match="does not match Fashion-MNIST's published checksums"):
        files.read_checked("test_labels", bad, FIX, verify=True)


def test_the_command_line_shows_the_file_the_problem_and_the_fix(tiny_data):
    """What a user sees for a damaged file in --data-root."""
    images = tiny_data / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    result = CliRunner().invoke(cli, ["run", "--device", "cpu", "--data-root", str(tiny_data),
                                      "-o", "dataset.verify=false", "--visualizer", "none",
                                      "--out", str(tiny_data / "run")])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: {images}: the header says 96x28x28 = 75264 values but the file holds 984: "
                                    f"it is truncated.")
    assert "Check the folder given with --data-root" in result.stderr
    assert "Traceback" not in result.output
