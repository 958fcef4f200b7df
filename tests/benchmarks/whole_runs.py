"""Whole processes timed: what a user waits for, split into per-epoch time and fixed cost.

Each pipeline is run as a fresh process for ``short`` and for ``long`` epochs
(2 and 12 unless told), the rounds interleaved so that load from other
processes falls on every pipeline alike; of each, the fastest of the rounds
counts. Then

    per epoch  = (fastest long - fastest short) / (long - short)
    fixed cost = fastest short - short * per epoch

The fixed cost is everything that is not an epoch: starting Python, imports,
loading the data, writing the run folder, the pictures. Run as a script it
prints a table::

    python tests/benchmarks/whole_runs.py                         # fmclf run, the plain torch and numpy loops
    python tests/benchmarks/whole_runs.py --peers                 # also Lightning and Keras, when installed
    python tests/benchmarks/whole_runs.py --rounds 5 --only fmclf,torch

The data: the real Fashion-MNIST files (``$FMCLF_DATA``, else
/usr/share/datasets/fashion-mnist), decompressed once into a scratch folder
that the plain loops read and that fmclf uses as its user cache.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

HERE = pathlib.Path(__file__).resolve().parent
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SYSTEM_DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Pipeline:
    """One way of doing the job: ``command(epochs, scratch_folder)`` is its argv."""

    name: str
    label: str
    command: Callable[[int, pathlib.Path], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    #: run with ``--threads N``, N the count the default fmclf run chose (read from its config.toml
    #: after the warm-up): per epoch is compared at the same thread count
    same_threads: bool = False
    threads: int | None = None

    def argv(self, epochs: int, scratch: pathlib.Path) -> list[str]:
        """The command line of one run."""
        return [*self.command(epochs, scratch), *(["--threads", str(self.threads)] if self.threads else [])]


@dataclass
class Timing:
    """What :func:`measure` found for one pipeline (seconds)."""

    name: str
    label: str
    short: list[float]
    long: list[float]
    short_epochs: int
    long_epochs: int
    #: CPU seconds (user + system, the process and what it waited for) of each run, in the same order: what a
    #: run costs when other work holds the cores and wall times say little
    short_cpu: list[float] = field(default_factory=list)
    long_cpu: list[float] = field(default_factory=list)

    def _split(self, short: list[float], long: list[float]) -> tuple[float, float]:
        """(per epoch, fixed cost) from the fastest short and the fastest long run."""
        epoch = (min(long) - min(short)) / (self.long_epochs - self.short_epochs)
        return epoch, min(short) - self.short_epochs * epoch

    @property
    def epoch(self) -> float:
        return self._split(self.short, self.long)[0]

    @property
    def fixed(self) -> float:
        return self._split(self.short, self.long)[1]

    @property
    def cpu_epoch(self) -> float:
        """Per epoch in CPU seconds, as :attr:`epoch` from the least CPU of the rounds."""
        return self._split(self.short_cpu, self.long_cpu)[0]

    @property
    def cpu_fixed(self) -> float:
        """The fixed cost in CPU seconds."""
        return self._split(self.short_cpu, self.long_cpu)[1]

    @property
    def spread(self) -> float:
        """How noisy it was: the slowest long run over the fastest."""
        return max(self.long) / min(self.long)


def source_data() -> pathlib.Path:
    """The folder holding the real data set's files."""
    for candidate in (os.environ.get("FMCLF_DATA"), os.environ.get("FMCLF_TEST_REAL_DATA"), str(SYSTEM_DATA)):
        if candidate and all((pathlib.Path(candidate) / n).exists() or (pathlib.Path(candidate) / f"{n}.gz").exists()
                             for n in FILES):
            return pathlib.Path(candidate)
    sys.exit("the real Fashion-MNIST files are needed (set FMCLF_DATA, or install dataset-fashion-mnist)")


