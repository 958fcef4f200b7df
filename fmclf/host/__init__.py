"""The plugin host: finding and loading plugins, the registry of their
components, and component options. Importing it imports no torch."""

from .loading import PluginHost, get_host, load_plugins, set_host
from .registry import ComponentRecord, PluginInfo, Registry

__all__ = ["ComponentRecord", "PluginHost", "PluginInfo", "Registry", "get_host", "load_plugins", "set_host"]
