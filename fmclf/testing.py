"""Contract checks for plugin authors (docs/plugins.md, "Testing your plugin: the author's kit").

Each ``check_*`` builds a component (a registered name, a :class:`~fmclf.registry.ComponentRecord` or the factory
itself) the way ``fmclf run`` does, with the same core arguments and option parsing, and checks what the engine relies
on; a failure raises :class:`ContractError` (an ``AssertionError``) saying what broke and what the contract expects.
:func:`stress_loss` measures a loss on the stress grid of ``fmclf bench loss``. Importing this module imports neither
torch nor pytest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .errors import FmclfError
from .events import EVENTS
from .host import loading as plugins
from .host.loading import get_host, load_plugins
from .host.options import accepted_core_params, resolve_options
from .host.registry import IN_SENTENCE, ComponentRecord, PluginInfo, did_you_mean, first_doc_line
from .kinds import BY_NAME, KINDS
from .run.plan import call_factory
from .train.labels import out_of_range

if TYPE_CHECKING:
    import torch

__all__ = [
    "ContractError", "check_batched", "check_callback", "check_dataset", "check_import_is_light", "check_loss",
    "check_metric", "check_model", "check_plugin", "check_updater", "check_visualizer", "stress_loss",
]

Component = str | ComponentRecord | Callable[..., Any]


class ContractError(AssertionError):
    """A component does not do what the engine relies on."""


def _record(kind: str, component: Component) -> ComponentRecord:
    if isinstance(component, ComponentRecord):
        if component.kind != kind:
            raise TypeError(f"{component.describe()} is a {component.kind}, not a {kind}")
        return component
    if isinstance(component, str):
        return get_host().registry.get(kind, component)
    if callable(component):
        name = getattr(component, "__name__", type(component).__name__)
        module = getattr(component, "__module__", None) or "?"
        return ComponentRecord(kind, name, component, first_doc_line(component), PluginInfo(name, module))
    raise TypeError(f"expected a component name, a ComponentRecord or a factory, got {component!r}")


def _build(kind: str, component: Component, core: dict[str, Any], options: Mapping[str, Any] | None, *,
           accept: bool = False) -> tuple[ComponentRecord, Any]:
    """Build as a run does; with ``accept``, the kind's own check of what was built (:mod:`fmclf.kinds`) too."""
    record = _record(kind, component)
    built = call_factory(record, core, resolve_options(record, dict(options or {})))
    try:
        return record, BY_NAME[kind].accept(record, built) if accept else built
    except FmclfError as exc:
        raise ContractError(str(exc)) from None


def _fail(record: ComponentRecord, what: str) -> ContractError:
    return ContractError(f"{record.describe()}: {what}")


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    return actual.type == wanted.type and (wanted.index is None or actual.index in (wanted.index, None))


