"""Turn pytest-benchmark JSON into README's Benchmarks table.

    python tests/benchmarks/table.py                     # the newest run under .benchmarks/
    python tests/benchmarks/table.py a.json b.json       # several runs (say, CPU and GPU machines)
    python tests/benchmarks/table.py --readme README.md  # also replace the table in README

Rows are grouped as the benchmarks group themselves. What a benchmark puts in
its ``extra_info`` shapes its row: ``label`` names it; ``baseline: true``
makes it the group's reference, and every other row gets its speed-up over
it; ``vs: LABEL`` adds a comparison with another row of the group;
``readme: false`` keeps a row out (what it measures is not speed). Ratios
are of the fastest rounds (the least disturbed by other processes) and
were measured in one run, so they compare like with like.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ANCHOR = "<!-- section: benchmarks -->"
START, END = "<!-- benchmarks table (tests/benchmarks/table.py) -->", "<!-- end of benchmarks table -->"


def newest(root: pathlib.Path = pathlib.Path(".benchmarks")) -> pathlib.Path:
    """The most recently written JSON under pytest-benchmark's autosave folder."""
    found = sorted(root.rglob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"no saved benchmarks under {root}/; run `tox -e bench` first (or pass a JSON file)")
    return found[-1]


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _times(r: float) -> str:
    return f"{r:.0f}×" if r >= 10 else f"{r:.2f}×"


def versus(time: float, other: float) -> str:
    """The one ratio format of every comparison: ``2.10× faster`` or ``1.40× slower`` (``49× faster`` from 10 up)."""
    return f"{_times(other / time)} faster" if time <= other else f"{_times(time / other)} slower"


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
        parts.append(f"torch {m['torch']} ({m.get('torch_threads', '?')} threads)")
    when = data.get("datetime", "")[:16].replace("T", " ")
    return ", ".join(p for p in parts if p) + (f"; {when} UTC" if when else "")


def rows(data: dict) -> list[str]:
    """Markdown rows for one run's benchmarks, group by group."""
    groups: dict[str, list[dict]] = {}
    for bench in data.get("benchmarks", []):
        if bench["extra_info"].get("readme") is False:  # e.g. the stability errors: docs/stability.md has them
            continue
        groups.setdefault(bench.get("group") or "", []).append(bench)
    out = []
    for group, benches in groups.items():
        by_label = {b["extra_info"].get("label", b["name"]): b for b in benches}
        base = next((b for b in benches if b["extra_info"].get("baseline")), None)
        for label, b in by_label.items():
            best, median = b["stats"]["min"], b["stats"]["median"]
            notes = []
            if base is not None:
                notes.append("baseline" if b is base else versus(best, base["stats"]["min"]))
            other = by_label.get(b["extra_info"].get("vs", ""))
            if other is not None and other is not base:
                notes.append(f"{versus(best, other['stats']['min'])} than {b['extra_info']['vs']}")
            interleaved = b["extra_info"].get("overhead_vs_hand_interleaved")
            if interleaved is not None:  # the relative overhead measured with rounds interleaved
                notes.append(f"{versus(1 + interleaved, 1)} than hand-written loop, rounds interleaved")
            out.append(f"| {group} | {label} | {_time(best)} | {_time(median)} | {'; '.join(notes)} |")
    return out


def table(files: list[pathlib.Path]) -> str:
    """The Markdown block: one table per run, each under the machine it ran on."""
    blocks = []
    for path in files:
        data = json.loads(path.read_text())
        blocks.append(
            f"Measured on {machine(data)}.\n\n"
            "| group | benchmark | fastest | median | ratio |\n|---|---|---|---|---|\n" + "\n".join(rows(data))
        )
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
    parser.add_argument("json", nargs="*", type=pathlib.Path, help="saved benchmark runs (default: the newest under .benchmarks/)")
    parser.add_argument("--readme", type=pathlib.Path, help="also put the table into this README's benchmarks section")
    args = parser.parse_args(argv)
    text = table(args.json or [newest()])
    print(text)
    if args.readme:
        write_readme(args.readme, text)


if __name__ == "__main__":
    main()
