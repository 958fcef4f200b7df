"""``fmclf bench loss``: every loss on the stress grid against a float64 reference, and
its forward + backward speed by pytest-benchmark, beside torch's ``F.cross_entropy``.

Stability is computed here (:mod:`fmclf.compare.stress`). Speed is timed by
pytest-benchmark: :func:`time_losses` runs the packaged pytest module
:mod:`fmclf.compare.speed_suite` through ``pytest.main`` (isolated from the
current folder's pytest configuration and plugins) and reads
``--benchmark-json`` back; torch's loss is timed in the same session, each
shape's losses one after the other, so the ratios compare like with like.
pytest and pytest-benchmark come with the ``fmclf[bench]`` extra.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pathlib
import platform
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FmclfError, OptionError, UsageError
from ..host.loading import PluginHost
from . import stress
from .stress import CaseResult

#: torch's loss: always measured, the speed ratio's denominator and a stability column.
BASELINE = "F.cross_entropy"
EXTRA = "fmclf[bench]"


@dataclass
class Contender:
    """A loss to bench: its name and how to build it for a number of classes."""

    name: str
    describe: str
    build: Callable[[int], Callable]


@dataclass
class Timing:
    """pytest-benchmark's statistics of one loss at one shape (seconds)."""

    min: float
    median: float
    mean: float
    rounds: int


@dataclass
class BenchReport:
    """Everything ``fmclf bench loss`` measured."""

    contenders: list[Contender]
    stability: dict[str, list[CaseResult]] = field(default_factory=dict)
    speed: dict[str, dict[str, Timing]] = field(default_factory=dict)  #: loss -> shape -> timing
    shapes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


def _torch_cross_entropy(num_classes: int) -> Callable:
    import torch.nn.functional as F

    def cross_entropy(logits, y):
        return F.cross_entropy(logits, y, reduction="none")

    return cross_entropy


def contenders(host: PluginHost, names: Sequence[str]) -> list[Contender]:
    """torch's ``F.cross_entropy``, then each named loss (none named: every installed
    one that builds with its default options)."""
    import torch

    from ..host.options import resolve_options
    from ..run.plan import build

    out = [Contender(BASELINE, f"torch {torch.__version__} F.cross_entropy(reduction='none')", _torch_cross_entropy)]
    records = [host.registry.get("loss", n) for n in names] if names else host.registry.list("loss")
    for record in records:
        name = host.registry.select_as(record)
        try:
            options = resolve_options(record, {})
        except OptionError as exc:
            if names:
                raise UsageError(f"loss {name!r} cannot be benched with its default options: {exc}") from None
            continue  # every installed loss: the ones that need options are left out
        out.append(Contender(name, record.describe(),
                             lambda C, r=record, o=options: build(r, {"num_classes": C}, dict(o))))
    seen = [c.name for c in out]
    if len(set(seen)) != len(seen):
        raise UsageError(f"a loss is named twice ({', '.join(seen[1:])}); name each once.")
    return out


def stability(contenders: Sequence[Contender], device: str = "cpu") -> dict[str, list[CaseResult]]:
    """Each contender on every case of the stress grid."""
    from ..train.blame import blame

    out = {}
    for c in contenders:
        with blame(c.describe, "on the stress grid"):  # what the grid does not catch is the loss's fault
            out[c.name] = stress.stress(c.build, per_classes=True, device=device, who=c.describe)
    return out


def parse_shapes(texts: Sequence[str]) -> list[tuple[int, int]]:
    """``NxC`` (or several, comma-separated) as ``(N, C)`` pairs."""
    out = []
    for text in texts:
        for part in text.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", part)
            if not m or int(m[1]) < 1 or int(m[2]) < 1:
                raise UsageError(f"--shapes {part!r}: write ROWSxCLASSES, e.g. 16384x32000 (several: 8x3,64x100).")
            out.append((int(m[1]), int(m[2])))
    return out


