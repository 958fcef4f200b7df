"""fmclf from Python and Jupyter: :func:`fit`, :func:`show` and :func:`predict`.

``fit`` is ``fmclf run`` as a function, each component a registered name or an object of the user's own;
``show`` and ``predict`` are the chapter's ``show_images`` and ``predict_ch3``, as figures that display
inline. Messages are worded for Python (:mod:`fmclf.wording`). Importing this module imports no torch.
"""

from __future__ import annotations

import functools
import html
import inspect
import os
import pathlib
import sys
import textwrap
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .draw.pictures import SHOWN, check_shown, numeric_keys
from .errors import UsageError
from .kinds import BY_NAME, ROWS
from .numbers import is_number
from .run.config import NOTEBOOK_VISUALIZERS, OWN_SETTINGS, RESUMABLE, RunConfig
from .wording import PYTHON, Wording, speaking

if TYPE_CHECKING:
    from .draw.figure import Picture
    from .host.loading import PluginHost
    from .host.registry import ComponentRecord

__all__ = ["FitResult", "fit", "predict", "show"]

#: The kinds a run has one of.
_SINGLE = tuple(row.name for row in ROWS if not row.many)
#: Every setting fit takes as a keyword (all of a run's but the records of options and of Python objects), each with
#: fit's default: the setting's own, or none of a kind a run has several of.
_KEYWORDS = {f.name: () if f.default is MISSING else f.default for f in fields(RunConfig)
             if f.name not in ("options", "from_python")}


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (where output can be shown as rich HTML and images, and redrawn in place)."""
    if "IPython" not in sys.modules:  # not even loaded: certainly no kernel
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None  # None outside IPython, and in a terminal IPython


def _execution_count() -> int | None:
    from IPython import get_ipython

    return getattr(get_ipython(), "execution_count", None)


@dataclass
class FitResult:
    """What :func:`fit` returns. In Jupyter it shows as a table of the final metrics."""

    model: Any  #: the trained model: the very object passed in, or the nn.Module built by name
    history: list[dict[str, Any]]  #: one row per epoch, as metrics.jsonl holds them
    summary: dict[str, Any]  #: the final metrics, as summary.json holds them
    run_dir: pathlib.Path | None  #: the run folder (None with out=False)
    config: RunConfig  #: the run's settings, every option resolved
    _data: Any = field(default=None, repr=False, compare=False)  # the user's data object, for predict()
    _shown_in: int | None = field(default=None, repr=False, compare=False)  # the cell fit() displayed it in

    def final(self) -> dict[str, float]:
        """The last epoch's numbers: losses, accuracies and every other metric recorded."""
        row = self.history[-1] if self.history else {}
        return {k: row[k] for k in numeric_keys(row)}

    def _per_class(self) -> dict[str, float]:
        """The last epoch's test accuracy of each class, by the class's name (its keys name the classes)."""
        return self.history[-1].get("per_class_test_acc", {}) if self.history else {}

    def headline(self) -> str:
        """One line: the components, the epochs, how long and where."""
        c = self.config
        seconds = self.summary.get("seconds")
        took = f" in {seconds:.2f} s" if is_number(seconds) else ""
        n = len(self.history)
        return (f"{c.model} + {c.loss} + {c.updater} on {c.dataset}: {n} epoch{'s' if n != 1 else ''}{took} "
                f"on {self.summary.get('device', c.device)}")

    def __str__(self) -> str:
        per_class = self._per_class()
        lines = [f"done: {self.headline()}",
                 "final: " + "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in self.final().items())]
        if per_class:
            lines.append("per-class test acc: " + "  ".join(f"{c} {a:.2f}" for c, a in per_class.items()))
        lines.append(f"run folder: {self.run_dir}" if self.run_dir is not None else "no run folder (out=False)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        acc = self.final().get("test_acc")
        return (f"FitResult({self.headline()}" + (f", test acc {acc:.4f}" if acc is not None else "")
                + f", run_dir={str(self.run_dir) if self.run_dir else None!r})")

    def _repr_html_(self) -> str | None:
        if self._shown_in is not None and self._shown_in == _execution_count():
            return None  # fit() showed it in this very cell: its value adds only the one-line repr
        return self.html()

    def html(self) -> str:
        """The summary as an HTML table (what Jupyter shows)."""
        e = html.escape
        final = self.final()
        per_class = self._per_class()
        cell = "padding:2px 8px;text-align:right"
        rows = [
            f"<p><b>fmclf.fit</b>: {e(self.headline())}</p>",
            "<table><tr>" + "".join(f"<th style='{cell}'>{e(k.replace('_', ' '))}</th>" for k in final) + "</tr><tr>"
            + "".join(f"<td style='{cell}'>{v:.4f}</td>" for v in final.values()) + "</tr></table>",
        ]
        if per_class:
            rows.append(
                "<table><tr><th style='text-align:left'>per-class test acc</th>"
                + "".join(f"<th style='{cell}'>{e(str(c))}</th>" for c in per_class) + "</tr><tr><td></td>"
                + "".join(f"<td style='{cell}'>{a:.2f}</td>" for a in per_class.values()) + "</tr></table>")
        where = (f"run folder <code>{e(str(self.run_dir))}</code> (report.md, config.toml, metrics.jsonl)"
                 if self.run_dir is not None else "no run folder (out=False)")
        rows.append(f"<p>{where}</p>")
        return "<div>" + "".join(rows) + "</div>"

    def _show(self) -> None:
        """Display the summary in the notebook now, once."""
        from IPython.display import display

        display(self)
        self._shown_in = _execution_count()


def _noting_given(fn: Callable[..., FitResult]) -> Callable[..., FitResult]:
    """Pass ``fn`` the names of the arguments its caller gave (``_given``): ``fit(..., resume=)`` keeps a run's
    recorded settings for those left out, whatever their defaults say. Each run setting ``fn`` does not name
    comes in ``**component_options``; the signature shows it as a keyword of its own, with its default, so a
    new setting (or kind) is a keyword of ``fit`` (and completes in Jupyter) from its field alone."""
    sig = inspect.signature(fn)
    *named, rest = (p for p in sig.parameters.values() if p.name != "_given")
    keyword, hints = inspect.Parameter.KEYWORD_ONLY, typing.get_type_hints(RunConfig)
    added = [inspect.Parameter(name, keyword, default=default, annotation=hints[name])
             for name, default in _KEYWORDS.items() if name not in sig.parameters]
    public = sig.replace(parameters=[*named, *added, rest])

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> FitResult:
        given = frozenset(public.bind(*args, **kwargs).arguments)
        return fn(*args, _given=given, **kwargs)

    wrapper.__signature__ = public  # type: ignore[attr-defined]
    return wrapper


@_noting_given
def fit(model: Any = RunConfig.model, loss: Any = RunConfig.loss, updater: Any = RunConfig.updater,
        dataset: Any = RunConfig.dataset, epochs: int = RunConfig.epochs, batch_size: int = RunConfig.batch_size,
        lr: float = RunConfig.lr, device: str = RunConfig.device, seed: int | None = None,
        visualizers: Sequence[Any] = NOTEBOOK_VISUALIZERS, callbacks: Sequence[Any] = (), metrics: Sequence[Any] = (),
        out: str | os.PathLike[str] | bool | None = None, options: Mapping[str, Any] | None = None, *,
        params: Sequence[Any] | None = None, resume: str | os.PathLike[str] | None = None,
        plugins: Sequence[Any] = (), _given: frozenset[str] = frozenset(), **component_options: Any) -> FitResult:
    """Train a classifier, as ``fmclf run`` does, and return the trained model with its history.

    Each of ``model``, ``loss``, ``updater`` and ``dataset`` is a registered name (``fmclf plugins`` lists them; their
    options go as keyword arguments, ``fit(loss="...", label_smoothing=0.1)``, or as
    ``options={"loss": {"label_smoothing": 0.1}}``) or an object of your own:

    - ``model``: an ``nn.Module``, or a plain function ``net(X)`` with ``params=[W, b]``, the tensors it computes with
      (without them it still trains, but keeps no checkpoints);
    - ``loss``: any callable ``(y_hat, y) -> one loss per example``; your net and loss are a pair and run as they are
      (the chapter's ``cross_entropy`` takes its ``net``'s probabilities);
    - ``updater``: a ``torch.optim.Optimizer`` (stepped after ``l.mean().backward()``), or an
      ``(optimizer, scheduler)`` pair (the scheduler stepped after every batch), the chapter's ``updater(batch_size)``
      (called after ``l.sum().backward()``, as ``train_epoch_ch3`` does), an object with ``zero_grad()`` and
      ``step(batch_size)``, or a factory like a registered updater's: a function taking ``params`` (and, by name,
      any of ``lr``, ``epochs``, ``steps_per_epoch``) that returns one of those, built with the model's parameters;
    - ``dataset``: ``(train_iter, test_iter)`` of iterables of ``(X, y)`` batches (a ``DataLoader`` works), or an
      object with ``train``, ``test`` and, ideally, ``classes``.

    ``visualizers``, ``callbacks`` and ``metrics`` are names or objects of your own: a visualizer or callback with
    event methods, a metric with ``update``, ``compute`` and ``reset``. ``device="auto"`` trains a model object where
    its parameters are and anything else on cuda, then mps, then cpu. ``out`` is the run folder (default: a fresh
    ``runs/...``; ``False``: none), which ``fmclf predict`` and ``fmclf run --resume`` take when every component was
    given by name. ``resume=run_dir`` continues a run from its last checkpoint: give the components that were objects
    again (the same objects), and ``epochs`` to train further; the other settings are the run's own (``device``,
    ``threads``, ``cuda_graphs`` and ``visualizers`` may change too).

    ``plugins`` adds plugins for this call: modules (or objects) with ``@fmclf.hookimpl`` functions, or the names of
    importable modules, as ``fmclf -p MODULE`` loads them; their components are then used by name, as the installed
    ones are.

    An interrupt (Ctrl-C, or the kernel's stop button) stops after the batch in flight, writes a checkpoint and raises
    :class:`fmclf.errors.Interrupted` saying how to resume.

    The settings, as ``fmclf run --help`` describes its flags of the same names (``--batch-size`` for ``batch_size``):

    {settings}
    """
    component_options = dict(component_options)
    args = {**{name: component_options.pop(name, default) for name, default in _KEYWORDS.items()}, **locals()}
    with speaking(PYTHON):  # until _fit knows the objects that its resume advice names
        return _fit(args, _given, _host(plugins))


def _settings_doc() -> str:
    """Each setting's line for fit's docstring: the help of its field of RunConfig, as ``fmclf run --help`` has it."""
    lines = (f"- ``{name}={getattr(RunConfig, name)!r}``: {help_}" for name, (_, help_) in OWN_SETTINGS.items())
    return "\n".join(textwrap.fill(line, 100, initial_indent="    ", subsequent_indent="      ")
                     for line in lines).lstrip()


if fit.__doc__:  # None under python -OO
    fit.__doc__ = fit.__doc__.replace("{settings}", _settings_doc())


def _fit(args: dict[str, Any], given: frozenset[str], host: PluginHost) -> FitResult:
    from .dist.launch import is_root_process
    from .draw.report import RunReport
    from .run.runner import run_new, run_resume

    resume = args["resume"]
    recorded = _recorded(resume) if resume is not None else None
    objects, names, checkpoints = _components(args, given, host, recorded, print)
    jupyter = in_jupyter()
    voice = Wording(python=True, resume=lambda run_dir: _resume_call(run_dir, objects),
                    again="interrupt the kernel again" if jupyter else "Ctrl-C again",
                    notice=_notice_from_a_thread if jupyter else None)
    with speaking(voice):
        if recorded is not None:
            overrides = _overrides(args, given, recorded, names, objects)
            result = run_resume(pathlib.Path(resume), host, overrides=overrides, echo=print, objects=objects,
                                report=RunReport)
        else:
            config = RunConfig(**names, **{k: args[k] for k in OWN_SETTINGS},
                               options=_options(args, names, objects, host))
            config = _fit_device(_fit_batch_size(config, args, given), args, objects)
            result = run_new(config, host, out=_out(args["out"]), echo=print, objects=objects,
                             checkpoints=checkpoints, report=RunReport)
    model = args["model"] if not isinstance(args["model"], str) else result.model
    data = args["dataset"] if not isinstance(args["dataset"], str) else None
    fitted = FitResult(model, result.history, result.summary, result.run_dir, result.plan.config, data)
    if is_root_process():  # under torchrun, rank 0 alone talks
        if jupyter:
            fitted._show()
        else:
            print(fitted)
    return fitted


def _notice_from_a_thread(text: str) -> None:
    """Print ``text`` to the notebook from a signal handler. A kernel's stderr is no file (the command line's raw
    write to fd 2 would go to the terminal that started Jupyter), and writing to it from the handler could wait
    forever on a lock the interrupted code holds; a thread of its own waits its turn instead."""
    threading.Thread(target=lambda: print(text.strip(), file=sys.stderr, flush=True), daemon=True).start()


def _recorded(resume: Any) -> RunConfig:
    """The settings of the run folder ``resume``, refused in words when it cannot be resumed."""
    from .run import folder

    run_dir = pathlib.Path(resume)
    folder.check_resumable(run_dir)
    if not (run_dir / folder.CHECKPOINT).exists() and folder.read_metrics(run_dir):
        raise UsageError(f"resume={str(run_dir)!r}: the run has no checkpoint to continue from, though it finished "
                         f"epochs: it kept none (its model was a function without params) or the file was deleted. "
                         f"Start a new run instead.")
    settings, options = folder.read_config(run_dir)
    return RunConfig(**settings, options=options)


def _components(args: dict[str, Any], given: frozenset[str], host: PluginHost, recorded: RunConfig | None,
                echo: Callable[[str], None]) -> tuple[dict[str, ComponentRecord], dict[str, Any], bool]:
    """The records of the components given as objects (by option target), every component's name
    (the RunConfig fields), and whether the run can keep checkpoints."""
    from .run import objects as obj

    records: dict[str, ComponentRecord] = {}
    model, updater, params = args["model"], args["updater"], args["params"]
    function_model = not isinstance(model, str) and not _is_module(model)
    if params is None and function_model and obj.optimizer_of(updater) is not None:
        params = obj.optimizer_params(obj.optimizer_of(updater))  # a torch optimizer holds the tensors it updates
    _check_optimizer(model, updater, params)
    if not isinstance(model, str):
        records["model"] = obj.model_record(model, params)
    elif params is not None:
        raise UsageError(f"params= goes with a plain model function; model {model!r} is built by name by its "
                         f"plugin, with its own parameters, so leave params out.")
    if not isinstance(args["loss"], str):
        records["loss"] = obj.loss_record(args["loss"])
    if not isinstance(updater, str):
        records["updater"] = obj.updater_record(updater, host.registry.names("updater"))
    if not isinstance(args["dataset"], str):
        records["dataset"] = obj.dataset_record(args["dataset"], echo)
    no_params = function_model and params is None
    if no_params and (isinstance(updater, str) or obj.is_factory(updater)):
        name = records["model"].name
        raise UsageError(
            f"updater {records['updater'].name if 'updater' in records else updater!r} is built from the model's "
            f"parameters, but model {name!r} is a plain function that came without params, so fmclf does not know "
            f"them: pass params=[...] (the tensors {name} computes with, such as [W, b]), or an updater that holds "
            f"them (a torch optimizer, or a function of the batch size like the chapter's updater)."
        )
    if no_params and recorded is None:
        echo(f"Note: model {records['model'].name!r} came without params, so fmclf cannot save or restore its "
             f"weights: this run keeps no checkpoints and cannot be resumed (pass params=[W, b] to keep them).")
    names = {kind: (records[kind].name if kind in records else args[kind]) for kind in _SINGLE}
    names |= {row.setting: _listeners(row.name, args[row.plural], records) for row in ROWS if row.many}
    return records, names, not no_params


def _check_optimizer(model: Any, updater: Any, params: Sequence[Any] | None) -> None:
    """Refuse a torch optimizer that would train nothing: over no tensor that requires grad, or over none
    of the parameters of the model object it is given with (one built from another model's, say)."""
    from .run import objects as obj

    optimizer = obj.optimizer_of(updater)  # an (optimizer, scheduler) pair's too
    if optimizer is None:
        return
    name = type(optimizer).__name__
    mine = [p for p in obj.optimizer_params(optimizer) if getattr(p, "requires_grad", False)]
    if not mine:
        raise UsageError(f"the {name} optimizer holds no tensor that requires grad, so it would train nothing: build "
                         f"it from the parameters it should train, such as {name}(net.parameters(), lr=0.1) (or "
                         f"[W, b] with requires_grad=True).")
    if _is_module(model) or params is not None:
        model_params = list(model.parameters()) if _is_module(model) else list(params or ())
        if not {id(p) for p in mine} & {id(p) for p in model_params}:
            raise UsageError(f"the {name} optimizer updates none of the model's parameters (it was built from other "
                             f"tensors, another model's perhaps), so training would change nothing: build it from "
                             f"this model's, such as {name}(net.parameters(), lr=0.1).")


def _is_module(model: Any) -> bool:
    import torch

    return isinstance(model, torch.nn.Module)


def _listeners(kind: str, given: Any, records: dict[str, ComponentRecord]) -> list[str]:
    """Names for a kind a run has several of (visualizers ...): names as they are, objects recorded."""
    from .run import objects as obj

    names: list[str] = []
    for value in [given] if isinstance(given, str) else list(given or ()):
        if not isinstance(value, str):
            rec = obj.listener_record(kind, value, names)
            records[BY_NAME[kind].target(rec.name)] = rec
            value = rec.name
        names.append(value)
    return names


def _options(args: dict[str, Any], names: dict[str, Any], objects: Mapping[str, Any],
             host: PluginHost) -> dict[str, dict[str, Any]]:
    """``options={...}`` (by target, or flat ``"loss.label_smoothing"`` keys) and the keyword
    arguments, each given to the one named component of this run that has such an option."""
    from .host.options import options_of, parse_assignment
    from .host.registry import IN_SENTENCE, did_you_mean

    out: dict[str, dict[str, Any]] = {}
    for key, value in (args["options"] or {}).items():
        if isinstance(value, Mapping):
            out.setdefault(key, {}).update(value)
        else:
            target, option, _ = parse_assignment(f"{key}=")
            out.setdefault(target, {})[option] = value
    offered: dict[str, list[str]] = {}
    for target, name in RunConfig(**names).targets().items():
        if target not in objects:
            for opt in options_of(host.registry.get(target.split(".")[0], name)):
                offered.setdefault(opt.name, []).append(target)
    for option, value in args["component_options"].items():
        owners = offered.get(option, [])
        if len(owners) == 1:
            out.setdefault(owners[0], {})[option] = value
            continue
        if owners:
            raise UsageError(f"{option}= is an option of {' and '.join(owners)}, so fmclf cannot tell which one you "
                             f"mean; say it with options={{{owners[0]!r}: {{{option!r}: {value!r}}}}}.")
        raise UsageError(
            f"fmclf.fit() has no argument {option!r}, and no component of this run takes an option of that name"
            + did_you_mean(option, offered, form=IN_SENTENCE)
            + (f"; their options: {', '.join(sorted(offered))}." if offered else "; they have no options.")
        )
    return out


def _fit_batch_size(config: RunConfig, args: dict[str, Any], given: frozenset[str]) -> RunConfig:
    """With your own batches, the batch size is theirs: recorded, and a different batch_size= refused."""
    from .run.objects import batch_size_of

    size = None if isinstance(args["dataset"], str) else batch_size_of(args["dataset"])
    if size is None:
        return config
    if "batch_size" in given and args["batch_size"] != size:
        raise UsageError(f"batch_size={args['batch_size']}, but your training batches come {size} at a time (the "
                         f"DataLoader's batch_size): the batches are yours, so leave batch_size out, or build them "
                         f"with the size you want.")
    return replace(config, batch_size=size)


def _fit_device(config: RunConfig, args: dict[str, Any], objects: Mapping[str, Any]) -> RunConfig:
    """``device="auto"`` with a model object: where its parameters already are (cpu for a function
    without params), so that fit does not move your tensors unasked."""
    if config.device.strip().lower() != "auto" or "model" not in objects:
        return config
    model = args["model"]
    tensors = list(model.parameters()) if _is_module(model) else list(args["params"] or [])
    from .run.objects import optimizer_of, optimizer_params

    if not tensors and optimizer_of(args["updater"]) is not None:
        tensors = optimizer_params(optimizer_of(args["updater"]))
    return replace(config, device=str(tensors[0].device) if tensors else "cpu")


def _out(out: Any) -> Any:
    """fit's ``out`` as the runner takes it: a folder, None (a fresh runs/... one) or False (none)."""
    from .run import folder

    if out is None or out is False:
        return out
    if out is True or not isinstance(out, (str, os.PathLike)):
        raise UsageError(f"out must be a folder, None (a fresh runs/... folder) or False (no run folder); got {out!r}.")
    path = pathlib.Path(out)
    if path.is_dir() and folder.holds_run(path):
        raise UsageError(f"out={str(path)!r} already holds a run: continue it with fmclf.fit(..., "
                         f"resume={str(path)!r}), or choose another out (leave it out for a fresh runs/... folder).")
    return path


def _resume_call(run_dir: pathlib.Path | None, objects: Mapping[str, Any]) -> str:
    """The call that continues ``run_dir``: the components that were objects must be given again."""
    if not objects:
        return f"fmclf.fit(resume={str(run_dir)!r})"
    kinds = [t.split(".")[0] for t in objects]
    shown = [f"{k}=..." for k in dict.fromkeys(kinds) if k != "visualizer"]
    if "model" in kinds:
        shown.insert(1, "params=...")
    return (f"fmclf.fit({', '.join(shown) or '...'}, resume={str(run_dir)!r}), passing the same objects as "
            f"the call that started it.")


def _overrides(args: dict[str, Any], given: frozenset[str], recorded: RunConfig, names: dict[str, Any],
               objects: Mapping[str, Any]) -> dict[str, Any]:
    """What ``fit(..., resume=)`` changes in the recorded run (epochs, device, visualizers); any
    other setting given must be the run's own, and its objects must be given again."""
    for kind in _SINGLE:
        was = getattr(recorded, kind)
        if kind in recorded.from_python:
            if kind not in objects:
                raise UsageError(f"the run's {kind} {was!r} was a Python object, which a run folder records by name "
                                 f"only: pass the same object again, {kind}=..., with resume=.")
            if _refused(recorded, kind, names[kind]):
                raise UsageError(f"resume continues a run with its own components: its {kind} was {was!r}, this is "
                                 f"{names[kind]!r}. Pass the same object, or start a new run (leave resume out).")
        elif kind in objects:
            raise UsageError(f"the run's {kind} is {was!r}, by name: leave {kind} out (or pass {kind}={was!r}) "
                             f"with resume=.")
        elif kind in given and _refused(recorded, kind, names[kind]):
            raise UsageError(f"resume continues a run with its own components: its {kind} is {was!r}, not "
                             f"{names[kind]!r}; leave {kind} out.")
    for row in ROWS:
        mine = [t for t in recorded.from_python if row.many and t.startswith(f"{row.name}.")]
        if mine and row.plural not in given:
            raise UsageError(f"the run's {row.name} {mine[0].split('.', 1)[1]!r} was a Python object, which a run "
                             f"folder records by name only: pass {row.plural}=[...] again with resume= (the same "
                             f"objects, or others).")
    for setting in OWN_SETTINGS:
        if setting in given and _refused(recorded, setting, args[setting]):
            raise UsageError(f"resume continues a run with the settings it started with: its {setting} is "
                             f"{getattr(recorded, setting)!r}, not {args[setting]!r}; leave {setting} out (only "
                             f"{', '.join(RESUMABLE[:-1])} and {RESUMABLE[-1]} may change).")
    if args["options"] or args["component_options"]:
        raise UsageError("resume continues a run with the options it started with (its config.toml has them all); "
                         "leave options out.")
    overrides: dict[str, Any] = {s: args[s] for s in OWN_SETTINGS if s in given and s in RESUMABLE}
    changing = " and ".join(r.plural for r in ROWS if r.many and r.setting in RESUMABLE)
    for row in (r for r in ROWS if r.many and r.plural in given):
        was = list(getattr(recorded, row.setting))
        if _refused(recorded, row.setting, list(names[row.setting])):
            # As `fmclf run --resume`: metrics and callbacks decide what a run records and when it stops.
            raise UsageError(f"resume continues a run with its own {row.plural}: it has {was or 'none'}, not "
                             f"{list(names[row.setting]) or 'none'}; pass the same {row.plural} (objects again where "
                             f"they were objects) or leave {row.plural} out. Only {changing} may change.")
        overrides[row.setting] = names[row.setting]
    return overrides


def _refused(recorded: RunConfig, setting: str, value: Any) -> bool:
    """Whether resuming the run ``recorded`` with ``setting=value`` is refused; the rule is
    :meth:`~fmclf.run.config.Settings.resumed_with`'s (what may change, and that a setting restated as it was
    changes nothing), asked here so that fit can say it in its own words first."""
    try:
        recorded.resumed_with({setting: value})
    except UsageError:
        return True
    return False


def _host(plugins: Sequence[Any] = ()) -> PluginHost:
    """The process's plugins, or with ``plugins`` (module objects, or names of importable modules) a
    load of its own that adds them; a plugin that fails to load is an error here, not a warning."""
    from .host.loading import get_host, load_plugins

    if not plugins:
        return get_host()
    if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Sequence):
        raise UsageError(f"plugins= takes a list of modules (or module names), such as plugins=[my_plugin]; got "
                         f"{type(plugins).__name__}.")
    names = [p for p in plugins if isinstance(p, str)]
    extra = [(getattr(p, "__name__", type(p).__name__), p) for p in plugins if not isinstance(p, str)]
    host = load_plugins(include=names, extra=extra)
    mine = [f for f in host.failures if f.plugin.name in names or f.plugin.name in dict(extra)]
    if mine:
        raise UsageError("plugins=: " + " ".join(f.message(strict=True) for f in mine))
    return host


def show(data: Any = None, n: int = SHOWN, *, split: str = "train", seed: int = 0, titles: Sequence[str] | None = None,
         classes: Sequence[str] | None = None, options: Mapping[str, Any] | None = None,
         **dataset_options: Any) -> Picture:
    """Draw images with their labels: the chapter's ``show_images``, returned as a figure that Jupyter displays
    inline (``.save("samples.png")`` writes it; it is a matplotlib ``Figure``).

    ``data`` is a registered data set's name (default: the run's default data set; its options as keyword arguments or
    ``options``), whose ``split`` ("train", shuffled by ``seed``, or "test") is drawn; a data-set object; an iterable
    of ``(X, y)`` batches (a ``DataLoader``); a pair ``(X, y)``; or images themselves, ``(N, H, W)`` or
    ``(N, C, H, W)``, titled by ``titles``. ``classes`` names the labels where the data does not.
    """
    from .draw import gallery, pictures

    with speaking(PYTHON):
        check_shown(n)
        if data is None or isinstance(data, str):
            fig, _ = gallery.samples_of(_host(), data or RunConfig.dataset, n=n, split=split, seed=seed,
                                        options={**(options or {}), **dataset_options})
            return fig
        if options or dataset_options:
            raise UsageError("show: options apply to a data set given by name; this data is yours already.")
        images, labels = _examples(data, n, split, classes)
        if titles is not None:
            labels = [str(t) for t in titles][: len(images)]
        try:
            return pictures.image_grid(list(images), labels)
        except ValueError as exc:  # not images: (N, 784) rows, say
            raise UsageError(f"show: {exc}; reshape them first, as the chapter does: X.reshape(n, 28, 28).") from None


def _examples(data: Any, n: int, split: str, classes: Sequence[str] | None) -> tuple[Any, list[str] | None]:
    """The first ``n`` images of ``data`` (any form :func:`show` takes) and their labels."""
    import torch

    from .draw import gallery

    if _is_array(data):
        return torch.as_tensor(data)[:n].detach().float().cpu().numpy(), None
    batches, names = _split(data, split, classes)
    X, y = gallery.first_examples(batches, n)
    names = list(names) if names else [str(i) for i in range(int(y.max()) + 1)]
    return X.detach().float().cpu().numpy(), gallery.labels_of(y, names)


def _is_array(value: Any) -> bool:
    """A tensor or array (of images, or of labels), as opposed to batches or data sets."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (str, bytes))


def predict(model: Any, data: Any = None, n: int = SHOWN, *, classes: Sequence[str] | None = None,
            device: str = "cpu") -> Picture:
    """Draw the first ``n`` test images titled true label over predicted label, the wrong ones in red: the chapter's
    ``predict_ch3``, returned as a figure that Jupyter displays inline.

    ``model`` is what :func:`fit` returned (its test data is used unless ``data`` says otherwise), a run folder (as
    ``fmclf predict RUN_DIR``: its saved weights, on ``device``), an ``nn.Module``, or a model function like the
    chapter's ``net``. ``data`` is a registered data set's name, a data-set object or ``(train_iter, test_iter)``
    (their test part), an iterable of ``(X, y)`` batches such as ``test_iter``, or a pair ``(X, y)``.
    """
    from .draw import gallery

    with speaking(PYTHON):
        check_shown(n)
        if isinstance(model, (str, os.PathLike)):
            if data is not None:
                raise UsageError("predict: a run folder predicts on its own test set; leave data out.")
            fig, _, _, _ = gallery.run_predictions(pathlib.Path(model), _host(), n=n, device=device)
            return fig
        if isinstance(model, FitResult):
            result, model = model, model.model
            if data is None:
                data = result._data if result._data is not None else _named_test(result.config, n)
            if classes is None:
                classes = list(result._per_class()) or None
        if data is None or isinstance(data, str):
            data = gallery.load_dataset(_host(), RunConfig.dataset if data is None else data, batch_size=n)
        batches, names = _split(data, "test", classes)
        module = _as_module(model)
        X, y = gallery.first_examples(batches, n)
        if not names:  # the classes by index, as many as the model has outputs
            import torch

            param = next(iter(module.parameters()), None)
            with torch.no_grad():
                width = module(X[:1].to(param.device if param is not None else "cpu")).shape[1]
            names = [str(i) for i in range(width)]
        fig, _, _ = gallery.predictions_of(module, [(X, y)], list(names), n=n)
        return fig


def _named_test(config: RunConfig, n: int) -> Any:
    """The registered data set a run used, rebuilt on the CPU with the run's options."""
    from .draw import gallery

    return gallery.load_dataset(_host(), config.dataset, batch_size=n, seed=config.seed or 0,
                                options=config.options.get("dataset", {}))


def _split(data: Any, split: str, classes: Sequence[str] | None) -> tuple[Any, Sequence[str] | None]:
    """The batches of ``split`` in ``data`` (a data-set object, ``(train_iter, test_iter)``, batches, or one batch
    ``(X, y)``) and the names of their classes: ``classes``, else the data's own, looked for in the split first and
    then in the rest of the data, so that :func:`show` and :func:`predict` name the same data's classes alike."""
    import torch

    from .train.adapters import classes_of

    if isinstance(data, (tuple, list)) and len(data) == 2 and _is_array(data[0]):
        return [(torch.as_tensor(data[0]), torch.as_tensor(data[1]))], classes
    if hasattr(data, "train") and hasattr(data, "test"):
        return getattr(data, split), classes or classes_of(data, getattr(data, split))
    if isinstance(data, (tuple, list)) and len(data) == 2:  # (train_iter, test_iter)
        batches, rest = (data[0], data[1]) if split == "train" else (data[1], data[0])
        return batches, classes or classes_of(batches, rest)
    return data, classes or classes_of(data)


def _as_module(model: Any) -> Any:
    """An nn.Module to predict with: the model itself, or a model function wrapped as one."""
    if _is_module(model):
        return model
    if isinstance(model, type) or not callable(model):
        raise UsageError(f"predict: model must be what fit returned, a run folder, an nn.Module or a function net(X); "
                         f"got a {type(model).__name__}.")
    from .train.adapters import FunctionModel

    return FunctionModel(model)

