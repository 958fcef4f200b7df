"""fmclf.pictures: every picture renders headless with Agg into a real, readable image."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from fmclf.draw import pictures
from fmclf.errors import UsageError

from picture_checks import assert_picture, red_pixels

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


def _images(n: int, channels: int = 1, side: int = 28) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 0.2, size=(n, channels, side, side)).astype(np.float32)
    for i in range(n):  # a bright band whose place depends on the image
        X[i, :, (i * 3) % side : (i * 3) % side + 4, :] = 0.9
    return X


def _history(epochs: int = 4, loss0: float = 0.8) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 0.45 + (loss0 - 0.45) / e, "train_acc": 0.75 + 0.01 * e, "test_acc": 0.74 + 0.01 * e,
         "seconds": 0.1}
        for e in range(1, epochs + 1)
    ]


def test_grid_shape_follows_the_textbook():
    assert pictures.grid_shape(18) == (2, 9)  # show_images(X, 2, 9)
    assert pictures.grid_shape(6) == (1, 6)  # predict_ch3's n=6
    assert pictures.grid_shape(10) == (1, 10)
    assert pictures.grid_shape(25) == (3, 9)
    assert pictures.grid_shape(1) == (1, 1)


def test_as_picture_takes_torch_layout_grey_and_colour():
    assert pictures.as_picture(np.zeros((1, 5, 7))).shape == (5, 7)
    assert pictures.as_picture(np.zeros((5, 7))).shape == (5, 7)
    rgb = pictures.as_picture(np.full((3, 5, 7), 255.0))  # colour given as 0-255
    assert rgb.shape == (5, 7, 3) and rgb.max() == pytest.approx(1.0)
    assert pictures.as_picture(np.zeros((5, 7, 3))).shape == (5, 7, 3)
    with pytest.raises(ValueError, match="an image must be"):
        pictures.as_picture(np.zeros(784))


def test_samples_grid_titles_every_image(tmp_path):
    labels = [CLASSES[i % 10] for i in range(18)]
    fig = pictures.samples_figure(_images(18), labels, title="fashion-mnist, train set")
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == labels
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in shown)  # no axis clutter
    path = pictures.save(fig, tmp_path / "samples.png")
    pixels = assert_picture(path, min_size=(1500, 400))
    assert red_pixels(pixels) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.png"]  # no temporary file left


def test_colour_images_render_in_colour(tmp_path):
    X = _images(4, channels=3)
    X[:, 0] = 0.9  # strongly red
    pixels = assert_picture(pictures.save(pictures.samples_figure(X, ["a", "b", "c", "d"]), tmp_path / "rgb.png"),
                            min_size=(300, 200))
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    assert ((r - g > 100) & (r - b > 100)).sum() > 1000


@pytest.mark.parametrize("wrong", [0, 3])
def test_predictions_mark_the_wrong_ones_in_red(tmp_path, wrong):
    true = [CLASSES[i % 10] for i in range(12)]
    predicted = list(true)
    for i in range(wrong):
        predicted[i * 4] = "shirt" if true[i * 4] != "shirt" else "coat"
    fig = pictures.predictions_figure(_images(12), true, predicted)
    titled = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in titled] == [f"{t}\n{p}" for t, p in zip(true, predicted)]
    assert f"{12 - wrong} of 12 right" in fig.get_suptitle()
    pixels = assert_picture(pictures.save(fig, tmp_path / "pred.png"), min_size=(1200, 500))
    assert (red_pixels(pixels) > 200) == bool(wrong)


def test_confusion_matrix_is_labelled_with_the_class_names(tmp_path):
    rng = np.random.default_rng(1)
    confusion = rng.integers(0, 40, size=(10, 10))
    np.fill_diagonal(confusion, 800)
    fig = pictures.confusion_figure(confusion.tolist(), CLASSES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASSES)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASSES)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    cells = {t.get_text() for t in ax.texts}
    assert "800" in cells
    assert "accuracy" in ax.get_title()
    assert_picture(pictures.save(fig, tmp_path / "confusion.png"), min_size=(900, 900))
    with pytest.raises(ValueError, match="10x10"):
        pictures.confusion_figure([[1, 2], [3, 4]], CLASSES)


def test_curves_keep_the_textbook_axes_and_widen_only_for_outliers(tmp_path):
    fig = pictures.curves_figure(_history(10, loss0=0.8), epochs=10)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch"
    assert ax.get_xlim() == (1, 10)
    assert ax.get_ylim() == pytest.approx(pictures.TEXTBOOK_YLIM)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train loss", "train acc", "test acc"]
    assert_picture(pictures.save(fig, tmp_path / "curves.png"), min_size=(400, 300))
    high = pictures.curves_figure(_history(3, loss0=2.5), epochs=3).axes[0].get_ylim()
    assert high[1] > 2.5 and high[0] == pytest.approx(0.3)


def test_other_formats_and_a_bad_name(tmp_path):
    fig = pictures.curves_figure(_history(2), epochs=2)
    assert pictures.save(fig, tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert pictures.save(fig, tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(UsageError, match=r"must end in \.png, \.svg, \.pdf"):
        pictures.save(fig, tmp_path / "c.jpeg")
    assert not (tmp_path / "c.jpeg").exists()
