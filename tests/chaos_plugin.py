"""A third-party-style plugin whose components misbehave on cue, for the robustness tests.

Loaded like any plugin: ``fmclf -p chaos_plugin run ...`` (with this folder on
PYTHONPATH) or ``load_plugins(include=["chaos_plugin"])``. Every trigger is
counted, not timed, so each test is deterministic.
"""

from __future__ import annotations

import os
import pathlib
import select
import signal
import sys

import fmclf


@fmclf.hookimpl
def register_datasets(register):
    register("flaky-data", flaky_data, help="tiny Fashion-MNIST files whose training batches fail at one batch")
    register("pause-data", pause_data, help="tiny Fashion-MNIST files; prints PAUSED and waits for a signal at one "
                                            "moment")


@fmclf.hookimpl
def register_models(register):
    register("linear", linear, help="flatten + linear; can send itself a signal during its n-th evaluation")
    register("boom-build", boom_build, help="a model whose factory raises")
    register("boom-forward", boom_forward, help="a model whose forward raises at call n (or returns odd logits from "
                                                "it on)")
    register("no-params", no_params, help="a model with no parameters")


@fmclf.hookimpl
def register_losses(register):
    register("inf-at", inf_at, help="the fused cross-entropy, except that call n returns inf")
    register("boom", boom_loss, help="a loss that raises")
    register("exit-loss", exit_loss, help="a loss that raises a BaseException (sys.exit(0) ...)")
    register("detached", detached_loss, help="cross-entropy, detached from the graph")
    register("wide", wide_loss, help="a loss that returns shape (N, 3)")
    register("bad-ref", bad_ref_loss, help="cross-entropy with a reference that is wrong (shape, raise or nan)")
    register("raising-ref", lambda: bad_ref_loss(mode="raise"), help="cross-entropy with a reference that raises")
    register("nan-ref", lambda: bad_ref_loss(mode="nan"), help="cross-entropy with a reference that is nan on large "
                                                               "logits")
    register("quit-loss", lambda: exit_loss(kind="custom"), help="a loss that raises a BaseException of its own")


@fmclf.hookimpl
def register_updaters(register):
    register("poison", poison, help="minibatch SGD that writes nan into the weights at step n")
    register("boom-step", boom_step, help="an updater whose step raises")


@fmclf.hookimpl
def register_visualizers(register):
    register("pause-at", pause_at, help="prints PAUSED at one batch and waits there for a signal")
    register("signal-at", signal_at, help="sends this process a signal at one batch (batch 0: at the end of the epoch)")
    register("boom-epoch-end", boom_epoch_end, help="a visualizer whose on_epoch_end raises")
    register("record", record_events, help="appends every event it hears to RUN_DIR/<name>.events, one line each")
    register("stop-now", stop_now, help="a visualizer that (wrongly) asks to stop the run")


@fmclf.hookimpl
def register_callbacks(register):
    register("record", record_events, help="appends every event it hears to RUN_DIR/<name>.events, one line each")
    register("boom-on-exception", boom_on_exception, help="a callback whose on_exception itself raises")
    register("exit-callback", exit_callback, help="a callback that raises a BaseException (SystemExit ...) at an event")
    register("odd-state", odd_state, help="a callback whose state_dict() cannot make the checkpoint's round trip")


# --- data -------------------------------------------------------------------------------


def flaky_data(*, batch_size: int, device, seed: int = 0, data_root: pathlib.Path | None = None, fail_at: int = 2):
    """Options:
        data_root: folder with tiny IDX files
        fail_at: the training batch whose fetch raises
    """
    from fmclf_plugins.fashion_mnist import fashion_mnist

    data = fashion_mnist(batch_size=batch_size, device=device, seed=seed, data_root=data_root, verify=False,
                         download=False)

    class Flaky:
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def set_epoch(self, epoch):
            self.inner.set_epoch(epoch)

        def __iter__(self):
            for i, batch in enumerate(self.inner, start=1):
                if i == fail_at:
                    raise OSError("lost the connection to the data server")
                yield batch

    data.train = Flaky(data.train)
    return data


