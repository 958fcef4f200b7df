"""Group ``pictures``: the four pictures a run draws at its end, one by one against two processes.

Each variant is a fresh process (so matplotlib's import counts, as at the end
of a run) that draws a 10-epoch run's curves.png, confusion.png,
predictions.png and metrics.png: ``one by one`` with :func:`fmclf.draw.pictures.save`
after each other, ``two processes`` with :func:`fmclf.draw.pictures.save_all`
(every other picture in a forked child where that is safe). The rounds are
interleaved; each figure is the fastest round.

The normal test run draws each once, untimed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ROUNDS = 7
#: Draws the pictures of a 10-epoch run into argv[2], one by one ("serial") or with save_all ("together").
DRAW = """
import sys, pathlib
import numpy as np
from fmclf.draw import pictures
out = pathlib.Path(sys.argv[2])
classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
history = [{"epoch": e, "train_loss": 0.4 + 0.4 / e, "train_acc": 0.86 - 0.1 / e, "test_loss": 0.45 + 0.4 / e,
            "test_acc": 0.84 - 0.1 / e, "lr": 0.1, "seconds": 0.1} for e in range(1, 11)]
confusion = [[800 if i == j else (i * 7 + j * 3) % 40 for j in range(10)] for i in range(10)]
images = np.random.default_rng(0).uniform(0, 1, size=(18, 1, 28, 28)).astype(np.float32)
true, guessed = [classes[i % 10] for i in range(18)], [classes[(i * 3) % 10] for i in range(18)]
jobs = [(lambda: pictures.confusion_figure(confusion, classes), out / "confusion.png"),
        (lambda: pictures.predictions_figure(images, true, guessed, title="scratch + fused"), out / "predictions.png"),
        (lambda: pictures.metrics_figure(history, epochs=10), out / "metrics.png"),
        (lambda: pictures.curves_figure(history, epochs=10), out / "curves.png")]
if sys.argv[1] == "serial":
    for build, path in jobs:
        pictures.save(build(), path)
else:
    pictures.save_all(jobs)
"""
VARIANTS = {"one by one": "serial", "two processes": "together"}


def _draw(how: str, out) -> float:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DRAW, how, str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=600, check=False)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(out.glob("*.png"))) == 4
    return seconds


_found: dict[str, list[float]] = {}


@pytest.mark.slow  # fresh processes that draw
@pytest.mark.parametrize("label", list(VARIANTS))
def test_end_of_run_pictures(benchmark, tmp_path_factory, label):
    benchmark.group = "pictures"
    if benchmark.disabled:  # untimed: each way draws the four files, once
        benchmark.pedantic(_draw, args=(VARIANTS[label], tmp_path_factory.mktemp("pictures")), rounds=1)
        return
    if not _found:
        scratch = tmp_path_factory.mktemp("pictures")
        _draw("serial", scratch / "warm")  # the font cache and the page cache
        for r in range(ROUNDS):
            for name, how in VARIANTS.items():
                _found.setdefault(name, []).append(_draw(how, scratch / f"{how}-{r}"))
    times = _found[label]
    benchmark.pedantic(lambda: min(times), rounds=1, iterations=1)
    benchmark.extra_info.update(label=label, time_s=min(times), median_s=sorted(times)[len(times) // 2],
                                detail=f"a fresh process drawing the four pictures, fastest of {ROUNDS} interleaved")
    if label == "one by one":
        benchmark.extra_info["baseline"] = True
