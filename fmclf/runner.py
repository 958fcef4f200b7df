"""Running a plan: device, run folder, components, training, checkpoints, signals.

The CLI parses and prints; this module does the work, so the same run can be
started from Python (``fmclf.runner.run_new``) or resumed (``run_resume``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import platform
import random
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import __version__, atomic, distributed, runs
from .build import Plan, assemble, resolve
from .config import RunConfig, load_config
from .engine import Parts, StopFlag, Trainer, TrainState
from .errors import CheckpointError, ComponentError, DistributedError, DivergenceError, Interrupted, UsageError
from .memory import peak_memory
from .plugins import PluginHost
from .report import RunReport

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


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, echo: Echo | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the batch in flight; a second SIGINT stops at once.
    ``echo`` (default: stderr, written safely from a signal handler) says so."""
    echo = echo or say
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.request(signal.Signals(signum).name)
        echo(f"\n{flag.signal}: stopping after this batch and writing a checkpoint (Ctrl-C again to stop at once, losing this epoch's progress)\n")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def say(text: str) -> None:
    """Write to stderr from a signal handler. ``print`` could be in the middle of
    writing to the same buffered stream (a progress bar is, all the time), and
    re-entering it raises; a raw ``os.write`` cannot."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(sys.stderr.fileno(), text.encode("utf-8", "replace"))


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["cuda"])


def provenance(plan: Plan, host: PluginHost, device: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced a run: versions, device and the plugin behind each component."""
    import torch

    return {
        "fmclf": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),  # a CPU run's last bits can depend on it
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "components": plan.components(),
        "plugins": {p.info.name: f"{p.info.describe()} ({p.info.module})" for p in host.plugins},
        **(extra or {}),
    }


_HEADER = (
    "# fmclf run configuration. `fmclf run --config config.toml` repeats this run;\n"
    "# [provenance] records what produced it and is not read back.\n"
)


def run_new(config: RunConfig, host: PluginHost, *, out: pathlib.Path | None = None, echo: Echo = print) -> RunResult:
    """Train a new run of ``config`` into ``out`` (default: a fresh ``runs/...`` folder).

    Everything that can be checked is checked before any work: the settings and
    options and the run folder (no torch yet), then the device. A run that fails
    before training leaves no folder behind. Under torchrun every process calls
    this; they train together (see :mod:`fmclf.distributed`).
    """
    with distributed.connect() as comm:
        echo = comm.root_only(echo)
        out_dirs: list[pathlib.Path] = []

        def check_out(plan: Plan) -> None:
            out_dirs.append(pathlib.Path(out) if out is not None else runs.default_run_dir(plan.config.model, plan.config.loss))
            if comm.is_root:
                runs.check_new(out_dirs[0])

        plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm, check_out))
        _agree_on_plan(plan, device, comm)
        prov = provenance(plan, host, device, comm.describe())
        existed = out_dirs[0].exists()
        run_dir = comm.on_root("creating the run folder", lambda: runs.prepare_new(out_dirs[0]))
        try:
            return _train(plan, host, device, run_dir, None, echo, prov, comm)
        except BaseException:
            if comm.is_root and not existed:  # only an empty folder goes: a run that never started
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            raise


