"""fmclf's built-in components, installed as ``fmclf_plugins``.

Each module here is a plugin registered through the ``fmclf`` entry-point
group, exactly as a third-party package's would be. Registration modules
import nothing heavy; the torch code lives in the modules their factories
import on first use.
"""
