"""The stress grid for plugin authors: fmclf.testing.stress_loss on a user's own
function, the fmclf_stress_case fixture, and docs/plugins.md's example run as a
third party's suite."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from fmclf.compare import stress
from fmclf.testing import stress_loss

from plugin_dists import make_dist

GRID = stress.grid()


def my_cross_entropy(logits, y):
    """A user's own cross-entropy, by log_softmax."""
    return -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)


def textbook(logits, y):
    """The textbook's softmax then -log, written by a user."""
    e = torch.exp(logits)
    return -torch.log((e / e.sum(1, keepdim=True)).gather(1, y[:, None]).squeeze(1))


def test_stress_loss_on_a_users_own_function():
    results = stress_loss(my_cross_entropy)
    assert [(r.case, r.dtype) for r in results] == [(c.name, d) for c, d in GRID]
    assert {r.reference for r in results} == {"cross-entropy"}  # it computes cross-entropy, so it is held to it
    assert all(r.loss_finite and r.grad_finite for r in results if r.dtype in ("float32", "float64"))
    normal = next(r for r in results if (r.case, r.dtype) == ("normal-C10", "float32"))
    assert normal.loss_ulps is not None and normal.loss_ulps < 64 and normal.rows == 37


def test_stress_loss_counts_where_a_loss_goes_inf_or_nan():
    by = {(r.case, r.dtype): r for r in stress_loss(textbook)}
    overflow = by[("overflow", "float32")]
    assert overflow.loss_nan == 37 and not overflow.loss_finite and overflow.loss_ulps is None
    below = by[("target-120-below", "float32")]
    assert below.loss_inf == 37 and below.loss_nan == 0
    assert by[("normal-C10", "float64")].loss_finite


def test_stress_loss_with_a_reference_of_ones_own():
    def squared(logits, y):  # not a cross-entropy at all
        p = torch.softmax(logits.double(), dim=1)
        return ((p - F.one_hot(y, logits.shape[1])) ** 2).sum(1).to(logits.dtype)

    def exact(logits, y):
        p = torch.softmax(logits, dim=1)
        return ((p - F.one_hot(y, logits.shape[1])) ** 2).sum(1)

    results = stress_loss(squared, reference=exact)
    assert {r.reference for r in results} == {"own"}
    assert by_case(results, "normal-C10", "float64").loss_ulps <= 4
    assert {r.reference for r in stress_loss(squared)} == {"none"}  # without one: finiteness only
    assert all(r.loss_ulps is None for r in stress_loss(squared))


def by_case(results, case, dtype):
    return next(r for r in results if (r.case, r.dtype) == (case, dtype))


def test_stress_loss_by_registered_name_builds_it_for_each_class_count():
    results = stress_loss("fused")
    assert all(r.loss_finite and r.grad_finite for r in results)
    assert max(r.loss_ulps for r in results) <= 2 * stress.TOLERANCE_ULPS
    with pytest.raises(TypeError, match="expected a loss"):
        stress_loss(42)


def test_the_stress_case_fixture_parametrizes_over_the_grid(fmclf_stress_case):
    """What a plugin author writes; here with torch's loss, which stays finite everywhere."""
    result = fmclf_stress_case.measure(lambda o, y: F.cross_entropy(o, y, reduction="none"))
    assert (result.case, result.dtype) == (fmclf_stress_case.case.name, fmclf_stress_case.dtype)
    assert result.loss_finite and result.reference == "cross-entropy"


def test_the_plugins_doc_example_runs_as_a_third_party_suite(tmp_path):
    """docs/plugins.md's focal loss and its benchmark against fused, as its author would run them."""
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Benchmarking a loss"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    package, suite = blocks[0], blocks[1]
    root = make_dist(tmp_path / "site", "fmclf-focal", modules={"fmclf_focal": package})
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_focal_bench.py").write_text(textwrap.dedent(suite), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_focal_bench.py", "-q", "-p", "no:cacheprovider",
                           "--benchmark-enable", "--benchmark-max-time=0.01", "--benchmark-min-rounds=1"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    expected = len(GRID) + 2 * len(stress.SPEED_SHAPES)
    assert f"{expected} passed" in proc.stdout
    assert "4096x1000" in proc.stdout  # pytest-benchmark's table, grouped by shape
