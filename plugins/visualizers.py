"""Visualizers: a tqdm progress bar, the textbook's animated curves, a CSV file,
TensorBoard event files, and nothing."""

from __future__ import annotations

import pathlib
from typing import Annotated

import fmclf
from fmclf import Range
from fmclf.errors import OptionError
from fmclf.run import folder


@fmclf.hookimpl
def register_visualizers(register):
    register("tqdm", tqdm_bars, help="a progress bar per epoch with running loss and accuracy (plain lines when not a "
                                     "terminal)")
    register("animator", animator, help="the textbook's curves (train loss, train acc, test acc per epoch): live in "
                                        "Jupyter, curves.png elsewhere")
    register("csv", csv_metrics, help="metrics.csv in the run folder: one row per epoch, a column per metric")
    register("tensorboard", tensorboard, help="TensorBoard event files in the run folder: every metric, the config, "
             "weight histograms, the confusion matrix (needs fmclf[tensorboard])")
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
        raise OptionError(f"options refresh and interval of visualizer 'tqdm' are seconds, 0 or more; got "
                          f"refresh={refresh}, interval={interval}.")
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


def csv_metrics(*, run_dir: pathlib.Path | None = None, filename: str = "metrics.csv", nested: bool = True):
    """One CSV row per epoch with every metric of metrics.jsonl, rewritten atomically after each epoch.

    Options:
        filename: name of the CSV file inside the run folder
        nested: a column per entry of a metric that is a dict, such as per_class_test_acc/t-shirt
    """
    from .csv_logger import CsvLogger

    path = folder.path_for(run_dir, filename, component="visualizer 'csv'", example="metrics.csv")
    return CsvLogger(path, nested=nested)


def tensorboard(*, run_dir: pathlib.Path | None = None, log_dir: str = "tensorboard", every: int = 50,
                histograms: bool = True, confusion: bool = True):
    """TensorBoard event files: every epoch metric, a running loss every N batches, the config, weights, confusion.

    Options:
        log_dir: folder inside the run folder for the event files (`tensorboard --logdir runs` shows every run)
        every: log the running train loss and accuracy every this many batches (0: per epoch only)
        histograms: weight histograms of the model (at the end; after every epoch when the events carry the model)
        confusion: the final test confusion matrix as an image
    """
    if every < 0:
        raise OptionError(f"option every of visualizer 'tensorboard' is a number of batches, 0 or more; got {every}.")
    logs = folder.path_for(run_dir, log_dir, component="visualizer 'tensorboard'", option="log_dir",
                           example="tensorboard")
    try:
        import tensorboard as _  # noqa: F401 - torch's SummaryWriter needs it
    except ImportError:
        raise OptionError(
            "visualizer 'tensorboard' needs the tensorboard package, which is not installed. Install it with "
            "`pip install 'fmclf[tensorboard]'` (or `pip install tensorboard`), or choose another visualizer "
            "(`fmclf plugins --kind visualizer` lists them)."
        ) from None
    from .tensorboard_logger import TensorBoardLogger

    return TensorBoardLogger(logs, every=every, histograms=histograms, confusion=confusion)


class _Nothing:
    """A visualizer that listens to no event."""


def nothing():
    """Show nothing (the epoch lines and the summary are still printed)."""
    return _Nothing()
