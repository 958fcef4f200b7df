"""One run from a resolved :class:`~fmclf.run.plan.Plan` to its finished folder, as a :class:`Session` whose steps
run in order: build the parts (and take the decisions that need them: threads, CUDA graphs), start or resume, train,
finish. :mod:`fmclf.run.runner` prepares what a session gets; the front ends hand in the report, so nothing here draws.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .. import atomic, signals, wording
from ..dist.comm import Solo
from ..errors import ComponentError, DistributedError, DivergenceError, Interrupted, WriteError, to_stderr
from ..signals import say, stop_on_signals
from ..train.engine import StopFlag, Trainer, TrainState
from ..train.graphs import choose as choose_graphs
from ..train.updaters import scheduler_of
from ..wording import Echo
from . import checkpoint as checkpoint_io
from . import folder, processes, provenance, threads
from .config import divergence_advice
from .memory import describe as describe_memory
from .memory import peak_memory
from .plan import Plan, assemble, check_seed, check_shards
from .writer import BackgroundWriter

#: What config.toml starts with.
HEADER = (
    "# fmclf run configuration. `fmclf run --config config.toml` repeats this run;\n"
    "# [provenance] records what produced it and is not read back.\n"
)


class Report(Protocol):
    """What a front end hands a run to draw once it has finished (:class:`fmclf.draw.report.RunReport`):
    a listener (it keeps ``on_fit_end``'s event) that :meth:`finish` turns into pictures and report.md."""

    def on_fit_end(self, event: Any) -> None: ...  # noqa: D102 - see the class

    def finish(self, seconds: float, device: Any, echo: Echo) -> None: ...  # noqa: D102 - see the class


#: Builds a run's :class:`Report` from its folder, data set and plan.
ReportMaker = Callable[[pathlib.Path, Any, Plan], Report]


@dataclass
class RunResult:
    """What a finished (or already finished) run reports."""

    run_dir: pathlib.Path | None
    history: list[dict[str, Any]]
    device: str
    seconds: float
    plan: Plan
    trained_epochs: int
    memory: dict[str, float] = dataclasses.field(default_factory=dict)  #: peak memory, see fmclf.memory
    stopped: dict[str, Any] | None = None  #: a callback's stop, {"by", "reason", "epoch"} (see fmclf.events.Control)
    model: Any = None  #: the trained model (rank 0's)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)  #: what summary.json holds

    def describe(self) -> str:
        """What ``fmclf run`` prints at the end: epochs and time, the final metrics, memory, the run folder."""
        final = self.history[-1]
        per_epoch = self.seconds / max(self.trained_epochs, 1)
        done = len(self.history)
        now = f" ({self.trained_epochs} of them in this session)" if self.trained_epochs < done else ""
        stopped = self.stopped
        valid = (f"valid loss {final['valid_loss']:.4f}  valid acc {final['valid_acc']:.4f}  "
                 if "valid_acc" in final else "")
        extra = [f"{k} {v:.4f}" for k, v in final.items() if k.startswith(("valid_", "test_"))
                 and k not in ("valid_loss", "valid_acc", "test_loss", "test_acc") and isinstance(v, float)]
        return (
            f"done: {done} epoch(s){now} in {self.seconds:.2f} s ({per_epoch:.3f} s/epoch) on {self.device}\n"
            + (f"stopped after epoch {stopped['epoch']} by {stopped['by']}: {stopped['reason']}\n" if stopped else "")
            + f"final: train loss {final['train_loss']:.4f}  train acc {final['train_acc']:.4f}  {valid}"
            f"test loss {final['test_loss']:.4f}  test acc {final['test_acc']:.4f}\n"
            + (f"metrics: {'  '.join(extra)}\n" if extra else "")
            + "per-class test acc: " + "  ".join(f"{c} {a:.2f}" for c, a in final["per_class_test_acc"].items())
            + "\n" + (f"peak memory: {describe_memory(self.memory, self.device)}\n" if self.memory else "")
            + f"run folder: {self.run_dir}"
        )


def _further() -> str:
    """What a run that already trained all its epochs says to train it further."""
    return f"pass {wording.flag('epochs', 'N')} to train further"


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


@dataclass
class Start:
    """Where a session starts: a new run, or a run folder's checkpoint."""

    run_dir: pathlib.Path | None  #: None: no files at all (``fmclf.fit(out=False)``)
    checkpoint: dict | None = None
    prov: dict[str, Any] = dataclasses.field(default_factory=dict)  #: config.toml's [provenance]
    checkpoints: bool = True  #: False: no weights kept (a model whose parameters fmclf does not know)
    extend: bool = False  #: --epochs given on resume: a run a callback stopped trains on
    schedule_epochs: int | None = None  #: the epochs config.toml recorded (what a resumed schedule was built for)


def read_run(run_dir: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any], dict | None]:
    """A run folder's settings and options (by the names its provenance recorded) and its checkpoint (None: it
    never wrote one): what a run resumed alone, or as a member of a batched group, starts from."""
    folder.check_files(run_dir)  # before anything is rewritten: a resume that cannot finish changes nothing
    settings, options = folder.read_config(run_dir)
    settings = provenance.pin_names(settings, run_dir)
    signals.import_torch()  # see prepare
    return settings, options, checkpoint_io.load(run_dir)


