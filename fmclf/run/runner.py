"""Running a plan: device, run folder, components, training, checkpoints, signals.

The CLI parses and prints; this module does the work, so the same run can be
started from Python (``fmclf.run.runner.run_new``) or resumed (``run_resume``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .. import atomic
from ..dist.comm import Solo, connect
from ..draw.report import RunReport
from ..errors import ComponentError, DistributedError, DivergenceError, Interrupted, Stopped, UsageError, WriteError
from ..host.loading import PluginHost
from ..host.registry import ComponentRecord
from ..train.engine import StopFlag, Trainer, TrainState
from ..train.updaters import scheduler_of
from . import checkpoint as checkpoint_io
from . import folder, processes, provenance, signals, threads
from .config import DIVERGENCE_ADVICE, RunConfig
from .devices import launch_device
from .lock import RunLock
from .memory import peak_memory
from .plan import Plan, assemble, check_processes, check_seed, check_shards, python_only, resolve, shard_args
from .signals import handled, say, stop_on_signals
from .writer import BackgroundWriter

Echo = Callable[[str], None]


@dataclass
class RunResult:
    """What a finished (or already finished) run reports."""

    run_dir: pathlib.Path
    history: list[dict[str, Any]]
    device: str
    seconds: float
    plan: Plan
    trained_epochs: int
    memory: dict[str, float] = dataclasses.field(default_factory=dict)  #: peak memory, see fmclf.memory
    stopped: dict[str, Any] | None = None  #: a callback's stop, {"by", "reason", "epoch"} (see fmclf.events.Control)
    model: Any = None  #: the trained model (rank 0's)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)  #: what summary.json holds


@dataclass(frozen=True)
class Voice:
    """Who started a run, and so how its messages say to go on: the command line's words by default.
    ``fmclf.fit`` passes Python's (see :mod:`fmclf.interactive`)."""

    #: the call that resumes a run folder; None: `fmclf run --resume`
    resume: Callable[[pathlib.Path], str] | None = None
    further: str = "pass --epochs N to train further"  #: for a run that already trained all its epochs
    again: str = "Ctrl-C again"  #: how to stop at once after the first interrupt
    notice: Callable[[str], None] | None = None  #: says so from the signal handler; None: straight to stderr's fd


