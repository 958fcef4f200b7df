"""A batched group: several runs trained as one computation in one process (``fmclf run-group SPEC``).

The members differ only in seed, learning rate and the options their components declare per model
(:func:`fmclf.batchable`; :func:`batch_key` says which runs may share a group). The data is loaded once,
:class:`fmclf.train.batched.BatchedTrainer` trains the members, and each leaves the run folder it would
have left alone, written by the same functions and locked while the group trains: any member is an
ordinary run that ``fmclf run --resume`` continues alone. A stop ends the group after the batch in flight,
keeping every member's last checkpoint; the same command resumes it. A member that diverges is recorded
as diverged, the others go on.

The SPEC is a JSON file a comparison writes (:func:`write_spec`)::

    {"format": "fmclf-group/1",
     "members": [{"name": ..., "run_dir": ..., "settings": ... or null, "log": ...}, ...]}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import atomic
from ..errors import ConfigError, DivergenceError, FmclfError, Interrupted, UsageError
from ..host.batchable import batchable_of
from ..host.loading import PluginHost
from ..wording import Echo
from . import folder
from .config import RunConfig, divergence_advice, load_config
from .plan import Plan, resolve

SPEC_FORMAT = "fmclf-group/1"
#: Settings members of one group may differ in (besides the options their components declare per model).
PER_MEMBER = ("seed", "lr")
#: The kinds whose factories must declare they can be batched; anything else in a run keeps it alone.
BATCHED_KINDS = ("dataset", "model", "loss", "updater")


def batch_key(plan: Plan) -> tuple[str | None, Any]:
    """``(None, key)``: runs with equal keys may train in one group; ``(reason, None)``: this run trains
    alone, and why, in one line. Needs no torch."""
    for record in plan.records.values():
        kind = record.kind
        if kind in ("metric", "callback"):
            return (f"{record.describe()} is not batched: a group records accuracy and loss and steers no run, "
                    f"so runs with --{kind} train alone"), None
        if kind == "visualizer" and record.name != "none":
            return f"{record.describe()} shows one run as it trains, so runs with it train alone", None
        if kind not in BATCHED_KINDS:
            continue
        declared = batchable_of(record.factory)
        if declared is None:
            return f"{record.describe()} does not declare it can be batched (fmclf.batchable)", None
        if kind == "updater" and declared.stacked is None:
            return f"{record.describe()} declares no stacked update (fmclf.batchable(stacked=...))", None
    if plan.config.from_python:
        return "its components are Python objects", None
    if plan.config.cuda_graphs:
        return "--cuda-graphs captures one run's steps", None
    shared = {k: v for k, v in dataclasses.asdict(plan.config).items() if k not in (*PER_MEMBER, "options", "threads")}
    options = {}
    for target, values in plan.options.items():
        declared = batchable_of(plan.records[target].factory)
        options[target] = {k: v for k, v in values.items() if not declared or k not in declared.per_model}
    return None, json.dumps({"settings": shared, "options": options, "components": plan.qualified},
                            sort_keys=True, default=str)


@dataclass
class MemberSpec:
    """One member of a group spec."""

    name: str
    run_dir: pathlib.Path
    settings: pathlib.Path | None  #: the settings a new member starts from; None: it resumes
    log: pathlib.Path | None = None  #: where its lines go (a comparison's DIR/jobs/NAME.log)


def write_spec(path: pathlib.Path, members: Sequence[MemberSpec]) -> None:
    """Write a group's SPEC (atomically)."""
    doc = {"format": SPEC_FORMAT, "members": [
        {"name": m.name, "run_dir": str(m.run_dir), "settings": str(m.settings) if m.settings else None,
         "log": str(m.log) if m.log else None} for m in members]}
    atomic.write_text(path, json.dumps(doc, indent=1) + "\n")


