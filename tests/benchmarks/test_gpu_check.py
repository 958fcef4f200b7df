"""gpu_check.sh's parts that need no GPU: the script parses, and its summary reads what the steps leave.

The script itself runs only where a GPU is lent (see its header); its summary, the Python that turns
the steps' files into summary.txt, is run here on files shaped as the steps write them.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("gpu_check.sh")
OPENING = """"$PY" - "$OUT" <<'EOF' > "$OUT/summary.txt" 2>&1"""


def _summary_program() -> str:
    text = SCRIPT.read_text()
    start = text.index(OPENING) + len(OPENING) + 1
    return text[start : text.index("\nEOF\n", start) + 1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _run_folder(root: pathlib.Path, name: str, device: str, seconds: list[float], acc: float) -> None:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    rows = [{"epoch": e, "seconds": s, "test_acc": acc} for e, s in enumerate(seconds, start=1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "summary.json").write_text(json.dumps({"device": device, "seconds": sum(seconds), "test_acc": acc,
                                                     "peak_memory": {"peak_rss_mb": 800}}))


def _compare(root: pathlib.Path, name: str, accs: dict[float, float]) -> None:
    rows = [{"lr": lr, "seeds": [0, 1, 2, 3], "failed": 0, "metrics": {"test_acc": {"mean": acc}}}
            for lr, acc in accs.items()]
    (root / f"compare-{name}.json").write_text(json.dumps({"rows": rows}))


def test_the_summary_gives_epochs_against_the_cpu_and_the_batched_group_against_one_by_one(tmp_path):
    _run_folder(tmp_path, "cpu-b256", "cpu", [0.2, 0.1, 0.1], 0.80)
    _run_folder(tmp_path, "cuda-b256-default", "cuda:0", [1.0, 0.005, 0.005], 0.81)
    (tmp_path / "runs" / "cuda-b256-graphs").mkdir()  # a run that left nothing: named as failed
    (tmp_path / "run-cuda-b256-default.log").write_text("Note: CUDA graphs are off for this run: capturing the "
                                                        "training epoch failed (RuntimeError: x); training eagerly\n")
    _compare(tmp_path, "batched", {0.1: 0.83, 0.3: 0.84})
    _compare(tmp_path, "one-by-one", {0.1: 0.83, 0.3: 0.84})
    (tmp_path / "status.txt").write_text("install: rc=0 in 3s\ncompare-batched: rc=0 in 20s\n"
                                         "compare-one-by-one: rc=0 in 50s\n")
    done = subprocess.run([sys.executable, "-", str(tmp_path)], input=_summary_program(), capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "cuda-b256-graphs      FAILED" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("cuda-b256-default"))
    assert "0.0050" in line and "0.050" in line and "+0.0100" in line  # steady epoch, x cpu, acc - cpu
    assert "fell back: capturing the training epoch failed (RuntimeError: x)" in line
    assert "batched     rc=0    20.0 s  8 runs finished, 0 failed; mean test acc lr 0.1: 0.8300, lr 0.3: 0.8400" in out
    assert "batched: 2.50x faster than one by one" in out


def test_a_comparison_that_timed_out_gives_no_ratio(tmp_path):
    (tmp_path / "runs").mkdir()
    _compare(tmp_path, "batched", {0.1: 0.83})
    (tmp_path / "status.txt").write_text("compare-batched: rc=0 in 20s\n"
                                         "compare-one-by-one: rc=124 in 150s (TIMED OUT)\n")
    done = subprocess.run([sys.executable, "-", str(tmp_path)], input=_summary_program(), capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "one-by-one  rc=124   150.0 s  no usable compare.json" in done.stdout
    assert "faster than one by one" not in done.stdout
