"""Where this process stands in a torchrun launch (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``),
and how long a collective may wait (``$FMCLF_DIST_TIMEOUT``), read from its environment and checked. It imports no
torch: the CLI labels its messages with it before anything heavy loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Mapping

from ..errors import FmclfError, UsageError

TIMEOUT_ENV = "FMCLF_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  #: seconds a collective waits for a silent process


@dataclasses.dataclass(frozen=True)
class Launch:
    """This process's place in a launch, as torchrun's environment tells it."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def nodes(self) -> int:
        """How many machines the launch spans."""
        return max(self.world_size // max(self.local_world_size, 1), 1)


ALONE = Launch(0, 1, 0, 1)  #: a process on its own


def _env_int(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    text = environ.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a whole number. torchrun sets it; "
                         f"start fmclf with `torchrun ... -m fmclf run ...`.") from None


def launch_from_env(environ: Mapping[str, str] = os.environ) -> Launch | None:
    """This process's :class:`Launch`, or None when it runs alone (no ``WORLD_SIZE``, or one process)."""
    world = _env_int(environ, "WORLD_SIZE", None)
    if world is None or world <= 1:
        return None
    rank = _env_int(environ, "RANK", None)
    if rank is None or not 0 <= rank < world:
        raise UsageError(f"WORLD_SIZE is {world} but RANK is {environ.get('RANK')!r}; each of the {world} processes "
                         f"needs a RANK from 0 to {world - 1}. Start them with torchrun (`torchrun --nproc-per-node N "
                         f"-m fmclf run ...`), which sets both.")
    return Launch(rank, world, _env_int(environ, "LOCAL_RANK", 0), _env_int(environ, "LOCAL_WORLD_SIZE", world))


def process_label(environ: Mapping[str, str] = os.environ) -> str:
    """``"[rank R] "`` in a process other than rank 0 of a launch, else ``""``: a prefix for its messages."""
    try:
        launch = launch_from_env(environ)
    except FmclfError:
        return ""
    return f"[rank {launch.rank}] " if launch is not None and launch.rank != 0 else ""


def is_root_process(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process reports to the user: rank 0 of a launch, or a process on its own."""
    return process_label(environ) == ""


def timeout_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """How long a collective waits for a silent process: ``$FMCLF_DIST_TIMEOUT`` or 600 s."""
    text = environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    with contextlib.suppress(ValueError):
        if math.isfinite(value := float(text)) and value > 0:
            return value
    raise UsageError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds above 0 (default {DEFAULT_TIMEOUT:g}).")