class Session:
    """A run's steps over one plan (see the module's docstring); :meth:`run` takes them in order."""

    def __init__(self, plan: Plan, start: Start, comm: Solo, echo: Echo, report: ReportMaker | None = None) -> None:
        self.plan, self.start, self.comm, self.echo = plan, start, comm, echo
        self.run_dir, self.prov = start.run_dir, start.prov
        self.make_report = report
        self.report: Report | None = None
        self.last: tuple[int, int] | None = None  #: (epoch, batch) of the checkpoint on disk
        self.redraw = False  #: a finished run whose pictures and report were cut short: draw them, nothing else
        self.writer: BackgroundWriter | None = None
        self.chosen: threads.Choice | None = None

    def run(self) -> RunResult:
        """Build, start or resume, train and finish; a run with nothing left to do returns what it records."""
        parts = self.build()
        state = self.start_or_resume(parts)
        if isinstance(state, RunResult):
            return state
        self.write_settings(parts)
        start_epoch = state.epoch
        state, trainer, seconds = self.train(parts, state)
        return self.finish(parts, state, trainer, seconds, start_epoch)

    # --- build -------------------------------------------------------------------------------------------------

    def build(self) -> Any:
        """The components (on rank 0 only the listeners), checked, and the decisions that need them."""
        plan, comm, checkpoint = self.plan, self.comm, self.start.checkpoint
        schedule = (checkpoint["state"].get("schedule_epochs") if checkpoint is not None else None) \
            or self.start.schedule_epochs or plan.config.epochs
        self.schedule_epochs = schedule
        # Only rank 0 draws and steers: the other processes build no visualizer and no callback.
        built = plan if comm.is_root else dataclasses.replace(
            plan, records={t: r for t, r in plan.records.items() if r.kind not in ("visualizer", "callback")})
        # Under torchrun each process builds its shard of the data and takes its share of the global batch.
        shard = ({"shard": (comm.rank, comm.world_size), "batch_size": plan.config.batch_size // comm.world_size}
                 if comm.world_size > 1 else {})
        parts = comm.agree("loading the data and building the components",
                           lambda: assemble(built, device=plan.device, run_dir=self.run_dir, updater_epochs=schedule,
                                            **shard))
        check_shards(parts.dataset, comm)
        check_seed(plan)  # last before training: what fails sooner says so whatever the seed
        self.chosen = choose_threads(plan, parts, comm)
        self.graphs_by_default = plan.config.cuda_graphs is None
        # The run's only decision of CUDA graphs: the plan records it (so config.toml holds it), the Trainer takes it.
        graphs = choose_graphs(plan.config.cuda_graphs, plan.device, parts.updater, comm, parts.records, self.echo)
        self.plan = plan.decided(threads=self.chosen.threads if self.chosen else plan.config.threads,
                                 cuda_graphs=graphs)
        if self.chosen is not None and "threads" in self.prov and "resumed" not in self.prov:  # recorded before
            self.prov["threads"] = self.chosen.threads
        return parts

    # --- start or resume ---------------------------------------------------------------------------------------

    def start_or_resume(self, parts: Any) -> TrainState | RunResult:
        """The state training starts from: a fresh one, or the checkpoint's (saying where it resumes)."""
        checkpoint, run_dir, comm, epochs = self.start.checkpoint, self.run_dir, self.comm, self.plan.config.epochs
        if checkpoint is None:
            return TrainState(schedule_epochs=self.schedule_epochs)
        assert run_dir is not None  # a checkpoint comes from a run folder
        state = checkpoint_io.restore(parts, checkpoint, run_dir, comm)
        self.last = (state.epoch, state.batch)
        if epochs > self.schedule_epochs and scheduler_of(parts.updater) is not None:
            self.echo(f"Note: the updater's learning-rate schedule was built for {self.schedule_epochs} epochs and "
                      f"goes on as it is, not over the new {epochs}: after its end, the rate is what the scheduler "
                      f"gives there. Start a new run for a schedule over {epochs} epochs.")
        # The checkpoint's history is the record: metrics.jsonl written after it (full disk, stop, edit) is mended.
        comm.on_root("writing the metrics", lambda: folder.mend_metrics(run_dir, state.history))
        finished, reported = comm.on_root("reading the run folder", lambda: (
            checkpoint_io.finished(run_dir), (run_dir / folder.REPORT).exists()))
        if state.epoch >= epochs and finished and reported:
            self.echo(f"{run_dir}: already trained {state.epoch} epoch(s) of {epochs}; {_further()}.")
            return self._recorded(state, parts)
        if state.stopped is not None and state.batch == 0 and finished:
            if not self.start.extend:
                s = state.stopped
                self.echo(f"{run_dir}: stopped after epoch {s['epoch']} of {epochs} by {s['by']} ({s['reason']}); "
                          f"{_further()} anyway.")
                return self._recorded(state, parts)
            state.stopped = None  # --epochs on a stopped run: train on, the callbacks keep their state
        self.redraw = state.epoch >= epochs and finished  # trained and saved; the pictures were cut short
        self.echo(f"resuming {run_dir} at {_resume_point(state, epochs, parts.dataset.train)}"
                  if state.epoch < epochs else
                  f"drawing the pictures and {folder.REPORT} of {run_dir}, which a stop cut short" if self.redraw else
                  f"finishing {run_dir}")
        return state

    def _recorded(self, state: TrainState, parts: Any) -> RunResult:
        """The result of a run that had nothing left to train: what its folder records."""
        run_dir = self.run_dir
        assert run_dir is not None
        summary = self.comm.on_root("reading the run folder", lambda: folder.read_json(run_dir / folder.SUMMARY))
        return RunResult(run_dir, state.history, str(self.plan.device), 0.0, self.plan, 0, stopped=state.stopped,
                         model=parts.model, summary=summary)

    def write_settings(self, parts: Any) -> None:
        """config.toml (once the components are built: a failed start leaves none), the same starting
        weights everywhere, and rank 0's own listeners: the epoch lines, the contention watch, the report."""
        run_dir, comm = self.run_dir, self.comm
        if run_dir is not None:
            text = self.plan.recorded().to_toml(self.prov, HEADER)
            comm.on_root("writing the run's settings", lambda: atomic.write_text(run_dir / folder.CONFIG, text))
        comm.share_model(parts.model)  # identical starting weights, whatever each process drew
        if not comm.is_root:  # the others print and draw nothing
            return
        parts.visualizers.insert(0, (None, EpochLines(self.echo)))
        if self.chosen is not None:
            parts.visualizers.insert(1, (None, threads.ContentionWatch(self.chosen.threads, self.echo)))
        if run_dir is not None and self.make_report is not None:
            self.report = self.make_report(run_dir, parts.dataset, self.plan)  # drawn at the end
            parts.visualizers.append((None, self.report))

    # --- train -------------------------------------------------------------------------------------------------

    def save(self, parts: Any, state: TrainState) -> None:
        """A checkpoint (or, keeping no weights, the metrics) of ``state``: the Trainer's ``checkpoint``."""
        comm, run_dir, writer = self.comm, self.run_dir, self.writer
        checkpoint_io.check_weights(parts, state)  # the same weights in every process, so all raise alike
        if not self.start.checkpoints:  # no weights to keep: the metrics still are
            comm.on_root("writing the metrics", lambda: folder.write_metrics(run_dir, state.history, writer))
            return
        saved = checkpoint_io.global_state(state, comm)
        # Rank 0 writes while the others wait: none exits (and has torchrun stop rank 0) before it is written.
        comm.on_root("writing the checkpoint",
                     lambda: checkpoint_io.save_checkpoint(run_dir, parts, saved, comm.world_size, writer))
        # What messages say the folder keeps is the checkpoint on disk, not one still queued.
        written = functools.partial(setattr, self, "last", (state.epoch, state.batch))
        writer.then(written) if writer is not None else written()
        comm.on_root("writing the metrics", lambda: folder.write_metrics(run_dir, saved["history"], writer))

    def train(self, parts: Any, state: TrainState) -> tuple[TrainState, Trainer, float]:
        """Train from ``state`` under the signal handler; a stop or failure is raised saying what the folder keeps."""
        plan, comm, run_dir, config = self.plan, self.comm, self.run_dir, self.plan.config
        # One process writes its checkpoints while the next epoch trains; under torchrun at once (see save).
        self.writer = BackgroundWriter() if comm.world_size == 1 else None
        flag = StopFlag()
        trainer = Trainer(
            parts, device=plan.device, epochs=config.epochs, run_dir=run_dir,
            checkpoint=(lambda s: self.save(parts, s)) if run_dir is not None else None,
            stop=comm.watch(flag, plan.device), comm=comm,
            config={"run": dataclasses.asdict(config), "provenance": self.prov},
            cuda_graphs=config.cuda_graphs, graphs_decided=True,  # build() decided, and the plan records it
            divergence_advice=divergence_advice(), warn=processes.root_only(comm, to_stderr),
            graph_fallback=self.echo if self.graphs_by_default else None,
        )
        started = time.perf_counter()
        self.echo(
            f"training {config.model} + {config.loss} + {config.updater} on {config.dataset} "
            f"({getattr(parts.dataset, 'source', '') or 'data ready'}) on {processes.where(comm, plan.device)}"
            f"{_thread_note(self.chosen)}, seed {config.seed}; "
            + (f"run folder {run_dir}" if run_dir is not None else "no run folder")
        )
        voice = wording.current()  # the front end's: fmclf.fit says to interrupt the kernel, and prints there
        with stop_on_signals(flag, processes.root_only(comm, voice.notice or say), again=voice.again):
            try:
                try:
                    state = trainer.fit(state)
                finally:  # however training ended, its files are on disk before anything is said
                    if self.writer is not None:
                        self.writer.close(raise_error=sys.exc_info()[0] is None)
            except (Interrupted, KeyboardInterrupt, WriteError, DivergenceError, ComponentError) as exc:
                error = self.failed(exc)
                if error is exc:  # nothing to add: raised as it came, with its cause
                    raise
                raise error from (exc if isinstance(exc, ComponentError) else None)
        return state, trainer, time.perf_counter() - started

    def resume_how(self) -> str:
        """The command (or call) that continues this run."""
        return processes.resume_command(self.run_dir, self.comm.launch)

    def _kept_instead(self) -> str | None:
        """What is left after a stop when it is not a checkpoint to resume from."""
        if self.run_dir is None:
            return "there is no run folder, so nothing to resume from; the model holds what it learned so far"
        if not self.start.checkpoints:
            return (f"this run keeps no checkpoints (fmclf does not know the model's parameters), so it cannot be "
                    f"resumed; the model holds what it learned so far, and {self.run_dir} the metrics of every "
                    f"finished epoch")
        return None

    def _ended(self, status: str, exc: BaseException) -> None:  # status.json, for `fmclf runs`
        if self.comm.is_root and self.run_dir is not None:
            folder.write_status(self.run_dir, status, self.last[0] if self.last else 0, str(exc) or type(exc).__name__)

    def failed(self, exc: BaseException) -> BaseException:
        """The error to raise for training that ended with ``exc``, saying what the run folder keeps and how
        to go on; status.json records how it ended."""
        run_dir, comm, instead, last = self.run_dir, self.comm, self._kept_instead(), self.last
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            signals.ending()
            self._ended("interrupted", exc)
            head = str(exc) if isinstance(exc, Interrupted) else "stopped at once by a second SIGINT"
            if instead:
                return comm.alike(Interrupted(f"{head}; {instead}."))
            where = (f"checkpoint written to {run_dir / folder.CHECKPOINT}" if isinstance(exc, Interrupted)  # type: ignore[operator]
                     else f"the run folder {run_dir} {kept(last)}")
            return comm.alike(Interrupted(f"{head}; {where}. Resume with: {self.resume_how()}"))
        if isinstance(exc, WriteError):  # worded by the front end, as every way on is
            return WriteError(f"{str(exc).strip()} The run folder {run_dir} {kept(last)}; once it can be written, "
                              f"`{self.resume_how()}` continues from it.", errno=exc.errno, filename=exc.filename)
        if isinstance(exc, DivergenceError):
            self._ended("diverged", exc)
            if run_dir is None:
                return exc
            keeps = ("keeps the metrics of every epoch finished before it (and no checkpoint: fmclf does not know "
                     "the model's parameters)" if not self.start.checkpoints else kept(last))
            return DivergenceError(f"{str(exc).strip()} The run folder {run_dir} {keeps}.", epoch=exc.epoch,
                                   batch=exc.batch)
        self._ended("failed", exc)
        if last is None:
            return exc
        return ComponentError(f"{str(exc).strip()} The run folder {run_dir} {kept(last)}; `{self.resume_how()}` "
                              f"continues from it ({wording.flag('visualizers')} may swap a visualizer).")

    # --- finish ------------------------------------------------------------------------------------------------

    def finish(self, parts: Any, state: TrainState, trainer: Trainer, seconds: float, start_epoch: int) -> RunResult:
        """The final weights, predictions, summary and status, then the report: all on rank 0."""
        plan, comm, run_dir, device = self.plan, self.comm, self.run_dir, self.plan.device
        memory = peak_memory(device)
        record = processes.weights_record(comm, parts.model, device)
        summary = run_summary(plan, state.history, device, seconds, memory, state.stopped, record)
        seconds = summary["seconds"]  # as recorded, so that `fmclf report` rebuilds the same report.md
        differ = _different_weights(record, comm, run_dir)  # the run failed, though every epoch trained

        def write() -> None:
            model = parts.model if self.start.checkpoints else None
            write_results(run_dir, model, trainer.heldout.test_predictions(), summary)  # type: ignore[arg-type]
            if differ is not None:  # here, while the other processes wait: none exits (and has torchrun stop us)
                folder.write_status(run_dir, "failed", len(state.history), str(differ))

        try:
            if self.redraw:
                seconds = comm.on_root("reading the run folder", lambda: folder.recorded_seconds(run_dir))
                summary = comm.on_root("reading the run folder", lambda: folder.read_json(run_dir / folder.SUMMARY))  # type: ignore[operator]
            elif run_dir is not None:
                comm.on_root("writing the final weights and summary", write)
            if differ is not None:
                raise comm.alike(differ)
            if comm.is_root and run_dir is not None:
                folder.write_status(run_dir, "finished", len(state.history))
            if self.report is not None:
                self.report.finish(seconds, device, self.echo)
        except WriteError as exc:
            saved = (run_dir / folder.WEIGHTS).exists() and (run_dir / folder.SUMMARY).exists()  # type: ignore[operator]
            rest = (f"the pictures and {folder.REPORT}" if saved
                    else f"{folder.WEIGHTS}, {folder.SUMMARY} and the pictures")
            raise WriteError(
                f"{str(exc).strip()} Training has finished and {run_dir / folder.CHECKPOINT} holds it; once the "  # type: ignore[operator]
                f"folder can be written, `{self.resume_how()}` writes {rest}.",
                errno=exc.errno, filename=exc.filename) from None
        trained = 0 if self.redraw else max(len(state.history) - start_epoch, 0)
        return RunResult(run_dir, state.history, str(device), seconds, plan, trained, memory, state.stopped,
                         model=parts.model, summary=summary)


def write_results(run_dir: pathlib.Path, model: Any, predictions: tuple[Any, Any] | None,
                  summary: dict[str, Any]) -> None:
    """A finished run's final files, alone or in a group: its weights (none for ``model`` None: it keeps no
    checkpoints), its test predictions, then summary.json (last: once it reads back, the run has finished)."""
    if model is not None:
        checkpoint_io.save_weights(run_dir, model)
    if predictions is not None:
        folder.write_predictions(run_dir, *predictions)
    folder.write_json(run_dir / folder.SUMMARY, summary)


def choose_threads(plan: Plan, parts: Any, comm: Solo) -> threads.Choice | None:
    """On a CPU: the thread count (``--threads``, else chosen from the model and the machine), applied;
    the caller records it in the plan (:meth:`Plan.decided`), so that config.toml holds it."""
    if getattr(plan.device, "type", str(plan.device)) != "cpu":
        return None
    import torch

    config = plan.config
    choice = threads.choose(config.threads, threads.batch_work(parts.model, config.batch_size),
                            cpus=threads.usable_cpus(), processes_here=comm.launch.local_world_size,
                            current=torch.get_num_threads())
    threads.apply(choice)
    return choice


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


def _thread_note(choice: threads.Choice | None) -> str:
    """`` (1 thread)`` for the start line; why, when it was chosen."""
    if choice is None:
        return ""
    count = f"{choice.threads} thread{'s' if choice.threads != 1 else ''}"
    return f" ({count}: {choice.why})" if choice.chosen else f" ({count})"


def kept(last: tuple[int, int] | None) -> str:
    """What the run folder holds after a stop, for messages."""
    if last is None:
        return "holds no checkpoint: the first is written when the first epoch ends"
    at = f"epoch {last[0] + 1}, batch {last[1]}" if last[1] else f"epoch {last[0]}"
    return f"keeps its last good checkpoint (after {at}) and the metrics of every epoch finished before it"


def _resume_point(state: TrainState, epochs: int, train: Any) -> str:
    """``epoch 9 of 40``, or ``epoch 9 of 40, batch 2047 of 2345`` (the epoch's batches) mid-epoch."""
    from ..train.adapters import has_len  # torch is loaded by now

    where = f"epoch {state.epoch + 1} of {epochs}"
    if not state.batch:
        return where
    return f"{where}, batch {state.batch + 1}" + (f" of {len(train)}" if has_len(train) else "")
