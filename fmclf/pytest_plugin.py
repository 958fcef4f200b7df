"""pytest fixtures for authors of fmclf plugins (docs/plugins.md): ``fmclf_plugin`` registers a plugin for one test;
``fmclf_stress_case`` and ``fmclf_loss_shape`` parametrize a loss author's tests over the stress grid and the speed
shapes of ``fmclf bench loss``. Installed as a ``pytest11`` entry point, so pytest loads it in every session of an
environment that has fmclf: it imports neither torch nor anything slow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from .compare import stress
from .host import loading as plugins
from .host.loading import PluginHost, get_host, set_host


class PluginRegistrar:
    """What the fixture returns: call it with a plugin object to register it for this test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def __call__(self, plugin: object, name: str | None = None, *, autoload: bool = False,
                 strict: bool = True) -> PluginHost:
        """Register ``plugin`` (a module, class or instance with ``@fmclf.hookimpl`` functions) until the test ends, and
        return the fresh plugin load.

        Both ``fmclf.get_component`` and the CLI run in-process (Click's ``CliRunner``) see it; a subprocess does not.
        By default installed third-party plugins are not loaded (``autoload=False``: built-ins and yours only) and a
        plugin that fails raises :class:`fmclf.errors.PluginError` here (``strict=True``) instead of warning.
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


class StressCase:
    """One case of the stress grid in one dtype: what ``fmclf_stress_case`` gives a test."""

    _references: dict[int, tuple[Any, str, Any]] = {}  # id(loss) -> (loss, kind, reference), chosen once per loss

    def __init__(self, case: stress.Case, dtype: str) -> None:
        self.case, self.dtype = case, dtype
        self.id = f"{case.name}-{dtype}"

    @functools.cached_property
    def inputs(self):
        """The case's ``(logits, y)`` (CPU tensors; the same on every run)."""
        return self.case.make(self.dtype)

    def measure(self, loss: Callable, reference: Callable | None = None) -> stress.CaseResult:
        """Run ``loss`` on this case: a :class:`fmclf.compare.stress.CaseResult` (inf/nan
        counts; errors in ulps against ``reference``, the loss's own, or cross-entropy's)."""
        if reference is not None:
            kind, ref = stress.choose_reference(loss, reference)
        else:
            if id(loss) not in self._references:  # the loss is kept with it, so no other loss gets its id
                self._references[id(loss)] = (loss, *stress.choose_reference(loss))
            _, kind, ref = self._references[id(loss)]
        return stress.measure(self.case, self.dtype, loss, ref, kind=kind)


@pytest.fixture(params=stress.grid(), ids=lambda param: StressCase(*param).id)
def fmclf_stress_case(request) -> StressCase:
    """Each case and dtype of ``fmclf bench loss``'s stress grid in turn:
    ``result = fmclf_stress_case.measure(my_loss)``; ``assert result.loss_finite``."""
    return StressCase(*request.param)


class LossShape:
    """One speed shape, N x C: what ``fmclf_loss_shape`` gives a test."""

    def __init__(self, rows: int, classes: int) -> None:
        self.rows, self.classes = rows, classes
        self.id = f"{rows}x{classes}"

    @functools.cached_property
    def inputs(self):
        """``(x, y)``: N x C logits N(0, 3^2) that require grad, and targets (the same on every run)."""
        logits, y = stress.speed_inputs(self.rows, self.classes)
        return logits.requires_grad_(True), y

    def step(self, loss: Callable) -> None:
        """One forward and backward of ``loss`` on this shape, as a training step does them."""
        stress.step(loss, *self.inputs)

    def loss(self, name: str, **options: Any) -> Callable:
        """The registered loss ``name`` (``"fused"``), built for this shape's number of classes."""
        from .host.options import resolve_options
        from .run.plan import build

        record = get_host().registry.get("loss", name)
        return build(record, {"num_classes": self.classes}, resolve_options(record, options))


@pytest.fixture(params=stress.SPEED_SHAPES, ids=lambda param: LossShape(*param).id)
def fmclf_loss_shape(request) -> LossShape:
    """Each shape ``fmclf bench loss`` times, in turn: ``benchmark(fmclf_loss_shape.step, my_loss)``;
    ``fmclf_loss_shape.loss("fused")`` builds a registered loss to compare with."""
    return LossShape(*request.param)