def raw_copy(source: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """``dest`` holding the four files decompressed (what fmclf's user cache holds)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = dest / name
        if target.exists():
            continue
        if (source / name).exists():
            shutil.copyfile(source / name, target)
        else:
            with gzip.open(source / f"{name}.gz", "rb") as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return dest


def fmclf_exe() -> list[str]:
    """The fmclf console script beside this interpreter, else ``python -m fmclf``."""
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fmclf"]


def fmclf_run(*flags: str, name: str = "fmclf", label: str = "fmclf run (defaults)",
              env: dict | None = None) -> Pipeline:
    """``fmclf run --epochs N --seed 0 --out SCRATCH/run FLAGS``: the default run unless flags say otherwise."""
    def command(epochs: int, scratch: pathlib.Path) -> list[str]:
        out = scratch / f"run-{time.monotonic_ns()}"
        return [*fmclf_exe(), "run", "--epochs", str(epochs), "--seed", "0", "--out", str(out), *flags]

    return Pipeline(name, label, command, dict(env or {}))


def script(kind: str, label: str, path: pathlib.Path = HERE / "plain_loop.py", *flags: str,
           same_threads: bool = False) -> Pipeline:
    """One of the loops in plain_loop.py (or peers.py) run as a script on the raw files."""
    def command(epochs: int, scratch: pathlib.Path) -> list[str]:
        return [sys.executable, str(path), kind, str(scratch / "data"), "--epochs", str(epochs), *flags]

    return Pipeline(kind, label, command, same_threads=same_threads)


def standard(peers: bool = False) -> list[Pipeline]:
    """fmclf's default run and the plain loops; with ``peers``, Lightning and Keras too."""
    out = [
        fmclf_run(),
        script("torch", "plain torch loop", HERE / "plain_loop.py", "--out", "/dev/null", same_threads=True),
        script("numpy", "numpy, analytic gradient"),
    ]
    if peers:
        out += [script("lightning", "PyTorch Lightning", HERE / "peers.py"),
                script("keras", "Keras 3, torch backend", HERE / "peers.py")]
    return out


def run_once(pipeline: Pipeline, epochs: int, scratch: pathlib.Path, timeout: float = 900,
             cpu: list[float] | None = None) -> float:
    """Wall time of one process (its CPU seconds appended to ``cpu``); a failure stops the measurement
    with its output."""
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache"), **pipeline.env}
    env.pop("FMCLF_DATA", None)  # fmclf finds the decompressed copy in its (scratch) user cache
    cmd = pipeline.argv(epochs, scratch)
    used = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - start
    if cpu is not None:
        cpu.append(_children_cpu() - used)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process waited for so far (and theirs)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def prepare(scratch: pathlib.Path, source: pathlib.Path | None = None) -> pathlib.Path:
    """The scratch folder: the raw files for the plain loops, and the same as fmclf's user cache."""
    data = raw_copy(source or source_data(), scratch / "data")
    cache = scratch / "cache" / "fmclf" / "fashion-mnist"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(data, cache)
    return scratch


def fmclf_threads(scratch: pathlib.Path) -> int | None:
    """The thread count the newest fmclf run in ``scratch`` recorded in its config.toml (None: no run)."""
    import tomllib

    runs = sorted(scratch.glob("run-*/config.toml"), key=lambda p: p.stat().st_mtime)
    return tomllib.loads(runs[-1].read_text()).get("threads") if runs else None


def measure(pipelines: Sequence[Pipeline], scratch: pathlib.Path, *, short: int = 2, long: int = 12,
            rounds: int = 3, warmup: bool = True, echo: Callable[[str], None] | None = None) -> dict[str, Timing]:
    """Time every pipeline for ``short`` and ``long`` epochs, ``rounds`` times, interleaved. A pipeline
    with ``same_threads`` runs at the thread count of fmclf's default run (warmed up first)."""
    if warmup:  # fmclf's first run writes its cache stamp; every first run warms the page cache
        for p in sorted(pipelines, key=lambda p: p.same_threads):  # fmclf's before those that follow its count
            if p.same_threads:
                p.threads = fmclf_threads(scratch)
                p.label += f" ({p.threads} thread{'s' if p.threads != 1 else ''}, as fmclf)" if p.threads else ""
            run_once(p, 1, scratch)
    found = {p.name: Timing(p.name, p.label, [], [], short, long) for p in pipelines}
    for r in range(rounds):
        for p in pipelines:
            t = found[p.name]
            for epochs, into, cpu in ((short, t.short, t.short_cpu), (long, t.long, t.long_cpu)):
                into.append(run_once(p, epochs, scratch, cpu=cpu))
            if echo:
                echo(f"round {r + 1}/{rounds} {p.name}: {short} epochs {into_str(found[p.name].short[-1])}, "
                     f"{long} epochs {into_str(found[p.name].long[-1])}")
    return found


def into_str(seconds: float) -> str:
    return f"{seconds:.2f} s"


def ratio(value: float, reference: float) -> str:
    """``value`` against ``reference`` in the suite's one format: "2.1x faster", "1.04x slower"."""
    if not (math.isfinite(value) and math.isfinite(reference)) or value <= 0 or reference <= 0:
        return "-"
    r = value / reference
    word = "slower" if r >= 1 else "faster"
    r = r if r >= 1 else 1 / r
    return f"{r:.0f}x {word}" if r >= 10 else f"{r:.1f}x {word}" if r >= 2 else f"{r:.2f}x {word}"


def report(found: dict[str, Timing], reference: str = "torch") -> list[str]:
    """Lines of a table: per epoch, fixed cost, and each against the reference pipeline, in wall time
    and then in CPU time."""
    ref = found.get(reference)
    head = f"{'pipeline':<36}{'per epoch':>11}{'vs ' + reference:>16}{'fixed cost':>12}{'vs ' + reference:>12}"
    lines = [head + f"{'noise':>8}"]
    for t in found.values():
        vs_epoch = ratio(t.epoch, ref.epoch) if ref and t is not ref else "reference" if t is ref else "-"
        vs_fixed = f"{t.fixed - ref.fixed:+.2f} s" if ref and t is not ref else "" if t is ref else "-"
        lines.append(f"{t.label:<36}{t.epoch * 1e3:>8.1f} ms{vs_epoch:>16}{t.fixed:>10.2f} s{vs_fixed:>12}"
                     f"{t.spread:>7.2f}x")
    lines.append("the same in CPU seconds (user + system, the process and its children):")
    for t in found.values():
        if not (t.short_cpu and t.long_cpu):
            continue
        vs_epoch = ratio(t.cpu_epoch, ref.cpu_epoch) if ref and t is not ref else "reference" if t is ref else "-"
        vs_fixed = f"{t.cpu_fixed - ref.cpu_fixed:+.2f} s" if ref and t is not ref else "" if t is ref else "-"
        lines.append(f"{t.label:<36}{t.cpu_epoch * 1e3:>8.1f} ms{vs_epoch:>16}{t.cpu_fixed:>10.2f} s{vs_fixed:>12}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=12)
    parser.add_argument("--peers", action="store_true", help="also time PyTorch Lightning and Keras (peers.py)")
    parser.add_argument("--only", default="", help="comma-separated pipeline names (fmclf, torch, numpy, lightning, "
                                                   "keras)")
    args = parser.parse_args(argv)
    pipelines = standard(args.peers)
    if args.only:
        wanted = args.only.split(",")
        pipelines = [p for p in pipelines if p.name in wanted]
    with tempfile.TemporaryDirectory(prefix="fmclf-whole-") as tmp:
        scratch = prepare(pathlib.Path(tmp))
        found = measure(pipelines, scratch, short=args.short, long=args.long, rounds=args.rounds, echo=print)
    print(f"\nwhole processes, {args.short} vs {args.long} epochs, fastest of {args.rounds} "
          f"(noise: slowest {args.long}-epoch run over the fastest)")
    print("\n".join(report(found)))


if __name__ == "__main__":
    main()
