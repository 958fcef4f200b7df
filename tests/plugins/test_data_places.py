"""Where the data comes from, in order, and what a user reads when no place has it
or a place holds a bad copy."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.errors import DataError
from fmclf_plugins import fashion_mnist_files as files
from fmclf_plugins.fashion_mnist import fashion_mnist

from helpers import NAMES, write_tiny_fashion


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path) -> pathlib.Path:
    """A cache of this test's own (the session's may hold the real data)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return files.cache_dir()


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path) -> pathlib.Path:
    """Pretend Debian's package is not installed (the tests must not depend on it)."""
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setattr(files, "SYSTEM_DIR", system)
    return system


@pytest.fixture
def tiny_is_fashion_mnist(monkeypatch, tiny_data_gz):
    """Make the checksums and shapes in FILES those of the tiny .gz files, so that
    the verified code paths (caching, downloads) run on them."""
    for key, (name, ndim, *_rest) in list(files.FILES.items()):
        gz = (tiny_data_gz / f"{name}.gz").read_bytes()
        content = gzip.decompress(gz)
        shape = (int.from_bytes(content[4:8], "big"),) + ((28, 28) if ndim == 3 else ())
        monkeypatch.setitem(files.FILES, key,
                            (name, ndim, shape, hashlib.md5(gz).hexdigest(), hashlib.md5(content).hexdigest()))
    return tiny_data_gz


def test_nothing_anywhere_lists_every_place_tried_in_order(no_system_copy, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FMCLF_DATA", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DataError) as info:
        files.load_idx_set(empty, download=False)
    message = str(info.value)
    lines = [line.strip() for line in message.splitlines()]
    assert lines[0] == "Fashion-MNIST was not found. Places tried, in order:"
    assert lines[1] == f"- --data-root: {empty} (empty)"
    assert lines[2] == f"- $FMCLF_DATA: {tmp_path / 'a-file'} (not a folder)"
    assert lines[3] == f"- user cache: {files.cache_dir()} (no such folder)"
    assert lines[4] == f"- Debian package dataset-fashion-mnist: {no_system_copy} (no such folder)"
    assert lines[5] == "- torchvision download (switched off by -o dataset.download=false)"
    assert "apt-get install dataset-fashion-mnist" in lines[6] and "--data-root" in lines[6]


def test_a_partial_or_unreadable_folder_says_so(no_system_copy, tiny_data, monkeypatch):
    (tiny_data / NAMES["test_labels"]).unlink()
    assert files.find_files(tiny_data) == "missing t10k-labels-idx1-ubyte"
    real_access = os.access
    # as root, permissions do not stop reading, so pretend they do
    monkeypatch.setattr(files.os, "access",
                        lambda p, mode: False if pathlib.Path(p) == tiny_data else real_access(p, mode))
    with pytest.raises(DataError, match=r"--data-root: .*tiny \(folder not readable \(permissions\)\)"):
        files.load_idx_set(tiny_data, download=False)


def test_the_command_line_shows_the_places(no_system_copy, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--device", "cpu", "--data-root", str(tmp_path / "nope"),
                                      "-o", "dataset.download=false", "--visualizer", "none",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Fashion-MNIST was not found. Places tried, in order:\n  - --data-root: ")
    assert f"{tmp_path / 'nope'} (no such folder)" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_data_root_comes_first_and_a_missed_one_is_reported(no_system_copy, tmp_path, monkeypatch):
    first = write_tiny_fashion(tmp_path / "first", seed=1)
    second = write_tiny_fashion(tmp_path / "second", seed=2)
    monkeypatch.setenv("FMCLF_DATA", str(second))
    _, source = files.load_idx_set(first, download=False, verify=False)
    assert source == f"--data-root: {first}"
    _, source = files.load_idx_set(tmp_path / "typo", download=False, verify=False)
    assert source == f"$FMCLF_DATA: {second}; not in --data-root: {tmp_path / 'typo'} (no such folder)"


@pytest.mark.parametrize("where,fix", [
    ("data_root", "Check the folder given with --data-root"),
    ("cache", "Delete the cache folder ("),
    ("system", "Reinstall it: apt-get install --reinstall dataset-fashion-mnist"),
])
def test_a_damaged_file_names_the_fix_for_its_place(no_system_copy, tmp_path, monkeypatch, where, fix):
    folder = {"data_root": tmp_path / "root", "cache": files.cache_dir(), "system": no_system_copy}[where]
    write_tiny_fashion(folder, gz=True)
    bad = folder / f"{NAMES['train_labels']}.gz"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DataError) as info:
        files.load_idx_set(folder if where == "data_root" else None, download=False, verify=False)
    message = str(info.value)
    assert message.startswith(f"{bad}: the gzip stream is truncated")
    assert fix in message


def test_compressed_files_are_decompressed_once_into_the_cache(no_system_copy, tiny_is_fashion_mnist):
    arrays, source = files.load_idx_set(tiny_is_fashion_mnist, download=False)
    assert source == f"--data-root: {tiny_is_fashion_mnist}"
    for name in NAMES.values():
        assert ((files.cache_dir() / name).read_bytes()
                == gzip.decompress((tiny_is_fashion_mnist / f"{name}.gz").read_bytes()))
    again, source = files.load_idx_set(None, download=False)
    assert source == f"user cache: {files.cache_dir()}"
    assert {k: (s, bytes(p)) for k, (s, p) in again.items()} == {k: (s, bytes(p)) for k, (s, p) in arrays.items()}


@pytest.fixture
def mirror(tiny_is_fashion_mnist, monkeypatch):
    """An HTTP mirror on this machine serving the tiny .gz files (no internet needed)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(tiny_is_fashion_mnist)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_through_torchvision_when_no_place_has_the_files(no_system_copy, mirror, monkeypatch, tmp_path):
    """torchvision's own download code, from a mirror holding the tiny files."""
    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "mirrors", [mirror])
    monkeypatch.setattr(FashionMNIST, "resources",
                        [(f"{files.FILES[k][0]}.gz", files.FILES[k][3]) for k in files.FILES])
    root = tmp_path / "download-here"
    arrays, source = files.load_idx_set(root, download=True)
    assert source == f"torchvision download: {root}; not in --data-root: {root} (no such folder)"
    assert (root / "FashionMNIST" / "raw" / NAMES["train_images"]).is_file()
    assert arrays["train_images"][0] == (96, 28, 28)
    # the next run finds the downloaded copy where it was put
    _, source = files.load_idx_set(root, download=False)
    assert source == f"--data-root: {root}"


