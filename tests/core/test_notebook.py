"""docs/notebooks/chapter3.ipynb, executed headless in a real Jupyter kernel on the real data,
and the copy committed with its outputs (so that it reads on GitHub)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from notebooks import execute

NOTEBOOK = pathlib.Path(__file__).parents[2] / "docs" / "notebooks" / "chapter3.ipynb"


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def _cells(nb) -> list[dict]:
    """The code cells, each as ``{"source", "outputs", "tags"}``."""
    return [{"source": _text(c["source"]), "outputs": c.get("outputs", []),
             "tags": c.get("metadata", {}).get("tags", [])} for c in nb["cells"] if c["cell_type"] == "code"]


def _cell(cells: list[dict], start: str) -> dict:
    (found,) = [c for c in cells if c["source"].lstrip().startswith(start)]
    return found


def _stdout(cell: dict) -> str:
    return "".join(_text(o["text"]) for o in cell["outputs"] if o["output_type"] == "stream" and o["name"] == "stdout")


def _kinds(cell: dict) -> set[str]:
    return {kind for o in cell["outputs"] for kind in o.get("data", {})}


def _last_test_acc(cell: dict) -> float:
    accs = re.findall(r"epoch (\d+)/\d+ .* test acc (\d\.\d+)", _stdout(cell))
    assert accs, _stdout(cell)
    return float(accs[-1][1])


def _check(cells: list[dict]) -> None:
    """What a reader of the notebook sees: the chapter's objects train, names train, figures show."""
    errors = [(c["source"][:60], o) for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert [src for src, _ in errors] == [c["source"][:60] for c in cells if "raises-exception" in c["tags"]]

    show = _cell(cells, 'fmclf.show("fashion-mnist"')
    assert "image/png" in _kinds(show)  # an inline image, no %matplotlib magic anywhere
    assert not any("%matplotlib" in c["source"] for c in cells)

    # The chapter's own net, cross_entropy and updater(batch_size): 3 epochs past 0.7 test accuracy.
    scratch = _cell(cells, "scratch = fmclf.fit(model=net, params=[W, b], loss=cross_entropy, updater=updater")
    out = _stdout(scratch)
    assert "training net + cross_entropy + updater on fashion-mnist" in out and "epoch 3/3" in out
    assert _last_test_acc(scratch) > 0.7
    assert {"image/svg+xml", "text/html"} <= _kinds(scratch)  # the animator's live figure, the summary table
    assert "image/png" in _kinds(_cell(cells, "fmclf.predict(scratch"))

    # An nn.Module with a torch optimizer trains, and is the object fit returns.
    concise = _cell(cells, "net = nn.Sequential(")
    assert "training Sequential + CrossEntropyLoss + SGD" in _stdout(concise) and _last_test_acc(concise) > 0.7
    (same,) = _cell(cells, "concise.model is net")["outputs"]
    assert _text(same["data"]["text/plain"]) == "True"

    # By name: fit returns the nn.Module it built, and its run folder resumes from Python.
    by_name = _cell(cells, 'by_name = fmclf.fit(model="nn", loss="fused"')
    assert _last_test_acc(by_name) > 0.7
    module = [o for o in by_name["outputs"] if o["output_type"] == "execute_result"]
    assert _text(module[0]["data"]["text/plain"]).startswith("Sequential(")
    longer = _stdout(_cell(cells, "longer = fmclf.fit(resume=by_name.run_dir, epochs=5)"))
    assert "at epoch 4 of 5" in longer and "epoch 5/5" in longer and "epoch 3/" not in longer

    # Naive fails on the raw pixels, with the advice in Python's words and no traceback; fused trains.
    naive = _cell(cells, 'fmclf.fit(loss="naive", raw_pixels=True')
    (error,) = [o for o in naive["outputs"] if o["output_type"] == "error"]
    assert error["ename"] == "DivergenceError" and 'loss="fused"' in error["evalue"]
    assert "--loss" not in error["evalue"] and len(error["traceback"]) == 1
    assert _last_test_acc(_cell(cells, 'fused = fmclf.fit(loss="fused", raw_pixels=True')) > 0.7
    assert "image/png" in _kinds(_cell(cells, "fmclf.predict(longer"))


@pytest.mark.realdata
@pytest.mark.slow
def test_chapter3_notebook_runs_in_a_real_kernel(tmp_path, real_data):
    # One thread: on a machine busy with other work torch's threads wait for each other (README, Speed).
    nb = execute(NOTEBOOK, tmp_path, env={"FMCLF_DATA": str(real_data), "OMP_NUM_THREADS": "1"})
    _check(_cells(nb))
    # The run folders the CLI would write: one per new run (the resumed one is continued in place).
    runs = sorted(p.name.split("-", 2)[2] for p in (tmp_path / "runs").iterdir())
    assert runs == ["Sequential-CrossEntropyLoss", "net-cross_entropy", "nn-fused", "scratch-fused", "scratch-naive"]


def test_the_committed_notebook_holds_its_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    cells = _cells(nb)
    assert all(c["outputs"] for c in cells if not c["source"].startswith(("num_inputs", "import torch")))
    _check(cells)
    # Small enough to read on GitHub: pictures at modest size, no stray megabytes.
    sizes = [len(_text(v)) for c in cells for o in c["outputs"] for v in o.get("data", {}).values()]
    assert max(sizes) < 100_000 and NOTEBOOK.stat().st_size < 400_000


@pytest.mark.realdata
def test_the_readmes_notebook_example_works(tmp_path, real_data):
    readme = (NOTEBOOK.parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- notebook-example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = block + "\nprint('MODEL', type(result.model).__name__, 'TEST', result.summary['test_acc'])\n" \
                   "print('PICTURE', type(fmclf.predict(result, n=6)).__name__)\n"
    env = {**os.environ, "FMCLF_DATA": str(real_data), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    model, acc = re.search(r"MODEL (\w+) TEST ([\d.]+)", done.stdout).groups()
    assert model == "Sequential" and float(acc) > 0.7 and "PICTURE Picture" in done.stdout
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the run folder the command line would write
