"""The ``fmclf_plugin`` pytest fixture, for authors of fmclf plugins.

Installed with fmclf as a ``pytest11`` entry point, so a plugin's test suite
gets the fixture with no conftest line. It imports neither torch nor anything
slow, since pytest loads it in every session of an environment that has fmclf
(``pytest -p no:fmclf`` switches it off; ``pytest_plugins = ["fmclf.pytest_plugin"]``
switches it on where plugin autoloading is disabled).
"""

from __future__ import annotations

import pytest

from .host import loading as plugins
from .host.loading import PluginHost, get_host, set_host


class PluginRegistrar:
    """What the fixture returns: call it with a plugin object to register it for this test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def __call__(self, plugin: object, name: str | None = None, *, autoload: bool = False, strict: bool = True) -> PluginHost:
        """Register ``plugin`` (a module, class or instance with ``@fmclf.hookimpl``
        functions) until the test ends, and return the fresh plugin load.

        Both ``fmclf.get_component`` and the CLI run in-process (Click's
        ``CliRunner``) see it; a subprocess does not. By default installed
        third-party plugins are not loaded (``autoload=False``: built-ins and
        yours only) and a plugin that fails raises :class:`fmclf.errors.PluginError`
        here (``strict=True``) instead of warning.
        """
        name = name or getattr(plugin, "__name__", type(plugin).__name__)
        mp = self._monkeypatch
        mp.setattr(plugins, "process_plugins", [*plugins.process_plugins, (name, plugin)])
        for var, on in (("FMCLF_DISABLE_PLUGIN_AUTOLOAD", not autoload), ("FMCLF_STRICT_PLUGINS", strict)):
            if on:
                mp.setenv(var, "1")
            else:
                mp.delenv(var, raising=False)
        set_host(None)
        return get_host()


@pytest.fixture
def fmclf_plugin(monkeypatch: pytest.MonkeyPatch):
    """Register plugin objects for one test: ``host = fmclf_plugin(my_plugin)``;
    then ``fmclf.get_component("model", "mine")`` and ``CliRunner().invoke(cli, ...)``
    find its components. Everything is undone when the test ends."""
    set_host(None)
    yield PluginRegistrar(monkeypatch)
    set_host(None)