def shape_name(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def require_pytest_benchmark() -> None:
    """Fail with the extra to install when pytest or pytest-benchmark is missing."""
    missing = []
    for module, dist in (("pytest", "pytest"), ("pytest_benchmark", "pytest-benchmark")):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise UsageError(
            f"fmclf bench times losses with pytest-benchmark, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install them with `pip install '{EXTRA}'`, "
            f"or pass --no-speed for the stability table alone."
        )


@dataclass
class BenchCase:
    """One (loss, shape) the speed suite times: what ``fmclf_bench_case`` is."""

    name: str
    rows: int
    classes: int
    device: str
    builder: Callable[[int], Callable]

    @property
    def shape(self) -> str:
        return f"{self.rows}x{self.classes}"

    def build(self) -> Callable:
        return self.builder(self.classes)


class _SpeedPlugin:
    """Parametrizes the speed suite over the cases to time."""

    def __init__(self, cases: list[BenchCase]) -> None:
        self.cases = cases

    def pytest_generate_tests(self, metafunc) -> None:
        if "fmclf_bench_case" in metafunc.fixturenames:
            metafunc.parametrize("fmclf_bench_case", self.cases, ids=[f"{c.shape}-{c.name}" for c in self.cases])


def time_losses(contenders: Sequence[Contender], shapes: Sequence[tuple[int, int]], *, device: str = "cpu",
                max_time: float = 1.0, min_rounds: int = 5,
                echo: Callable[[str], None] | None = None) -> tuple[dict[str, dict[str, Timing]], dict]:
    """Time each contender's forward + backward at each shape with pytest-benchmark
    (``pytest.main`` on :mod:`fmclf.compare.speed_suite`). Returns loss -> shape ->
    timing, and pytest-benchmark's machine information."""
    require_pytest_benchmark()
    import pytest

    from . import speed_suite

    cases = [BenchCase(c.name, n, k, device, c.build) for n, k in shapes for c in contenders]
    with tempfile.TemporaryDirectory(prefix="fmclf-bench-") as tmp:
        ini, report = pathlib.Path(tmp) / "pytest.ini", pathlib.Path(tmp) / "benchmark.json"
        ini.write_text("[pytest]\n", encoding="utf-8")  # none of the current folder's settings
        args = [
            str(pathlib.Path(speed_suite.__file__)), "-c", str(ini), "--rootdir", tmp, "--noconftest",
            "--import-mode=importlib", "-p", "no:cacheprovider", "-p", "pytest_benchmark.plugin", "-q",
            "--benchmark-enable", "--benchmark-only", f"--benchmark-json={report}", f"--benchmark-max-time={max_time}",
            f"--benchmark-min-rounds={min_rounds}", "--benchmark-warmup=on", "-W", "ignore::DeprecationWarning",
        ]
        output = io.StringIO()
        with _inner_pytest_environ(), contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = pytest.main(args, plugins=[_SpeedPlugin(cases)])
        if code != 0 or not report.exists():
            tail = "\n".join(output.getvalue().strip().splitlines()[-25:])
            raise FmclfError(f"timing the losses with pytest-benchmark failed (pytest exit code {int(code)}):\n{tail}")
        data = json.loads(report.read_text(encoding="utf-8"))
    out: dict[str, dict[str, Timing]] = {}
    for bench in data.get("benchmarks", []):
        info, s = bench["extra_info"], bench["stats"]
        out.setdefault(info["loss"], {})[info["shape"]] = Timing(s["min"], s["median"], s["mean"], s["rounds"])
    return out, data.get("machine_info", {})


@contextlib.contextmanager
def _inner_pytest_environ() -> Any:
    """The environment of the timing pytest, restored after: only pytest-benchmark is loaded (no plugin of
    this environment interferes), and no pytest-xdist worker's variables are seen, which would make
    pytest-benchmark disable itself when fmclf bench runs inside a parallel test run."""
    names = ["PYTEST_DISABLE_PLUGIN_AUTOLOAD", *(n for n in os.environ if n.startswith("PYTEST_XDIST_"))]
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_bench(host: PluginHost, names: Sequence[str], *, shapes: Sequence[tuple[int, int]] = (), device: str = "cpu",
              speed: bool = True, stable: bool = True, max_time: float = 1.0, min_rounds: int = 5,
              threads: int | None = None) -> BenchReport:
    """Stability and speed of the named (default: every installed) loss, beside torch's;
    ``threads`` sets torch's CPU threads first."""
    if speed:
        require_pytest_benchmark()  # before minutes of work, not after
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    entries = contenders(host, names)
    all_shapes = list(dict.fromkeys([*stress.SPEED_SHAPES, *shapes]))
    report = BenchReport(entries, shapes=[shape_name(s) for s in all_shapes] if speed else [], device=device)
    if stable:
        report.stability = stability(entries, device)
    if speed:
        report.speed, report.machine = time_losses(entries, all_shapes, device=device, max_time=max_time,
                                                   min_rounds=min_rounds)
    import torch

    if not report.machine:  # pytest-benchmark did not run: the same facts, from the system
        report.machine = {"processor": _cpu_name(), "cpu": {"count": os.cpu_count()}, "system": platform.system(),
                          "python_version": platform.python_version()}
    report.machine.setdefault("torch", torch.__version__)
    report.machine.setdefault("torch_threads", torch.get_num_threads())
    return report


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- summaries and tables -------------------------------------------------------------


def summary(results: Sequence[CaseResult]) -> dict[str, Any]:
    """One loss over the grid: how many cases went inf or nan, and its largest errors in ulps."""
    kinds = sorted({r.reference for r in results})
    finite_loss = [r.loss_ulps for r in results if r.loss_ulps is not None]
    finite_grad = [r.grad_ulps for r in results if r.grad_ulps is not None]
    return {
        "cases": len(results),
        "reference": kinds[0] if len(kinds) == 1 else "/".join(kinds),
        "loss_nonfinite_cases": sum(1 for r in results if r.error is None and not r.loss_finite),
        "loss_inf_rows": sum(r.loss_inf for r in results),
        "loss_nan_rows": sum(r.loss_nan for r in results),
        "grad_nonfinite_cases": sum(1 for r in results if r.error is None and not r.grad_finite),
        "errors": sum(1 for r in results if r.error is not None),
        "reference_nonfinite_cases": sum(1 for r in results if not r.reference_finite),
        "max_loss_ulps": max(finite_loss) if finite_loss else None,
        "max_grad_ulps": max(finite_grad) if finite_grad else None,
    }


def ratio(report: BenchReport, name: str, shape: str) -> float | None:
    """``name``'s fastest round over torch's at ``shape`` (same run)."""
    mine, base = report.speed.get(name, {}).get(shape), report.speed.get(BASELINE, {}).get(shape)
    return mine.min / base.min if mine and base and base.min > 0 else None


def to_json(report: BenchReport) -> dict[str, Any]:
    """The ``--json`` document."""
    losses = []
    for c in report.contenders:
        results = report.stability.get(c.name, [])
        speed = {}
        for shape, t in report.speed.get(c.name, {}).items():
            r = ratio(report, c.name, shape)
            speed[shape] = {"min": t.min, "median": t.median, "mean": t.mean, "rounds": t.rounds,
                            "vs_torch": None if r is None else round(r, 4)}
        losses.append({
            "name": c.name, "describe": c.describe, "baseline": c.name == BASELINE,
            "stability": summary(results) if results else None, "cases": [r.as_dict() for r in results], "speed": speed,
        })
    return {"baseline": BASELINE, "device": report.device, "shapes": report.shapes, "machine": report.machine,
            "losses": losses}


def _ulps(x: float | None) -> str:
    if x is None:
        return "—"
    if math.isinf(x):
        return "∞"
    if x < 1000:
        return f"{x:.0f}" if x >= 1 or x == 0 else f"{x:.1g}"
    return f"{x:.0e}".replace("e+0", "e").replace("e+", "e")


def _reference_text(kind: str) -> str:
    return {"own": "its own", "cross-entropy": "cross-entropy", "none": "none: finiteness only"}.get(kind, kind)


def summary_rows(report: BenchReport) -> list[list[str]]:
    """Header and rows of the stability summary."""
    rows = [["loss", "reference", "non-finite loss (cases)", "inf / nan rows", "non-finite gradient (cases)",
             "max loss error (ulps)", "max gradient error (ulps)"]]
    for c in report.contenders:
        results = report.stability.get(c.name)
        if not results:
            continue
        s = summary(results)
        broken = f"{s['loss_nonfinite_cases']} of {s['cases']}" + (f" ({s['errors']} raised)" if s["errors"] else "")
        rows.append([c.name, _reference_text(s["reference"]), broken, f"{s['loss_inf_rows']} / {s['loss_nan_rows']}",
                     f"{s['grad_nonfinite_cases']} of {s['cases']}", _ulps(s["max_loss_ulps"]),
                     _ulps(s["max_grad_ulps"])])
    return rows


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def speed_rows(report: BenchReport) -> list[list[str]]:
    """Header and rows of the speed table: fastest round, and the ratio to torch's."""
    names = [c.name for c in report.contenders]
    rows = [["shape (N×C)", *names]]
    for shape in report.shapes:
        row = [shape.replace("x", "×")]
        for name in names:
            t = report.speed.get(name, {}).get(shape)
            r = ratio(report, name, shape)
            row.append("—" if t is None else _time(t.min) + ("" if name == BASELINE or r is None else f" ({r:.2f}×)"))
        rows.append(row)
    return rows


def reference_notes(report: BenchReport) -> list[str]:
    """One line per loss whose reference is itself inf or nan on some cases: their errors are not measured."""
    notes = []
    for c in report.contenders:
        bad = [f"{r.case} ({r.dtype})" for r in report.stability.get(c.name, []) if not r.reference_finite]
        if bad:
            notes.append(f"the reference of {c.describe} is itself inf or nan on {len(bad)} case(s) "
                         f"({', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}), so no error is measured there.")
    return notes


def case_cell(r: CaseResult) -> str:
    """One loss on one case: ``loss ulps / gradient ulps``, or its failure in bold."""
    if r.error is not None:
        return f"raised {r.error.split(':')[0]}"
    if not r.reference_finite and r.loss_finite:
        return "reference non-finite"
    if not r.loss_finite:
        bad = "nan" if r.loss_nan else "inf"
        return f"**{bad}** ({r.loss_inf + r.loss_nan} of {r.rows} rows)"
    loss = "finite" if r.reference == stress.REFERENCE_NONE else _ulps(r.loss_ulps)
    if r.grad_failed:
        return f"{loss} / backward raised"
    if r.grad_nan or r.grad_inf:
        return f"{loss} / grad **{'nan' if r.grad_nan else 'inf'}**"
    return loss if r.reference == stress.REFERENCE_NONE else f"{loss} / {_ulps(r.grad_ulps)}"


def case_rows(report: BenchReport) -> list[list[str]]:
    """Header and rows of the per-case table: every case and dtype, every loss."""
    names = [c.name for c in report.contenders if c.name in report.stability]
    rows = [["case", "dtype", *names]]
    if not names:
        return rows
    for i, first in enumerate(report.stability[names[0]]):
        rows.append([first.what, first.dtype, *(case_cell(report.stability[n][i]) for n in names)])
    return rows


def text_table(rows: list[list[str]]) -> str:
    """Aligned columns for the terminal."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def markdown_table(rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
                     + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def machine_line(report: BenchReport) -> str:
    """``AMD EPYC (2 cores), Linux, Python 3.11.7, torch 2.x (2 threads), cpu``."""
    m = report.machine
    cpu = (m.get("cpu") or {}).get("brand_raw") or m.get("processor") or m.get("machine") or "unknown CPU"
    cores = (m.get("cpu") or {}).get("count")
    parts = [f"{cpu} ({cores} cores)" if cores else cpu, m.get("system", platform.system()),
             f"Python {m.get('python_version', platform.python_version())}",
             f"torch {m.get('torch', '?')} ({m.get('torch_threads', '?')} threads)", f"device {report.device}"]
    return ", ".join(p for p in parts if p)


def terminal(report: BenchReport) -> str:
    """What ``fmclf bench loss`` prints."""
    out = []
    if report.stability:
        n = len(next(iter(report.stability.values())))
        head = (f"stability: {n} stress cases × dtypes (fmclf.compare.stress) against a float64 reference; "
                f"errors in ulps of the dtype each loss returns")
        out += [head, "", text_table(summary_rows(report)), ""]
        out += [f"Note: {line}" for line in reference_notes(report)]
    if report.speed:
        out += [f"speed: forward + backward, fastest round by pytest-benchmark; (×): time over {BASELINE}'s "
                f"in this run",
                "", text_table(speed_rows(report)), ""]
    out.append(f"measured on {machine_line(report)}")
    return "\n".join(out)


# -- the tables in README and docs -----------------------------------------------------

BLOCKS = ("summary", "cases", "speed")


def _markers(block: str) -> tuple[str, str]:
    return f"<!-- fmclf bench loss: {block} -->", f"<!-- end of fmclf bench loss: {block} -->"


def blocks(report: BenchReport, command: str) -> dict[str, str]:
    """The Markdown of each block this report can fill."""
    made = f"Produced by `{command}` on {machine_line(report)}."
    out = {}
    if report.stability:
        out["summary"] = markdown_table(summary_rows(report)) + "\n\n" + made
        out["cases"] = markdown_table(case_rows(report)) + "\n\n" + made
    if report.speed:
        out["speed"] = markdown_table(speed_rows(report)) + "\n\n" + made
    return out


def marked_blocks(path: pathlib.Path) -> list[str]:
    """The blocks whose markers ``path`` holds; refuses a file with none, or with a start and no end."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--update {str(path)!r}: cannot read it ({exc.strerror or exc}).") from None
    found = []
    for block in BLOCKS:
        start, end = _markers(block)
        if start in text and end not in text:
            raise UsageError(f"--update {str(path)!r}: it has {start} but not {end}. Add the end marker after the "
                             f"table.")
        if start in text:
            found.append(block)
    if not found:
        raise UsageError(f"--update {str(path)!r}: it has no table markers; put {_markers('summary')[0]} and "
                         f"{_markers('summary')[1]} (or the cases or speed ones) where a table goes.")
    return found