def check_model(model: Component, *, options: Mapping[str, Any] | None = None,
                input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, batch_size: int = 8,
                device: Any = "cpu") -> torch.nn.Module:
    """Build a model for inputs of ``input_shape`` and check that it is a ``torch.nn.Module`` with trainable parameters,
    maps ``(N, *input_shape)`` to finite logits ``(N, num_classes)`` on ``device`` for any N, treats each example on its
    own (in eval mode), lets every trainable parameter receive a gradient, and survives a ``state_dict`` round trip
    (checkpoints need it). Returns the model."""
    import torch

    device = torch.device(device)
    core = {"num_inputs": math.prod(input_shape), "num_classes": num_classes, "input_shape": tuple(input_shape)}
    record, net = _build("model", model, core, options, accept=True)
    net.to(device)
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not params:
        raise _fail(record, "it has no trainable parameters, so no updater can train it")
    X = torch.rand((batch_size, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    net.train()
    logits = net(X)
    if not isinstance(logits, torch.Tensor):
        raise _fail(record, f"forward returned {type(logits).__name__}; a model returns a tensor of logits")
    if tuple(logits.shape) != (batch_size, num_classes):
        raise _fail(record, f"for a batch of shape {tuple(X.shape)} it returned shape {tuple(logits.shape)}; "
                            f"logits must have shape (N, num_classes) = ({batch_size}, {num_classes})")
    if not logits.is_floating_point() or not bool(torch.isfinite(logits).all()):
        raise _fail(record, f"its logits must be finite floating-point numbers; got dtype {logits.dtype} with "
                            f"non-finite values or integers")
    if not _same_device(logits.device, device):
        raise _fail(record, f"its logits are on {logits.device}, not on {device}, where its inputs were")
    logits.sum().backward()
    if missing := [n for n, p in params if p.grad is None]:
        raise _fail(record, f"parameter(s) {', '.join(missing)} receive no gradient from the logits: they are not "
                            f"used in forward (set requires_grad=False on what should stay fixed)")
    net.eval()
    with torch.no_grad():
        whole, first = net(X), net(X[:1])
    if tuple(first.shape) != (1, num_classes):
        raise _fail(record, f"for a batch of one it returned shape {tuple(first.shape)}, not (1, {num_classes}); "
                            f"the last batch of an epoch is often smaller")
    if not torch.allclose(whole[0], first[0], rtol=1e-4, atol=1e-5):
        raise _fail(record, "in eval mode the logits of example 0 change with the rest of the batch; "
                            "each example's logits must depend on that example only")
    net.load_state_dict(net.state_dict())
    net.train()
    return net


def check_loss(loss: Component, *, options: Mapping[str, Any] | None = None, num_classes: int = 10, batch_size: int = 8,
               device: Any = "cpu") -> Callable:
    """Build a loss and check that ``loss(logits, y)`` returns one finite value per example, shape ``(N,)``, on the
    logits' device; that example i's value depends only on row i of the logits (a batch mean broadcast to ``(N,)``
    fails); that it backpropagates finite, non-zero gradients to the logits, and the right ones:
    ``torch.autograd.gradcheck`` compares them with finite differences in float64 (a hand-written backward that is off
    fails); and that it stays finite, with finite gradients, for extreme float32 logits (rows shifted by 1e4, spread
    over 1e4, near float32's largest) unless it carries a ``divergence_hint``, its way of saying that it does not and
    what to do then. Returns the loss."""
    import torch

    device = torch.device(device)
    record, fn = _build("loss", loss, {"num_classes": num_classes}, options, accept=True)
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(batch_size, num_classes, generator=g) * 2).to(device).requires_grad_()
    y = torch.randint(num_classes, (batch_size,), generator=g).to(device)
    out = fn(logits, y)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch_size,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _fail(record, f"for logits of shape ({batch_size}, {num_classes}) it returned {shape}; a loss returns "
                            f"one value per example, shape ({batch_size},) (do not average: the engine does)")
    if not out.is_floating_point() or not bool(torch.isfinite(out).all()):
        raise _fail(record, f"it returned non-finite or non-float values for moderate logits: "
                            f"{out.detach().cpu().tolist()}")
    if not _same_device(out.device, device):
        raise _fail(record, f"it returned a tensor on {out.device}, not on {device} with the logits")
    if not out.requires_grad:
        raise _fail(record, "its result does not require grad, so it does not backpropagate to the logits (is it "
                            "detached, or computed with numbers instead of tensors?)")
    out.sum().backward()
    grad = logits.grad
    if grad is None or not bool(torch.isfinite(grad).all()) or not bool(grad.abs().sum() > 0):
        raise _fail(record, "it does not backpropagate a finite, non-zero gradient to the logits (is the result "
                            "detached?)")
    with torch.no_grad():
        moved = logits.detach().clone()
        moved[0] += torch.randn(num_classes, generator=g).to(device)
        before, after = fn(logits.detach(), y), fn(moved, y)
    if not torch.allclose(before[1:], after[1:], rtol=1e-5, atol=1e-6):
        raise _fail(record, "changing the logits of example 0 changed the loss of other examples; "
                            "each value must depend on its own example only")
    _check_loss_gradient(record, fn, num_classes, device)
    _check_extreme_logits(record, fn, num_classes, device)
    return fn


def _check_loss_gradient(record: ComponentRecord, fn: Callable, num_classes: int, device: torch.device) -> None:
    """The backward pass against finite differences, in float64 (small: gradcheck differentiates numerically).
    A loss that computes in float32 whatever it is given (a ``.float()``) fails for that reason, said so."""
    import torch

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, num_classes, generator=g, dtype=torch.float64).to(device).requires_grad_()
    y = torch.randint(num_classes, (3,), generator=g).to(device)
    out = fn(logits, y)
    if isinstance(out, torch.Tensor) and out.dtype != torch.float64:
        raise _fail(record, f"for float64 logits it returned {out.dtype}: it computes in another precision than the "
                            f"logits it is given (a .float() or a float32 constant in it?), so neither its gradient "
                            f"nor a run in float64 is exact. Keep the logits' dtype: .to(logits.dtype), or "
                            f"torch.tensor(..., dtype=logits.dtype)")
    try:
        ok = torch.autograd.gradcheck(lambda o: fn(o, y), (logits,), eps=1e-6, atol=1e-5, rtol=1e-4,
                                      raise_exception=False)
    except Exception as exc:  # noqa: BLE001 - a loss that fails in float64 at all
        raise _fail(record, f"computing it on float64 logits to check its gradient raised {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]}") from None
    if not ok:
        raise _fail(record, "its gradient with respect to the logits disagrees with finite differences (float64 "
                            f"logits, torch.autograd.gradcheck): {_worst_gradient(fn, logits.detach(), y)}. A "
                            f"hand-written backward (an autograd.Function) or a detach() inside the loss is the "
                            f"usual cause")


