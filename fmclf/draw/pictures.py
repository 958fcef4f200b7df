"""Drawing: image grids, predictions, the confusion matrix, training curves.

Everything draws on a bare matplotlib ``Figure``, never through pyplot: no display needed, no global figure
state (no "more than 20 figures" warnings) and no window popping up. Every file is written atomically.
Inputs are numpy arrays, or anything ``numpy.asarray`` takes (CPU tensors).
"""

from __future__ import annotations

import io
import math
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..errors import UsageError
from ..numbers import is_number, is_whole

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150
FORMATS = ("png", "svg", "pdf")
#: The textbook's Animator: these metrics, legends and line styles.
CURVE_KEYS = ("train_loss", "train_acc", "test_acc")
CURVE_LEGEND = ("train loss", "train acc", "test acc")
CURVE_FMTS = ("-", "m--", "g-.")
TEXTBOOK_YLIM = (0.3, 0.9)
WRONG = "#d62728"  # misclassified: red title and frame
#: How many images show and predict draw unless told, and a run's predictions.png holds: the textbook's 18.
SHOWN = 18


def check_shown(n: Any) -> None:
    """Refuse a count of images to draw that is no whole number of at least 1 (``fmclf.show(n=0)``); the command
    line's ``-n`` holds the same bound through click."""
    if not is_whole(n) or n < 1:
        raise UsageError(f"n must be a whole number of at least 1 (the images to draw), got {n!r}.")


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout (titles and labels never overlap); it shows
    itself in Jupyter (:class:`fmclf.draw.figure.Picture`)."""
    from .figure import Picture

    return Picture(figsize=(width, height), layout="constrained")


def render(fig: Figure, fmt: str = "png", dpi: int = DPI) -> bytes:
    """The figure as ``png``, ``svg`` or ``pdf`` bytes."""
    buf = io.BytesIO()
    # No creation date in SVG/PDF: the same run draws the same bytes.
    fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt in ("svg", "pdf") else {})
    return buf.getvalue()


def picture_format(path: str | pathlib.Path) -> str:
    """The format a file name asks for; a clear error for one we cannot write."""
    fmt = pathlib.Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(
            f"cannot write a picture to {str(path)!r}: the name must end in "
            f"{', '.join('.' + f for f in FORMATS)} (got {('.' + fmt) if fmt else 'no extension'})."
        )
    return fmt


def save(fig: Figure, path: str | pathlib.Path, dpi: int = DPI) -> pathlib.Path:
    """Write ``fig`` to ``path`` atomically, in the format its extension names."""
    path = pathlib.Path(path)
    atomic.write_bytes(path, render(fig, picture_format(path), dpi))
    return path


def grid_shape(n: int, max_cols: int = 10) -> tuple[int, int]:
    """Rows and columns for ``n`` tiles: at most ``max_cols`` a row, rows as even as can be
    (18 -> 2 x 9 as the textbook shows them, 6 -> 1 x 6, 25 -> 3 x 9)."""
    rows = max(1, math.ceil(n / max_cols))
    return rows, max(1, math.ceil(n / rows))


def as_picture(image: Any) -> Any:
    """One image as imshow wants it, ``(H, W)`` grey or ``(H, W, 3)`` colour in [0, 1], from ``(H, W)``,
    ``(1|3, H, W)`` (torch's layout) or ``(H, W, 1|3)``."""
    import numpy as np

    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"an image must be (H, W), (1|3, H, W) or (H, W, 1|3); got shape "
                         f"{tuple(np.asarray(image).shape)}")
    if a.ndim == 3 and a.size and float(a.max()) > 1.0:  # colour given as 0-255
        a = a / 255.0
    return a.clip(0.0, 1.0) if a.ndim == 3 else a