def test_a_failed_download_is_listed_with_the_other_places(no_system_copy, monkeypatch, tmp_path):
    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "mirrors", [(tmp_path / "offline-mirror").as_uri() + "/"])
    with pytest.raises(DataError) as info:
        files.load_idx_set(None, download=True)
    message = str(info.value)
    assert (f"- torchvision download into {files.cache_dir()} (failed: RuntimeError: Error downloading "
            f"train-images-idx3-ubyte.gz:" in message)
    assert "Debian package dataset-fashion-mnist" in message


def test_a_cache_checked_once_is_not_checked_by_md5_again_but_a_damaged_one_is_caught(tiny_is_fashion_mnist,
                                                                                      monkeypatch):
    fashion_mnist(batch_size=16, device="cpu", data_root=tiny_is_fashion_mnist)  # fills the cache, with its stamp
    stamp = files.read_stamp(files.cache_dir())
    assert sorted(stamp) == sorted(spec[0] for spec in files.FILES.values())
    hashed = []
    real = files._md5
    monkeypatch.setattr(files, "_md5", lambda data: hashed.append(len(data)) or real(data))
    fashion_mnist(batch_size=16, device="cpu")  # from the cache: the stamp vouches for it
    assert hashed == []
    target = files.cache_dir() / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # one label changed on disk: same size, another CRC
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match Fashion-MNIST's published checksums"):
        fashion_mnist(batch_size=16, device="cpu")
    assert hashed  # the damaged file was checked in full


def test_a_cache_from_before_stamps_is_stamped_after_one_full_check(tiny_is_fashion_mnist):
    fashion_mnist(batch_size=16, device="cpu", data_root=tiny_is_fashion_mnist)
    (files.cache_dir() / files.STAMP).unlink()
    fashion_mnist(batch_size=16, device="cpu")
    assert len(files.read_stamp(files.cache_dir())) == 4
