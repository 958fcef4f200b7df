"""fmclf.fit from Python: registered names, the chapter's own objects, run folders, resume,
misuse in one sentence, and the figures of fmclf.show / fmclf.predict."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

import fmclf
from fmclf.errors import ComponentError, Interrupted, UsageError

from helpers import run_fmclf

PNG = b"\x89PNG\r\n\x1a\n"


def tiny(tiny_data: pathlib.Path, **extra) -> dict:
    """The settings every test trains with: the tiny data set, a seed, the CPU, no pictures drawn live."""
    return {"data_root": str(tiny_data), "verify": False, "batch_size": 16, "seed": 3, "device": "cpu",
            "visualizers": (), **extra}


class Chapter:
    """d2l 3.6 as the chapter writes it: W, b, softmax, net, cross_entropy, sgd behind updater(batch_size)."""

    def __init__(self, seed: int = 0, lr: float = 0.1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.W = (torch.randn(784, 10, generator=g) * 0.01).requires_grad_()
        self.b = torch.zeros(10, requires_grad=True)
        self.lr, self.steps = lr, 0
        W, b = self.W, self.b

        def softmax(X):
            X_exp = torch.exp(X)
            return X_exp / X_exp.sum(1, keepdim=True)

        def net(X):
            return softmax(torch.matmul(X.reshape((-1, W.shape[0])), W) + b)

        def cross_entropy(y_hat, y):
            return -torch.log(y_hat[range(len(y_hat)), y])

        def updater(batch_size):
            self.steps += 1
            with torch.no_grad():
                for param in (W, b):
                    param -= self.lr * param.grad / batch_size
                    param.grad.zero_()

        self.net, self.cross_entropy, self.updater = net, cross_entropy, updater

    def args(self, **kw) -> dict:
        return {"model": self.net, "params": [self.W, self.b], "loss": self.cross_entropy, "updater": self.updater,
                **kw}


def test_the_chapters_own_objects_train_as_they_are(tiny_data, tmp_path, capsys):
    ch = Chapter()
    W, before = ch.W, ch.W.detach().clone()
    result = fmclf.fit(**ch.args(), epochs=3, out=tmp_path / "run", **tiny(tiny_data))
    assert result.model is ch.net and ch.W is W and not torch.equal(ch.W.detach(), before)  # trained in place
    assert ch.steps == 3 * 6  # updater(batch_size) once a batch: 96 examples, 16 a batch
    assert len(result.history) == 3 and result.summary["test_acc"] == result.history[-1]["test_acc"] > 0.7
    out = capsys.readouterr().out
    assert "training net + cross_entropy + updater on fashion-mnist" in out
    assert "final: train loss" in out and f"run folder: {tmp_path / 'run'}" in out

    run = tmp_path / "run"
    config = (run / "config.toml").read_text()
    assert 'model = "net"' in config and 'from_python = [\n    "model",\n    "loss",\n    "updater",\n]' in config
    assert 'model = "your code:net"' in config  # the provenance: who made it
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert list(saved) == ["W", "b"] and torch.equal(saved["W"], ch.W.detach())  # by the names net reads them
    assert json.loads((run / "summary.json").read_text())["components"]["loss"] == "your code:cross_entropy"
    report = (run / "report.md").read_text()
    assert "net + cross_entropy + updater" in report and "fmclf run --config" not in report
    assert "model, loss, updater came from Python objects, so Python repeats the run" in report


def test_a_model_function_is_a_module_whose_parameters_are_its_own_tensors():
    from fmclf.train.adapters import FunctionModel

    ch = Chapter()
    W, b = ch.W, ch.b
    module = FunctionModel(ch.net, [W, b])
    assert [name for name, _ in module.named_parameters()] == ["W", "b"]
    assert all(p is q for p, q in zip(module.parameters(), (W, b)))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        W.add_(1.0)
    module.load_state_dict(state)  # a checkpoint restores them in place: net sees it
    assert torch.equal(ch.W.detach(), state["W"]) and ch.W is W
    module.double()  # .to(...) converts them in place, as it does a module's parameters
    assert ch.W is W and W.dtype == torch.float64 and W.requires_grad
    assert module(torch.rand(2, 784, dtype=torch.float64)).shape == (2, 10)


def test_names_train_and_fit_returns_the_module_it_built(tiny_data):
    result = fmclf.fit(model="nn", loss="fused", epochs=2, out=False, **tiny(tiny_data))
    assert isinstance(result.model, nn.Module) and result.run_dir is None
    X = torch.rand(4, 1, 28, 28)
    assert result.model(X).shape == (4, 10)
    assert result.summary["components"]["model"].startswith("fmclf:nn")


def test_a_module_with_a_torch_optimizer_is_trained_and_returned_itself(tiny_data, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    before = net[1].weight.detach().clone()
    trainer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    loss = nn.CrossEntropyLoss(reduction="none")
    result = fmclf.fit(model=net, loss=loss, updater=trainer, epochs=2, out=tmp_path / "run", **tiny(tiny_data))
    assert result.model is net and not torch.equal(net[1].weight.detach(), before)
    assert result.summary["test_acc"] > 0.7
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["updater"]["state"]  # the optimizer's momentum buffers are checkpointed
    assert "Sequential + CrossEntropyLoss + SGD on fashion-mnist" in (tmp_path / "run" / "report.md").read_text()


def test_resume_from_python_ends_where_an_uninterrupted_run_ends(tiny_data, tmp_path):
    straight = Chapter()
    fmclf.fit(**straight.args(), epochs=4, out=tmp_path / "straight", **tiny(tiny_data))
    split = Chapter()
    fmclf.fit(**split.args(), epochs=2, out=tmp_path / "split", **tiny(tiny_data))
    again = Chapter(seed=99)  # a fresh kernel: the same code, other numbers in W until the checkpoint loads
    result = fmclf.fit(**again.args(), epochs=4, resume=tmp_path / "split")
    assert torch.equal(again.W.detach(), straight.W.detach()) and torch.equal(again.b.detach(), straight.b.detach())
    assert [r["test_acc"] for r in result.history] == [
        json.loads(line)["test_acc"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]


def test_a_named_run_resumes_from_python_and_from_the_command_line(tiny_data, tmp_path):
    fmclf.fit(model="nn", epochs=1, out=tmp_path / "run", **tiny(tiny_data))
    result = fmclf.fit(resume=tmp_path / "run", epochs=2)  # the recorded settings, whatever fit's defaults say
    assert result.config.model == "nn" and [r["epoch"] for r in result.history] == [1, 2]
    done = run_fmclf("run", "--resume", str(tmp_path / "run"), "--epochs", "3")
    assert done.returncode == 0, done.stderr
    shown = run_fmclf("predict", str(tmp_path / "run"), "-n", "6", "--data-root", str(tiny_data))
    assert shown.returncode == 0, shown.stderr


def test_a_run_of_python_objects_is_refused_by_the_command_line_in_words(tiny_data, tmp_path):
    ch = Chapter()
    fmclf.fit(**ch.args(), epochs=1, out=tmp_path / "run", **tiny(tiny_data))
    resumed = run_fmclf("run", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "model 'net', loss 'cross_entropy' and updater 'updater' were Python objects" in resumed.stderr
    assert f"fmclf.fit(..., resume='{tmp_path / 'run'}')" in resumed.stderr
    predicted = run_fmclf("predict", str(tmp_path / "run"))
    assert predicted.returncode == 2 and "fmclf.predict(model, data)" in predicted.stderr


def test_resume_takes_the_objects_again_and_nothing_that_changes_the_run(tiny_data, tmp_path):
    ch = Chapter()
    fmclf.fit(**ch.args(), epochs=1, out=tmp_path / "run", **tiny(tiny_data))
    with pytest.raises(UsageError, match=r"the run's model 'net' was a Python object.*pass the same object again"):
        fmclf.fit(resume=tmp_path / "run", epochs=2)
    with pytest.raises(UsageError, match=r"its lr is 0.1, not 0.5; leave lr out"):
        fmclf.fit(**ch.args(), resume=tmp_path / "run", lr=0.5)
    with pytest.raises(UsageError, match=r"resume='.*nowhere' is not a run folder"):
        fmclf.fit(resume=tmp_path / "nowhere")


def test_a_model_function_without_params_trains_but_keeps_no_checkpoints(tiny_data, tmp_path, capsys):
    ch = Chapter()
    result = fmclf.fit(model=ch.net, loss=ch.cross_entropy, updater=ch.updater, epochs=2, out=tmp_path / "run",
                       **tiny(tiny_data))
    assert result.summary["test_acc"] > 0.7
    note = [line for line in capsys.readouterr().out.splitlines()  # (a busy machine adds its own note: not this test's)
            if line.startswith("Note:") and "other work is sharing the CPU" not in line]
    assert note == [("Note: model 'net' came without params, so fmclf cannot save or restore its weights: this run "
                     "keeps no checkpoints and cannot be resumed (pass params=[W, b] to keep them).")]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"metrics.jsonl", "summary.json", "report.md"} <= files and not {"checkpoint.pt", "model.pt"} & files
    with pytest.raises(UsageError, match="has no checkpoint to continue from"):
        fmclf.fit(model=ch.net, loss=ch.cross_entropy, updater=ch.updater, resume=tmp_path / "run")


def test_a_torch_optimizer_lends_a_model_function_its_parameters(tiny_data, tmp_path, capsys):
    ch = Chapter()
    trainer = torch.optim.SGD([ch.W, ch.b], lr=0.1)
    fmclf.fit(model=ch.net, loss=ch.cross_entropy, updater=trainer, epochs=1, out=tmp_path / "run", **tiny(tiny_data))
    assert "Note:" not in capsys.readouterr().out
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(saved["W"], ch.W.detach())


# Misuse: one clear sentence each, before any training where it can be known then.

def test_a_model_function_without_params_and_an_updater_built_by_name_is_refused(tiny_data):
    ch = Chapter()
    with pytest.raises(UsageError) as err:
        fmclf.fit(model=ch.net, loss=ch.cross_entropy, updater="sgd", out=False, **tiny(tiny_data))
    assert str(err.value).startswith("updater 'sgd' is built from the model's parameters, but model 'net' is a plain "
                                     "function that came without params")
    assert "params=[...]" in str(err.value) and str(err.value).count(". ") == 0  # one sentence


def test_a_loss_returning_one_number_is_refused_on_the_first_batch(tiny_data):
    ch = Chapter()
    with pytest.raises(ComponentError) as err:
        fmclf.fit(**ch.args(loss=lambda y_hat, y: ch.cross_entropy(y_hat, y).mean()), out=False, **tiny(tiny_data))
    assert str(err.value) == (
        "loss 'lambda' (your code) returned one number for a batch of 16, but a loss must return one value per "
        "example, shape (N,): fmclf sums or averages them itself, so leave out the loss's final .sum() or .mean().")
    assert ch.steps == 0


@pytest.mark.parametrize(("updater", "says"), [
    (lambda params, lr, batch_size: None, "(lambda takes (params, lr, batch_size); a function of the batch size is "
                                          "called as updater(batch_size) after each backward, and a factory takes "
                                          "params (and lr, epochs, steps_per_epoch, by name)"),
    (torch.optim.SGD, "(the class SGD: build one first, such as SGD(net.parameters(), lr=0.1))"),
    (42, "updater 'int' is neither"),
])
def test_an_updater_that_is_none_of_the_three_is_refused(tiny_data, updater, says):
    with pytest.raises(UsageError) as err:
        fmclf.fit(model="nn", updater=updater, out=False, **tiny(tiny_data))
    text = str(err.value)
    assert "is neither a torch.optim.Optimizer, an (optimizer, scheduler) pair, a function of the batch size like " \
           "the chapter's updater(batch_size), a factory of params, nor an object with zero_grad() and " \
           "step(batch_size)" in text and says in text
    assert "'sgd'" in text  # the registered ones, from the registry


def test_other_misuse_is_refused_in_words(tiny_data, tmp_path):
    ch = Chapter()
    cases = [
        ({"model": nn.Linear(784, 10), "params": [ch.W]}, "model 'Linear' is an nn.Module and brings its own"),
        ({"model": "nn", "params": [ch.W]}, "params= goes with a plain model function; model 'nn' is built by name"),
        (ch.args(params=[ch.W, "b"]), "params must hold tensors"),
        ({**ch.args(), "dataset": (iter([_batches(4, 0)]), [_batches(4, 1)])}, "the train batches are an iterator"),
        ({**ch.args(), "dataset": 42}, "dataset must be a registered name, (train_iter, test_iter)"),
        ({"hidden": 3}, "fmclf.fit() has no argument 'hidden'"),
        ({"label_smothing": 0.1}, "no argument 'label_smothing', and no component of this run takes an option of "
                                  "that name (did you mean 'label_smoothing'?); their options:"),
        ({"epochs": 0}, "epochs must be a whole number of at least 1"),
        ({"out": True}, "out must be a folder, None"),
    ]
    for kwargs, says in cases:
        settings = tiny(tiny_data)
        if "dataset" in kwargs:
            del settings["data_root"], settings["verify"]
        with pytest.raises(UsageError) as err:
            fmclf.fit(**{"out": False, **settings, **kwargs})
        assert says in str(err.value), (kwargs, str(err.value))
        assert "--" not in str(err.value).split("`")[0]  # Python's words, not the command line's flags


def test_metrics_and_callbacks_are_names_of_kinds_this_fmclf_has(tiny_data):
    for plural, name in (("metrics", "accuracy"), ("callbacks", "early-stop")):
        if plural[:-1] in fmclf.KINDS:  # once the kind exists: names passed on to the run, as --metric NAME is
            # early-stop watches valid_loss by default; this data set holds no validation split
            extra = {"options": {"callback.early-stop.monitor": "test_loss"}} if name == "early-stop" else {}
            result = fmclf.fit(epochs=1, out=False, **tiny(tiny_data), **{plural: (name,)}, **extra)
            assert getattr(result.config, plural) == [name]
        else:
            with pytest.raises(UsageError, match=rf"{plural}= takes {plural[:-1]} components, a kind this version"):
                fmclf.fit(epochs=1, out=False, **tiny(tiny_data), **{plural: (name,)})


def test_options_go_to_the_component_that_has_them(tiny_data):
    result = fmclf.fit(loss="fused", label_smoothing=0.1, options={"dataset": {"resize": 14}}, epochs=1, out=False,
                       **tiny(tiny_data))
    assert result.config.options["loss"]["label_smoothing"] == 0.1 and result.config.options["dataset"]["resize"] == 14
    flat = fmclf.fit(options={"loss.label_smoothing": 0.2}, epochs=1, out=False, **tiny(tiny_data))
    assert flat.config.options["loss"]["label_smoothing"] == 0.2


def test_out_false_writes_nothing_and_a_folder_that_holds_a_run_is_refused(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fmclf.fit(epochs=1, out=False, **tiny(tiny_data))
    assert not (tmp_path / "runs").exists()
    fmclf.fit(epochs=1, out="kept", **tiny(tiny_data))
    with pytest.raises(UsageError, match=r"out='kept' already holds a run: continue it with "
                                         r"fmclf.fit\(\.\.\., resume='kept'\)"):
        fmclf.fit(epochs=1, out="kept", **tiny(tiny_data))


def _batches(n: int, seed: int):
    """n examples of the tiny task, as plain tensors: class k lights up row band k."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    X = torch.rand(n, 1, 28, 28, generator=g) * 0.15
    for i, k in enumerate(y.tolist()):
        X[i, 0, k * 2 : k * 2 + 2] = 1.0
    return X, y