class EpochLines:
    """Prints one line per finished epoch (an internal listener, not a plugin)."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo

    def on_epoch_end(self, event) -> None:
        m = event.metrics
        valid = f"valid loss {m['valid_loss']:.4f}  valid acc {m['valid_acc']:.4f}  " if "valid_acc" in m else ""
        self.echo(
            f"epoch {m['epoch']:>{len(str(event.epochs))}}/{event.epochs}  train loss {m['train_loss']:.4f}  "
            f"train acc {m['train_acc']:.4f}  {valid}test acc {m['test_acc']:.4f}  ({m['seconds']:.2f} s)"
        )


def _warn(text: str) -> None:
    """Print a component's warning to stderr (where the CLI's own warnings go)."""
    print(text, file=sys.stderr, flush=True)


_HEADER = (
    "# fmclf run configuration. `fmclf run --config config.toml` repeats this run;\n"
    "# [provenance] records what produced it and is not read back.\n"
)


def run_new(config: RunConfig, host: PluginHost, *, out: pathlib.Path | Literal[False] | None = None,
            echo: Echo = print, objects: Mapping[str, ComponentRecord] | None = None, voice: Voice = Voice(),
            checkpoints: bool = True) -> RunResult:
    """Train a new run of ``config`` into ``out`` (default: a fresh ``runs/...`` folder; False: none at all).

    Everything that can be checked is checked before any work: the settings and
    options and the run folder (no torch yet), then the device. A run that fails
    before training leaves no folder behind. Under torchrun every process calls
    this; they train together (see :mod:`fmclf.dist.comm`). ``objects`` are the
    records of components given as Python objects (see :func:`fmclf.run.plan.resolve`);
    without ``checkpoints`` the folder gets the metrics, summary and report but no weights.
    """
    with handled(), connect() as comm:
        echo = processes.root_only(comm, echo)
        out_dirs: list[pathlib.Path] = []
        if out is False:
            plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm, objects=objects))
            _agree_on_plan(plan, device, comm)
            prov = provenance.record(plan, host, device, processes.describe(comm, device))
            return _train(plan, host, device, None, None, echo, prov, comm, voice, checkpoints)

        def check_out(plan: Plan) -> None:
            out_dirs.append(pathlib.Path(out) if out is not None
                            else folder.default_run_dir(plan.config.model, plan.config.loss))
            if comm.is_root and out is not None:  # a default name that is taken gets a suffix instead
                folder.check_new(out_dirs[0])

        plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm, check_out, objects))
        _agree_on_plan(plan, device, comm)
        prov = provenance.record(plan, host, device, processes.describe(comm, device))
        locks: list[tuple[RunLock, bool]] = []  # rank 0's: the lock, and whether this run made the folder

        def create() -> pathlib.Path:
            path, created = folder.create_new(out_dirs[0], unique=out is None)
            lock = RunLock(path)
            locks.append((lock, created))
            note = lock.acquire("start a run in it")
            if note:
                echo(f"Note: {note}.")
            folder.remove_temporaries(path)
            return folder.check_new(path)  # again, now that it is ours: another run may have filled it meanwhile

        try:
            run_dir = comm.on_root("creating the run folder", create)
            return _train(plan, host, device, run_dir, None, echo, prov, comm, voice, checkpoints)
        except BaseException as exc:
            if isinstance(exc, (Stopped, Interrupted)):
                signals.ending()  # the clean-up below runs to its end, whatever else arrives
            for lock, created in locks:
                if lock.held and created:  # only an empty folder goes: a run that never started
                    lock.release(remove=True)
                    with contextlib.suppress(OSError):
                        lock.run_dir.rmdir()
            if isinstance(exc, Stopped):
                where = locks[0][0].run_dir if locks else None
                raise comm.alike(Interrupted(_after_stop(exc.signal, where, comm))) from None
            raise
        finally:
            for lock, _ in locks:
                lock.release()


def run_resume(run_dir: pathlib.Path, host: PluginHost, *, overrides: dict[str, Any] | None = None, echo: Echo = print,
               objects: Mapping[str, ComponentRecord] | None = None, voice: Voice = Voice()) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, holding its lock; ``overrides`` may set
    ``epochs`` (to train further), ``device`` and ``visualizers``. A run some of whose components were
    Python objects resumes only given the same ``objects`` (see :func:`run_new`).

    Under torchrun only rank 0 reads the run folder; it must be resumed by as
    many processes as trained it.
    """
    run_dir = pathlib.Path(run_dir)
    with handled(), connect() as comm:
        echo = processes.root_only(comm, echo)
        lock = RunLock(run_dir)

        def read() -> tuple[dict[str, Any], dict[str, Any], dict | None]:
            if (run_dir / folder.CONFIG).is_file():  # a folder that is no run gets no lock file
                note = lock.acquire("resume it")
                if note:
                    echo(f"Note: {note}.")
                folder.remove_temporaries(run_dir)  # what a killed writer left: the folder is ours now
            return _read_run(run_dir, comm)

        with contextlib.ExitStack() as held:
            held.callback(lock.release)
            try:
                found = comm.on_root("reading the run folder", read)
                return _resume(run_dir, host, found, overrides, echo, comm, objects or {}, voice)
            except Stopped as exc:
                signals.ending()
                raise comm.alike(Interrupted(_after_stop(exc.signal, run_dir if lock.held else None, comm))) from None
            except Interrupted:
                signals.ending()
                raise