def wait_for_a_signal(seconds: float = 120) -> None:
    """Print PAUSED and wait for a signal without a race: one arriving before the wait
    begins is still seen, because the wakeup fd records every signal."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.set_wakeup_fd(w)
    try:
        print("PAUSED", flush=True)
        select.select([r], [], [], seconds)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)


def pause_data(*, batch_size: int, device, seed: int = 0, data_root: pathlib.Path | None = None,
               pause: str = "build", verify: bool = False):
    """Options:
        data_root: folder with tiny IDX files
        verify: ignored (the files are tiny, not Fashion-MNIST); here so that the usual flags work
        pause: build (while the data set loads), test:K (when the test set is read the K-th time:
            once after each epoch, then for the pictures after the last), or none
    """
    from fmclf_plugins.fashion_mnist import fashion_mnist

    if pause == "build":
        wait_for_a_signal()
    data = fashion_mnist(batch_size=batch_size, device=device, seed=seed, data_root=data_root, verify=False,
                         download=False)
    if pause.startswith("test:"):
        at, inner, reads = int(pause[5:]), data.test, [0]

        class Pausing:
            def __len__(self):
                return len(inner)

            def __iter__(self):
                reads[0] += 1
                if reads[0] == at:
                    wait_for_a_signal()
                return iter(inner)

        data.test = Pausing()
    return data


# --- models -----------------------------------------------------------------------------


def linear(*, num_inputs: int, num_classes: int, signal_at_eval: int = 0, signal_name: str = "SIGTERM"):
    """Options:
        signal_at_eval: during this evaluation (1 = after epoch 1) send the signal; 0: never
        signal_name: SIGTERM or SIGINT
    """
    import torch

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(num_inputs, num_classes))
            self.evals, self.fired = 0, False

        def train(self, mode: bool = True):
            if not mode:
                self.evals += 1
            return super().train(mode)

        def forward(self, X):
            from fmclf.signals import training

            sig = getattr(signal, signal_name)
            # only while fmclf trains: a model is also evaluated after training (the pictures),
            # where a signal stops the command at once — these tests are about the evaluations
            # between epochs
            listening = training()
            if not self.training and self.evals == signal_at_eval and not self.fired and listening:
                self.fired = True
                os.kill(os.getpid(), sig)
            return self.net(X)

    return Linear()


def boom_build(*, num_inputs: int, num_classes: int):
    raise RuntimeError("no GPU kernels for this model")


def boom_forward(*, num_inputs: int, num_classes: int, at_call: int = 1, kind: str = "value"):
    """Options:
        at_call: the forward call that raises
        kind: value (ValueError), exit0, exit3, generator, custom, keyboard; nan or int: such logits from then on
    """
    import torch

    class Boom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(num_inputs, num_classes)
            self.calls = 0

        def forward(self, X):
            self.calls += 1
            out = self.lin(X.flatten(1))
            if kind in ("nan", "int"):
                return out if self.calls < at_call else out * float("nan") if kind == "nan" else out.round().long()
            if self.calls == at_call:
                if kind != "value":
                    raise_base(kind)
                raise ValueError("matrix shapes went wrong inside the model")
            return out

    return Boom()


# --- losses -----------------------------------------------------------------------------


def inf_at(*, at_call: int = 1):
    """Options:
        at_call: the training call (counted over the whole run, 1-based) that returns inf
    """
    import torch

    calls = [0]

    def loss(logits, y):
        out = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        if not torch.is_grad_enabled():  # the held-out loss after each epoch: not counted
            return out
        calls[0] += 1
        if calls[0] == at_call:
            out = out + float("inf")
        return out

    return loss


def boom_loss():
    def loss(logits, y):
        raise ZeroDivisionError("division by zero in the loss")

    return loss


# --- updaters ---------------------------------------------------------------------------


def poison(*, params, lr: float, at_step: int = 1):
    """Options:
        at_step: the step (counted over the whole run, 1-based) after which the weights hold nan
    """
    import torch

    class Poison:
        reduction = "sum"

        def __init__(self):
            self.params, self.steps = list(params), 0

        def zero_grad(self):
            for p in self.params:
                p.grad = None

        @torch.no_grad()
        def step(self, batch_size):
            self.steps += 1
            for p in self.params:
                p -= lr * p.grad / batch_size
                if self.steps == at_step:
                    p.fill_(float("nan"))

    return Poison()


def boom_step(*, params, lr: float):
    class Boom:
        def zero_grad(self):
            pass

        def step(self, batch_size):
            raise RuntimeError("the optimizer state is on another device")

    return Boom()


# --- visualizers ------------------------------------------------------------------------


def pause_at(*, run_dir=None, epoch: int = 1, batch: int = 1):
    """Options:
        epoch: the epoch
        batch: the batch after which to print PAUSED and wait for a signal
    """

    class PauseAt:
        def on_batch_end(self, event):
            if (event.epoch, event.batch) == (epoch, batch):
                # Wait for the signal without a race: a signal arriving before the wait
                # begins is still seen, because the wakeup fd records every signal.
                r, w = os.pipe()
                os.set_blocking(w, False)
                previous = signal.set_wakeup_fd(w)
                try:
                    print("PAUSED", flush=True)
                    select.select([r], [], [], 120)
                finally:
                    signal.set_wakeup_fd(previous)
                    os.close(r)
                    os.close(w)

    return PauseAt()


def signal_at(*, run_dir=None, epoch: int = 1, batch: int = 1, signal_name: str = "SIGINT", times: int = 1):
    """Options:
        epoch: the epoch
        batch: the batch after which to send the signal (0: at the end of the epoch)
        signal_name: SIGINT or SIGTERM
        times: how many times to send it
    """
    sig = getattr(signal, signal_name)

    def fire():
        for _ in range(times):
            os.kill(os.getpid(), sig)

    class SignalAt:
        def on_batch_end(self, event):
            if batch and (event.epoch, event.batch) == (epoch, batch):
                fire()

        def on_epoch_end(self, event):
            if not batch and event.epoch == epoch:
                fire()

    return SignalAt()


def boom_epoch_end(*, run_dir=None):
    class Boom:
        def on_epoch_end(self, event):
            raise KeyError("no such column in the plot")

    return Boom()


def record_events(*, run_dir=None, name: str = "record"):
    """Options:
        name: the file (RUN_DIR/NAME.events) the events go to
    """
    path = pathlib.Path(run_dir) / f"{name}.events"

    def write(line: str) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    class Record:
        def on_fit_start(self, event):
            write(f"fit_start {event.start_epoch} {','.join(event.splits)}")

        def on_epoch_end(self, event):
            write(f"epoch_end {event.epoch} stopping={event.control.stopping}")

        def on_fit_end(self, event):
            write("fit_end")

        def on_exception(self, event):
            write(f"exception {event.cause} {event.epoch} {event.batch} {type(event.error).__name__}")

    return Record()


def stop_now(*, run_dir=None):
    class StopNow:
        def on_epoch_end(self, event):
            event.control.stop("a visualizer wants out")

    return StopNow()


def boom_on_exception(*, run_dir=None):
    class Boom:
        def on_exception(self, event):
            raise RuntimeError("the log file is gone too")

    return Boom()


# --- BaseExceptions, odd tensors and odd states (issue 25) -----------------------------------


class Abandon(BaseException):
    """A BaseException of a plugin's own (neither Exception, SystemExit nor KeyboardInterrupt)."""