def read_spec(path: pathlib.Path) -> list[MemberSpec]:
    """A group's SPEC, checked; a clear error for anything else."""
    bad = (f"{path} is not a group spec ({SPEC_FORMAT}): `fmclf compare` writes one into DIR/jobs/ for each group "
           f"it trains. Run the comparison again instead.")
    try:
        doc = json.loads(atomic.read_limited(pathlib.Path(path), 2**24).decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"group spec {str(path)!r} does not exist. {bad}") from None
    except (OSError, ValueError, atomic.TooLarge) as exc:
        raise UsageError(f"cannot read the group spec {str(path)!r} ({exc}). {bad}") from None
    members = doc.get("members") if isinstance(doc, dict) and doc.get("format") == SPEC_FORMAT else None
    if not isinstance(members, list) or not members:
        raise UsageError(bad)
    try:
        out = [MemberSpec(str(m["name"]), pathlib.Path(m["run_dir"]),
                          pathlib.Path(m["settings"]) if m.get("settings") else None,
                          pathlib.Path(m["log"]) if m.get("log") else None) for m in members]
    except (KeyError, TypeError):
        raise UsageError(bad) from None
    if len({m.run_dir for m in out}) != len(out):
        raise UsageError(f"{path} names one run folder twice. {bad}")
    return out


@dataclass
class _Member:
    spec: MemberSpec
    plan: Plan
    checkpoint: dict | None
    parts: Any = None
    ended: str = ""  #: how it ended: finished, diverged, interrupted, failed

    def say(self, text: str) -> None:
        """A line in this member's log (its comparison reads a failure's reason there)."""
        if self.spec.log is not None:
            with contextlib.suppress(OSError), open(self.spec.log, "a", encoding="utf-8") as log:
                log.write(text.rstrip("\n") + "\n")


def _member(spec: MemberSpec, host: PluginHost) -> _Member:
    """The member ``spec`` names: its plan, and its checkpoint when its folder already holds a run."""
    from .session import read_run

    checkpoint = None
    try:
        if folder.is_run(spec.run_dir):  # read as a run resumed alone reads it
            settings, options, checkpoint = read_run(spec.run_dir)
        elif spec.settings is None:
            raise UsageError(f"{spec.run_dir} holds no run and the group spec gives no settings for {spec.name}.")
        else:
            settings, options = load_config(spec.settings)
        return _Member(spec, resolve(RunConfig(**settings, options=options), host), checkpoint)
    except ConfigError as exc:
        raise UsageError(f"{spec.name}: {exc}") from None


def run_group(spec_path: pathlib.Path, host: PluginHost, *, echo: Echo = print,
              report: Callable[..., Any] | None = None) -> int:
    """Train the group described by ``spec_path``; returns the exit code (0, or 130 after a stop). ``report``
    writes each finished member's report.md (the front end passes :func:`fmclf.draw.report.write_report`)."""
    from ..dist.comm import Solo
    from ..signals import handled, say, stop_on_signals
    from ..train.engine import StopFlag
    from .checkpoint import progress
    from .lock import RunLock

    members = [_member(spec, host) for spec in read_spec(pathlib.Path(spec_path))]
    reasons = [(m, *batch_key(m.plan)) for m in members]
    for member, reason, _ in reasons:
        if reason:
            raise UsageError(f"{member.spec.name} cannot train in a group: {reason}. Run it alone with `fmclf run`.")
    if len({key for _, _, key in reasons}) != 1:
        raise UsageError(f"the members of {spec_path} differ in more than seed, --lr and per-model options; "
                         f"a comparison groups only runs that may train together. Run it again to regroup them.")
    done = {progress(m.checkpoint) for m in members}
    if len(done) != 1 or next(iter(done))[1]:
        raise UsageError(f"the members of {spec_path} stopped at different points ({sorted(done)}); a group resumes "
                         f"only members at the same epoch's end. Resume them with `fmclf run --resume RUN_DIR`.")
    members.sort(key=lambda m: m.plan.config.seed)
    flag = StopFlag()
    with handled(), contextlib.ExitStack() as held:
        for m in members:
            if m.checkpoint is None and not folder.is_run(m.spec.run_dir):
                folder.check_new(m.spec.run_dir)  # a new member's folder is new or empty, as for a run alone
            m.spec.run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock(m.spec.run_dir)
            held.callback(lock.release)
            lock.claim("train it in a group", echo)
        with stop_on_signals(flag, say):
            return _train(members, host, Solo(), flag, next(iter(done))[0], echo, report)