def _worst_gradient(fn: Callable, logits: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> str:
    """Where the gradient of ``fn(logits, y).sum()`` is furthest from central differences, in one phrase."""
    import torch

    x = logits.clone().requires_grad_()
    fn(x, y).sum().backward()
    analytic = x.grad if x.grad is not None else torch.zeros_like(logits)
    numeric = torch.zeros_like(logits)
    with torch.no_grad():
        for i in range(logits.shape[0]):
            for j in range(logits.shape[1]):
                up, down = logits.clone(), logits.clone()
                up[i, j] += eps
                down[i, j] -= eps
                numeric[i, j] = (fn(up, y).sum() - fn(down, y).sum()) / (2 * eps)
    gap = (analytic - numeric).abs()
    i, j = divmod(int(gap.argmax()), logits.shape[1])
    return (f"the largest difference is at example {i}, class {j}: autograd gives {float(analytic[i, j]):.6g}, "
            f"finite differences {float(numeric[i, j]):.6g}")


def _check_extreme_logits(record: ComponentRecord, fn: Callable, num_classes: int, device: torch.device) -> None:
    """Finite losses and gradients where a careless softmax overflows, unless the loss says it may not be."""
    import torch

    from .train.engine import divergence_hint

    hint = divergence_hint(fn)
    g = torch.Generator().manual_seed(2)
    base = torch.randn(4, num_classes, generator=g)
    cases = {"shifted by +1e4": base + 1e4, "spread over 1e4": base * 1e4,
             "near float32's largest": 3e38 - base.abs() * 1e36}  # the true losses stay below 1e37
    y = torch.randint(num_classes, (4,), generator=g).to(device)
    for what, raw in cases.items():
        logits = raw.to(device).requires_grad_()
        out = fn(logits, y)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (4,):
            raise _fail(record, f"for logits {what} it returned {type(out).__name__} of shape "
                                f"{tuple(getattr(out, 'shape', ()))}; a loss returns one value per example")
        if hint:
            continue  # it says it may overflow, and what to do: the run tells the user that
        out.sum().backward()
        finite = bool(torch.isfinite(out).all()) and logits.grad is not None and bool(torch.isfinite(logits.grad).all())
        if not finite:
            raise _fail(record, f"for float32 logits {what} it returned a non-finite loss or gradient "
                                f"({out.detach().cpu().tolist()}); compute it stably (subtract each row's maximum), "
                                f"or give the loss a divergence_hint saying that it overflows and what to do")


def check_updater(updater: Component, *, options: Mapping[str, Any] | None = None, lr: float = 0.01, epochs: int = 2,
                  steps_per_epoch: int = 5, device: Any = "cpu") -> Any:
    """Build an updater for a small linear classifier and train it the way the engine does (``zero_grad``, backward,
    ``step(batch_size)``); check that a step changes every parameter, keeps them finite, lowers the loss (the step goes
    downhill), and that ``zero_grad`` clears the gradients. A ``torch.optim.Optimizer`` and an ``(optimizer,
    scheduler)`` pair are adapted as in a run; the factory is told ``epochs`` and ``steps_per_epoch`` and a scheduler is
    then stepped through the whole run, which must keep the rate finite and not below 0 (a schedule that fails after N
    steps fails here). Returns the (adapted) updater."""
    import torch

    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(6, 3).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    X = torch.randn(16, 6, generator=g).to(device)
    y = torch.randint(3, (16,), generator=g).to(device)
    core = {"params": list(model.parameters()), "lr": lr, "epochs": epochs, "steps_per_epoch": steps_per_epoch}
    record, upd = _build("updater", updater, core, options, accept=True)
    mean = getattr(upd, "reduction", "sum") == "mean"

    def loss() -> torch.Tensor:
        losses = torch.nn.functional.cross_entropy(model(X), y, reduction="none")
        return losses.mean() if mean else losses.sum()

    _check_first_step(record, upd, model, loss, len(y), lr)
    if callable(getattr(upd, "state_dict", None)) and callable(getattr(upd, "load_state_dict", None)):
        upd.load_state_dict(upd.state_dict())
    _check_schedule(record, upd, len(y), epochs, steps_per_epoch)
    return upd


def _check_first_step(record: ComponentRecord, upd: Any, model: Any, loss: Callable[[], Any], batch: int,
                      lr: float) -> None:
    """One step as the engine takes it: it must move every parameter downhill, and zero_grad clear the gradients."""
    import torch

    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        start = float(loss())
    upd.zero_grad()
    loss().backward()
    upd.step(batch)
    if unchanged := [n for (n, a), b in zip(model.named_parameters(), before) if torch.equal(b, a.detach())]:
        raise _fail(record, f"step() left parameter(s) {', '.join(unchanged)} unchanged; it must update the parameters "
                            f"it was given in place")
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _fail(record, "step() made parameters non-finite")
    with torch.no_grad():
        end = float(loss())
    if not end < start:
        raise _fail(record, f"one step with lr={lr} raised the loss of a small linear classifier from {start:.6f} "
                            f"to {end:.6f}; an update must go against the gradient")
    loss().backward()
    upd.zero_grad()
    if stale := [n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]:
        raise _fail(record, f"zero_grad() left gradients on {', '.join(stale)}; they would add up across batches")


def _check_schedule(record: ComponentRecord, upd: Any, batch: int, epochs: int, steps_per_epoch: int) -> None:
    """The rest of the run's steps, one taken: a schedule must last as long as the run it is built for."""
    from .train.updaters import current_lr, scheduler_of

    scheduler = scheduler_of(upd)
    if scheduler is None:
        return
    scheduler.load_state_dict(scheduler.state_dict())
    for step in range(2, epochs * steps_per_epoch + 1):  # the first was taken
        try:
            upd.step(batch)
        except Exception as exc:
            raise _fail(record, f"step {step} of a run of {epochs} epoch(s) x {steps_per_epoch} steps raised "
                                f"{type(exc).__name__}: {exc}; a schedule must last as long as the run it is "
                                f"given (epochs * steps_per_epoch steps)") from None
        rate = current_lr(upd)
        if rate is None or not math.isfinite(rate) or rate < 0:
            raise _fail(record, f"after step {step} of {epochs * steps_per_epoch} its learning rate is {rate}; "
                                f"a schedule keeps it a finite number, 0 or more")


def _tiny_dataset(device: torch.device) -> Any:
    import torch

    from .data import InMemoryDataset, TensorBatches

    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 3
    X = torch.randn(24, 1, 2, 2, generator=g) + y.view(-1, 1, 1, 1).float()
    train = TensorBatches(X.to(device), y.to(device), 8, shuffle=True, seed=0)
    test = TensorBatches(X[:12].to(device), y[:12].to(device), 8, shuffle=False)
    valid = TensorBatches(X[12:18].to(device), y[12:18].to(device), 8, shuffle=False)
    return InMemoryDataset(train, test, ("a", "b", "c"), (1, 2, 2), "fmclf.testing", valid=valid)


def check_visualizer(visualizer: Component, *, options: Mapping[str, Any] | None = None,
                     run_dir: str | pathlib.Path | None = None, device: Any = "cpu") -> Any:
    """Build a visualizer for ``run_dir`` (a temporary folder when None) and feed it every event of a real two-epoch run
    (with a validation split), then of a resumed third epoch, then of a run stopped by SIGINT: ``on_fit_start``,
    ``on_batch_end``, ``on_epoch_end``, ``on_fit_end``, ``on_exception``. Fails when it raises, when it calls
    ``control.stop`` (visualizers do not steer), or when it has an ``on_...`` method that is no event (a misspelled one
    is never called). Returns the visualizer."""
    return _check_listener("visualizer", visualizer, options, run_dir, device)


def check_callback(callback: Component, *, options: Mapping[str, Any] | None = None,
                   run_dir: str | pathlib.Path | None = None, device: Any = "cpu") -> Any:
    """Build a callback for ``run_dir`` (a temporary folder when None) and feed it the events of runs as
    :func:`check_visualizer` does, a stop it asks for honoured as a run honours it. With ``state_dict()`` /
    ``load_state_dict()`` (both or neither), its state must be what a checkpoint keeps (tensors, numbers, strings,
    lists, dicts: it survives ``torch.save`` and ``torch.load(weights_only=True)``) and go back in. Returns the
    callback."""
    return _check_listener("callback", callback, options, run_dir, device)


def _check_listener(kind: str, component: Component, options: Mapping[str, Any] | None,
                    run_dir: str | pathlib.Path | None, device: Any) -> Any:
    import torch

    from .train.engine import Parts, Trainer, TrainState

    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="fmclf-check-") as tmp:
            return _check_listener(kind, component, options, tmp, device)
    run_dir, device = pathlib.Path(run_dir), torch.device(device)
    record, obj = _build(kind, component, {"run_dir": run_dir}, options)
    if strays := [a for a in dir(obj) if a.startswith("on_") and a not in EVENTS and callable(getattr(obj, a))]:
        hints = [f"{a!r}{did_you_mean(a, EVENTS, form=IN_SENTENCE)}" for a in strays]
        raise _fail(record,
                    f"{', '.join(hints)} is no event, so it is never called; the events are {', '.join(EVENTS)}")
    stateful = [callable(getattr(obj, m, None)) for m in ("state_dict", "load_state_dict")]
    if kind == "callback" and any(stateful) and not all(stateful):
        raise _fail(record, "it has only one of state_dict() and load_state_dict(); a checkpoint needs both "
                            "to bring its state back on --resume")
    torch.manual_seed(0)
    dataset = _tiny_dataset(device)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).to(device)
    listeners = [(record, obj)]
    parts = Parts(dataset, model, lambda logits, y: torch.nn.functional.cross_entropy(logits, y, reduction="none"),
                  torch.optim.SGD(model.parameters(), lr=0.1), listeners if kind == "visualizer" else [],
                  {kind: record}, callbacks=listeners if kind == "callback" else [])
    warnings: list[str] = []
    try:
        state = Trainer(parts, device=device, epochs=2, run_dir=run_dir, warn=warnings.append).fit(TrainState())
        if kind == "callback" and all(stateful):
            _check_callback_state(parts)
        Trainer(parts, device=device, epochs=3, run_dir=run_dir, warn=warnings.append).fit(state)  # a resumed run
        # Ctrl-C twice, as the first batch is fetched: on_exception hears of it (cause "interrupt")
        interrupted = dataclasses.replace(parts,
                                          dataset=dataclasses.replace(dataset, train=_Interrupting(dataset.train)))
        with contextlib.suppress(KeyboardInterrupt):
            Trainer(interrupted, device=device, epochs=4, run_dir=run_dir, warn=warnings.append).fit(TrainState())
    except FmclfError as exc:
        raise ContractError(str(exc)) from exc
    if failed := [w for w in warnings if "in on_exception" in w]:
        raise ContractError(failed[0])
    return obj