def update_file(path: pathlib.Path, filled: dict[str, str]) -> list[str]:
    """Replace the text between each block's markers in ``path``; the names of the blocks replaced."""
    from .. import atomic

    blocks_here = marked_blocks(path)
    text = path.read_text(encoding="utf-8")
    done = []
    for block in blocks_here:
        start, end = _markers(block)
        if block not in filled:
            raise UsageError(f"--update {str(path)!r} holds the {block} table, which this run did not measure "
                             f"(drop --no-speed or --no-stability).")
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}\n{filled[block]}\n{end}{after}"
        done.append(block)
    atomic.write_text(path, text)
    return done


_CASE_ROW = re.compile(r"^\| (?P<what>[^|]+) \| (?P<dtype>\w+) \| (?P<cells>.+) \|$")


def published_failures(markdown: str) -> dict[tuple[str, str, str], str]:
    """``(case description, dtype, loss) -> "inf" | "nan"`` for each failing cell of a
    cases table in ``markdown`` (what the tests hold the published table to)."""
    start, end = _markers("cases")
    if start not in markdown:
        return {}
    body = markdown.split(start, 1)[1].split(end, 1)[0]
    out: dict[tuple[str, str, str], str] = {}
    names: list[str] = []
    for line in body.splitlines():
        m = _CASE_ROW.match(line.strip())
        if not m:
            continue
        cells = [c.strip() for c in m["cells"].split(" | ")]
        if m["what"].strip() == "case":
            names = cells
            continue
        for name, cell in zip(names, cells):
            bold = re.match(r"\*\*(inf|nan)\*\* \(", cell)
            if bold:
                out[(m["what"].strip(), m["dtype"], name)] = bold.group(1)
    return out
