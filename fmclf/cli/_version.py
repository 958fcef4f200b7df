"""``fmclf --version``: what a bug report needs, like ``pytest -VV`` (this one imports torch)."""

from __future__ import annotations

import pathlib
import platform
import sys

from .. import __version__


def torch_line() -> str:
    """torch's version and whether CUDA (or MPS) is available to it."""
    try:
        import torch
    except ImportError as exc:
        return f"torch: cannot be imported ({exc}); install it: pip install torch"
    built = f", built for CUDA {torch.version.cuda}" if torch.version.cuda else ", CPU-only build"
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
        cuda = f"CUDA available: yes, {count} device{'s' if count != 1 else ''} ({', '.join(names)})"
    else:
        cuda = "CUDA available: no"
    mps = getattr(torch.backends, "mps", None)
    extra = "; MPS available: yes" if mps is not None and mps.is_available() else ""
    return f"torch {torch.__version__}{built}; {cuda}{extra}"


def report() -> str:
    """The lines ``fmclf --version`` prints."""
    from ..host.loading import load_plugins

    host = load_plugins()
    lines = [
        f"fmclf {__version__} from {pathlib.Path(__file__).resolve().parents[1]}",
        f"Python {platform.python_version()} ({sys.executable}) on {platform.system()} {platform.machine()}",
        torch_line(),
        "plugins loaded:",
    ]
    width = max((len(p.info.name) for p in host.plugins), default=0)
    for p in host.plugins:
        tag = "  (built-in)" if p.info.builtin else ""
        lines.append(f"  {p.info.name:<{width}}  {p.info.describe()}  {p.info.module}{tag}")
    for failure in host.failures:
        lines.append(f"  {failure.plugin.name:<{width}}  {failure.plugin.describe()}  FAILED at {failure.stage}")
    return "\n".join(lines)
