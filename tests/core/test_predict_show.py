"""`fmclf predict`, `fmclf show` and the pictures and report every run leaves behind."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.draw import pictures

from picture_checks import assert_picture, red_pixels

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
TINY = ["-o", "dataset.verify=false"]


def fmclf(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def _test_labels(folder: pathlib.Path) -> list[str]:
    return [CLASSES[b] for b in (folder / "t10k-labels-idx1-ubyte").read_bytes()[8:]]


@pytest.fixture
def tiny_run(tiny_data, tmp_path) -> pathlib.Path:
    run = tmp_path / "run"
    result = fmclf("run", "--data-root", tiny_data, *TINY, "--epochs", 2, "--batch-size", 32, "--seed", 1,
                   "--visualizer", "none", "--out", run)
    assert result.exit_code == 0, result.output
    assert "pictures: curves.png, confusion.png, predictions.png, metrics.png; report.md links them" in result.output
    return run


def test_every_run_leaves_pictures_and_a_report(tiny_run):
    assert_picture(tiny_run / "confusion.png", min_size=(900, 900))
    assert_picture(tiny_run / "curves.png", min_size=(450, 330))  # drawn at the end when no animator ran
    assert_picture(tiny_run / "predictions.png", min_size=(1500, 400))
    assert_picture(tiny_run / "metrics.png", min_size=(1400, 350))  # loss, acc and lr panels beside the curves
    report = (tiny_run / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert {"curves.png", "metrics.png", "confusion.png", "predictions.png", "config.toml",
            "metrics.jsonl"} <= set(links)
    assert all((tiny_run / link).is_file() for link in links)
    history = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    for row in history:  # the per-epoch table holds metrics.jsonl's numbers
        assert (f"| {row['epoch']} | {row['train_loss']:.4f} | {row['train_acc']:.4f} | {row['test_acc']:.4f} |"
                in report)
        assert set(row["per_class_test_acc"]) == set(CLASSES)
    summary = json.loads((tiny_run / "summary.json").read_text())
    for name, acc in summary["per_class_test_acc"].items():
        assert re.search(rf"\| {re.escape(name)} \| {acc:.4f} \| 4 \| ", report), name  # 40 test images: 4 a class
    assert "seed 1" in report and "scratch + fused + sgd on fashion-mnist" in report


def test_animator_curves_are_kept_and_listed(tiny_data, tmp_path):
    run = tmp_path / "run"
    result = fmclf("run", "--data-root", tiny_data, *TINY, "--epochs", 2, "--batch-size", 32, "--seed", 2,
                   "--visualizer", "animator", "-o", "visualizer.animator.ylim_high=3", "--out", run)
    assert result.exit_code == 0, result.output
    svg = (run / "curves.svg").read_text()
    assert ">3.0<" in svg or "3.0" in svg  # the animator's own y axis, not redrawn with the textbook's
    assert_picture(run / "curves.png", min_size=(450, 330))
    assert "![Training curves](curves.png)" in (run / "report.md").read_text()


def test_a_resumed_run_redraws_the_curves_an_animator_left(tiny_data, tmp_path):
    run = tmp_path / "run"
    first = fmclf("run", "--data-root", tiny_data, *TINY, "--epochs", 1, "--batch-size", 32, "--seed", 3,
                  "--visualizer", "animator", "--out", run)
    assert first.exit_code == 0, first.output
    one_epoch = (run / "curves.png").read_bytes()
    again = fmclf("run", "--resume", run, "--epochs", 3, "--visualizer", "none")
    assert again.exit_code == 0, again.output
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    drawn = (run / "curves.png").read_bytes()
    assert drawn != one_epoch  # not the stale one-epoch picture
    assert drawn == pictures.render(pictures.curves_figure(history, epochs=3), "png")  # all three epochs


def test_predict_draws_true_and_predicted_labels(tiny_run, tiny_data, tmp_path):
    out = tmp_path / "p.png"
    result = fmclf("predict", tiny_run, "-n", 6, "--out", out)
    assert result.exit_code == 0, result.output
    right = int(re.search(r"(\d) of 6 right", result.output).group(1))
    assert f"weights from {tiny_run / 'model.pt'}" in result.output
    pixels = assert_picture(out, min_size=(1100, 300))
    assert (red_pixels(pixels) > 200) == (right < 6)


def test_predict_marks_every_wrong_prediction(tiny_run, tiny_data):
    import torch

    weights = torch.load(tiny_run / "model.pt", weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in weights.items()}, tiny_run / "model.pt")  # predicts class 0 always
    result = fmclf("predict", tiny_run, "-n", 10)
    assert result.exit_code == 0, result.output
    expected = _test_labels(tiny_data)[:10].count("t-shirt")
    assert f"{expected} of 10 right" in result.output
    assert 0 < expected < 10
    assert red_pixels(assert_picture(tiny_run / "predictions.png", min_size=(1500, 300))) > 1000


def test_predict_falls_back_to_the_checkpoint_and_explains_errors(tiny_run, tmp_path):
    (tiny_run / "model.pt").unlink()
    result = fmclf("predict", tiny_run, "-n", 4, "--out", tmp_path / "c.svg")
    assert result.exit_code == 0, result.output
    assert f"weights from {tiny_run / 'checkpoint.pt'}" in result.output
    assert (tmp_path / "c.svg").read_text().count("<svg") == 1

    result = fmclf("predict", tmp_path / "nowhere")
    assert result.exit_code == 2 and "not a run folder" in result.output
    result = fmclf("predict", tiny_run, "--out", tmp_path / "p.gif")
    assert result.exit_code == 2 and "must end in .png, .svg, .pdf" in result.output
    (tiny_run / "checkpoint.pt").unlink()
    result = fmclf("predict", tiny_run)
    assert result.exit_code == 1 and "holds no weights" in result.output and "Traceback" not in result.output
    (tiny_run / "model.pt").write_bytes(b"not a model")
    result = fmclf("predict", tiny_run)
    assert result.exit_code == 1 and "cannot be loaded" in result.output


def test_show_labels_the_images(tiny_data, tmp_path):
    out = tmp_path / "test.png"
    result = fmclf("show", "--data-root", tiny_data, *TINY, "--split", "test", "-n", 12, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"12 test images: {', '.join(_test_labels(tiny_data)[:12])}" in result.output
    assert red_pixels(assert_picture(out, min_size=(1200, 400))) == 0

    def train_labels(seed):
        result = fmclf("show", "--data-root", tiny_data, *TINY, "-n", 18, "--seed", seed,
                       "--out", tmp_path / f"{seed}.png")
        assert result.exit_code == 0, result.output
        return result.output.splitlines()[0]

    assert train_labels(3) == train_labels(3) != train_labels(4)


PLUGIN = textwrap.dedent(
    """
    import fmclf
    from fmclf.data import InMemoryDataset, TensorBatches


    @fmclf.hookimpl
    def register_datasets(register):
        register("flat", flat, help="vectors, not images")
        register("colour", colour, help="small colour images")


    def _make(shape, batch_size, device):
        import torch

        g = torch.Generator().manual_seed(0)
        X = torch.rand(20, *shape, generator=g)
        if len(shape) == 3:
            X[:, 0] = 1.0  # red
        y = torch.arange(20) % 2
        return InMemoryDataset(TensorBatches(X, y, batch_size, shuffle=False), TensorBatches(X, y, batch_size, shuffle=False),
                               ["even", "odd"], tuple(shape))


    def flat(*, batch_size, device):
        return _make((12,), batch_size, device)


    def colour(*, batch_size, device):
        return _make((3, 16, 16), batch_size, device)
    """  # noqa: E501 - a plugin's source, written out as it is
)


def test_show_needs_images_and_draws_colour(tmp_path, monkeypatch):
    (tmp_path / "h6_extra_data.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = fmclf("-p", "h6_extra_data", "show", "--dataset", "flat", "--out", tmp_path / "f.png")
    assert result.exit_code == 2
    assert "inputs of shape (12,), not images" in result.output and not (tmp_path / "f.png").exists()
    result = fmclf("-p", "h6_extra_data", "show", "--dataset", "colour", "-n", 4, "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert "4 train images: even, odd, even, odd" in result.output
    pixels = assert_picture(tmp_path / "c.png", min_size=(300, 150))
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    assert ((r - g > 80) & (r - b > 80)).sum() > 1000
    result = fmclf("show", "-o", "model.hidden=3", "--out", tmp_path / "x.png")
    assert result.exit_code == 2 and "only dataset.OPTION=VALUE" in result.output


def test_help_imports_neither_torch_nor_matplotlib():
    code = textwrap.dedent(
        """
        import sys
        from fmclf.cli import main
        for command in (["--help"], ["predict", "--help"], ["show", "--help"]):
            sys.argv = ["fmclf", *command]
            try:
                main()
            except SystemExit:
                pass
        print("torch" in sys.modules, "matplotlib" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Draw a run's predictions" in out and "Draw sample images" in out
    assert out.split()[-2:] == ["False", "False"]


@pytest.mark.realdata
def test_real_run_pictures(real_data, tmp_path):
    run = tmp_path / "real"
    result = fmclf("run", "--data-root", real_data, "--epochs", 1, "--seed", 0, "--visualizer", "animator",
                   "--out", run)
    assert result.exit_code == 0, result.output
    for name, size in (("curves.png", (450, 330)), ("confusion.png", (1200, 1100)), ("predictions.png", (1900, 500))):
        assert_picture(run / name, min_size=size)
    report = (run / "report.md").read_text()
    assert report.count("| 1000 |") == 10  # every class's 1000 test images
    result = fmclf("predict", run, "-n", 18)
    assert result.exit_code == 0 and re.search(r"\b1[0-8] of 18 right", result.output), result.output


@pytest.mark.cuda
def test_predict_on_cuda(tiny_run):
    result = fmclf("predict", tiny_run, "-n", 6, "--device", "cuda")
    assert result.exit_code == 0 and " of 6 right" in result.output, result.output


def test_show_and_predict_name_the_classes_of_the_same_data_alike():
    """(train_iter, test_iter) whose class names only the test loader's data set keeps: show draws the train
    images under those names, as predict does the test images (show looked in the train loader only)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fmclf.interactive import predict, show

    class Named(TensorDataset):
        classes = ["even", "odd"]

    X, y = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
    data = (DataLoader(TensorDataset(X, y), batch_size=4), DataLoader(Named(X, y), batch_size=4))
    shown = [ax.get_title() for ax in show(data, n=4).axes if ax.get_title()]
    assert shown == ["even", "odd", "even", "odd"], shown
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))
    predicted = [ax.get_title().split("\n")[0] for ax in predict(net, data, n=4).axes if ax.get_title()]
    assert predicted == ["even", "odd", "even", "odd"], predicted


@pytest.mark.parametrize("n", [0, -2, 2.5])
def test_show_and_predict_from_python_hold_n_to_the_command_lines_bound(n):
    """fmclf.show and fmclf.predict refuse the counts `-n` refuses (n=-2 drew all but the last two images of a
    batch, n=0 failed inside matplotlib or torch)."""
    import torch

    from fmclf.errors import UsageError
    from fmclf.interactive import predict, show

    X, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    for draw in (lambda: show((X, y), n=n), lambda: predict(net, (X, y), n=n)):
        with pytest.raises(UsageError, match="n must be a whole number of at least 1"):
            draw()
    assert fmclf("show", "-n", str(n)).exit_code == 2


def test_show_draws_a_held_out_valid_split_from_the_command_line_as_from_python(tiny_data, tmp_path):
    """`--split valid` is a split as fmclf.show(split="valid") takes it (the command line refused it)."""
    from fmclf.interactive import show

    out = tmp_path / "valid.png"
    result = fmclf("show", "--data-root", tiny_data, "-o", "dataset.verify=false", "-o", "dataset.valid=0.25",
                   "--split", "valid", "-n", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.exists() and result.output.startswith("4 valid images: ")
    python = show(data_root=str(tiny_data), verify=False, valid=0.25, split="valid", n=4)
    assert [ax.get_title() for ax in python.axes if ax.get_title()][:4] == \
        result.output.split(": ", 1)[1].splitlines()[0].split(", ")
    refused = fmclf("show", "--data-root", tiny_data, "-o", "dataset.verify=false", "--split", "valid")
    assert refused.exit_code == 2 and "no 'valid' split" in refused.output, refused.output


def test_a_data_set_without_the_split_asked_for_is_refused_in_words(fmclf_plugin):
    """A data set built whole (no preview) asked for a split it lacks: said, not an AttributeError (nor the data
    set's class names drawn as a split)."""
    import fmclf as fm
    from fmclf.data import InMemoryDataset, TensorBatches
    from fmclf.errors import UsageError
    from fmclf.interactive import show

    class Whole:
        @fm.hookimpl
        def register_datasets(self, register):
            register("whole", self.whole)

        @staticmethod
        def whole(*, batch_size: int, device):
            import torch

            X, y = torch.rand(4, 1, 8, 8), torch.arange(4) % 2
            batches = TensorBatches(X, y, batch_size, shuffle=False)
            return InMemoryDataset(batches, batches, ["a", "b"], (1, 8, 8))

    fmclf_plugin(Whole(), "whole")
    for split in ("valid", "classes"):
        with pytest.raises(UsageError, match=f"data set 'whole' has no '{split}' split"):
            show("whole", split=split, n=2)
    result = fmclf("show", "--dataset", "whole", "--split", "valid")
    assert result.exit_code == 2 and "data set 'whole' has no 'valid' split" in result.output, result.output
