"""``curves.png``: per metric, each cell's mean curve over its seeds with a band of
± one standard deviation; then the learning rate as the schedule set it, and the
accuracy against wall time. Cells whose curves coincide are named together.
Drawn on pyplot-free figures (:mod:`fmclf.draw.pictures`)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence

from ..draw import pictures
from ..numbers import is_number
from . import stats
from .grid import varying
from .results import NOT_METRICS, CellResult

CURVES = "curves.png"
#: Values that agree to this many decimals (compare.md's) are drawn as the same and labelled so.
SAME_DIGITS = 4


def curve(histories: Sequence[list[dict]], key: str) -> tuple[list[int], list[float], list[float]]:
    """Epochs, mean and standard deviation (0 for one seed) of ``key`` over ``histories``."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for row in history:
            value = row.get(key)
            if is_number(value, finite=True):
                by_epoch.setdefault(int(row["epoch"]), []).append(float(value))
    epochs = sorted(by_epoch)
    summaries = [stats.summarize(by_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in summaries], [s.std or 0.0 for s in summaries]


#: The extra panels after the metrics' own: the learning rate each epoch ended at (the schedule as it was), and
#: the accuracy against the wall time the runs took.
LR_PANEL, TIME_PANEL = "learning rate (each epoch's end)", "{key} against wall time"


def wall_time(histories: Sequence[list[dict]], key: str) -> tuple[list[float], list[float]]:
    """The mean seconds elapsed at the end of each epoch (the sum of the epochs' ``seconds`` so far) and the
    mean of ``key`` there, over the histories that record both for every epoch up to it."""
    elapsed: list[list[float]] = []
    for history in histories:
        total, mine = 0.0, []
        for row in sorted(history, key=lambda row: int(row["epoch"])):
            seconds = row.get("seconds")
            if not (is_number(seconds, finite=True) and is_number(row.get(key), finite=True)):
                break
            total += float(seconds)
            mine.append(total)
        elapsed.append(mine)
    epochs, mean, _ = curve(histories, key)
    out_x, out_y = [], []
    for i, m in enumerate(mean):
        times = [e[i] for e in elapsed if len(e) > i]
        if len(times) == len(histories) and epochs[i] == i + 1:
            out_x.append(math.fsum(times) / len(times))
            out_y.append(m)
    return out_x, out_y


def _time_key(keys: Sequence[str]) -> str | None:
    """The metric drawn against wall time: test accuracy, else the first accuracy, else none."""
    return "test_acc" if "test_acc" in keys else next((k for k in keys if k.endswith("acc")), None)


def figure(results: Sequence[CellResult]):
    """One panel per metric, one mean curve with its band per cell; then the learning rate as the schedule
    set it (each epoch's last rate, mean over seeds) and the accuracy against wall time."""
    keys = list(dict.fromkeys(k for r in results for h in r.histories.values() for row in h for k, v in row.items()
                              if k not in NOT_METRICS and is_number(v)))
    has_lr = any("lr" in row for r in results for h in r.histories.values() for row in h)
    time_key = _time_key(keys)
    panels = [*keys, *([LR_PANEL] if has_lr else []), *([TIME_PANEL.format(key=time_key)] if time_key else [])]
    rows, cols = pictures.grid_shape(max(1, len(panels)), max_cols=3)
    fig = pictures.new_figure(3.6 * cols, 2.7 * rows + 0.4 + 0.18 * len(results))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    names = [" + ".join(r.cell.label(varying([c.cell for c in results])).values()) or r.cell.name for r in results]
    same = _coinciding(results, keys)
    for ax, key in zip(axes, panels):
        for i, r in enumerate(results):
            twins = [names[j] for j in same[i] if j != i]
            style = _style(i, same[i], names[i] + (f" (= {', '.join(twins)})" if twins else ""))
            _draw(ax, r, key, time_key, style)
        _dress(ax, key, time_key)
    if not keys:
        axes[0].text(0.5, 0.5, "no finished run yet", ha="center", va="center")
    _legend(fig, axes[0], results, names)
    fig.suptitle("mean over seeds; band: ± one standard deviation", fontsize=9)
    return fig


def _style(i: int, twins: list[int], label: str) -> dict:
    """A colour per cell; a line style and a marker size per twin: the later one, smaller, does not hide the
    earlier (cells whose curves coincide are named together in the label)."""
    k = twins.index(i)
    return {"color": f"C{i % 10}", "marker": ".", "markersize": 4 + 3 * (len(twins) - 1 - k),
            "linestyle": ("-", "--", ":", "-.")[k % 4], "label": label}


def _draw(ax, r: CellResult, panel: str, time_key: str | None, style: dict) -> None:
    histories = list(r.histories.values())
    if time_key is not None and panel == TIME_PANEL.format(key=time_key):
        x, y = wall_time(histories, time_key)
        if x:
            ax.plot(x, y, **style)
        return
    epochs, mean, std = curve(histories, "lr" if panel == LR_PANEL else panel)
    if not epochs:
        return
    ax.plot(epochs, mean, **style)
    ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                    color=style["color"], alpha=0.2, linewidth=0)


def _dress(ax, panel: str, time_key: str | None) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(panel, fontsize=9)
    timed = time_key is not None and panel == TIME_PANEL.format(key=time_key)
    ax.set_xlabel("seconds (sum of the epochs' own)" if timed else "epoch", fontsize=8)
    if not timed:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.4)


def _legend(fig, ax, results: Sequence[CellResult], names: list[str]) -> None:
    from matplotlib.lines import Line2D

    from .markdown import runs_phrase

    handles, labels = ax.get_legend_handles_labels()
    for i, r in enumerate(results):  # a cell with no curve still says why
        if not r.histories:
            handles.append(Line2D([], [], color=f"C{i % 10}", linestyle="none", marker="x"))
            labels.append(f"{names[i]}: no finished run ({runs_phrase(r)})")
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), fontsize=8)


def _coinciding(results: Sequence[CellResult], keys: Sequence[str]) -> list[list[int]]:
    """For each cell, the cells (itself included, in order) whose every curve is the same as its own."""
    signatures = [tuple(tuple(round(v, SAME_DIGITS) for v in curve(list(r.histories.values()), k)[1]) for k in keys)
                  if r.histories else ("none", i) for i, r in enumerate(results)]
    return [[j for j, other in enumerate(signatures) if other == sig] for sig in signatures]


def write(results: Sequence[CellResult], path: pathlib.Path) -> pathlib.Path:
    """Draw :func:`figure` to ``path`` (atomically)."""
    return pictures.save(figure(results), path)