def _resume(run_dir: pathlib.Path, host: PluginHost, found: tuple[dict[str, Any], dict[str, Any], dict | None],
            overrides: dict[str, Any] | None, echo: Echo, comm: Solo, objects: Mapping[str, ComponentRecord],
            voice: Voice) -> RunResult:
    settings, options, checkpoint = found
    config = RunConfig(**settings, options=options)  # load_config refused unknown settings
    for key, value in (overrides or {}).items():
        setattr(config, key, value)
    _check_epochs(run_dir, checkpoint, config.epochs)
    config.options = {t: o for t, o in config.options.items()
                      if not t.startswith("visualizer.") or t.split(".", 1)[1] in config.visualizers}
    config.from_python = [t for t in config.from_python if t in config.targets()]  # a swapped visualizer is gone
    missing = [t for t in config.from_python if t not in objects]
    if missing:
        raise UsageError(python_only(config, missing, (
            f"resume it from Python instead, with the call that started it plus "
            f"resume={str(run_dir)!r}: fmclf.fit(..., resume={str(run_dir)!r})")))
    plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm, objects=objects))
    _agree_on_plan(plan, device, comm)
    now = provenance.record(plan, host, device, processes.describe(comm, device))
    prov = provenance.resumed(run_dir, now) if comm.is_root else {}
    if checkpoint is None:
        echo(f"{run_dir} has no checkpoint (the run stopped before its first one), so training starts at epoch 1.")
    return _train(plan, host, device, run_dir, checkpoint, echo, prov, comm, voice,
                  extend="epochs" in (overrides or {}), schedule_epochs=settings.get("epochs"))


def _check_epochs(run_dir: pathlib.Path, checkpoint: dict | None, epochs: Any) -> None:
    """Refuse ``--epochs`` below what the checkpoint has trained: the run would end with the weights
    of a later point than the metrics it reports (half of epoch 2 under epoch 1's accuracy)."""
    if checkpoint is None or not isinstance(epochs, int) or isinstance(epochs, bool):
        return
    done, batch = checkpoint["state"]["epoch"], checkpoint["state"].get("batch", 0)
    reached = done + (1 if batch else 0)
    if epochs >= reached:
        return
    where = (f"has trained {done} epoch(s) and {batch} batch(es) of epoch {done + 1}" if batch else
             f"has trained {done} epoch(s)")
    raise UsageError(
        f"--epochs {epochs} is fewer than {run_dir} has reached: it {where}, and its weights are those of that "
        f"point, so it cannot end at epoch {epochs}. Pass --epochs {reached} or more (or leave --epochs out), or "
        f"start a new run with `fmclf run --config {shlex.quote(str(run_dir / folder.CONFIG))} --epochs {epochs}`."
    )


def _prepare(config: RunConfig, host: PluginHost, comm: Solo, check: Callable[[Plan], None] | None = None,
             objects: Mapping[str, ComponentRecord] | None = None) -> tuple[Plan, Any]:
    """Resolve the plan, ``check`` it (no torch yet), then the device; refuse what cannot run in these processes."""
    plan = resolve(config, host, objects)
    if check is not None:
        check(plan)
    # torch from here on, once every setting is checked: a signal while it loads would abort the process, so
    # it waits, then stops the run
    signals.import_torch()
    device = launch_device(plan.config.device, comm.launch, comm.backend)
    check_processes(plan, comm.world_size)
    _prepare_device(plan.config, device)
    return plan, device


def _prepare_device(config: RunConfig, device: Any) -> None:
    """Before any work: refuse ``--cuda-graphs`` off CUDA, apply ``--threads``."""
    if config.cuda_graphs:
        from ..train.graphs import check_device

        check_device(device)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)


