"""fmclf: train and compare classifier components, each one a plugin.

The public API for plugin authors: :data:`hookimpl`, the registry look-ups
and the errors. Importing fmclf imports neither torch nor any plugin.
"""

from .errors import ComponentError, DataError, FmclfError, OptionError, UsageError
from .hookspecs import hookimpl
from .host.checks import checks
from .host.ranges import Range
from .host.registry import ComponentRecord, PluginInfo
from .kinds import KINDS

__version__ = "0.1.0"

__all__ = [
    "KINDS", "ComponentError", "ComponentRecord", "DataError", "FmclfError", "OptionError", "PluginInfo", "Range",
    "UsageError", "__version__", "checks", "get_component", "hookimpl", "list_components",
]


def get_component(kind: str, name: str) -> ComponentRecord:
    """The record of component ``name`` of ``kind`` (``"model"``, ``"loss"`` ...);
    raises :class:`fmclf.errors.UnknownComponentError` with the closest names."""
    from .host.loading import get_host

    return get_host().registry.get(kind, name)


def list_components(kind: str | None = None, filter: str | None = None) -> list[ComponentRecord]:
    """Every registered component, or those of one kind whose name contains ``filter``."""
    from .host.loading import get_host

    return get_host().registry.list(kind, filter)