def image_grid(images: Sequence[Any], titles: Sequence[str] | None = None, *, wrong: Sequence[bool] | None = None,
               suptitle: str | None = None, scale: float = 1.5, cmap: str = "gray") -> Figure:
    """d2l's ``show_images``: a grid of images, each titled; the ones flagged in ``wrong`` get a red title
    and a red frame."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to draw")
    rows, cols = grid_shape(n)
    lines = max((t.count("\n") + 1 for t in titles), default=0) if titles else 0
    fig = new_figure(cols * scale, rows * (scale + 0.17 * lines) + (0.35 if suptitle else 0))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set(xticks=[], yticks=[])
        if i >= n:
            ax.set_axis_off()
            continue
        picture = as_picture(images[i])
        ax.imshow(picture, cmap=cmap if picture.ndim == 2 else None, interpolation="nearest")
        bad = bool(wrong[i]) if wrong is not None else False
        if titles:
            ax.set_title(titles[i], fontsize=9, color=WRONG if bad else "black", fontweight="bold" if bad else "normal")
        for spine in ax.spines.values():
            spine.set(visible=bad, color=WRONG, linewidth=2.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def samples_figure(images: Sequence[Any], labels: Sequence[str], *, title: str | None = None) -> Figure:
    """Sample images titled with their text labels."""
    return image_grid(images, [str(label) for label in labels], suptitle=title)


def predictions_figure(images: Sequence[Any], true: Sequence[str], predicted: Sequence[str], *,
                       title: str | None = None) -> Figure:
    """d2l's ``predict_ch3``: each image titled with its true label over the predicted
    one; misclassified images in red."""
    wrong = [t != p for t, p in zip(true, predicted)]
    right = len(wrong) - sum(wrong)
    head = f"{right} of {len(wrong)} right  (each title: true label over predicted label; red: wrong)"
    return image_grid(images, [f"{t}\n{p}" for t, p in zip(true, predicted)], wrong=wrong,
                      suptitle=f"{title}\n{head}" if title else head)


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str], *, title: str | None = None) -> Figure:
    """The confusion matrix: rows true classes, columns predicted ones, each cell's
    count written in it and shaded by the fraction of its true class."""
    import numpy as np

    counts = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"a confusion matrix for {k} classes must be {k}x{k}, got {counts.shape}")
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.6 * k + 2.2)
    fig = new_figure(side + 1.0, side)
    ax = fig.subplots()
    shade = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    labels = [str(c) for c in classes]
    ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels)
    ax.set(xlabel="predicted class", ylabel="true class")
    size = 8 if k <= 12 else max(4, 8 - (k - 12) // 3)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=size,
                        color="white" if fractions[i, j] > 0.55 else "black")
    accuracy = np.trace(counts) / max(int(counts.sum()), 1)
    ax.set_title(title or f"test set confusion matrix (accuracy {accuracy:.3f})", fontsize=11)
    fig.colorbar(shade, ax=ax, shrink=0.8, label="fraction of the true class")
    return fig


def draw_curves(ax: Axes, epochs_done: Sequence[int], series: Sequence[Sequence[float]], *, epochs: int,
                ylim: tuple[float, float] = TEXTBOOK_YLIM) -> None:
    """The textbook Animator's axes: epoch on x (1 to ``epochs``, whole numbers), train loss / train acc / test acc on
    y, in its line styles (with small markers, so a single epoch shows)."""
    from matplotlib.ticker import MaxNLocator

    ax.cla()
    for ys, fmt, label in zip(series, CURVE_FMTS, CURVE_LEGEND):
        ax.plot(epochs_done, ys, fmt, label=label, marker=".", markersize=5)
    # one epoch: its point in the middle
    ax.set(xlabel="epoch", xlim=(1, epochs) if epochs > 1 else (0.5, 1.5), ylim=ylim)
    if epochs <= 12:
        ax.set_xticks(range(1, epochs + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=8)
    ax.grid(True)


def curves_figure(history: Sequence[dict[str, Any]], *, epochs: int | None = None,
                  ylim: tuple[float, float] | None = None, title: str | None = None) -> Figure:
    """Training curves from a run's metrics rows. Without ``ylim`` the textbook's 0.3-0.9, widened only when a value
    falls outside it (a diverging loss stays in view)."""
    xs = [row["epoch"] for row in history]
    series = [[row[key] for row in history] for key in CURVE_KEYS]
    if ylim is None:
        values = [v for ys in series for v in ys if math.isfinite(v)]
        low, high = TEXTBOOK_YLIM
        ylim = (min([low] + [v - 0.03 for v in values]), max([high] + [v + 0.03 for v in values]))
    fig = new_figure(3.5, 2.5)
    ax = fig.subplots()
    draw_curves(ax, xs, series, epochs=epochs or max(xs, default=1), ylim=ylim)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


#: The splits a metric is recorded for, as line styles of :func:`metrics_figure`.
SPLIT_STYLES = {"train": "-", "valid": "--", "test": "-."}
#: One colour per split in every panel of :func:`metrics_figure` (matplotlib's first three), so that a
#: panel without train (ece, say) does not give train's colour to valid.
SPLIT_COLOURS = {"train": "C0", "valid": "C1", "test": "C2", "": "C0"}


def metric_families(history: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every numeric metric of a run's rows, grouped by what it measures: ``{"loss": {"train": [(epoch, v), ...],
    "valid": ..., "test": ...}, "ece": {...}, "lr": {"": [...]}}``, in the order the rows first show them.
    Read generically: whatever numeric keys the rows hold (a plugin's metrics too)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in history:
        for key in numeric_keys(row):
            split, _, name = key.partition("_")
            if split not in SPLIT_STYLES or not name:
                split, name = "", key
            out.setdefault(name, {}).setdefault(split, []).append((row["epoch"], float(row[key])))
    return out


def numeric_keys(row: dict[str, Any]) -> list[str]:
    """A metrics row's numeric keys but epoch and seconds, in its order: whatever it holds (a plugin's metrics too)."""
    return [k for k, v in row.items()
            if k not in ("epoch", "seconds") and is_number(v)]


def metrics_figure(history: Sequence[dict[str, Any]], *, epochs: int | None = None) -> Figure:
    """One panel per metric (loss, acc, each added metric, the learning rate), a line per split,
    epoch on x: everything a run records, beside the textbook's curves."""
    from matplotlib.ticker import MaxNLocator

    families = metric_families(history)
    if not families:
        raise ValueError("the run's rows hold no numeric metric to draw")
    n = len(families)
    rows, cols = math.ceil(n / 3), min(3, n)
    fig = new_figure(3.3 * cols, 2.5 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    last = epochs or max((row["epoch"] for row in history), default=1)
    for ax, (name, splits) in zip(axes, families.items()):
        for split, points in splits.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, SPLIT_STYLES.get(split, "-"), color=SPLIT_COLOURS[split], marker=".", markersize=5,
                    label=split or name)
        ax.set_title("learning rate" if name == "lr" else name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_xlim(*((1, last) if last > 1 else (0.5, 1.5)))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if name == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(True)
        if len(splits) > 1:
            ax.legend(loc="best", fontsize=7)
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig
