"""``curves.png``: per metric, each cell's mean curve over its seeds with a band of
± one standard deviation. Drawn on pyplot-free figures (:mod:`fmclf.draw.pictures`)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence

from ..draw import pictures
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
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                by_epoch.setdefault(int(row["epoch"]), []).append(float(value))
    epochs = sorted(by_epoch)
    summaries = [stats.summarize(by_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in summaries], [s.std or 0.0 for s in summaries]


def figure(results: Sequence[CellResult]):
    """One panel per metric, one mean curve with its band per cell."""
    keys = list(dict.fromkeys(k for r in results for h in r.histories.values() for row in h for k, v in row.items()
                              if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)))
    axes_names = varying([r.cell for r in results])
    panels = max(1, len(keys))
    rows, cols = pictures.grid_shape(panels, max_cols=3)
    fig = pictures.new_figure(3.6 * cols, 2.7 * rows + 0.4 + 0.18 * len(results))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(keys):]:
        ax.set_axis_off()
    from matplotlib.ticker import MaxNLocator

    colors = [f"C{i % 10}" for i in range(len(results))]
    names = [" + ".join(r.cell.label(axes_names).values()) or r.cell.name for r in results]
    same = _coinciding(results, keys)
    for ax, key in zip(axes, keys):
        for i, (r, color) in enumerate(zip(results, colors)):
            epochs, mean, std = curve(list(r.histories.values()), key)
            if not epochs:
                continue
            twins = [names[j] for j in same[i] if j != i]
            label = names[i] + (f" (= {', '.join(twins)})" if twins else "")
            k = same[i].index(i)  # a style and a size per twin: the later one, smaller, does not hide the earlier
            ax.plot(epochs, mean, color=color, marker=".", markersize=4 + 3 * (len(same[i]) - 1 - k),
                    linestyle=("-", "--", ":", "-.")[k % 4], label=label)
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2, linewidth=0)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.4)
    if not keys:
        axes[0].text(0.5, 0.5, "no finished run yet", ha="center", va="center")
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    from .markdown import runs_phrase

    for r, color in zip(results, colors):  # a cell with no curve still says why
        if not r.histories:
            handles.append(Line2D([], [], color=color, linestyle="none", marker="x"))
            label = " + ".join(r.cell.label(axes_names).values()) or r.cell.name
            labels.append(f"{label}: no finished run ({runs_phrase(r)})")
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), fontsize=8)
    fig.suptitle("mean over seeds; band: ± one standard deviation", fontsize=9)
    return fig


def _coinciding(results: Sequence[CellResult], keys: Sequence[str]) -> list[list[int]]:
    """For each cell, the cells (itself included, in order) whose every curve is the same as its own."""
    signatures = [tuple(tuple(round(v, SAME_DIGITS) for v in curve(list(r.histories.values()), k)[1]) for k in keys)
                  if r.histories else ("none", i) for i, r in enumerate(results)]
    return [[j for j, other in enumerate(signatures) if other == sig] for sig in signatures]


def write(results: Sequence[CellResult], path: pathlib.Path) -> pathlib.Path:
    """Draw :func:`figure` to ``path`` (atomically)."""
    return pictures.save(figure(results), path)
