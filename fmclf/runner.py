"""Running a plan: device, run folder, components, training, checkpoints, signals.

The CLI parses and prints; this module does the work, so the same run can be
started from Python (``fmclf.runner.run_new``) or resumed (``run_resume``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import platform
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import __version__, atomic, distributed, runs
from .build import Plan, assemble, resolve
from .config import RunConfig, load_config
from .engine import StopFlag, Trainer, TrainState
from .errors import CheckpointError, ConfigError, DistributedError, DivergenceError, Interrupted, UsageError
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
def stop_on_signals(flag: StopFlag, echo: Echo) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the batch in flight; a second SIGINT stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.request(signal.Signals(signum).name)
        echo(f"\n{flag.signal}: stopping after this batch and writing a checkpoint (Ctrl-C again to stop at once, losing this epoch)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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


def run_new(config: RunConfig, host: PluginHost, *, out: pathlib.Path | None = None, echo: Echo = print) -> RunResult:
    """Train a new run of ``config`` into ``out`` (default: a fresh ``runs/...`` folder).

    Under torchrun every process calls this; they train together (see :mod:`fmclf.distributed`).
    """
    with distributed.connect() as comm:
        echo = comm.root_only(echo)
        plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm))
        _agree_on_plan(plan, device, comm)
        prov = provenance(plan, host, device, comm.describe())

        def make_run_dir() -> pathlib.Path:
            run_dir = runs.prepare_new(pathlib.Path(out) if out is not None else runs.default_run_dir(plan.config.model, plan.config.loss))
            header = "# fmclf run configuration. `fmclf run --config config.toml` repeats this run;\n# [provenance] records what produced it and is not read back.\n"
            atomic.write_text(run_dir / runs.CONFIG, plan.config.to_toml(prov, header))
            return run_dir

        run_dir = comm.on_root("creating the run folder", make_run_dir)
        return _train(plan, host, device, run_dir, None, echo, prov, comm)


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
        try:
            config = RunConfig(**settings, options=options)
        except TypeError as exc:
            raise comm.alike(ConfigError(f"{run_dir / runs.CONFIG}: {exc}")) from None
        for key, value in (overrides or {}).items():
            setattr(config, key, value)
        config.options = {t: o for t, o in config.options.items() if not t.startswith("visualizer.") or t.split(".", 1)[1] in config.visualizers}
        plan, device = comm.agree("checking the settings", lambda: _prepare(config, host, comm))
        _agree_on_plan(plan, device, comm)
        return _train(plan, host, device, run_dir, checkpoint, echo, provenance(plan, host, device, comm.describe()), comm)


def _prepare(config: RunConfig, host: PluginHost, comm: distributed.Solo) -> tuple[Plan, Any]:
    """Resolve the plan and the device, and refuse what cannot run in these processes."""
    plan = resolve(config, host)
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


def _read_run(run_dir: pathlib.Path, comm: distributed.Solo) -> tuple[dict[str, Any], dict[str, Any], dict]:
    """A run folder's settings and checkpoint, checked to fit this many processes."""
    if not (run_dir / runs.CONFIG).is_file():
        raise UsageError(f"--resume {str(run_dir)!r}: not a run folder (no {runs.CONFIG}). Pass the folder a run printed at its start.")
    settings, options = load_config(run_dir / runs.CONFIG)
    checkpoint = runs.load_torch(run_dir / runs.CHECKPOINT, "checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != runs.CHECKPOINT_FORMAT:
        raise CheckpointError(f"{run_dir / runs.CHECKPOINT}: not an fmclf checkpoint (format {checkpoint.get('format') if isinstance(checkpoint, dict) else type(checkpoint).__name__!r}).")
    trained_by = checkpoint.get("world_size", 1)
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


def _train(plan: Plan, host: PluginHost, device: Any, run_dir: pathlib.Path, checkpoint: dict | None, echo: Echo, prov: dict[str, Any], comm: distributed.Solo) -> RunResult:
    config = plan.config
    # Only rank 0 draws: the other processes build no visualizer.
    built = plan if comm.is_root else dataclasses.replace(plan, records={t: r for t, r in plan.records.items() if r.kind != "visualizer"})
    parts = comm.agree("loading the data and building the components", lambda: assemble(built, device=device, run_dir=run_dir, **comm.dataset_args(config.batch_size)))
    comm.check_data(parts.dataset)
    state = TrainState()
    if checkpoint is not None:
        try:
            parts.model.load_state_dict(checkpoint["model"])
            if checkpoint.get("updater") is not None and hasattr(parts.updater, "load_state_dict"):
                parts.updater.load_state_dict(checkpoint["updater"])
            state = comm.local_state(checkpoint["state"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise comm.alike(CheckpointError(
                f"{run_dir / runs.CHECKPOINT} does not fit this run's components ({type(exc).__name__}: {str(exc)[:300]}). "
                f"Were the plugins changed since? {run_dir / runs.CONFIG} lists the versions that wrote it."
            )) from None
        _set_rng_state(checkpoint["rng"])
        if state.epoch >= config.epochs:
            echo(f"{run_dir}: already trained {state.epoch} epoch(s) of {config.epochs}; pass --epochs N to train further.")
            return RunResult(run_dir, state.history, str(device), 0.0, plan, 0)
        where = f"epoch {state.epoch + 1}, batch {state.batch + 1}" if state.batch else f"epoch {state.epoch + 1}"
        echo(f"resuming {run_dir} at {where} of {config.epochs}")
    comm.share_model(parts.model)  # identical starting weights, whatever each process drew
    report = None
    if comm.is_root:  # the others print and draw nothing
        parts.visualizers.insert(0, (None, EpochLines(echo)))
        report = RunReport(run_dir, parts.dataset, plan)  # pictures and report.md, drawn at the end
        parts.visualizers.append((None, report))

    def save(state: TrainState) -> None:
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
    with stop_on_signals(flag, comm.root_only(lambda text: print(text, file=sys.stderr, flush=True))):
        try:
            state = trainer.fit(state)
        except Interrupted as exc:
            raise comm.alike(Interrupted(
                f"{exc}; checkpoint written to {run_dir / runs.CHECKPOINT}. "
                f"Resume with: {comm.command} run --resume {run_dir}"
            )) from None
        except DivergenceError as exc:
            done = len(runs.read_metrics(run_dir))
            kept = f"the checkpoint of epoch {done}" if done else "no checkpoint (no epoch finished)"
            raise DivergenceError(
                f"{exc} The run folder {run_dir} keeps {kept} and the metrics of every finished epoch.",
                epoch=exc.epoch, batch=exc.batch,
            ) from None
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
    return RunResult(run_dir, state.history, str(device), seconds, plan, config.epochs - start_epoch, memory)