def test_a_dataloader_pair_is_data(tmp_path, capsys):
    from torch.utils.data import DataLoader, TensorDataset

    train = DataLoader(TensorDataset(*_batches(200, 0)), batch_size=20, shuffle=True)
    test = DataLoader(TensorDataset(*_batches(50, 1)), batch_size=25)
    result = fmclf.fit(model="nn", dataset=(train, test), epochs=3, lr=0.5, out=tmp_path / "run", seed=1,
                       device="cpu", visualizers=())
    assert result.config.batch_size == 20 and result.config.dataset == "TensorDataset"
    assert result.summary["test_acc"] > 0.7
    assert list(result.history[-1]["per_class_test_acc"]) == [str(i) for i in range(10)]
    assert "fmclf calls the 10 classes its test labels show 0 to 9" in capsys.readouterr().out
    with pytest.raises(UsageError, match="batch_size=64, but your training batches come 20 at a time"):
        fmclf.fit(model="nn", dataset=(train, test), batch_size=64, out=False)


class Unsized:
    """Batches that can be iterated again and again, but have no len() (a stream, say)."""

    def __init__(self, X, y, size: int, classes=None) -> None:
        self.X, self.y, self.size = X, y, size
        if classes:
            self.classes = classes

    def __iter__(self):
        for i in range(0, len(self.X), self.size):
            yield self.X[i : i + self.size], self.y[i : i + self.size]


