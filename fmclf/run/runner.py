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
from dataclasses import dataclass
from typing import Any, Callable

from .. import atomic
from ..dist.comm import Solo, connect
from ..draw.report import RunReport
from ..errors import ComponentError, DistributedError, DivergenceError, Interrupted, UsageError
from ..host.loading import PluginHost
from ..train.engine import StopFlag, Trainer, TrainState
from . import checkpoint as checkpoint_io
from . import folder, processes, provenance, threads
from .config import DIVERGENCE_ADVICE, RunConfig, load_config
from .devices import launch_device
from .lock import RunLock
from .memory import peak_memory
from .plan import Plan, assemble, check_processes, check_shards, resolve, shard_args
from .signals import say, stop_on_signals
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


class EpochLines:
    """Prints one line per finished epoch (an internal listener, not a plugin)."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo

    def on_epoch_end(self, event) -> None:
        m = event.metrics
        self.echo(
            f"epoch {m['epoch']:>{len(str(event.epochs))}}/{event.epochs}  train loss {m['train_loss']:.4f}  "
            f"train acc {m['train_acc']:.4f}  test acc {m['test_acc']:.4f}  ({m['seconds']:.2f} s)"
        )


_HEADER = (
    "# fmclf run configuration. `fmclf run --config config.toml` repeats this run;\n"
    "# [provenance] records what produced it and is not read back.\n"
)


def run_new(config: RunConfig, host: PluginHost, *, out: pathlib.Path | None = None, echo: Echo = print) -> RunResult:
    """Train a new run of ``config`` into ``out`` (default: a fresh ``runs/...`` folder).

    Everything that can be checked is checked before any work: the settings and
    options and the run folder (no torch yet), then the device. A run that fails
    before training leaves no folder behind. Under torchrun every process calls
    this; they train together (see :mod:`fmclf.dist.comm`).
    """
    with connect() as comm:
        echo = processes.root_only(comm, echo)
        out_dirs: list[pathlib.Path] = []

        def check_out(plan: Plan) -> None:
            out_dirs.append(pathlib.Path(out) if out is not None else folder.default_run_dir(plan.config.model, plan.config.loss))
            if comm.is_root:
                folder.check_new(out_dirs[0])

        plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm, check_out))
        _agree_on_plan(plan, device, comm)
        prov = provenance.record(plan, host, device, processes.describe(comm, device))
        existed = out_dirs[0].exists()
        lock = RunLock(out_dirs[0])

        def create() -> pathlib.Path:
            path = folder.prepare_new(out_dirs[0])
            note = lock.acquire("start a run in it")
            if note:
                echo(f"Note: {note}.")
            return folder.check_new(path)  # again, now that it is ours: another run may have filled it meanwhile

        try:
            run_dir = comm.on_root("creating the run folder", create)
            return _train(plan, host, device, run_dir, None, echo, prov, comm)
        except BaseException:
            if lock.held and not existed:  # only an empty folder goes: a run that never started
                lock.release(remove=True)
                with contextlib.suppress(OSError):
                    out_dirs[0].rmdir()
            raise
        finally:
            lock.release()


def run_resume(run_dir: pathlib.Path, host: PluginHost, *, overrides: dict[str, Any] | None = None, echo: Echo = print) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, holding its lock; ``overrides`` may set
    ``epochs`` (to train further), ``device`` and ``visualizers``.

    Under torchrun only rank 0 reads the run folder; it must be resumed by as
    many processes as trained it.
    """
    run_dir = pathlib.Path(run_dir)
    with connect() as comm:
        echo = processes.root_only(comm, echo)
        lock = RunLock(run_dir)

        def read() -> tuple[dict[str, Any], dict[str, Any], dict | None]:
            if (run_dir / folder.CONFIG).is_file():  # a folder that is no run gets no lock file
                note = lock.acquire("resume it")
                if note:
                    echo(f"Note: {note}.")
            return _read_run(run_dir, comm)

        with contextlib.ExitStack() as held:
            held.callback(lock.release)
            return _resume(run_dir, host, comm.on_root("reading the run folder", read), overrides, echo, comm)