def run_resume(run_dir: pathlib.Path, host: PluginHost, *, overrides: dict[str, Any] | None = None, echo: Echo = print) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint; ``overrides`` may set
    ``epochs`` (to train further), ``device`` and ``visualizers``.

    Under torchrun only rank 0 reads the run folder; it must be resumed by as
    many processes as trained it.
    """
    run_dir = pathlib.Path(run_dir)
    with distributed.connect() as comm:
        echo = comm.root_only(echo)
        settings, options, checkpoint = comm.on_root("reading the run folder", lambda: _read_run(run_dir, comm))
        config = RunConfig(**settings, options=options)  # load_config refused unknown settings
        for key, value in (overrides or {}).items():
            setattr(config, key, value)
        config.options = {t: o for t, o in config.options.items() if not t.startswith("visualizer.") or t.split(".", 1)[1] in config.visualizers}
        plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm))
        _agree_on_plan(plan, device, comm)
        prov = _resumed_provenance(run_dir, provenance(plan, host, device, comm.describe())) if comm.is_root else {}
        if checkpoint is None:
            echo(f"{run_dir} has no checkpoint (the run stopped before its first one), so training starts at epoch 1.")
        return _train(plan, host, device, run_dir, checkpoint, echo, prov, comm)


def _prepare(config: RunConfig, host: PluginHost, comm: distributed.Solo, check: Callable[[Plan], None] | None = None) -> tuple[Plan, Any]:
    """Resolve the plan, ``check`` it (no torch yet), then the device; refuse what cannot run in these processes."""
    plan = resolve(config, host)
    if check is not None:
        check(plan)
    device = comm.device_for(plan.config.device)
    comm.check_plan(plan)
    _prepare_device(plan.config, device)
    return plan, device


def _prepare_device(config: RunConfig, device: Any) -> None:
    """Before any work: refuse ``--cuda-graphs`` off CUDA, apply ``--threads``."""
    if config.cuda_graphs:
        from .graphs import check_device

        check_device(device)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)


def _agree_on_plan(plan: Plan, device: Any, comm: distributed.Solo) -> None:
    """Every process must run the same settings with the same plugins; rank 0's drawn seed is everyone's."""
    settings = {k: v for k, v in dataclasses.asdict(plan.config).items() if k != "seed"}
    comm.same_everywhere(
        "their settings", {**settings, "components": plan.components(), "device": getattr(device, "type", str(device))},
        "Start every process with the same command line, on machines with the same plugins installed.",
    )
    plan.config.seed = comm.broadcast(plan.config.seed)


def _read_run(run_dir: pathlib.Path, comm: distributed.Solo) -> tuple[dict[str, Any], dict[str, Any], dict | None]:
    """A run folder's settings and checkpoint (None: it never wrote one), checked to fit this many processes."""
    if not (run_dir / runs.CONFIG).is_file():
        raise UsageError(f"--resume {str(run_dir)!r}: not a run folder (no {runs.CONFIG}). Pass the folder a run printed at its start.")
    settings, options = load_config(run_dir / runs.CONFIG)
    checkpoint = _load_checkpoint(run_dir)
    trained_by = checkpoint.get("world_size", 1) if checkpoint is not None else comm.world_size
    if trained_by != comm.world_size:
        how = "one process (fmclf run ...)" if trained_by == 1 else f"{trained_by} processes (torchrun, WORLD_SIZE={trained_by})"
        now = "one process" if comm.world_size == 1 else f"{comm.world_size} processes"
        raise UsageError(
            f"--resume {str(run_dir)!r}: this run was trained by {how}, but {now} started to resume it. "
            f"Each process trains on its own shard of the data with its share of the batch, so a run resumes only "
            f"with the number of processes it started with; resume it with {how}, or start a new run with "
            f"--config {run_dir / runs.CONFIG}."
        )
    return settings, options, checkpoint


def _load_checkpoint(run_dir: pathlib.Path) -> dict | None:
    """The run's checkpoint; None when it never wrote one (nothing was trained)."""
    path = run_dir / runs.CHECKPOINT
    if not path.exists():
        done = len(runs.read_metrics(run_dir))
        if done:
            raise CheckpointError(
                f"{path} is missing, but {runs.METRICS} records {done} finished epoch(s): the checkpoint was "
                f"deleted or moved. Put it back to resume, or start a new run with "
                f"`fmclf run --config {shlex.quote(str(run_dir / runs.CONFIG))}`."
            )
        return None
    checkpoint = runs.load_torch(path, "checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != runs.CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path}: not an fmclf checkpoint (format {found!r}, expected {runs.CHECKPOINT_FORMAT!r}). "
            f"It was written by another program, or by an fmclf too different from this one."
        )
    return checkpoint