def _choose_threads(config: RunConfig, parts: Any, device: Any, comm: Solo) -> threads.Choice | None:
    """On a CPU: the thread count (``--threads``, else chosen from the model and the machine),
    applied and written into ``config`` so that config.toml records it."""
    if getattr(device, "type", str(device)) != "cpu":
        return None
    import torch

    choice = threads.choose(config.threads, threads.batch_work(parts.model, config.batch_size),
                            cpus=threads.usable_cpus(), processes_here=comm.launch.local_world_size,
                            current=torch.get_num_threads())
    threads.apply(choice)
    config.threads = choice.threads
    return choice


def _agree_on_plan(plan: Plan, device: Any, comm: Solo) -> None:
    """Every process must run the same settings with the same plugins; rank 0's drawn seed is everyone's."""
    settings = {k: v for k, v in dataclasses.asdict(plan.config).items() if k != "seed"}
    comm.same_everywhere(
        "their settings", {**settings, "components": plan.components(), "device": getattr(device, "type", str(device))},
        "Start every process with the same command line, on machines with the same plugins installed.",
    )
    plan.config.seed = comm.broadcast(plan.config.seed)


def _read_run(run_dir: pathlib.Path, comm: Solo) -> tuple[dict[str, Any], dict[str, Any], dict | None]:
    """A run folder's settings and checkpoint (None: it never wrote one), checked to fit this many processes."""
    if not (run_dir / folder.CONFIG).is_file():
        raise UsageError(f"--resume {str(run_dir)!r}: not a run folder (no {folder.CONFIG}). Pass the folder a run "
                         f"printed at its start.")
    folder.check_files(run_dir)  # before anything is rewritten: a resume that cannot finish changes nothing
    settings, options = folder.read_config(run_dir)
    settings = provenance.pin_names(settings, run_dir)
    signals.import_torch()  # see _prepare
    checkpoint = checkpoint_io.load(run_dir)
    trained_by = checkpoint.get("world_size", 1) if checkpoint is not None else comm.world_size
    if trained_by != comm.world_size:
        how = ("one process (fmclf run ...)" if trained_by == 1
               else f"{trained_by} processes (torchrun, WORLD_SIZE={trained_by})")
        now = "one process" if comm.world_size == 1 else f"{comm.world_size} processes"
        raise UsageError(
            f"--resume {str(run_dir)!r}: this run was trained by {how}, but {now} started to resume it. "
            f"Each process trains on its own shard of the data with its share of the batch, so a run resumes only "
            f"with the number of processes it started with; resume it with {how}, or start a new run with "
            f"--config {run_dir / folder.CONFIG}."
        )
    return settings, options, checkpoint


def _after_stop(signal_name: str, run_dir: pathlib.Path | None, comm: Solo) -> str:
    """What a stop outside training leaves, read from the run folder itself, and how to go on."""
    head = f"stopped by {signal_name}"
    if run_dir is None:
        return f"{head} before anything was written"
    if not run_dir.is_dir():
        return (f"{head} before training started; nothing was written to {run_dir} (the folder this run had made "
                f"is removed again, so the same command can use it)")
    command = processes.restart_command(comm.launch)
    resume = f"`{command} run --resume {shlex.quote(str(run_dir))}`"
    has = {name: (run_dir / name).exists() for name in (folder.CONFIG, folder.CHECKPOINT, folder.WEIGHTS,
                                                        folder.SUMMARY, folder.REPORT)}
    if not has[folder.CONFIG]:
        return f"{head} before training started; nothing was written to {run_dir}"
    if not has[folder.CHECKPOINT]:
        return (f"{head} before training started; the run folder {run_dir} holds its settings but no checkpoint, "
                f"and {resume} starts it from epoch 1")
    if not (has[folder.WEIGHTS] and has[folder.SUMMARY]):
        return (f"{head} outside training; the run folder {run_dir} keeps its last checkpoint and the metrics of "
                f"every epoch before it, and {resume} continues (or finishes) it")
    if not has[folder.REPORT]:
        return (f"{head} after training had finished: {run_dir} holds the trained weights ({folder.WEIGHTS}) and "
                f"{folder.SUMMARY}; {resume} draws the pictures and {folder.REPORT} the stop cut short")
    return f"{head} after the run had finished; {run_dir} holds the whole run"