def _resume(run_dir: pathlib.Path, host: PluginHost, found: tuple[dict[str, Any], dict[str, Any], dict | None],
            overrides: dict[str, Any] | None, echo: Echo, comm: Solo) -> RunResult:
    settings, options, checkpoint = found
    config = RunConfig(**settings, options=options)  # load_config refused unknown settings
    for key, value in (overrides or {}).items():
        setattr(config, key, value)
    config.options = {t: o for t, o in config.options.items() if not t.startswith("visualizer.") or t.split(".", 1)[1] in config.visualizers}
    plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm))
    _agree_on_plan(plan, device, comm)
    now = provenance.record(plan, host, device, processes.describe(comm, device))
    prov = provenance.resumed(run_dir, now) if comm.is_root else {}
    if checkpoint is None:
        echo(f"{run_dir} has no checkpoint (the run stopped before its first one), so training starts at epoch 1.")
    return _train(plan, host, device, run_dir, checkpoint, echo, prov, comm)


def _prepare(config: RunConfig, host: PluginHost, comm: Solo, check: Callable[[Plan], None] | None = None) -> tuple[Plan, Any]:
    """Resolve the plan, ``check`` it (no torch yet), then the device; refuse what cannot run in these processes."""
    plan = resolve(config, host)
    if check is not None:
        check(plan)
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
        raise UsageError(f"--resume {str(run_dir)!r}: not a run folder (no {folder.CONFIG}). Pass the folder a run printed at its start.")
    settings, options = load_config(run_dir / folder.CONFIG)
    checkpoint = checkpoint_io.load(run_dir)
    trained_by = checkpoint.get("world_size", 1) if checkpoint is not None else comm.world_size
    if trained_by != comm.world_size:
        how = "one process (fmclf run ...)" if trained_by == 1 else f"{trained_by} processes (torchrun, WORLD_SIZE={trained_by})"
        now = "one process" if comm.world_size == 1 else f"{comm.world_size} processes"
        raise UsageError(
            f"--resume {str(run_dir)!r}: this run was trained by {how}, but {now} started to resume it. "
            f"Each process trains on its own shard of the data with its share of the batch, so a run resumes only "
            f"with the number of processes it started with; resume it with {how}, or start a new run with "
            f"--config {run_dir / folder.CONFIG}."
        )
    return settings, options, checkpoint


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


