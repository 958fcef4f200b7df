"""`fmclf` as a user runs it: a real process, the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import run_fmclf


def test_fmclf_run_in_a_subprocess(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = run_fmclf("run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "3",
                     "--batch-size", "16", "--device", "cpu", "--seed", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\nepoch ") + proc.stdout.startswith("epoch ") == 3
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
    assert "Traceback" not in proc.stderr


def test_help_and_plugins_do_not_import_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from fmclf.cli import cli\n"
        "for args in (['--help'], ['run', '--help'], ['plugins'], ['plugins', '--json']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