def _choose_graphs(config: RunConfig, parts: Any, device: Any, comm: Solo, echo: Echo) -> bool:
    """Whether the training is captured in CUDA graphs (see :func:`fmclf.train.graphs.decide`), saying
    in one line why not when the default cannot be honoured."""
    from ..train.graphs import decide

    record = parts.records.get("updater")
    use, note = decide(config.cuda_graphs, device, parts.updater, comm, record.describe() if record else "the updater")
    if note:
        echo(note)
    return use


def _thread_note(choice: threads.Choice | None) -> str:
    """`` (1 thread)`` for the start line; why, when it was chosen."""
    if choice is None:
        return ""
    count = f"{choice.threads} thread{'s' if choice.threads != 1 else ''}"
    return f" ({count}: {choice.why})" if choice.chosen else f" ({count})"


def _kept(last: tuple[int, int] | None) -> str:
    """What the run folder holds after a stop, for messages."""
    if last is None:
        return "holds no checkpoint: the first is written when the first epoch ends"
    at = f"epoch {last[0] + 1}, batch {last[1]}" if last[1] else f"epoch {last[0]}"
    return f"keeps its last good checkpoint (after {at}) and the metrics of every epoch finished before it"


def _resume_point(state: TrainState, epochs: int, train: Any) -> str:
    """``epoch 9 of 40``, or ``epoch 9 of 40, batch 2047 of 2345`` (the epoch's batches) mid-epoch."""
    where = f"epoch {state.epoch + 1} of {epochs}"
    if not state.batch:
        return where
    try:
        of = f" of {len(train)}"
    except TypeError:
        of = ""
    return f"{where}, batch {state.batch + 1}{of}"


