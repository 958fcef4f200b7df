"""Turn pytest-benchmark JSON into README's speed tables.

    python tests/benchmarks/table.py                     # the newest run under .benchmarks/
    python tests/benchmarks/table.py a.json b.json       # several runs (say, CPU and GPU machines)
    python tests/benchmarks/table.py --readme README.md  # also replace the tables in README

One table per benchmark group, under the machine the run was on. What a
benchmark puts in its ``extra_info`` shapes its row: ``label`` names it;
``baseline: true`` makes it the group's reference, and every other row gets
its ratio to it; ``vs: LABEL`` adds a comparison with another row;
``vs_reference_interleaved`` a ratio to the reference measured with the
rounds interleaved; ``time_s`` replaces the timed figure (whole processes,
whose figure is derived: per-epoch time), ``fixed_s`` adds a fixed cost,
``cpu_epoch_s`` and ``cpu_fixed_s`` the same in CPU seconds (with
``cpu_vs_reference``: [per-epoch ratio, fixed-cost difference]);
``readme: false`` keeps a row out (what it measures is not speed).

Every ratio has one form, time against time: "2.1× faster", "1.04× slower".
They are of the fastest rounds (the least disturbed by other processes),
measured in one run, so they compare like with like.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ANCHOR = "<!-- section: benchmarks -->"
START, END = "<!-- benchmarks table (tests/benchmarks/table.py) -->", "<!-- end of benchmarks table -->"

#: What each group measures, said above its table.
TITLES = {
    "epoch": "one epoch (train + test accuracy) in one process, CPU",
    "epoch-cuda": "one epoch (train + test accuracy) in one process, GPU",
    "whole-run": "whole processes: per epoch, and the fixed cost (start-up, loading, the run folder)",
    "peers": "whole processes beside PyTorch Lightning and Keras 3 (`tox -e peers`)",
    "threads": "thread counts: median epoch of a whole run, the machine as it was",
    "busy-cpu": "thread counts beside two CPU-bound processes the benchmark starts",
    "loading": "loading the data set, to the first batch",
    "loss-speed": "a loss's forward + backward",
    "startup": "commands that never train, in a fresh process",
}


def newest(root: pathlib.Path = pathlib.Path(".benchmarks")) -> pathlib.Path:
    """The most recently written JSON under pytest-benchmark's autosave folder."""
    found = sorted(root.rglob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"no saved benchmarks under {root}/; run `tox -e bench` first (or pass a JSON file)")
    return found[-1]


def seconds(value: float) -> str:
    """A time, in the unit that suits it (its size's: a negative difference too)."""
    if abs(value) >= 1:
        return f"{value:.2f} s"
    if abs(value) >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def ratio(value: float, reference: float) -> str:
    """``value`` against ``reference`` (times): "2.1× faster", "1.04× slower"."""
    if value <= 0 or reference <= 0:
        return "-"
    r = value / reference
    word = "slower" if r >= 1 else "faster"
    r = max(r, 1 / r)
    return f"{r:.0f}× {word}" if r >= 10 else f"{r:.1f}× {word}" if r >= 2 else f"{r:.2f}× {word}"


def machine(data: dict) -> str:
    """One line: CPU, cores, GPU, Python, torch, when."""
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {})
    brand = cpu.get("brand_raw") or m.get("processor") or "unknown CPU"
    cores = cpu.get("count")
    parts = [f"{brand} ({cores} cores)" if cores else brand]
    if m.get("cuda_device"):
        parts.append(m["cuda_device"])
    parts.append(f"{m.get('system', '')} {m.get('release', '')}".strip())
    parts.append(f"Python {m.get('python_version', '?')}")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    when = data.get("datetime", "")[:16].replace("T", " ")
    return ", ".join(p for p in parts if p) + (f"; {when} UTC" if when else "")


def _time(bench: dict) -> float:
    return bench["extra_info"].get("time_s", bench["stats"]["min"])


def _median(bench: dict) -> float:
    return bench["extra_info"].get("median_s", bench["stats"]["median"] if "time_s" not in bench["extra_info"] else 0)


