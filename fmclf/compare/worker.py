"""``python -m fmclf.compare.worker CALL``: one job of a comparison in a process of its own.

CALL is a :class:`~fmclf.compare.executor.Call` as JSON. The job is made through the Python API
(:func:`~fmclf.compare.executor.run_job`), not by parsing a command line: the process prints and
exits as ``fmclf`` with the call's arguments would, and stops on a signal as a run does.
"""

from __future__ import annotations

import sys

from .. import signals
from ..run.threads import calm_openmp


def main(argv: list[str] | None = None) -> int:
    """Make the call given as JSON in ``argv`` (this process's arguments); its exit code."""
    calm_openmp()  # before torch loads, as `fmclf` does
    signals.install()
    from .executor import Call, run_job

    code = run_job(Call.from_json((sys.argv[1:] if argv is None else argv)[0]))
    signals.ignore_from_now_on()  # exiting: nothing may turn the exit code into a death by signal now
    return code


if __name__ == "__main__":
    sys.exit(main())
