"""Running notebooks in a real Jupyter kernel (this interpreter's), headless, with nbclient.

    python tests/notebooks.py docs/notebooks/chapter3.ipynb

executes a notebook in a scratch folder and writes it back with its outputs: how the committed
notebook is refreshed after an edit (the test suite executes it the same way and checks it).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import tempfile
from typing import Any


def kernel_manager(folder: pathlib.Path, env: dict[str, str] | None = None) -> Any:
    """A kernel manager for a kernel running *this* interpreter (the venv's), whatever kernel specs
    are installed; not started yet."""
    import ipykernel  # noqa: F401 - the test extra installs it
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = folder / "kernels" / "fmclf-test"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fmclf test", "language": "python",
        "env": {"PYTHONWARNINGS": "ignore", **(env or {})},
    }))
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)])
    return KernelManager(kernel_name="fmclf-test", kernel_spec_manager=specs)


def execute(path: pathlib.Path, cwd: pathlib.Path, *, timeout: int = 600, env: dict[str, str] | None = None) -> Any:
    """Execute the notebook at ``path`` with ``cwd`` as its working folder; returns the executed
    notebook (nbformat). A cell that raises stops it (nbclient's CellExecutionError), except a
    cell tagged ``raises-exception``. Every fit in it must pass its seed (FMCLF_REQUIRE_SEED): the
    outputs committed and the accuracies the test checks are then the same on every run."""
    import nbformat
    from nbclient import NotebookClient

    from fmclf.run.plan import REQUIRE_SEED

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=kernel_manager(cwd, {REQUIRE_SEED: "1", **(env or {})}), timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}})
    sigint = signal.getsignal(signal.SIGINT)
    try:
        client.execute()
    finally:  # jupyter_client's event loop puts Python's default SIGINT handler back, whatever was there
        signal.signal(signal.SIGINT, sigint)
    return nb


def main(argv: list[str]) -> int:
    import nbformat

    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path = pathlib.Path(argv[0]).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        nb = execute(path, pathlib.Path(scratch), env={k: v for k, v in os.environ.items() if k.startswith("FMCLF")})
    for cell in nb.cells:  # a record of what ran, not of when
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, path)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


class Kernel:
    """A started kernel (this interpreter's) to run cells in one by one, and interrupt."""

    def __init__(self, folder: pathlib.Path, env: dict[str, str] | None = None) -> None:
        self.km = kernel_manager(folder, env)
        self.km.start_kernel(cwd=str(folder))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, *, until: str | None = None, then: Any = None,
            timeout: float = 300) -> list[tuple[str, dict]]:
        """Execute ``code``; returns its iopub messages as ``(msg_type, content)``. When stdout first
        shows ``until``, ``then()`` is called (an interrupt, say) and the cell runs on to its end."""
        import queue
        import time

        msg_id = self.kc.execute(code)
        out: list[tuple[str, dict]] = []
        seen, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                return out
            if kind in ("status", "execute_input"):
                continue
            out.append((kind, content))
            if kind == "stream" and until is not None and then is not None:
                seen += content["text"]
                if until in seen:
                    then()
                    then = None
        raise TimeoutError(f"the cell did not finish in {timeout} s")

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
