"""``scores.png``: each cell's final score on the ranking metric with every seed as a point
(cells that coincide are named together), and with ``--tune`` the validation metric of
every trial against the tuned value, one curve per cell (the sensitivity curve; with
successive halving, a stopped trial is a hollow point at its last rung's value)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from ..draw import pictures
from .curves import SAME_DIGITS
from .grid import varying
from .results import CellResult, Ranking

SCORES = "scores.png"


def coinciding(results: Sequence[CellResult], metric: str) -> list[list[int]]:
    """Groups of indexes of cells whose values of ``metric`` are the same on every seed, to the digits the table
    shows (one group per value)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(results):
        values = r.values.get(metric, {})
        key = tuple((s, round(v, SAME_DIGITS)) for s, v in sorted(values.items())) if values else ("none", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def figure(results: Sequence[CellResult], ranking: Ranking, protocol: dict[str, Any] | None = None):
    """The scores panel, and the sensitivity panel for a tuned comparison."""
    axes_names = varying([r.cell for r in results])
    labels = [" + ".join(r.cell.label(axes_names).values()) or r.cell.name for r in results]
    tuned = protocol is not None and protocol.get("space")
    fig = pictures.new_figure(9.0 if tuned else 5.0, 0.6 + 0.45 * max(3, len(results)))
    panels = fig.subplots(1, 2 if tuned else 1, squeeze=False).ravel()
    ax = panels[0]
    for group in coinciding(results, ranking.metric):
        first = results[group[0]]
        values = [first.values.get(ranking.metric, {})[s] for s in sorted(first.values.get(ranking.metric, {}))]
        y = [len(results) - 1 - i for i in group]
        for row in y:
            ax.plot(values, [row] * len(values), "o", color="C0", alpha=0.7)
            if values:
                ax.plot([sum(values) / len(values)], [row], "|", color="k", markersize=14)
        if len(group) > 1:  # the same points: say so, or one cell hides the other
            ax.annotate("= " + ", ".join(labels[i] for i in group), (max(values or [0]), min(y)), fontsize=7,
                        xytext=(6, 0), textcoords="offset points", va="center")
    ax.set_yticks(range(len(results)), [labels[i] for i in reversed(range(len(results)))], fontsize=8)
    ax.set_xlabel(f"{ranking.metric} (each seed a point, | the mean)", fontsize=8)
    ax.grid(True, axis="x", alpha=0.4)
    if tuned:
        _sensitivity(panels[1], results, labels, protocol)
    return fig


def _sensitivity(ax: Any, results: Sequence[CellResult], labels: list[str], protocol: dict[str, Any]) -> None:
    """The validation value of every trial against the first tuned dimension, one line per cell."""
    dimension = protocol["space"][0]
    key = dimension["key"]
    metric = "validation"
    for i, r in enumerate(results):
        cell = protocol["cells"].get(r.cell.name)
        if not cell:
            continue
        metric = cell["metric"]
        points = sorted((t["params"][key], t["value"]) for t in cell["trials"]
                        if key in t["params"] and t.get("value") is not None)
        if points:
            # a style and a size per cell: curves that coincide stay visible one under the other
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=9 - 2 * (i % 4),
                    linestyle=("-", "--", ":", "-.")[i % 4], color=f"C{i % 10}", label=labels[i], alpha=0.8)
        stopped = [(t["params"][key], t["rungs"][str(t["pruned_at"])]) for t in cell["trials"]
                   if key in t["params"] and t.get("state") == "pruned" and t.get("rungs", {}).get(str(t["pruned_at"]))
                   is not None]
        if stopped:  # successive halving: where each stopped trial stood at its last rung (fewer epochs)
            ax.plot([p[0] for p in stopped], [p[1] for p in stopped], marker="o", linestyle="none", alpha=0.8,
                    markerfacecolor="none", color=f"C{i % 10}", markersize=9 - 2 * (i % 4),
                    label=f"{labels[i]}: stopped early (at its last rung)")
    if dimension.get("scale") == "log":
        ax.set_xscale("log")
    ax.set_xlabel(key, fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title("every trial (sensitivity)", fontsize=9)
    ax.grid(True, alpha=0.4)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def write(results: Sequence[CellResult], ranking: Ranking, path: pathlib.Path,
          protocol: dict[str, Any] | None = None) -> pathlib.Path:
    """Draw :func:`figure` to ``path`` (atomically)."""
    return pictures.save(figure(results, ranking, protocol), path)
