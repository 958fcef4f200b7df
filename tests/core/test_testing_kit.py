"""The author's kit: every contract check passes the built-ins and catches the
mistake it exists for, with a message naming the component; the fixture
registers a plugin for one test."""

from __future__ import annotations

import enum
import json
import re
import sys

import pytest
import torch
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli
from fmclf.data import InMemoryDataset, TensorBatches
from fmclf.errors import PluginError, UnknownComponentError
from fmclf.pytest_plugin import PluginRegistrar
from fmclf.testing import (
    ContractError,
    check_callback,
    check_dataset,
    check_import_is_light,
    check_loss,
    check_metric,
    check_model,
    check_plugin,
    check_updater,
    check_visualizer,
)


def test_the_builtins_keep_their_contracts(tiny_data):
    for name in ("scratch", "nn"):
        check_model(name)
    for name in ("fused", "naive"):
        check_loss(name)
    for name in ("sgd", "torch-sgd"):
        check_updater(name)
    check_updater("torch-sgd", options={"momentum": "0.9", "nesterov": "true"})
    for name in ("tqdm", "none"):
        check_visualizer(name)
    data = check_dataset("fashion-mnist", options={"data_root": str(tiny_data), "verify": False}, batch_size=16)
    assert len(data.train) == 6  # 96 examples in batches of 16


# --- models -----------------------------------------------------------------

class Wide(torch.nn.Module):
    def __init__(self, num_inputs, num_classes, extra=1):
        super().__init__()
        self.linear = torch.nn.Linear(num_inputs, num_classes + extra)

    def forward(self, X):
        return self.linear(X.flatten(1))


class Unused(Wide):
    def __init__(self, num_inputs, num_classes):
        super().__init__(num_inputs, num_classes, extra=0)
        self.spare = torch.nn.Parameter(torch.zeros(3))


class Centered(Wide):
    def forward(self, X):  # subtracts the batch mean: logits depend on the other examples
        X = X.flatten(1)
        return self.linear(X - X.mean(0))


@pytest.mark.parametrize(("factory", "fragment"), [
    (lambda *, num_inputs, num_classes: Wide(num_inputs, num_classes),
     "it returned shape (8, 11); logits must have shape (N, num_classes) = (8, 10)"),
    (lambda *, num_inputs, num_classes: Unused(num_inputs, num_classes), "parameter(s) spare receive no gradient"),
    (lambda *, num_inputs, num_classes: Centered(num_inputs, num_classes, extra=0),
     "logits of example 0 change with the rest of the batch"),
    (lambda *, num_inputs, num_classes: (lambda X: X), "a model must be a torch.nn.Module"),
    (lambda *, num_inputs, num_classes: torch.nn.Flatten(), "it has no trainable parameters"),
])
def test_check_model_catches(factory, fragment):
    with pytest.raises(ContractError) as caught:
        check_model(factory)
    assert fragment in str(caught.value) and "model '<lambda>'" in str(caught.value)


# --- losses -----------------------------------------------------------------

def ce(logits, y):
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


@pytest.mark.parametrize(("loss", "fragment"), [
    (lambda logits, y: ce(logits, y).mean(),
     "it returned (); a loss returns one value per example, shape (8,) (do not average"),
    (lambda logits, y: ce(logits, y).mean().expand(len(y)), "changed the loss of other examples"),
    (lambda logits, y: ce(logits, y).detach(), "does not backpropagate"),
    (lambda logits, y: ce(logits, y).cpu() if logits.device.type == "cpu" else None, None),  # fine on the CPU
])
def test_check_loss_catches(loss, fragment):
    def factory():
        return loss

    if fragment is None:
        check_loss(factory)
        return
    with pytest.raises(ContractError, match="loss 'factory'") as caught:
        check_loss(factory)
    assert fragment in str(caught.value)


# --- updaters ---------------------------------------------------------------

class Updater:
    reduction = "sum"

    def __init__(self, params, lr, sign=-1.0, clears=True, moves=True):
        self.params, self.lr, self.sign, self.clears, self.moves = list(params), lr, sign, clears, moves

    def zero_grad(self):
        if self.clears:
            for p in self.params:
                p.grad = None

    def step(self, batch_size):
        if not self.moves:
            return
        with torch.no_grad():
            for p in self.params:
                p += self.sign * self.lr * p.grad / batch_size


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({}, None),
    ({"sign": 1.0}, "raised the loss of a small linear classifier"),
    ({"moves": False}, "step() left parameter(s) weight, bias unchanged"),
    ({"clears": False}, "zero_grad() left gradients on weight, bias"),
])
def test_check_updater_catches(kwargs, fragment):
    def factory(*, params, lr: float):
        return Updater(params, lr, **kwargs)

    if fragment is None:
        check_updater(factory)
        return
    with pytest.raises(ContractError) as caught:
        check_updater(factory)
    assert fragment in str(caught.value) and "updater 'factory'" in str(caught.value)