class _Interrupting:
    """Training batches whose first fetch is interrupted, as by a second Ctrl-C."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Any:
        raise KeyboardInterrupt


def _check_callback_state(parts: Any) -> None:
    """Save the callbacks' state as a checkpoint does and give it back as ``--resume`` does, each refused (naming the
    callback) where a run would refuse it: :mod:`fmclf.run.checkpoint` owns both steps."""
    import io

    import torch

    from .run.checkpoint import callback_states, restore_callbacks

    buf = io.BytesIO()
    torch.save(callback_states(parts), buf)
    buf.seek(0)
    restore_callbacks(parts, torch.load(buf, weights_only=True))


def check_metric(metric: Component, *, options: Mapping[str, Any] | None = None, num_classes: int = 10,
                 device: Any = "cpu") -> Any:
    """Build a metric (given ``num_classes`` and, if it asks, a per-example cross-entropy as the run's ``loss``) and
    check that ``update(logits, y)`` then ``compute()`` gives a finite number or a dict of finite numbers (a 0-d tensor
    counts), the same whether the examples come in one batch or in several (fmclf hands a metric whole chunks of a
    split), and that ``reset()`` forgets what came before. A ``torch.nn.Module`` (a ``torchmetrics.Metric``) is moved
    to ``device`` as in a run. Returns the metric."""
    import torch

    from .train.heldout import as_values

    device = torch.device(device)
    ce = functools.partial(torch.nn.functional.cross_entropy, reduction="none")
    record, obj = _build("metric", metric, {"num_classes": num_classes, "loss": ce}, options, accept=True)
    if isinstance(obj, torch.nn.Module):
        obj.to(device)
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(50, num_classes, generator=g) * 2).to(device)
    y = torch.randint(num_classes, (50,), generator=g).to(device)
    other = (torch.randn(30, num_classes, generator=g) * 5).to(device)
    other_y = torch.randint(num_classes, (30,), generator=g).to(device)

    def run(batches: list[tuple[torch.Tensor, torch.Tensor]], what: str) -> dict[str, float]:
        obj.reset()
        for X, t in batches:
            obj.update(X, t)
        try:
            values = as_values(record, record.name, obj.compute())
        except FmclfError as exc:
            raise ContractError(str(exc)) from None
        if bad := {k: v for k, v in values.items() if not math.isfinite(v)}:
            raise _fail(record, f"compute() after {what} gave non-finite values {bad}")
        return values

    whole = run([(logits, y)], "one batch of 50 examples")
    run([(other, other_y)], "other examples")
    again = run([(logits, y)], "reset() and the first examples again")
    if not all(math.isclose(whole[k], again.get(k, math.nan), rel_tol=1e-5, abs_tol=1e-6) for k in whole):
        raise _fail(record, f"after reset() the same examples gave {again} instead of {whole}; reset() must forget "
                            f"every example seen before (a metric is reset before each split of each epoch)")
    pieces = run([(logits[:16], y[:16]), (logits[16:32], y[16:32]), (logits[32:], y[32:])], "three batches")
    if whole.keys() != pieces.keys() or not all(math.isclose(whole[k], pieces[k], rel_tol=1e-5, abs_tol=1e-6)
                                                for k in whole):
        raise _fail(record, f"the same 50 examples gave {whole} in one batch and {pieces} in three; a metric must "
                            f"not depend on how the examples are batched (fmclf hands it whole chunks)")
    return obj


def check_dataset(dataset: Component, *, options: Mapping[str, Any] | None = None, batch_size: int = 32,
                  device: Any = "cpu", seed: int = 0) -> Any:
    """Build a data set and check ``train``, ``test``, ``classes`` and ``input_shape``: every batch is ``(X, y)`` with X
    of shape ``(n, *input_shape)``, ``1 <= n <= batch_size``, floating point, y int64 labels in range (or ``(n,
    classes)`` probabilities), both on ``device``; ``len(train)`` is the number of batches; ``set_epoch(e)``, when
    present, repeats an epoch's order exactly (resuming relies on it). A ``valid`` split, when there is one, is checked
    as ``test`` is. A factory that takes ``shard`` is built again for ``shard=(0, 2)`` and ``(1, 2)``: both shards must
    train for the same number of batches on at most half the training examples each, and together hold every held-out
    example once. Returns the data set."""
    import torch

    device = torch.device(device)
    core = {"batch_size": batch_size, "device": device, "seed": seed, "shard": None}
    record, data = _build("dataset", dataset, core, options, accept=True)
    classes = list(data.classes)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise _fail(record, f"classes must be a non-empty sequence of text labels, got {data.classes!r}")
    shape = tuple(data.input_shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise _fail(record, f"input_shape must be a tuple of positive ints such as (1, 28, 28), got "
                            f"{data.input_shape!r}")
    splits = ("train", "test", "valid") if getattr(data, "valid", None) is not None else ("train", "test")
    for split in splits:
        batches = getattr(data, split)
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(1)
        count = 0
        for count, batch in enumerate(batches, start=1):
            _check_batch(record, split, count, batch, shape, len(classes), batch_size, device)
        if count == 0:
            raise _fail(record, f"its {split} split yields no batch")
        if split == "train" and len(batches) != count:
            raise _fail(record, f"len(train) is {len(batches)} but it yields {count} batches; the engine and progress "
                                f"bars use len(train)")
    if hasattr(data.train, "set_epoch"):
        def first_labels(epoch: int) -> torch.Tensor:
            data.train.set_epoch(epoch)
            return next(iter(data.train))[1].cpu()

        if not torch.equal(first_labels(1), first_labels(1)):
            raise _fail(record, "two passes over epoch 1 came in different orders; set_epoch(e) must fix the order so "
                                "a resumed run sees the same batches")
    if "shard" in accepted_core_params(record):
        _check_shards(record, data, splits, core, options)
    return data


def _examples(batches: Any) -> int:
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(1)
    return sum(len(y) for _, y in batches)


def _check_shards(record: ComponentRecord, data: Any, splits: tuple[str, ...], core: dict[str, Any],
                  options: Mapping[str, Any] | None) -> None:
    """Two shards (built again from ``core``): every process takes as many steps, and sees its share of the data."""
    full = {split: _examples(getattr(data, split)) for split in splits}
    shards = [_build("dataset", record, {**core, "shard": (rank, 2)}, options)[1] for rank in (0, 1)]
    lengths = [len(s.train) for s in shards]
    if lengths[0] != lengths[1]:
        raise _fail(record, f"shard=(0, 2) and shard=(1, 2) train for {lengths[0]} and {lengths[1]} batches; every "
                            f"process must take the same number of steps (fmclf.data.shard(n, shard) cuts them alike)")
    for split in splits:
        counts = [_examples(getattr(s, split, None) or []) for s in shards]
        if split == "train":
            if max(counts) > -(-full["train"] // 2):
                raise _fail(record, f"shards of 2 hold {counts} training examples of {full['train']}; each process "
                                    f"must hold only its share")
        elif sum(counts) != full[split]:
            raise _fail(record, f"shards of 2 hold {counts} {split} examples, {sum(counts)} together, but the whole "
                                f"{split} split has {full[split]}: every {split} example must be evaluated "
                                f"exactly once (fmclf.data.shard(n, shard, equal=False))")


def _check_batch(record: ComponentRecord, split: str, index: int, batch: Any, shape: tuple[int, ...], num_classes: int,
                 batch_size: int, device: torch.device) -> None:
    import torch

    where = f"batch {index} of {split}"
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)):
        raise _fail(record, f"{where} is {type(batch).__name__}; batches are (X, y) pairs of tensors")
    X, y = batch
    n = X.shape[0] if X.ndim else 0
    if tuple(X.shape[1:]) != shape or not 1 <= n <= batch_size:
        raise _fail(record, f"{where} has X of shape {tuple(X.shape)}; expected (n, *input_shape) = (n, "
                            f"{', '.join(map(str, shape))}) with 1 <= n <= {batch_size}")
    if not X.is_floating_point():
        raise _fail(record, f"{where} has X of dtype {X.dtype}; models expect floating-point inputs")
    if y.shape == (n,):
        if y.dtype != torch.int64:
            raise _fail(record, f"{where} has labels of dtype {y.dtype}; labels are int64 class indices")
        if out_of_range(y, record, where, num_classes) is not None:
            raise _fail(record, f"{where} has a label outside 0..{num_classes - 1} (there are {num_classes} classes)")
    elif not (y.shape == (n, num_classes) and y.is_floating_point()):
        raise _fail(record, f"{where} has y of shape {tuple(y.shape)}; expected ({n},) class indices or ({n}, "
                            f"{num_classes}) probabilities")
    for name, t in (("X", X), ("y", y)):
        if not _same_device(t.device, device):
            raise _fail(record, f"{where} has {name} on {t.device}, but the run asked for {device}; batches must "
                                f"already be on the run's device")


#: The contract check of each kind: ``check_KIND`` (see :mod:`fmclf.kinds`).
_CHECKS: dict[str, Callable[..., Any]] = {k: globals()[f"check_{k}"] for k in KINDS}


def check_plugin(plugin: object, *, name: str | None = None,
                 options: Mapping[tuple[str, str], Mapping[str, Any]] | None = None, skip: tuple[str, ...] = (),
                 device: Any = "cpu") -> list[ComponentRecord]:
    """Load ``plugin`` (a module, class or instance with ``@fmclf.hookimpl`` functions) on its own, strictly, and run
    the contract check of every component it registers. ``options`` maps ``(kind, name)`` to that component's options
    (needed for required ones); ``skip`` lists kinds or ``"kind:name"`` entries not to check (a dataset that needs
    files, say). Fails when loading reports anything. Returns the records it checked (not the skipped ones)."""
    pinned = [n for n, obj in plugins.process_plugins if obj is plugin]  # already there by the fixture
    name = pinned[0] if pinned else name or cast(str, getattr(plugin, "__name__", type(plugin).__name__))
    try:
        host = load_plugins(autoload=False, strict=True, extra=[] if pinned else [(name, plugin)])
    except FmclfError as exc:
        raise ContractError(str(exc)) from None
    if host.notes:
        raise ContractError("loading the plugin reported: " + " ".join(host.notes))
    records = [r for r in host.registry if r.plugin.name == name and r.plugin.dist is None]
    if not records:
        raise ContractError(f"plugin {name!r} registers no component; its hooks must call register(name, factory)")
    checked = [r for r in records if r.kind not in skip and f"{r.kind}:{r.name}" not in skip]
    for record in checked:
        _CHECKS[record.kind](record, options=(options or {}).get((record.kind, record.name)), device=device)
    return checked


def check_import_is_light(module: str) -> None:
    """Import ``module`` in a fresh interpreter and fail if that imports torch: fmclf imports every plugin to learn its
    components (``fmclf plugins``, a run that stops at a typo), so torch belongs inside factories."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ContractError(f"importing {module} failed:\n{done.stderr.strip()}")
    if done.stdout.strip() == "True":
        raise ContractError(f"importing {module} imports torch; every fmclf command that loads plugins would pay for "
                            f"it. Move `import torch` into the factories or into a module they import.")


def stress_loss(loss: Component | Callable[..., Any], reference: Callable | None = None, *,
                options: Mapping[str, Any] | None = None, device: Any = "cpu") -> list[Any]:
    """Run ``loss`` on every case of the stress grid (:mod:`fmclf.compare.stress`, the cases ``fmclf bench loss`` uses)
    and return one :class:`~fmclf.compare.stress.CaseResult` per case and dtype: how many rows of its loss (entries of
    its gradient) went inf or nan, and its largest errors against a float64 reference, relative and in ulps.

    ``loss`` is the loss itself, ``(logits, y) -> per-example loss``, or a registered loss name (or record), built with
    ``options`` for each case's number of classes. The reference is ``reference`` (a function of float64 logits and
    targets returning the per-example loss, or ``(loss, grad)``), else the loss's own ``reference`` attribute, else
    cross-entropy's when the loss agrees with cross-entropy on moderate logits, else none: then only finiteness is
    measured (each result's ``reference`` says which)."""
    from .compare import stress

    if isinstance(loss, (str, ComponentRecord)):
        record = _record("loss", loss)

        def build(num_classes: int) -> Callable:
            return _build("loss", record, {"num_classes": num_classes}, options)[1]

        return stress.stress(build, reference, per_classes=True, device=device)
    if not callable(loss):
        raise TypeError(f"expected a loss (a callable (logits, y) -> per-example loss) or a registered loss name, got "
                        f"{loss!r}")
    return stress.stress(loss, reference, device=device)


def check_batched(kind: str, component: Component, *, options: Mapping[str, Any] | None = None,
                  members: Sequence[Mapping[str, Any]] | None = None, epochs: int = 2, device: Any = "cpu",
                  rel: float = 1e-4) -> None:
    """Train a few small runs using ``component`` (a ``"model"``, ``"loss"`` or ``"updater"`` declared with
    :func:`fmclf.batchable`) as one batched group and each alone, and check that every member records what its run
    alone records (losses within ``rel``, accuracy within 0.002) and ends with the same weights. The other components
    are the run defaults (:class:`fmclf.run.config.RunConfig`). ``members``: one dict per member with ``seed``, ``lr``
    and ``options`` (per-model options of ``component``); by default seeds 0 and 1 times rates 0.05 and 0.2."""
    import torch

    from .host.batchable import batchable_of
    from .run.config import RunConfig
    from .train.batched import BatchedTrainer, Member
    from .train.engine import Parts, Trainer
    from .train.updaters import adapt_updater

    if kind not in ("model", "loss", "updater"):
        raise TypeError(f"check_batched checks a model, a loss or an updater, not a {kind!r}")
    device = torch.device(device)
    record = _record(kind, component)
    defaults = RunConfig()
    chosen = {k: (record if k == kind else get_host().registry.get(k, getattr(defaults, k)))
              for k in ("model", "loss", "updater")}
    declared = {k: batchable_of(r.factory) for k, r in chosen.items()}
    for k in (kind, *(k for k in chosen if k != kind)):  # the component checked first: its own failure is named
        if declared[k] is None:
            raise _fail(chosen[k], "does not declare it can be batched: decorate its factory with fmclf.batchable(...)")
    stacked = getattr(declared["updater"], "stacked", None)
    if stacked is None:
        raise _fail(chosen["updater"], "declares no stacked update (fmclf.batchable(stacked=...))")
    members = sorted(members or [{"seed": s, "lr": lr} for s in (0, 1) for lr in (0.05, 0.2)],
                     key=lambda m: m["seed"])
    base = _tiny_dataset(device)

    def build(member: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
        """One member's data (its seed's order), model, loss and adapted updater, as a run of it alone builds them."""
        own = {k: dict(options or {}, **member.get("options", {})) if k == kind else {} for k in chosen}
        data = dataclasses.replace(base, train=type(base.train)(base.train.X, base.train.y, base.train.batch_size,
                                                                shuffle=True, seed=member["seed"]))
        torch.manual_seed(member["seed"])
        _, model = _build("model", chosen["model"], {"num_inputs": 4, "num_classes": 3, "input_shape": (1, 2, 2)},
                          own["model"])
        model.to(device)
        _, loss = _build("loss", chosen["loss"], {"num_classes": 3}, own["loss"])
        core = {"params": list(model.parameters()), "lr": member["lr"], "epochs": epochs,
                "steps_per_epoch": len(data.train)}
        _, updater = _build("updater", chosen["updater"], core, own["updater"])
        return data, model, loss, adapt_updater(updater)

    alone, group = [], []  # each member trained alone, and built again (its seed reset) for the batched group
    for member in members:
        data, model, loss, updater = build(member)
        state = Trainer(Parts(data, model, loss, updater), device=device, epochs=epochs, cuda_graphs=False).fit()
        alone.append((state.history, [p.detach().clone() for p in model.parameters()]))
        _, model, loss, updater = build(member)
        group.append(Member(model, updater, loss, member["seed"]))
    trainer = BatchedTrainer(group, base, stacked, device=device, forward=getattr(declared["model"], "stacked", None))
    for epoch in range(1, epochs + 1):
        trainer.epoch(epoch)
    trainer.export()
    for member, (history, weights), got in zip(members, alone, group, strict=True):
        _compare_member(record, member, history, weights, got, epochs, rel)


def _compare_member(record: ComponentRecord, member: Mapping[str, Any], history: list[dict[str, Any]],
                    weights: list[Any], got: Any, epochs: int, rel: float) -> None:
    """A member of the group against its run alone: every epoch's history, and its weights at the end."""
    import torch

    who = f"member seed {member['seed']}, lr {member['lr']}, options {member.get('options', {})}"
    if got.diverged is not None or len(got.history) != len(history):
        raise _fail(record, f"{who}: the batched group trained {len(got.history)} epoch(s), alone {len(history)}")
    for row, mine in zip(history, got.history, strict=True):
        for key in ("train_loss", "test_loss", "valid_loss"):
            if not math.isclose(row[key], mine[key], rel_tol=rel, abs_tol=1e-7):
                raise _fail(record, f"{who}: epoch {row['epoch']} {key} is {mine[key]!r} batched but {row[key]!r} "
                                    f"alone; a batched component must compute what it computes alone")
        for key in ("train_acc", "test_acc", "valid_acc"):
            if abs(row[key] - mine[key]) > 0.002:
                raise _fail(record, f"{who}: epoch {row['epoch']} {key} is {mine[key]} batched but {row[key]} alone")
    for a, b in zip(weights, got.model.parameters(), strict=True):
        if not torch.allclose(a, b.detach(), rtol=rel, atol=1e-6):
            raise _fail(record, f"{who}: its weights after {epochs} epoch(s) differ batched and alone (largest "
                                f"difference {float((a - b.detach()).abs().max()):.3g})")