def test_batches_without_len_are_counted_once_and_classes_are_read_where_kept(capsys):
    names = [f"c{i}" for i in range(10)]
    train, test = Unsized(*_batches(200, 0), 20, names), Unsized(*_batches(50, 1), 25)
    ch = Chapter(lr=0.5)
    result = fmclf.fit(**ch.args(), dataset=(train, test), epochs=2, out=False, device="cpu", visualizers=(), seed=0)
    assert ch.steps == 2 * 10 and list(result.history[-1]["per_class_test_acc"]) == names
    assert "the training batches have no len(); fmclf counts them with one pass" in capsys.readouterr().out


def test_an_interrupt_raises_with_pythons_advice(tiny_data, tmp_path):
    class Interrupter:
        def on_epoch_end(self, event):
            if event.epoch == 1:
                signal.raise_signal(signal.SIGINT)

    ch = Chapter()
    with pytest.raises(Interrupted) as err:
        fmclf.fit(**ch.args(), epochs=3, out=tmp_path / "run", **tiny(tiny_data, visualizers=[Interrupter()]))
    text = str(err.value)
    assert "stopped by SIGINT after epoch 1" in text and "fmclf run --resume" not in text
    assert f"fmclf.fit(model=..., params=..., loss=..., updater=..., resume='{tmp_path / 'run'}')" in text
    result = fmclf.fit(**ch.args(), resume=tmp_path / "run", visualizers=())
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def test_errors_show_in_ipython_as_their_paragraph(monkeypatch):
    err = UsageError("what was wrong, and what to do.")
    assert err._render_traceback_() == ["UsageError: what was wrong, and what to do."]
    monkeypatch.setenv("FMCLF_DEBUG", "1")
    with pytest.raises(NotImplementedError):  # IPython then shows the whole traceback
        err._render_traceback_()


