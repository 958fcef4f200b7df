"""Visualizers: a tqdm progress bar, the textbook's animated curves, and nothing."""

from __future__ import annotations

import pathlib
from typing import Annotated

import fmclf
from fmclf import Range
from fmclf.errors import OptionError


@fmclf.hookimpl
def register_visualizers(register):
    register("tqdm", tqdm_bars, help="a progress bar per epoch with running loss and accuracy (plain lines when not a terminal)")
    register("animator", animator, help="the textbook's curves (train loss, train acc, test acc per epoch): live in Jupyter, curves.png elsewhere")
    register("none", nothing, help="show nothing")


def tqdm_bars(*, run_dir: pathlib.Path | None = None, leave: bool = False, refresh: Annotated[float, Range(0)] = 0.2,
              interval: Annotated[float, Range(0)] = 10.0):
    """One tqdm bar per epoch over its batches, on stderr; plain lines when stderr is not a terminal.

    Options:
        leave: keep each finished bar on screen
        refresh: seconds between updates of the running loss and accuracy (each read waits for the device)
        interval: seconds between plain progress lines when stderr is not a terminal (logs, CI)
    """
    if refresh < 0 or interval < 0:
        raise OptionError(f"options refresh and interval of visualizer 'tqdm' are seconds, 0 or more; got refresh={refresh}, interval={interval}.")
    from .progress import ProgressBars

    return ProgressBars(leave=leave, refresh=refresh, interval=interval)


def animator(*, run_dir: pathlib.Path | None = None, svg: bool = True, ylim_low: float = 0.3, ylim_high: float = 0.9):
    """d2l's Animator: epoch on x, train loss / train acc / test acc on y.

    Options:
        svg: also write curves.svg beside curves.png
        ylim_low: bottom of the y axis (the textbook's 0.3)
        ylim_high: top of the y axis (the textbook's 0.9)
    """
    check_animator(ylim_low=ylim_low, ylim_high=ylim_high)
    from .animator import Animator

    return Animator(run_dir, svg=svg, ylim=(ylim_low, ylim_high))


@fmclf.checks(animator)
def check_animator(*, ylim_low: float = 0.3, ylim_high: float = 0.9) -> None:
    """The y axis needs its bottom below its top (both finite: the option parser sees to that)."""
    if not ylim_low < ylim_high:
        raise OptionError(f"visualizer 'animator': ylim_low ({ylim_low}) must be below ylim_high ({ylim_high}). "
                          f"The textbook uses 0.3 and 0.9.")


class _Nothing:
    """A visualizer that listens to no event."""


def nothing():
    """Show nothing (the epoch lines and the summary are still printed)."""
    return _Nothing()