def test_check_updater_refuses_an_object_that_is_no_updater():
    with pytest.raises(ContractError, match="lacks zero_grad and step"):
        check_updater(lambda *, params, lr: object())


# --- visualizers ------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.seen = []

    def on_fit_start(self, event):
        self.seen.append(("start", event.start_epoch, len(event.history)))

    def on_batch_end(self, event):
        self.seen.append(("batch", event.epoch, round(event.loss, 6) >= 0))

    def on_epoch_end(self, event):
        self.seen.append(("epoch", event.epoch))

    def on_fit_end(self, event):
        self.seen.append(("end", len(event.history), len(event.confusion)))


def test_check_visualizer_feeds_every_event_of_a_run_and_of_a_resumed_run(tmp_path):
    vis = check_visualizer(lambda *, run_dir: Recorder(), run_dir=tmp_path)
    kinds = [s[0] for s in vis.seen]
    assert vis.seen[0] == ("start", 1, 0) and ("start", 3, 2) in vis.seen
    assert [s for s in vis.seen if s[0] == "epoch"] == [("epoch", 1), ("epoch", 2), ("epoch", 3)]
    assert kinds.count("batch") == 9 and all(s[2] for s in vis.seen if s[0] == "batch")  # 24 examples in batches of 8
    assert [s for s in vis.seen if s[0] == "end"] == [("end", 2, 3), ("end", 3, 3)]


class Misspelled:
    def on_epoch_ends(self, event):
        pass


class FreshOnly(Recorder):
    def on_fit_start(self, event):
        assert not event.history, "cannot resume"


@pytest.mark.parametrize(("cls", "fragment"), [
    (Misspelled, "'on_epoch_ends' (did you mean 'on_epoch_end'?) is no event, so it is never called"),
    (FreshOnly, "raised AssertionError in on_fit_start: cannot resume"),
])
def test_check_visualizer_catches(cls, fragment):
    def factory(*, run_dir):
        return cls()

    with pytest.raises(ContractError) as caught:
        check_visualizer(factory)
    assert fragment in str(caught.value) and "visualizer 'factory'" in str(caught.value)


# --- datasets ---------------------------------------------------------------

def make_dataset(*, batch_size, device, n=20, X_shape=(1, 4, 4), declared=(1, 4, 4), label_max=2,
                 labels_dtype=torch.int64, length=None, shuffle_seed=None):
    X = torch.rand(n, *X_shape)
    y = (torch.arange(n) % (label_max + 1)).to(labels_dtype)
    train = TensorBatches(X, y, batch_size, shuffle=True, seed=0)
    if length is not None:
        train.__class__ = type("Lying", (TensorBatches,), {"__len__": lambda self: length})
    if shuffle_seed == "random":
        train.set_epoch = lambda epoch: setattr(train, "epoch", int(torch.randint(10**6, ())))
    return InMemoryDataset(train, TensorBatches(X, y, batch_size, shuffle=False), ("a", "b", "c"), declared)


@pytest.mark.parametrize(("kwargs", "device", "fragment"), [
    ({}, "cpu", None),
    ({"X_shape": (1, 4, 5)}, "cpu", "has X of shape (8, 1, 4, 5); expected (n, *input_shape) = (n, 1, 4, 4)"),
    ({"label_max": 3}, "cpu", "has a label outside 0..2 (there are 3 classes)"),
    ({"labels_dtype": torch.int32}, "cpu", "labels of dtype torch.int32"),
    ({"length": 2}, "cpu", "len(train) is 2 but it yields 3 batches"),
    ({"shuffle_seed": "random"}, "cpu", "two passes over epoch 1 came in different orders"),
    ({}, "meta", "has X on cpu, but the run asked for meta; batches must already be on the run's device"),
])
def test_check_dataset_catches(kwargs, device, fragment):
    def factory(*, batch_size, device):
        return make_dataset(batch_size=batch_size, device=device, **kwargs)

    if fragment is None:
        check_dataset(factory, batch_size=8, device=device)
        return
    with pytest.raises(ContractError) as caught:
        check_dataset(factory, batch_size=8, device=device)
    assert fragment in str(caught.value) and "dataset 'factory'" in str(caught.value)