def _train(
    plan: Plan, host: PluginHost, device: Any, run_dir: pathlib.Path | None, checkpoint: dict | None, echo: Echo,
    prov: dict[str, Any], comm: Solo, voice: Voice = Voice(), checkpoints: bool = True, extend: bool = False,
    schedule_epochs: int | None = None,
) -> RunResult:
    """Build the components and train them; ``run_dir`` None keeps no files (``fmclf.fit(out=False)``),
    ``checkpoints`` False keeps no weights (a model whose parameters fmclf does not know). A resumed
    updater is built for the epochs its schedule was built for (the checkpoint's ``schedule_epochs``,
    else ``schedule_epochs``, the epochs config.toml recorded), whatever ``--epochs`` now says: its
    schedule continues, it does not start again over the new length."""
    config = plan.config
    if checkpoint is not None:
        schedule_epochs = checkpoint["state"].get("schedule_epochs") or schedule_epochs
    schedule_epochs = schedule_epochs or config.epochs
    # Only rank 0 draws and steers: the other processes build no visualizer and no callback.
    listening = ("visualizer", "callback")
    built = plan if comm.is_root else dataclasses.replace(
        plan, records={t: r for t, r in plan.records.items() if r.kind not in listening})
    shard = shard_args(config.batch_size, comm.rank, comm.world_size)
    parts = comm.agree("loading the data and building the components",
                       lambda: assemble(built, device=device, run_dir=run_dir, updater_epochs=schedule_epochs,
                                        **shard))
    check_shards(parts.dataset, comm)
    check_seed(plan)  # last before training: what fails sooner says so whatever the seed
    chosen = _choose_threads(config, parts, device, comm)
    graphs_by_default = config.cuda_graphs is None
    config.cuda_graphs = _choose_graphs(config, parts, device, comm, echo)
    if chosen is not None and "threads" in prov and "resumed" not in prov:  # recorded before the choice
        prov["threads"] = chosen.threads
    state = TrainState(schedule_epochs=schedule_epochs)
    last = None  # (epoch, batch) of the checkpoint on disk
    redraw = False  # a finished run whose pictures and report were cut short: draw them, nothing else
    if checkpoint is not None:
        state = checkpoint_io.restore(parts, checkpoint, run_dir, comm)
        last = (state.epoch, state.batch)
        if config.epochs > schedule_epochs and scheduler_of(parts.updater) is not None:
            echo(f"Note: the updater's learning-rate schedule was built for {schedule_epochs} epochs and goes on as "
                 f"it is, not over the new {config.epochs}: after its end, the rate is what the scheduler gives "
                 f"there. Start a new run for a schedule over {config.epochs} epochs.")
        # The checkpoint's history is the record: metrics.jsonl written after it (a full disk, a stop, an edit)
        # is mended.
        comm.on_root("writing the metrics", lambda: folder.mend_metrics(run_dir, state.history))
        finished, reported = comm.on_root("reading the run folder", lambda: (
            checkpoint_io.finished(run_dir), (run_dir / folder.REPORT).exists()))
        if state.epoch >= config.epochs and finished and reported:
            echo(f"{run_dir}: already trained {state.epoch} epoch(s) of {config.epochs}; {voice.further}.")
            return _recorded(run_dir, state, device, plan, parts, comm)
        if state.stopped is not None and state.batch == 0 and finished:
            if not extend:
                s = state.stopped
                echo(f"{run_dir}: stopped after epoch {s['epoch']} of {config.epochs} by {s['by']} ({s['reason']}); "
                     f"{voice.further} anyway.")
                return _recorded(run_dir, state, device, plan, parts, comm)
            state.stopped = None  # --epochs on a stopped run: train on, the callbacks keep their state
        redraw = state.epoch >= config.epochs and finished  # trained and saved; the pictures were cut short
        echo(f"resuming {run_dir} at {_resume_point(state, config.epochs, parts.dataset.train)}"
             if state.epoch < config.epochs else
             f"drawing the pictures and {folder.REPORT} of {run_dir}, which a stop cut short" if redraw else
             f"finishing {run_dir}")
    # Once the components are built: a failed start leaves no config behind.
    if run_dir is not None:
        comm.on_root("writing the run's settings",
                     lambda: atomic.write_text(run_dir / folder.CONFIG, plan.recorded().to_toml(prov, _HEADER)))
    comm.share_model(parts.model)  # identical starting weights, whatever each process drew
    report = None
    if comm.is_root:  # the others print and draw nothing
        parts.visualizers.insert(0, (None, EpochLines(echo)))
        if chosen is not None:
            parts.visualizers.insert(1, (None, threads.ContentionWatch(chosen.threads, echo)))
        if run_dir is not None:
            report = RunReport(run_dir, parts.dataset, plan)  # pictures and report.md, drawn at the end
            parts.visualizers.append((None, report))

    def save(state: TrainState) -> None:
        nonlocal last
        checkpoint_io.check_weights(parts, state)  # the same weights in every process, so all raise alike
        if not checkpoints:  # no weights to keep: the metrics still are
            comm.on_root("writing the metrics", lambda: folder.write_metrics(run_dir, state.history, writer))
            return
        saved = checkpoint_io.global_state(state, comm)
        # Rank 0 writes while the others wait: none exits (and has torchrun stop rank 0) before it is written.
        comm.on_root("writing the checkpoint",
                     lambda: checkpoint_io.save_checkpoint(run_dir, parts, saved, comm.world_size, writer))
        mark = (state.epoch, state.batch)

        def written() -> None:  # what messages say the folder keeps: the checkpoint on disk, not one queued
            nonlocal last
            last = mark

        if writer is not None:
            writer.then(written)
        else:
            written()
        comm.on_root("writing the metrics", lambda: folder.write_metrics(run_dir, saved["history"], writer))

    # One process writes its checkpoints while the next epoch trains. Under torchrun they are written
    # at once: rank 0 writes while the others wait, so none exits (and has torchrun kill it) first.
    writer = BackgroundWriter() if comm.world_size == 1 else None
    flag = StopFlag()
    trainer = Trainer(
        parts, device=device, epochs=config.epochs, run_dir=run_dir, checkpoint=save if run_dir is not None else None,
        stop=comm.watch(flag, device),
        comm=comm, config={"run": dataclasses.asdict(config), "provenance": prov}, cuda_graphs=config.cuda_graphs,
        divergence_advice=DIVERGENCE_ADVICE, warn=processes.root_only(comm, _warn),
        graph_fallback=echo if graphs_by_default else None,
    )
    start_epoch = state.epoch
    started = time.perf_counter()
    echo(
        f"training {config.model} + {config.loss} + {config.updater} on {config.dataset} "
        f"({getattr(parts.dataset, 'source', '') or 'data ready'}) on {processes.where(comm, device)}"
        f"{_thread_note(chosen)}, seed {config.seed}; "
        + (f"run folder {run_dir}" if run_dir is not None else "no run folder")
    )
    command = processes.restart_command(comm.launch)
    how = f"{command} run --resume {shlex.quote(str(run_dir))}" if voice.resume is None else voice.resume(run_dir)
    resume = f"Resume with: {how}"
    kept = None  # what is left after a stop, when it is not a checkpoint to resume from
    if run_dir is None:
        kept = "there is no run folder, so nothing to resume from; the model holds what it learned so far"
    elif not checkpoints:
        kept = (f"this run keeps no checkpoints (fmclf does not know the model's parameters), so it cannot be resumed; "
                f"the model holds what it learned so far, and {run_dir} the metrics of every finished epoch")

    def ended(status: str, exc: BaseException) -> None:  # status.json, for `fmclf runs`
        if comm.is_root and run_dir is not None:
            folder.write_status(run_dir, status, last[0] if last else 0, str(exc) or type(exc).__name__)

    with stop_on_signals(flag, processes.root_only(comm, voice.notice or say), again=voice.again):
        try:
            try:
                state = trainer.fit(state)
            finally:  # however training ended, its files are on disk before anything is said
                if writer is not None:
                    writer.close(raise_error=sys.exc_info()[0] is None)
        except Interrupted as exc:
            signals.ending()
            ended("interrupted", exc)
            if kept:
                raise comm.alike(Interrupted(f"{exc}; {kept}.")) from None
            raise comm.alike(Interrupted(f"{exc}; checkpoint written to {run_dir / folder.CHECKPOINT}. "
                                         f"{resume}")) from None
        except KeyboardInterrupt as exc:
            signals.ending()
            ended("interrupted", exc)
            if kept:
                raise comm.alike(Interrupted(f"stopped at once by a second SIGINT; {kept}.")) from None
            raise comm.alike(Interrupted(f"stopped at once by a second SIGINT; the run folder {run_dir} {_kept(last)}. "
                                         f"{resume}")) from None
        except WriteError as exc:
            raise WriteError(f"{str(exc).strip()} The run folder {run_dir} {_kept(last)}; once it can be written, "
                             f"`{command} run --resume {shlex.quote(str(run_dir))}` continues from it.",
                             errno=exc.errno, filename=exc.filename) from None
        except DivergenceError as exc:
            ended("diverged", exc)
            if run_dir is None:
                raise
            if not checkpoints:
                raise DivergenceError(
                    f"{str(exc).strip()} The run folder {run_dir} keeps the metrics of every epoch finished before it "
                    f"(and no checkpoint: fmclf does not know the model's parameters).",
                    epoch=exc.epoch, batch=exc.batch,
                ) from None
            raise DivergenceError(f"{str(exc).strip()} The run folder {run_dir} {_kept(last)}.", epoch=exc.epoch,
                                  batch=exc.batch) from None
        except ComponentError as exc:
            ended("failed", exc)
            if last is None:
                raise
            raise ComponentError(
                f"{str(exc).strip()} The run folder {run_dir} {_kept(last)}; `{how}` continues from it "
                f"(--visualizer may swap a visualizer)."
            ) from exc
    seconds = time.perf_counter() - started
    memory = peak_memory(device)
    record = processes.weights_record(comm, parts.model, device)

    summary = run_summary(plan, state.history, device, seconds, memory, state.stopped, record)

    differ = _different_weights(record, comm, run_dir)  # the run failed, though every epoch trained

    def write_results() -> None:
        if checkpoints:
            checkpoint_io.save_weights(run_dir, parts.model)
        kept = trainer.heldout.test_predictions()
        if kept is not None:
            folder.write_predictions(run_dir, *kept)
        folder.write_json(run_dir / folder.SUMMARY, summary)
        if differ is not None:  # here, while the other processes wait: none exits (and has torchrun stop us) first
            folder.write_status(run_dir, "failed", len(state.history), str(differ))

    try:
        if redraw:
            seconds = comm.on_root("reading the run folder", lambda: folder.recorded_seconds(run_dir))
            summary = comm.on_root("reading the run folder", lambda: folder.read_json(run_dir / folder.SUMMARY))
        elif run_dir is not None:
            comm.on_root("writing the final weights and summary", write_results)
        if differ is not None:
            raise comm.alike(differ)
        if comm.is_root and run_dir is not None:
            folder.write_status(run_dir, "finished", len(state.history))
        if report is not None:
            report.finish(seconds, device, echo)
    except WriteError as exc:
        saved = (run_dir / folder.WEIGHTS).exists() and (run_dir / folder.SUMMARY).exists()
        rest = f"the pictures and {folder.REPORT}" if saved else f"{folder.WEIGHTS}, {folder.SUMMARY} and the pictures"
        raise WriteError(
            f"{str(exc).strip()} Training has finished and {run_dir / folder.CHECKPOINT} holds it; once the folder "
            f"can be written, `{how}` writes {rest}.",
            errno=exc.errno, filename=exc.filename) from None
    trained = 0 if redraw else max(len(state.history) - start_epoch, 0)
    return RunResult(run_dir, state.history, str(device), seconds, plan, trained, memory, state.stopped,
                     model=parts.model, summary=summary)


