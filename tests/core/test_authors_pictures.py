"""metrics.png keeps one colour per split in every panel."""

from __future__ import annotations

from matplotlib.colors import to_hex

from fmclf.draw.pictures import metrics_figure


def test_each_split_has_one_colour_across_panels():
    history = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.1 / e, "test_loss": 1.2 / e, "valid_ece": 0.1 / e,
                "test_ece": 0.2 / e, "lr": 0.1} for e in (1, 2)]
    fig = metrics_figure(history)
    colours: dict[str, set[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    assert set(colours) >= {"train", "valid", "test"}
    assert all(len(c) == 1 for label, c in colours.items() if label in ("train", "valid", "test")), colours
    assert len({next(iter(colours[s])) for s in ("train", "valid", "test")}) == 3