# --- whole plugins and the fixture ------------------------------------------

class GoodPlugin:
    @fmclf.hookimpl
    def register_models(self, register):
        register("kit-linear", self.linear, help="a linear model")

    @staticmethod
    def linear(*, num_inputs: int, num_classes: int, bias: bool = True):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(num_inputs, num_classes, bias=bias))


def test_check_plugin_checks_every_component_of_a_plugin_object():
    (record,) = check_plugin(GoodPlugin(), name="good")
    assert (record.kind, record.name, record.plugin.name) == ("model", "kit-linear", "good")


def test_check_plugin_works_on_a_plugin_the_fixture_registered(fmclf_plugin):
    plugin = GoodPlugin()
    fmclf_plugin(plugin, "good")
    assert [r.name for r in check_plugin(plugin)] == ["kit-linear"]


def test_check_plugin_reports_a_plugin_that_does_not_load():
    class Typo:
        @fmclf.hookimpl
        def register_model(self, register):
            pass

    with pytest.raises(ContractError, match="did you mean 'register_models'"):
        check_plugin(Typo())
    with pytest.raises(ContractError, match="registers no component"):
        check_plugin(object(), name="empty")


def test_the_fixture_makes_the_api_and_the_cli_see_a_plugin(fmclf_plugin):
    host = fmclf_plugin(GoodPlugin(), "good")
    assert fmclf.get_component("model", "kit-linear").plugin.name == "good"
    assert [p.info.name for p in host.plugins if not p.info.builtin] == ["good"]  # installed plugins stay out
    result = CliRunner().invoke(cli, ["plugins", "--json", "kit"])
    assert result.exit_code == 0, result.output
    (component,) = json.loads(result.stdout)["components"]
    assert component["name"] == "kit-linear" and component["options"][0]["name"] == "bias"


def test_the_fixture_is_strict_so_a_broken_plugin_fails_the_test_at_once(fmclf_plugin):
    class Raises:
        @fmclf.hookimpl
        def register_losses(self, register):
            raise RuntimeError("broken on purpose")

    with pytest.raises(PluginError, match="broken on purpose"):
        fmclf_plugin(Raises(), "raises")


def test_the_fixture_undoes_everything_when_the_test_ends():
    mp = pytest.MonkeyPatch()
    PluginRegistrar(mp)(GoodPlugin(), "good")
    assert fmclf.get_component("model", "kit-linear")
    mp.undo()
    from fmclf.host.loading import set_host

    set_host(None)  # what the fixture's teardown does
    with pytest.raises(UnknownComponentError):
        fmclf.get_component("model", "kit-linear")


def test_check_import_is_light_catches_a_module_that_imports_torch(tmp_path, monkeypatch):
    (tmp_path / "kit_light.py").write_text("import fmclf\n")
    (tmp_path / "kit_heavy.py").write_text("import fmclf, torch\n")
    # A stand-in torch: the check looks for a module named torch, and the real one takes seconds to import.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    check_import_is_light("kit_light")
    with pytest.raises(ContractError, match="importing kit_heavy imports torch"):
        check_import_is_light("kit_heavy")
    assert "kit_heavy" not in sys.modules


# --- metrics, callbacks, and what check_loss and check_dataset check now ---------------------


def test_the_builtin_metrics_and_callbacks_keep_their_contracts(tiny_data):
    for name in ("accuracy", "loss", "ece", "macro-f1"):
        check_metric(name)
    for name in ("early-stop", "best"):
        check_callback(name)
    data = check_dataset("fashion-mnist", options={"data_root": str(tiny_data), "verify": False, "valid": 0.25},
                         batch_size=16)
    assert sum(len(y) for _, y in data.valid) == 20


class MeanOfBatchMeans:
    """Averages per-batch accuracies: depends on how the examples are batched."""

    def reset(self):
        self.means = []

    def update(self, logits, y):
        self.means.append(float((logits.argmax(1) == y).float().mean()))

    def compute(self):
        return sum(self.means) / len(self.means)


class Forgetful(MeanOfBatchMeans):
    def reset(self):
        if not hasattr(self, "means"):
            self.means = []

    def update(self, logits, y):
        self.means.append(float((logits.argmax(1) == y).sum()) / 50)

    def compute(self):
        return sum(self.means)