def raise_base(kind: str) -> None:
    """Raise the BaseException ``kind`` names: exit0 (sys.exit(0)), exit3, generator (GeneratorExit),
    custom (:class:`Abandon`) or keyboard (a bare KeyboardInterrupt, no signal behind it)."""
    if kind == "exit0":
        sys.exit(0)
    if kind == "exit3":
        raise SystemExit(3)
    if kind == "generator":
        raise GeneratorExit("closed")
    if kind == "keyboard":
        raise KeyboardInterrupt
    raise Abandon("the plugin gave up")


def no_params(*, num_inputs: int, num_classes: int):
    import torch

    class NoParams(torch.nn.Module):
        def forward(self, X):
            return torch.zeros(X.shape[0], num_classes)

    return NoParams()


def exit_loss(*, kind: str = "exit0"):
    """Options:
        kind: exit0, exit3, generator, custom or keyboard
    """
    def loss(logits, y):
        raise_base(kind)

    return loss


def detached_loss():
    import torch

    def loss(logits, y):
        return torch.nn.functional.cross_entropy(logits, y, reduction="none").detach()

    return loss


def wide_loss():
    import torch

    def loss(logits, y):
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")[:, None].expand(-1, 3)

    return loss


def bad_ref_loss(*, mode: str = "shape"):
    """Options:
        mode: shape (the reference returns (N, 1)), raise (it raises) or nan (it is nan on rows whose logits are large)
    """
    import torch

    def loss(logits, y):
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")

    def reference(logits, y):
        out = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        if mode == "shape":
            return out[:, None]
        if mode == "raise":
            raise ValueError("the reference has no float64 kernel")
        return torch.where(logits.abs().amax(dim=1) > 50, float("nan"), out)

    loss.reference = reference
    return loss


def exit_callback(*, run_dir=None, event: str = "on_epoch_end", kind: str = "exit0"):
    """Options:
        event: the event method that raises
        kind: exit0, exit3, generator, custom or keyboard
    """
    class ExitCallback:
        pass

    setattr(ExitCallback, event, lambda self, e: raise_base(kind))
    return ExitCallback()


def odd_state(*, run_dir=None, state: str = "intenum"):
    """Options:
        state: intenum (an IntEnum), lambda (a defaultdict with a lambda), subclass (a tensor subclass),
            deep (nesting too deep to pickle) or huge (100 MB)
    """
    import collections
    import enum

    import torch

    class Mode(enum.IntEnum):
        MIN = 1

    class Tagged(torch.Tensor):
        pass

    def value():
        if state == "intenum":
            return {"mode": Mode.MIN}
        if state == "lambda":
            return {"counts": collections.defaultdict(lambda: 0, {"a": 1})}
        if state == "subclass":
            return {"best": torch.zeros(3).as_subclass(Tagged)}
        if state == "deep":
            nested: list = []
            for _ in range(100_000):
                nested = [nested]
            return {"deep": nested}
        return {"big": torch.zeros(26 * 2**20, dtype=torch.float32)}

    class OddState:
        def on_epoch_end(self, event):
            pass

        def state_dict(self):
            return value()

        def load_state_dict(self, s):
            pass

    return OddState()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("a plugin module: load it with `fmclf -p chaos_plugin`")