def test_fit_names_settings_in_pythons_words(tiny_data, tmp_path, capsys):
    """Each message is worded where it is written, in the words of the front end that runs it
    (fmclf.wording): fit's keywords, never the command line's flags."""
    settings = {"out": False, **tiny(tiny_data)}
    cases = [
        ({"epochs": 0}, UsageError, "epochs must be a whole number of at least 1, got 0."),
        ({"resize": 0}, UsageError, 'or pass e.g. options={"dataset": {"resize": 64}}.'),
        ({"weight": []}, UsageError, 'e.g. options={"loss": {"weight": [1, 1, 2, ...]}}'),
        ({"loss": "naive", "raw_pixels": True, "lr": 1.0, "epochs": 2}, fmclf.errors.DivergenceError,
         'overflows when they grow; use loss="fused", or a smaller lr.'),
    ]
    for kwargs, error, says in cases:
        with pytest.raises(error) as err:
            fmclf.fit(**{**settings, **kwargs})
        assert says in str(err.value), (kwargs, str(err.value))
        assert "--" not in str(err.value) and "-o " not in str(err.value)
    fmclf.fit(**{**settings, "out": tmp_path / "run", "epochs": 2})
    fmclf.fit(resume=tmp_path / "run")
    assert "already trained 2 epoch(s) of 2; pass epochs=N to train further." in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"^epochs=1 is fewer than .* Pass epochs=2 or more \(or leave epochs out\), "
                                         r"or start a new run with `fmclf run --config .* --epochs 1`\.$"):
        fmclf.fit(resume=tmp_path / "run", epochs=1)
    from fmclf import wording

    assert not wording.current().python  # fit's wording ends with its call