@pytest.mark.parametrize(("metric", "fragment"), [
    (MeanOfBatchMeans, "must not depend on how the examples are batched"),
    (Forgetful, "reset() must forget"),
    (lambda: type("NoReset", (), {"update": lambda s, logits, y: None, "compute": lambda s: 0.0})(), "lacks reset()"),
    (lambda: type("Vector", (MeanOfBatchMeans,), {"compute": lambda s: torch.ones(3)})(), "of shape (3,)"),
])
def test_check_metric_catches(metric, fragment):
    with pytest.raises(ContractError, match=re.escape(fragment)):
        check_metric(lambda *, num_classes: metric())


class Unsaveable:
    def on_epoch_end(self, event):
        pass

    def state_dict(self):
        return {"when": object()}

    def load_state_dict(self, state):
        pass


class Mode(enum.IntEnum):
    LOW = 1


class EnumState(Unsaveable):
    """A state a type check of plain data lets through (an IntEnum is an int) but a checkpoint cannot read back:
    the kit refuses it as a run's checkpoint does, naming the callback."""

    def state_dict(self):
        return {"mode": Mode.LOW}


@pytest.mark.parametrize(("factory", "fragment"), [
    (lambda *, run_dir: Unsaveable(), "holding objects other than tensors"),
    (lambda *, run_dir: EnumState(), "cannot be saved in a checkpoint and read back"),
    (lambda *, run_dir: type("Half", (), {"state_dict": lambda s: {}})(),
     "only one of state_dict() and load_state_dict()"),
    (lambda *, run_dir: type("Typo", (), {"on_epoch_ends": lambda s, e: None})(), "did you mean 'on_epoch_end'"),
])
def test_check_callback_catches(factory, fragment):
    with pytest.raises(ContractError, match=re.escape(fragment)):
        check_callback(factory)


def test_check_callback_feeds_on_exception_and_honours_a_stop(tmp_path):
    seen = []

    class Stopper:
        def on_epoch_end(self, event):
            seen.append(("epoch", event.epoch))
            event.control.stop("enough")

        def on_exception(self, event):
            seen.append(("exception", event.cause))

    check_callback(lambda *, run_dir: Stopper(), run_dir=tmp_path)
    assert seen[0] == ("epoch", 1) and ("epoch", 2) not in seen  # the first run stopped after epoch 1
    assert seen[-1] == ("exception", "interrupt")


def test_check_visualizer_refuses_a_visualizer_that_steers():
    class Steers:
        def on_epoch_end(self, event):
            event.control.stop("no")

    with pytest.raises(ContractError, match="a visualizer shows and does not steer"):
        check_visualizer(lambda *, run_dir: Steers())


def test_check_loss_compares_the_gradient_with_finite_differences():
    class HalfGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, y):
            ctx.save_for_backward(logits, y)
            return torch.nn.functional.cross_entropy(logits, y, reduction="none")

        @staticmethod
        def backward(ctx, grad):
            logits, y = ctx.saved_tensors
            g = logits.softmax(1) - torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
            return 0.5 * g * grad.unsqueeze(1), None  # half of what it should be

    with pytest.raises(ContractError, match="disagrees with finite differences"):
        check_loss(lambda: HalfGradient.apply)


def test_check_loss_wants_finite_extreme_logits_or_a_divergence_hint():
    def careless(logits, y):
        p = logits.exp() / logits.exp().sum(1, keepdim=True)
        return -p[range(len(y)), y].log()

    with pytest.raises(ContractError, match="for float32 logits shifted by \\+1e4 it returned a non-finite loss"):
        check_loss(lambda: careless)
    careless.divergence_hint = "It overflows past 88; use --loss fused."
    check_loss(lambda: careless)  # it says so, and what to do


def test_check_dataset_builds_two_shards_when_the_factory_takes_shard():
    def uneven(*, batch_size, device, shard=None):
        from fmclf.data import InMemoryDataset, TensorBatches

        n = 20 if shard is None or shard[0] == 0 else 12  # rank 1 holds fewer training examples
        X, y = torch.rand(n, 1, 2, 2), torch.arange(n) % 2
        return InMemoryDataset(TensorBatches(X, y, batch_size, shuffle=True),
                               TensorBatches(X, y, batch_size, shuffle=False),
                               ("a", "b"), (1, 2, 2))

    with pytest.raises(ContractError, match="train for 3 and 2 batches"):
        check_dataset(uneven, batch_size=8)