def _resumed_provenance(run_dir: pathlib.Path, now: dict[str, Any]) -> dict[str, Any]:
    """The run's recorded [provenance], with one line added for this resume."""
    import tomllib

    try:
        recorded = tomllib.loads((run_dir / runs.CONFIG).read_text(encoding="utf-8")).get("provenance")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        recorded = None
    if not isinstance(recorded, dict):
        return now
    line = f"{now['started']} on {now['device']} (fmclf {now['fmclf']}, torch {now['torch']})"
    return {**recorded, "resumed": [*recorded.get("resumed", []), line]}


def _restore(parts: Parts, checkpoint: dict, run_dir: pathlib.Path, comm: distributed.Solo) -> TrainState:
    """Put the model, the updater and the RNGs back as the checkpoint has them."""
    try:
        parts.model.load_state_dict(checkpoint["model"])
        if checkpoint.get("updater") is not None and hasattr(parts.updater, "load_state_dict"):
            parts.updater.load_state_dict(checkpoint["updater"])
        state = comm.local_state(checkpoint["state"])
        _set_rng_state(checkpoint["rng"])
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise comm.alike(CheckpointError(
            f"{run_dir / runs.CHECKPOINT} does not fit this run's components ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}). It comes from another run, or the plugins changed since it was "
            f"written ({run_dir / runs.CONFIG} lists the versions that wrote it). Start a new run, or reinstall those versions."
        )) from None
    return state