def _train(members: list[_Member], host: PluginHost, comm: Any, flag: Any, start: int, echo: Echo,
           report: Callable[..., Any] | None = None) -> int:
    """Build the group, train its epochs from ``start`` + 1, and write each member's final files."""
    from ..train.batched import BatchedTrainer, Member
    from ..train.updaters import adapt_updater

    plan, device, dataset, chosen = _assemble(members, host, comm)
    losses: dict[str, Any] = {}  # members with the same loss options share one object: one call for all of them
    batched = [Member(m.parts.model, adapt_updater(m.parts.updater),
                      losses.setdefault(json.dumps(m.plan.options["loss"], sort_keys=True, default=str), m.parts.loss),
                      m.plan.config.seed, list(m.checkpoint["state"]["history"]) if m.checkpoint else [])
               for m in members]
    trainer = BatchedTrainer(batched, dataset, batchable_of(plan.records["updater"].factory).stacked, device=device,
                             forward=batchable_of(plan.records["model"].factory).stacked, records=plan.records)
    config = plan.config
    echo(f"training {len(members)} runs of {config.model} + {config.loss} + {config.updater} on {config.dataset} "
         f"as one group on {device}{f' ({config.threads} threads)' if chosen else ''}, "
         f"epochs {start + 1}-{config.epochs}")
    for m in members:
        m.say(f"trained in a batched group of {len(members)} runs ({members[0].spec.name} ...)")
    started = time.perf_counter()
    if code := _epochs(members, batched, trainer, flag, start, config.epochs, echo):
        return code
    if any(b.confusion is None and b.diverged is None for b in batched):  # resumed with nothing left to train
        trainer.evaluate_test()
    seconds = time.perf_counter() - started
    _finish(members, batched, dataset, device, seconds, report)
    diverged = sum(1 for m in members if m.ended == "diverged")
    echo(f"trained {len(members)} runs in {seconds:.1f} s" + (f"; {diverged} diverged" if diverged else ""))
    return 0


def _assemble(members: list[_Member], host: PluginHost, comm: Any) -> tuple[Plan, Any, Any, Any]:
    """The data once, then every member's components on it, its config.toml and a resumed member's state.
    Returns the first member's plan, the device, the data set and the thread choice (None: the user's)."""
    from ..data import TensorBatches
    from . import checkpoint as checkpoint_io
    from . import provenance
    from .plan import assemble, assemble_on, prepare
    from .session import HEADER, choose_threads

    first = members[0]
    plan, device = prepare(first.plan.config, host, comm)
    parts = assemble(plan, device=device)
    dataset = parts.dataset
    if not isinstance(dataset.train, TensorBatches) or not isinstance(dataset.test, TensorBatches):
        raise UsageError(f"{plan.records['dataset'].describe()} declares it can be batched, but its splits are "
                         f"{type(dataset.train).__name__}, not fmclf.data.TensorBatches; train its runs alone "
                         f"(fmclf compare --no-batch), and tell its authors.")
    chosen = choose_threads(plan, parts, comm)
    if chosen:
        plan = plan.decided(threads=chosen.threads)
    for m in members:
        m.plan = m.plan.decided(threads=plan.config.threads)
        m.parts = parts if m is first else assemble_on(m.plan, dataset, device=device)
        resumed = m.checkpoint is not None
        prov = provenance.of_session(m.plan, host, comm, device, m.spec.run_dir if resumed else None)
        if resumed:
            checkpoint_io.restore(m.parts, m.checkpoint, m.spec.run_dir, comm)
        atomic.write_text(m.spec.run_dir / folder.CONFIG, m.plan.recorded().to_toml(prov, HEADER))
    return plan, device, dataset, chosen


