"""fmclf: train and compare classifier components, each one a plugin.

The public API: :func:`fit`, :func:`show` and :func:`predict` for training from Python and
Jupyter (see :mod:`fmclf.interactive`); for plugin authors :data:`hookimpl`, the registry
look-ups and the errors. Importing fmclf imports neither torch nor any plugin.
"""

from typing import TYPE_CHECKING, Any

from .errors import ComponentError, DataError, FmclfError, OptionError, UsageError
from .hookspecs import hookimpl
from .host.batchable import batchable
from .host.checks import checks
from .host.ranges import Range
from .host.registry import ComponentRecord, PluginInfo
from .kinds import KINDS

if TYPE_CHECKING:
    from .interactive import FitResult, fit, predict, show

__version__ = "0.1.0"

__all__ = [
    "KINDS", "ComponentError", "ComponentRecord", "DataError", "FitResult", "FmclfError", "OptionError",
    "PluginInfo", "Range", "UsageError", "__version__", "batchable", "checks", "fit", "get_component", "hookimpl",
    "list_components", "predict", "show",
]

#: Exported here, imported on first use: fmclf.interactive pulls in the run machinery.
_LAZY = ("FitResult", "fit", "predict", "show")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import interactive

        return getattr(interactive, name)
    raise AttributeError(f"module 'fmclf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def get_component(kind: str, name: str) -> ComponentRecord:
    """The record of component ``name`` of ``kind`` (``"model"``, ``"loss"`` ...);
    raises :class:`fmclf.errors.UnknownComponentError` with the closest names."""
    from .host.loading import get_host

    return get_host().registry.get(kind, name)


def list_components(kind: str | None = None, filter: str | None = None) -> list[ComponentRecord]:
    """Every registered component, or those of one kind whose name contains ``filter``."""
    from .host.loading import get_host

    return get_host().registry.list(kind, filter)