def _check_weights(parts: Parts, state: TrainState) -> None:
    """Refuse to checkpoint weights that are inf or nan: the last good checkpoint stays."""
    import torch

    params = [p.detach() for p in parts.model.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        epoch = state.epoch if state.batch == 0 else state.epoch + 1
        raise DivergenceError(
            f"training diverged: the model's weights became inf or nan in epoch {epoch} although every batch "
            f"loss was finite (an update overflowed). Try a smaller --lr.",
            epoch=epoch, batch=state.batch or None,
        )


def _kept(last: tuple[int, int] | None) -> str:
    """What the run folder holds after a stop, for messages."""
    if last is None:
        return "holds no checkpoint: the first is written when the first epoch ends"
    at = f"epoch {last[0] + 1}, batch {last[1]}" if last[1] else f"epoch {last[0]}"
    return f"keeps its last good checkpoint (after {at}) and the metrics of every epoch finished before it"


def _train(
    plan: Plan, host: PluginHost, device: Any, run_dir: pathlib.Path, checkpoint: dict | None, echo: Echo,
    prov: dict[str, Any], comm: distributed.Solo,
) -> RunResult:
    config = plan.config
    # Only rank 0 draws: the other processes build no visualizer.
    built = plan if comm.is_root else dataclasses.replace(plan, records={t: r for t, r in plan.records.items() if r.kind != "visualizer"})
    parts = comm.agree("loading the data and building the components", lambda: assemble(built, device=device, run_dir=run_dir, **comm.dataset_args(config.batch_size)))
    comm.check_data(parts.dataset)
    state = TrainState()
    last = None  # (epoch, batch) of the checkpoint on disk
    if checkpoint is not None:
        state = _restore(parts, checkpoint, run_dir, comm)
        last = (state.epoch, state.batch)
        finished = comm.on_root("reading the run folder", lambda: (run_dir / runs.WEIGHTS).exists() and (run_dir / runs.SUMMARY).exists())
        if state.epoch >= config.epochs and finished:
            echo(f"{run_dir}: already trained {state.epoch} epoch(s) of {config.epochs}; pass --epochs N to train further.")
            return RunResult(run_dir, state.history, str(device), 0.0, plan, 0)
        where = f"epoch {state.epoch + 1}, batch {state.batch + 1}" if state.batch else f"epoch {state.epoch + 1}"
        echo(f"resuming {run_dir} at {where} of {config.epochs}" if state.epoch < config.epochs else f"finishing {run_dir}")
    # Once the components are built: a failed start leaves no config behind.
    comm.on_root("writing the run's settings", lambda: atomic.write_text(run_dir / runs.CONFIG, config.to_toml(prov, _HEADER)))
    comm.share_model(parts.model)  # identical starting weights, whatever each process drew
    report = None
    if comm.is_root:  # the others print and draw nothing
        parts.visualizers.insert(0, (None, EpochLines(echo)))
        report = RunReport(run_dir, parts.dataset, plan)  # pictures and report.md, drawn at the end
        parts.visualizers.append((None, report))

    def save(state: TrainState) -> None:
        nonlocal last
        _check_weights(parts, state)  # the same weights in every process, so all raise alike
        saved = comm.global_state(state)

        def write() -> None:
            runs.save_torch(run_dir / runs.CHECKPOINT, {
                "format": runs.CHECKPOINT_FORMAT,
                "model": parts.model.state_dict(),
                "updater": parts.updater.state_dict() if hasattr(parts.updater, "state_dict") else None,
                "rng": _rng_state(),
                "state": saved,
                "world_size": comm.world_size,
            })
            runs.write_metrics(run_dir, state.history)

        # Rank 0 writes while the others wait: none exits (and has torchrun stop rank 0) before it is written.
        comm.on_root("writing the checkpoint", write)
        last = (state.epoch, state.batch)

    flag = StopFlag()
    trainer = Trainer(
        parts, device=device, epochs=config.epochs, run_dir=run_dir, checkpoint=save, stop=comm.watch(flag),
        comm=comm.trainer_comm(), config={"run": dataclasses.asdict(config), "provenance": prov}, cuda_graphs=config.cuda_graphs,
    )
    start_epoch = state.epoch
    started = time.perf_counter()
    echo(
        f"training {config.model} + {config.loss} + {config.updater} on {config.dataset} "
        f"({getattr(parts.dataset, 'source', '') or 'data ready'}) on {comm.where(device)}, seed {config.seed}; run folder {run_dir}"
    )
    resume = f"Resume with: {comm.command} run --resume {shlex.quote(str(run_dir))}"
    with stop_on_signals(flag, comm.root_only(say)):
        try:
            state = trainer.fit(state)
        except Interrupted as exc:
            raise comm.alike(Interrupted(f"{exc}; checkpoint written to {run_dir / runs.CHECKPOINT}. {resume}")) from None
        except KeyboardInterrupt:
            raise comm.alike(Interrupted(f"stopped at once by a second SIGINT; the run folder {run_dir} {_kept(last)}. {resume}")) from None
        except DivergenceError as exc:
            raise DivergenceError(f"{str(exc).strip()} The run folder {run_dir} {_kept(last)}.", epoch=exc.epoch, batch=exc.batch) from None
        except ComponentError as exc:
            if last is None:
                raise
            raise ComponentError(
                f"{str(exc).strip()} The run folder {run_dir} {_kept(last)}; `{comm.command} run --resume "
                f"{shlex.quote(str(run_dir))}` continues from it (--visualizer may swap a visualizer)."
            ) from exc
    seconds = time.perf_counter() - started
    memory = peak_memory(device)
    processes = comm.weights_record(parts.model)

    def write_results() -> None:
        runs.save_torch(run_dir / runs.WEIGHTS, parts.model.state_dict())
        final = state.history[-1]
        runs.write_json(run_dir / runs.SUMMARY, {
            "epochs": config.epochs, "device": str(device), "seconds": round(seconds, 3),
            "train_loss": final["train_loss"], "train_acc": final["train_acc"], "test_acc": final["test_acc"],
            "per_class_test_acc": final["per_class_test_acc"], "components": plan.components(), "peak_memory": memory,
            **({"distributed": processes} if processes else {}),
        })

    comm.on_root("writing the final weights and summary", write_results)
    if report is not None:
        report.finish(seconds, device, echo)
    if processes and not processes["weights_identical"]:
        raise comm.alike(DistributedError(
            f"the {comm.world_size} processes ended with different weights (SHA-256 digests in {run_dir / runs.SUMMARY}); "
            f"{run_dir / runs.WEIGHTS} holds rank 0's. A component does something different in each process "
            f"(a random draw from an unseeded generator, a non-deterministic kernel); please report it."
        ))
    return RunResult(run_dir, state.history, str(device), seconds, plan, max(config.epochs - start_epoch, 0), memory)