def _epochs(members: list[_Member], batched: list[Any], trainer: Any, flag: Any, start: int, epochs: int,
            echo: Echo) -> int:
    """Train epochs ``start`` + 1 to ``epochs``, checkpointing each living member after each; 0, or 130 when a
    signal stopped the group. The checkpoints are written by a :class:`~fmclf.run.writer.BackgroundWriter`
    while the next epoch trains (a member's files took 30 ms here, 1.8 s an epoch for 60 members)."""
    from .writer import BackgroundWriter

    writer = BackgroundWriter(depth=2 * len(members) + 1)  # one epoch's files wait, not the next epoch
    started = time.perf_counter()
    last = start
    try:
        for epoch in range(start + 1, epochs + 1):
            trainer.epoch(epoch, stop=flag)
            trainer.export()
            for m, b in zip(members, batched, strict=True):
                if not m.ended:
                    _after_epoch(m, b, epoch, writer)
            last = epoch
            alive = [b for b in batched if b.diverged is None]
            best = max((b.history[-1]["test_acc"] for b in alive), default=float("nan"))
            echo(f"epoch {epoch}/{epochs}: {len(alive)} of {len(batched)} runs training, best test acc "
                 f"{best:.4f} ({time.perf_counter() - started:.1f} s)")
            if flag and epoch < epochs:
                raise Interrupted(f"stopped by {flag.signal} after epoch {epoch}")
    except Interrupted as exc:
        writer.flush()  # the last checkpoints are on disk before any status says so
        for m in members:
            if not m.ended:
                folder.write_status(m.spec.run_dir, "interrupted", last, str(exc))
                m.say(f"{exc}; the group's runs keep their checkpoints; run the same command again to resume")
        echo(f"{exc}; every run of the group keeps its last epoch's checkpoint. Run the same command again to "
             f"resume the group.")
        return 130
    except FmclfError as exc:  # a fault of a component, a full disk: every member still training failed with it
        for m in members:
            if not m.ended:
                folder.write_status(m.spec.run_dir, "failed", last, str(exc))
        raise
    finally:
        writer.close(raise_error=sys.exc_info()[0] is None)
    return 0


def _after_epoch(m: _Member, b: Any, epoch: int, writer: Any) -> None:
    """Member ``m`` (``b`` as the trainer sees it) after epoch ``epoch``: its checkpoint (through ``writer``), or,
    when it diverged, its status and the reason in its log."""
    from ..train.engine import TrainState, divergence_message
    from . import checkpoint as checkpoint_io
    from .session import kept

    if b.diverged is None:
        state = TrainState(epoch=epoch, history=b.history)
        checkpoint_io.save(m.spec.run_dir, m.parts, dataclasses.asdict(state), 1, writer)
        return
    d = b.diverged
    text = (divergence_message(d.value, d.batch, d.batches, d.epoch, m.plan.records["loss"], m.parts.loss,
                               divergence_advice()) if d.batch else checkpoint_io.weights_overflowed(d.epoch))
    keeps = kept((d.epoch - 1, 0) if d.epoch > 1 else None)
    error = DivergenceError(f"{text.strip()} The run folder {m.spec.run_dir} {keeps}.")
    writer.flush()  # its last checkpoint is on disk before its status says what it keeps
    folder.write_status(m.spec.run_dir, "diverged", d.epoch - 1, str(error))
    m.say(f"Error: {error}")
    m.ended = "diverged"


def _finish(members: list[_Member], batched: list[Any], dataset: Any, device: Any, seconds: float,
            report: Callable[..., Any] | None) -> None:
    """Each finished member's final files, several members at a time (one at a time, fsync'd, they took 5 s for
    60 members here). Its ``seconds`` are its share of the group's, as its rows' are of each epoch."""
    from concurrent.futures import ThreadPoolExecutor

    from .memory import peak_memory
    from .session import run_summary, write_results

    memory = peak_memory(device)
    share = seconds / len(members)

    def files(m: _Member, b: Any) -> None:  # in order: model.pt, predictions, summary.json, status, report.md
        summary = run_summary(m.plan, b.history, device, share, memory)
        write_results(m.spec.run_dir, m.parts.model, b.predictions, summary)
        folder.write_status(m.spec.run_dir, "finished", len(b.history))
        if report is not None:
            report(m.spec.run_dir, m.plan, b.history, b.confusion.cpu().tolist(), dataset.classes,
                   seconds=summary["seconds"], device=str(device))  # as recorded: `fmclf report` rebuilds the same

    done = [(m, b) for m, b in zip(members, batched, strict=True) if not m.ended]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="fmclf-group-files") as pool:
        for future in [pool.submit(files, m, b) for m, b in done]:
            future.result()
    for m, b in done:
        m.ended = "finished"
        m.say(f"finished: test acc {b.history[-1]['test_acc']:.4f}")
