"""fmclf.fit, show and predict inside a real Jupyter kernel (tiny data): the animator draws in
place, figures are inline images with no %matplotlib magic, the summary is a table, and a kernel
interrupt raises with Python's advice, after which fit(..., resume=) continues the run."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from notebooks import Kernel

TESTS = pathlib.Path(__file__).parents[1]

SETUP = textwrap.dedent(
    """
    import pathlib, sys, time, torch
    sys.path.insert(0, {tests!r})
    from helpers import write_tiny_fashion
    import fmclf

    data = dict(data_root=str(write_tiny_fashion(pathlib.Path("tiny"))), verify=False, batch_size=8, device="cpu",
                seed=1)
    torch.manual_seed(0)  # the initial W: no test rests on a draw
    W = torch.normal(0, 0.01, size=(784, 10), requires_grad=True)
    b = torch.zeros(10, requires_grad=True)

    def net(X):
        e = torch.exp(X.reshape(-1, 784) @ W + b)
        return e / e.sum(1, keepdim=True)

    slow = True

    def cross_entropy(y_hat, y):
        if slow:
            time.sleep(0.05)  # long enough an epoch to interrupt in
        return -torch.log(y_hat[range(len(y_hat)), y])

    def updater(batch_size):
        with torch.no_grad():
            for p in (W, b):
                p -= 0.1 * p.grad / batch_size
                p.grad.zero_()
    """
)


@pytest.fixture
def kernel(tmp_path):
    k = Kernel(tmp_path, env={"OMP_NUM_THREADS": "1"})
    yield k
    k.close()


def _errors(messages):
    return [c for t, c in messages if t == "error"]


def _stream(messages, name="stdout"):
    return "".join(c["text"] for t, c in messages if t == "stream" and c["name"] == name)


def _data(messages, kind):
    return [c for t, c in messages if t == kind]


def test_an_interrupt_in_jupyter_raises_with_pythons_advice_and_resume_continues(kernel, tmp_path):
    assert not _errors(kernel.run(SETUP.format(tests=str(TESTS))))
    started = kernel.run(
        "r = fmclf.fit(model=net, params=[W, b], loss=cross_entropy, updater=updater, epochs=6, out='run', **data)",
        until=" 1/6 ", then=kernel.km.interrupt_kernel)
    (error,) = _errors(started)
    assert error["ename"] == "Interrupted" and error["traceback"] == [f"Interrupted: {error['evalue']}"]
    assert "checkpoint written to run/checkpoint.pt" in error["evalue"]
    assert ("Resume with: fmclf.fit(model=..., params=..., loss=..., updater=..., resume='run'), passing the same "
            "objects as the call that started it.") in error["evalue"]
    assert "fmclf run --resume" not in error["evalue"]
    # The notice reaches the notebook (not the terminal that started Jupyter), in a notebook's words.
    assert "SIGINT: stopping after this batch" in _stream(started, "stderr")
    assert "interrupt the kernel again to stop at once" in _stream(started, "stderr")
    # The animator drew in place: one figure shown, the others updates of it.
    assert len(_data(started, "display_data")) == 1

    resumed = kernel.run("slow = False\n"
                         "r = fmclf.fit(model=net, params=[W, b], loss=cross_entropy, updater=updater, resume='run')\n"
                         "[row['epoch'] for row in r.history], r.model is net")
    assert not _errors(resumed)
    assert "resuming run at epoch" in _stream(resumed)
    (value,) = _data(resumed, "execute_result")
    assert value["data"]["text/plain"] == "([1, 2, 3, 4, 5, 6], True)"
    # The summary: a table shown once, at the end of the run.
    tables = [c for c in _data(resumed, "display_data") if "text/html" in c["data"]]
    assert len(tables) == 1 and "<b>fmclf.fit</b>: net + cross_entropy + updater" in tables[0]["data"]["text/html"]
    assert "test acc" in tables[0]["data"]["text/html"]


def test_figures_and_results_display_inline_without_matplotlib_magic(kernel):
    assert not _errors(kernel.run(SETUP.format(tests=str(TESTS)) + "\nslow = False"))
    shown = kernel.run("fmclf.show('fashion-mnist', n=6, **{k: data[k] for k in ('data_root', 'verify')})")
    (image,) = _data(shown, "execute_result")
    assert image["data"]["image/png"] and image["data"]["text/plain"].startswith("<Picture size")
    fitted = kernel.run("result = fmclf.fit(model='nn', epochs=2, out=False, visualizers=(), **data)\nresult")
    assert not _errors(fitted)
    (table,) = [c for c in _data(fitted, "display_data") if "text/html" in c["data"]]
    assert "no run folder (out=False)" in table["data"]["text/html"]
    (value,) = _data(fitted, "execute_result")  # the cell's value adds a line, not the table again
    assert "text/html" not in value["data"] and value["data"]["text/plain"].startswith("FitResult(nn + fused + sgd")
    later = kernel.run("result")  # a later cell shows the table
    (again,) = _data(later, "execute_result")
    assert "<b>fmclf.fit</b>: nn + fused + sgd" in again["data"]["text/html"]
    drawn = kernel.run("fmclf.predict(result, n=6)")
    (picture,) = _data(drawn, "execute_result")
    assert picture["data"]["image/png"]
    assert "matplotlib" not in _stream(drawn, "stderr")  # no backend warnings either