def _different_weights(record: dict[str, Any] | None, comm: Solo,
                       run_dir: pathlib.Path | None) -> DistributedError | None:
    """The error for processes that ended with different weights (see :func:`processes.weights_record`), or None."""
    if not record or record.get("weights_identical", True):
        return None
    where = (f"SHA-256 digests in {run_dir / folder.SUMMARY}); {run_dir / folder.WEIGHTS} holds rank 0's"
             if run_dir is not None else "their SHA-256 digests differ)")
    return DistributedError(
        f"the {comm.world_size} processes ended with different weights ({where}, and the run is marked failed. A "
        f"component does something different in each process (a random draw from an unseeded generator, a "
        f"non-deterministic kernel); please report it."
    )


def run_summary(plan: Plan, history: list[dict[str, Any]], device: Any, seconds: float, memory: dict[str, float],
                stopped: dict[str, Any] | None = None, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """What summary.json holds for a run that trained ``history``."""
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "seconds")}
    return {
        "epochs": plan.config.epochs, "epochs_trained": len(history), "device": str(device),
        "seconds": round(seconds, 3), **final, "stopped": stopped, "components": plan.components(),
        "peak_memory": memory, **({"distributed": record} if record else {}),
    }


def _recorded(run_dir: pathlib.Path, state: TrainState, device: Any, plan: Plan, parts: Any, comm: Solo) -> RunResult:
    """The result of a run that had nothing left to train: what its folder records."""
    summary = comm.on_root("reading the run folder", lambda: folder.read_json(run_dir / folder.SUMMARY))
    return RunResult(run_dir, state.history, str(device), 0.0, plan, 0, stopped=state.stopped, model=parts.model,
                     summary=summary)