def test_the_command_line_names_the_same_settings_with_flags(tiny_data, tmp_path):
    data = ["--data-root", str(tiny_data), "-o", "dataset.verify=false", "--batch-size", "16", "--seed", "3",
            "--device", "cpu", "--visualizer", "none"]
    for args, says in [(["--epochs", "0"], "--epochs must be a whole number of at least 1, got 0."),
                       (["-o", "dataset.resize=0"], "or pass e.g. -o dataset.resize=64."),
                       (["--loss", "naive", "-o", "dataset.raw_pixels=true", "--lr", "1", "--epochs", "2"],
                        "overflows when they grow; use --loss fused, or a smaller --lr.")]:
        result = run_fmclf("run", *data, *args, "--out", str(tmp_path / args[1]))
        assert says in result.stderr, (args, result.stderr)
    assert run_fmclf("run", *data, "--epochs", "2", "--out", str(tmp_path / "run")).returncode == 0
    fewer = run_fmclf("run", "--resume", str(tmp_path / "run"), "--epochs", "1")
    assert "Pass --epochs 2 or more (or leave --epochs out)" in fewer.stderr, fewer.stderr


def test_wording_names_flags_options_and_values_for_each_front_end():
    from fmclf.wording import PYTHON, Bare, flag, option, speaking

    said = lambda: [flag("batch_size"), flag("loss", "fused"), flag("epochs", "N"), flag("visualizers", "none"),  # noqa: E731
                    flag("cuda_graphs", False), flag("out", "x", quoted=True), flag("lr", Bare("1e-05")),
                    option("dataset", "verify", False), option("callback.early-stop", "mode", "min"),
                    option("dataset", "resize")]
    assert said() == ["--batch-size", "--loss fused", "--epochs N", "--visualizer none", "--no-cuda-graphs",
                      "--out 'x'", "--lr 1e-05", "-o dataset.verify=false", "-o callback.early-stop.mode=min",
                      "-o dataset.resize"]
    with speaking(PYTHON):
        assert said() == ["batch_size", 'loss="fused"', "epochs=N", 'visualizers="none"', "cuda_graphs=False",
                          "out='x'", "lr=1e-05", 'options={"dataset": {"verify": False}}',
                          'options={"callback.early-stop": {"mode": "min"}}', 'options={"dataset": {"resize": ...}}']
    assert flag("epochs", 3) == "--epochs 3"  # the command line's again once the block ends


