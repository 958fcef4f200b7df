"""Shared fixtures: an isolated cache, a fixed seed required of every run, tiny data, the real data (or a
clear skip)."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

from fmclf.run.plan import REQUIRE_SEED

from helpers import write_tiny_fashion

SYSTEM_DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """Keep the user's cache and $FMCLF_DATA out of the tests; one cache per session
    so the real data set is decompressed once, not once per test. Every run must be given its seed
    (FMCLF_REQUIRE_SEED, inherited by the subprocesses and notebook kernels the tests start): a test
    that trained on a drawn seed would pass or fail by luck. A test of seed drawing unsets it."""
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "FMCLF_DATA", "FMCLF_DISABLE_PLUGIN_AUTOLOAD",
                                            "FMCLF_STRICT_PLUGINS", REQUIRE_SEED)}
    real = os.environ.get("FMCLF_DATA")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    os.environ.pop("FMCLF_DATA", None)
    os.environ.pop("FMCLF_DISABLE_PLUGIN_AUTOLOAD", None)
    os.environ.pop("FMCLF_STRICT_PLUGINS", None)
    os.environ["FMCLF_TEST_REAL_DATA"] = real or ""
    os.environ[REQUIRE_SEED] = "1"
    # Under pytest-xdist: the processes the tests start are not workers (pytest-benchmark in a pytest they
    # run would take the worker's variables for xdist and refuse to time).
    for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
        saved[name] = os.environ.pop(name)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _fresh_plugin_host():
    """Each test starts with no cached plugin load."""
    from fmclf.host.loading import set_host

    set_host(None)
    yield
    set_host(None)


@pytest.fixture(autouse=True)
def _forget_modules_of_test_folders(tmp_path_factory):
    """A module a test imported from its own folder (a plugin package it wrote) is forgotten after it: a later
    test in the same worker that writes a module of that name (docs' and the bench's fmclf_focal) imports its own,
    whichever order xdist runs them in."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(base):
            del sys.modules[name]


@pytest.fixture(autouse=True)
def _signal_handlers(request):
    """Each test starts with the worker's signal handlers and fmclf's signal state as the one before it
    found them: a test that sends SIGINT (or interrupt_main) must not depend on which tests ran before it
    in the same xdist worker. A test that leaves a handler changed is named in a warning."""
    import signal
    import warnings

    from fmclf import signals

    handlers = {s: signal.getsignal(s) for s in signals.SIGNALS}
    state = {k: getattr(signals._state, k) for k in ("flag", "echo", "ending", "warned", "again")}
    yield
    left = [f"{signal.Signals(s).name} ({h!r} -> {signal.getsignal(s)!r})" for s, h in handlers.items()
            if signal.getsignal(s) is not h]
    for s, h in handlers.items():
        if h is not None and signal.getsignal(s) is not h:
            signal.signal(s, h)
    for k, v in state.items():
        setattr(signals._state, k, v)
    if left:
        warnings.warn(f"{request.node.nodeid} left the handlers of {', '.join(left)} changed (restored)", stacklevel=1)


@pytest.fixture
def tiny_data(tmp_path) -> pathlib.Path:
    """A folder with four tiny, learnable IDX files (raw)."""
    return write_tiny_fashion(tmp_path / "tiny")


@pytest.fixture
def tiny_data_gz(tmp_path) -> pathlib.Path:
    """The same, gzip-compressed."""
    return write_tiny_fashion(tmp_path / "tiny-gz", gz=True)


def _real_data_folder() -> pathlib.Path | None:
    for candidate in (os.environ.get("FMCLF_TEST_REAL_DATA"), str(SYSTEM_DATA)):
        if candidate and all(
            (pathlib.Path(candidate) / f).exists() or (pathlib.Path(candidate) / f"{f}.gz").exists()
            for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                      "t10k-labels-idx1-ubyte")
        ):
            return pathlib.Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_data() -> pathlib.Path:
    """The real Fashion-MNIST folder; skips without it, fails with FMCLF_REQUIRE_DATA=1."""
    folder = _real_data_folder()
    if folder is None:
        why = (
            f"the real Fashion-MNIST files are not installed (looked in $FMCLF_DATA and {SYSTEM_DATA}); "
            "install them with `apt-get install -y dataset-fashion-mnist` or set FMCLF_DATA"
        )
        if os.environ.get("FMCLF_REQUIRE_DATA") == "1":
            pytest.fail(f"FMCLF_REQUIRE_DATA=1 but {why}")
        pytest.skip(why)
    return folder


def pytest_collection_modifyitems(config, items):
    """Skip `cuda`-marked tests without a CUDA GPU (said plainly in the skip reason)."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch on this machine")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)