def _notes(bench: dict, base: dict | None, by_label: dict[str, dict]) -> str:
    info, t = bench["extra_info"], _time(bench)
    notes = []
    if base is not None:
        notes.append("reference" if bench is base else f"{ratio(t, _time(base))} than {base['extra_info']['label']}")
    other = by_label.get(info.get("vs") or "")
    if other is not None and other is not base and other is not bench:
        notes.append(f"{ratio(t, _time(other))} than {info['vs']}")
    interleaved = info.get("vs_reference_interleaved")
    if interleaved is not None:
        notes.append(f"{ratio(interleaved, 1.0)} with the rounds interleaved")
    return "; ".join(notes)


def group_table(group: str, benches: list[dict]) -> list[str]:
    """The Markdown lines of one group's table."""
    by_label = {b["extra_info"].get("label", b["name"]): b for b in benches}
    base = next((b for b in benches if b["extra_info"].get("baseline")), None)
    title = TITLES.get(group, group)
    lines = [f"**{group}**: {title}", ""]
    if any("fixed_s" in b["extra_info"] for b in benches):
        cpu = all("cpu_epoch_s" in b["extra_info"] for b in benches)
        lines += ["| pipeline | per epoch | fixed cost | per epoch vs reference | fixed cost vs reference |"
                  + (" CPU per epoch, fixed | CPU vs reference |" if cpu else ""),
                  "|---|---|---|---|---|" + ("---|---|" if cpu else "")]
        for label, b in by_label.items():
            info = b["extra_info"]
            fixed = info.get("fixed_s")
            vs_fixed = "reference" if b is base else (f"{info['fixed_vs_reference_s']:+.2f} s"
                                                       if "fixed_vs_reference_s" in info else "")
            row = (f"| {label} | {seconds(_time(b))} | {seconds(fixed) if fixed is not None else '-'} | "
                   f"{_notes(b, base, by_label)} | {vs_fixed} |")
            if cpu:
                versus = info.get("cpu_vs_reference")
                row += (f" {seconds(info['cpu_epoch_s'])}, {seconds(info['cpu_fixed_s'])} | "
                        + ("reference" if b is base else f"{ratio(versus[0], 1.0)}, {versus[1]:+.2f} s" if versus
                           else "") + " |")
            lines.append(row)
        return lines
    lines += ["| benchmark | fastest | median | ratio |", "|---|---|---|---|"]
    for label, b in by_label.items():
        median = _median(b)
        lines.append(f"| {label} | {seconds(_time(b))} | {seconds(median) if median else '-'} | "
                     f"{_notes(b, base, by_label)} |")
    return lines


def tables(data: dict) -> list[str]:
    """Every group's table for one run, in the order the groups ran."""
    groups: dict[str, list[dict]] = {}
    for bench in data.get("benchmarks", []):
        if bench["extra_info"].get("readme") is False:  # e.g. the stability errors: docs/stability.md has them
            continue
        groups.setdefault(bench.get("group") or "", []).append(bench)
    out: list[str] = []
    for group, benches in groups.items():
        out += [*group_table(group, benches), ""]
    return out[:-1]


def table(files: list[pathlib.Path]) -> str:
    """The Markdown block: each run's tables under the machine it ran on."""
    blocks = []
    for path in files:
        data = json.loads(path.read_text())
        blocks.append(f"Measured on {machine(data)}.\n\n" + "\n".join(tables(data)))
    return "\n\n".join(blocks)


def write_readme(readme: pathlib.Path, text: str) -> None:
    """Put ``text`` between the table markers in README's benchmarks section
    (adding the markers right below the section's anchor the first time)."""
    lines = readme.read_text().splitlines()
    if ANCHOR not in lines:
        sys.exit(f"{readme} has no line {ANCHOR!r}")
    if START in lines and END in lines:
        start, end = lines.index(START), lines.index(END)
    else:
        start = end = lines.index(ANCHOR) + 1
        lines[start:start] = ["", "## Benchmarks", "", START, END]
        start, end = start + 3, start + 4
    lines[start : end + 1] = [START, *text.splitlines(), END]
    readme.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="*", type=pathlib.Path,
                        help="saved benchmark runs (default: the newest under .benchmarks/)")
    parser.add_argument("--readme", type=pathlib.Path, help="also put the tables into this README's benchmarks section")
    args = parser.parse_args(argv)
    text = table(args.json or [newest()])
    print(text)
    if args.readme:
        write_readme(args.readme, text)


if __name__ == "__main__":
    main()