def _train(
    plan: Plan, host: PluginHost, device: Any, run_dir: pathlib.Path, checkpoint: dict | None, echo: Echo,
    prov: dict[str, Any], comm: Solo,
) -> RunResult:
    config = plan.config
    # Only rank 0 draws: the other processes build no visualizer.
    built = plan if comm.is_root else dataclasses.replace(plan, records={t: r for t, r in plan.records.items() if r.kind != "visualizer"})
    shard = shard_args(config.batch_size, comm.rank, comm.world_size)
    parts = comm.agree("loading the data and building the components",
                       lambda: assemble(built, device=device, run_dir=run_dir, **shard))
    check_shards(parts.dataset, comm)
    chosen = _choose_threads(config, parts, device, comm)
    graphs_by_default = config.cuda_graphs is None
    config.cuda_graphs = _choose_graphs(config, parts, device, comm, echo)
    if chosen is not None and "threads" in prov and "resumed" not in prov:  # recorded before the choice
        prov["threads"] = chosen.threads
    state = TrainState()
    last = None  # (epoch, batch) of the checkpoint on disk
    if checkpoint is not None:
        state = checkpoint_io.restore(parts, checkpoint, run_dir, comm)
        last = (state.epoch, state.batch)
        finished = comm.on_root("reading the run folder", lambda: (run_dir / folder.WEIGHTS).exists() and (run_dir / folder.SUMMARY).exists())
        if state.epoch >= config.epochs and finished:
            echo(f"{run_dir}: already trained {state.epoch} epoch(s) of {config.epochs}; pass --epochs N to train further.")
            return RunResult(run_dir, state.history, str(device), 0.0, plan, 0)
        where = f"epoch {state.epoch + 1}, batch {state.batch + 1}" if state.batch else f"epoch {state.epoch + 1}"
        echo(f"resuming {run_dir} at {where} of {config.epochs}" if state.epoch < config.epochs else f"finishing {run_dir}")
    # Once the components are built: a failed start leaves no config behind.
    comm.on_root("writing the run's settings", lambda: atomic.write_text(run_dir / folder.CONFIG, config.to_toml(prov, _HEADER)))
    comm.share_model(parts.model)  # identical starting weights, whatever each process drew
    report = None
    if comm.is_root:  # the others print and draw nothing
        parts.visualizers.insert(0, (None, EpochLines(echo)))
        if chosen is not None:
            parts.visualizers.insert(1, (None, threads.ContentionWatch(chosen.threads, echo)))
        report = RunReport(run_dir, parts.dataset, plan)  # pictures and report.md, drawn at the end
        parts.visualizers.append((None, report))

    def save(state: TrainState) -> None:
        nonlocal last
        checkpoint_io.check_weights(parts, state)  # the same weights in every process, so all raise alike
        saved = checkpoint_io.global_state(state, comm)
        # Rank 0 writes while the others wait: none exits (and has torchrun stop rank 0) before it is written.
        comm.on_root("writing the checkpoint", lambda: checkpoint_io.save(run_dir, parts, saved, comm.world_size, writer))
        last = (state.epoch, state.batch)

    # One process writes its checkpoints while the next epoch trains. Under torchrun they are written
    # at once: rank 0 writes while the others wait, so none exits (and has torchrun kill it) first.
    writer = BackgroundWriter() if comm.world_size == 1 else None
    flag = StopFlag()
    trainer = Trainer(
        parts, device=device, epochs=config.epochs, run_dir=run_dir, checkpoint=save, stop=comm.watch(flag, device),
        comm=comm, config={"run": dataclasses.asdict(config), "provenance": prov}, cuda_graphs=config.cuda_graphs,
        divergence_advice=DIVERGENCE_ADVICE, graph_fallback=echo if graphs_by_default else None,
    )
    start_epoch = state.epoch
    started = time.perf_counter()
    echo(
        f"training {config.model} + {config.loss} + {config.updater} on {config.dataset} "
        f"({getattr(parts.dataset, 'source', '') or 'data ready'}) on {processes.where(comm, device)}"
        f"{_thread_note(chosen)}, seed {config.seed}; run folder {run_dir}"
    )
    command = processes.restart_command(comm.launch)
    resume = f"Resume with: {command} run --resume {shlex.quote(str(run_dir))}"
    with stop_on_signals(flag, processes.root_only(comm, say)):
        try:
            try:
                state = trainer.fit(state)
            finally:  # however training ended, its files are on disk before anything is said
                if writer is not None:
                    writer.close(raise_error=sys.exc_info()[0] is None)
        except Interrupted as exc:
            raise comm.alike(Interrupted(f"{exc}; checkpoint written to {run_dir / folder.CHECKPOINT}. {resume}")) from None
        except KeyboardInterrupt:
            raise comm.alike(Interrupted(f"stopped at once by a second SIGINT; the run folder {run_dir} {_kept(last)}. {resume}")) from None
        except DivergenceError as exc:
            raise DivergenceError(f"{str(exc).strip()} The run folder {run_dir} {_kept(last)}.", epoch=exc.epoch, batch=exc.batch) from None
        except ComponentError as exc:
            if last is None:
                raise
            raise ComponentError(
                f"{str(exc).strip()} The run folder {run_dir} {_kept(last)}; `{command} run --resume "
                f"{shlex.quote(str(run_dir))}` continues from it (--visualizer may swap a visualizer)."
            ) from exc
    seconds = time.perf_counter() - started
    memory = peak_memory(device)
    record = processes.weights_record(comm, parts.model, device)

    def write_results() -> None:
        checkpoint_io.save_weights(run_dir, parts.model)
        final = state.history[-1]
        folder.write_json(run_dir / folder.SUMMARY, {
            "epochs": config.epochs, "device": str(device), "seconds": round(seconds, 3),
            "train_loss": final["train_loss"], "train_acc": final["train_acc"], "test_acc": final["test_acc"],
            "per_class_test_acc": final["per_class_test_acc"], "components": plan.components(), "peak_memory": memory,
            **({"distributed": record} if record else {}),
        })

    comm.on_root("writing the final weights and summary", write_results)
    if report is not None:
        report.finish(seconds, device, echo)
    if record and not record["weights_identical"]:
        raise comm.alike(DistributedError(
            f"the {comm.world_size} processes ended with different weights (SHA-256 digests in {run_dir / folder.SUMMARY}); "
            f"{run_dir / folder.WEIGHTS} holds rank 0's. A component does something different in each process "
            f"(a random draw from an unseeded generator, a non-deterministic kernel); please report it."
        ))
    return RunResult(run_dir, state.history, str(device), seconds, plan, max(config.epochs - start_epoch, 0), memory)
