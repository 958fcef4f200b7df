"""The animator inside a real Jupyter kernel: one live figure, updated in place each epoch."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import textwrap

CELL = textwrap.dedent(
    """
    import pathlib, sys
    sys.path.insert(0, {tests!r})
    from helpers import write_tiny_fashion
    from fmclf.run.config import RunConfig
    from fmclf.host.loading import load_plugins
    from fmclf.run.runner import run_new
    from fmclf.draw.report import RunReport

    print("python", sys.executable)
    data = write_tiny_fashion(pathlib.Path("data"))
    config = RunConfig(epochs=3, batch_size=32, seed=1, device="cpu", visualizers=["animator", "tqdm"],
                       options={{"dataset": {{"data_root": str(data), "verify": False}}}})
    result = run_new(config, load_plugins(), out=pathlib.Path("run"), echo=print, report=RunReport)
    print("finished", len(result.history))
    """
)


def _kernel(tmp_path: pathlib.Path):
    """A kernel running *this* interpreter (the venv's), whatever kernel specs are installed."""
    import ipykernel  # noqa: F401 - the test extra installs it (imported here, so collecting the suite never needs it)
    from jupyter_client.kernelspec import KernelSpecManager  # comes with ipykernel
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "fmclf-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fmclf test", "language": "python",
    }))
    km = KernelManager(kernel_name="fmclf-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    km.start_kernel(cwd=str(tmp_path), env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return km


def test_animator_updates_one_figure_in_place_inside_jupyter(tmp_path):
    km = _kernel(tmp_path)
    kc = km.client()
    messages = []
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(CELL.format(tests=str(pathlib.Path(__file__).parents[1])),
                                       output_hook=messages.append, timeout=300)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    outputs = [(m["msg_type"], m["content"]) for m in messages if m["msg_type"] not in ("status", "execute_input")]
    errors = [c for t, c in outputs if t == "error"]
    assert reply["content"]["status"] == "ok", errors
    stdout = "".join(c["text"] for t, c in outputs if t == "stream" and c["name"] == "stdout")
    assert f"python {sys.executable}" in stdout  # the venv's interpreter, not some other kernel

    # The live path: displayed once with a display id, then updated in place every epoch.
    shown = [c for t, c in outputs if t == "display_data"]
    updates = [c for t, c in outputs if t == "update_display_data"]
    assert len(shown) == 1 and len(updates) == 2
    display_id = shown[0]["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in updates)
    frames = [c["data"]["image/svg+xml"] for c in (*shown, *updates)]
    assert all("<svg" in f and "epoch" in f for f in frames) and len(set(frames)) == 3
    # Nothing the cell printed is wiped: no clear_output, every epoch line stays.
    assert not [t for t, _ in outputs if t == "clear_output"]
    for epoch in (1, 2, 3):
        assert f"epoch {epoch}/3  train loss" in stdout
    assert "finished 3" in stdout
    # The frame of epoch k arrives after epoch k's line.
    kinds = [t if t != "stream" else ("line" if "train loss" in c.get("text", "") else "stream") for t, c in outputs]
    figure_events = [i for i, k in enumerate(kinds) if k in ("display_data", "update_display_data")]
    line_events = [i for i, k in enumerate(kinds) if k == "line"]
    assert all(line < fig for line, fig in zip(line_events, figure_events))
    # The run folder still gets its files.
    run = tmp_path / "run"
    for name in ("curves.png", "curves.svg", "confusion.png", "predictions.png", "report.md"):
        assert (run / name).is_file(), name