def test_importing_fmclf_and_reaching_fit_import_no_torch():
    code = "import sys, fmclf; fmclf.fit; fmclf.show; fmclf.predict; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert {"fit", "show", "predict"} <= set(dir(fmclf)) and fmclf.fit.__doc__


# fmclf.show and fmclf.predict: figures that display inline and save.

def test_show_draws_a_data_set_by_name_or_the_images_given(tiny_data, tmp_path):
    fig = fmclf.show("fashion-mnist", n=6, data_root=str(tiny_data), verify=False)
    assert fig._repr_png_().startswith(PNG) and len(fig.axes) == 6
    assert fig.axes[0].get_title() in {"t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                                       "sneaker", "bag", "ankle boot"}
    assert fig.save(tmp_path / "s.svg").read_bytes().startswith(b"<?xml")
    X, y = _batches(4, 0)
    mine = fmclf.show(X.reshape(4, 28, 28), titles=["a", "b", "c", "d"])
    assert [ax.get_title() for ax in mine.axes] == ["a", "b", "c", "d"]
    from torch.utils.data import DataLoader, TensorDataset

    names = [f"k{i}" for i in range(10)]
    loader = fmclf.show(DataLoader(TensorDataset(X, y), batch_size=2), n=4, classes=names)
    assert [ax.get_title() for ax in loader.axes] == ["k0", "k1", "k2", "k3"]
    pair = fmclf.show((X, y), classes=names)
    assert [ax.get_title() for ax in pair.axes] == ["k0", "k1", "k2", "k3"]
    with pytest.raises(UsageError, match=r"reshape them first, as the chapter does: X.reshape\(n, 28, 28\)"):
        fmclf.show(X.reshape(4, 784))


def test_predict_draws_a_fit_a_run_folder_or_a_model_on_data(tiny_data, tmp_path):
    ch = Chapter()
    result = fmclf.fit(**ch.args(), epochs=2, out=False, **tiny(tiny_data))
    fig = fmclf.predict(result, n=6)
    assert fig._repr_png_().startswith(PNG) and len(fig.axes) == 6
    assert "\n" in fig.axes[0].get_title()  # true label over predicted label
    X, y = _batches(5, 1)
    direct = fmclf.predict(ch.net, (X, y), n=5)
    assert len(direct.axes) >= 5
    named = fmclf.fit(model="nn", epochs=1, out=tmp_path / "run", **tiny(tiny_data))
    from_folder = fmclf.predict(tmp_path / "run", n=4)
    assert from_folder._repr_png_().startswith(PNG)
    assert isinstance(named.model, nn.Module)


def test_a_metric_that_fails_to_reset_leaves_your_model_in_training_mode(tiny_data):
    """A run that fails while it evaluates hands the caller's model back as it found it."""

    class Broken:
        def update(self, logits, y):
            pass

        def compute(self):
            return 0.0

        def reset(self):
            raise RuntimeError("cannot reset")

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(fmclf.errors.FmclfError, match="cannot reset"):
        fmclf.fit(model=net, metrics=[Broken()], epochs=1, out=False, **tiny(tiny_data))
    assert net.training
