"""Bad arguments: a clear message and exit code 2 before any work starts — for the
cheap checks, before torch is even imported; for the device, before any data is
read or any run folder is made."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from fmclf.cli import cli

# (arguments, words the message must contain)
BEFORE_TORCH = [
    (["--batch-size", "0"], ["--batch-size must be a whole number of at least 1, got 0"]),
    (["--batch-size", "-5"], ["--batch-size", "got -5"]),
    (["--epochs", "0"], ["--epochs must be a whole number of at least 1, got 0"]),
    (["--lr", "0"], ["--lr must be a finite number above 0, got 0.0"]),
    (["--lr", "-0.1"], ["--lr must be a finite number above 0"]),
    (["--lr", "nan"], ["--lr must be a finite number above 0, got nan"]),
    (["--lr", "inf"], ["--lr must be a finite number above 0, got inf"]),
    (["--device", "tpu"], ["unknown device 'tpu'", "cuda:N"]),
    (["--device", "cpu:1"], ["unknown device 'cpu:1'"]),
    (["--device", "cuda:x"], ["unknown device 'cuda:x'"]),
    (["-o", "dataset.resize=abc"], ["option 'resize'", "'abc' is not an integer"]),
    (["-o", "dataset.rezise=32"], ["has no option 'rezise'", "Did you mean 'resize'?"]),
    (["--out", "{held}"], ["already holds a run", "fmclf run --resume"]),
    (["--out", "{file}"], ["is a file, not a folder"]),
    (["--resume", "{held}", "--lr", "0.5"], ["--resume continues a run with the settings it started with", "--lr"]),
    (["--resume", "{nowhere}"], ["not a run folder"]),
    # numbers: the core's bounds, and every component's (fmclf.Range, checked by the option parser), before any work
    (["--threads", "3000000000"], ["--threads must be a whole number from 1 to 1024, got 3000000000"]),
    (["--threads", "20000"], ["--threads must be a whole number from 1 to 1024"]),
    (["--threads", "0"], ["--threads must be a whole number from 1 to 1024, got 0"]),
    (["--epochs", "10000000000"], ["--epochs must be at most 1,000,000,000"]),
    (["--batch-size", "3000000000"], ["--batch-size must be at most 2,147,483,647"]),
    (["-o", "loss.label_smoothing=2"], ["option 'label_smoothing' of loss 'fused'", "2 is not in [0, 1]"]),
    (["-o", "loss.label_smoothing=nan"], ["nan is not a number this option can take"]),
    (["-o", "loss.weight=1,2"], ["option weight of loss 'fused' has 2 entries but the data set has 10 classes"]),
    (["-o", "loss.weight=1,1,1,1,1,1,1,1,1,inf"], ["inf is not a finite number"]),
    (["-o", "loss.soft_label=0.9", "-o", "loss.label_smoothing=0.1"], ["say the same thing two ways"]),
    (["-o", "loss.ignore_index=99999999999999999999"], ["whole numbers are 64-bit"]),
    (["--updater", "torch-sgd", "-o", "updater.momentum=-1"], ["option 'momentum' of updater 'torch-sgd'",
                                                              "-1 is not in [0, 1]"]),
    (["--updater", "torch-sgd", "-o", "updater.weight_decay=nan"], ["'weight_decay'", "nan is not a number"]),
    (["--updater", "torch-sgd", "-o", "updater.nesterov=true"], ["nesterov of updater 'torch-sgd' needs momentum"]),
    (["--visualizer", "animator", "-o", "visualizer.animator.ylim_low=-inf"], ["-inf is not a finite number"]),
    (["--visualizer", "animator", "-o", "visualizer.animator.ylim_low=2"], ["ylim_low (2.0) must be below"]),
    (["-o", "visualizer.tqdm.interval=nan"], ["option 'interval' of visualizer 'tqdm'", "nan is not a number"]),
    (["-o", "visualizer.tqdm.refresh=-1"], ["-1 is not >= 0"]),
    (["-o", "dataset.resize=100000"], ["100000 is not <= 1024"]),
]

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from fmclf.cli import cli
    out = []
    for args in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.main(["run", *args], prog_name="fmclf")
                code = 0
            except SystemExit as exc:
                code = exc.code
        out.append({"args": args, "code": code, "stderr": err.getvalue(), "torch": "torch" in sys.modules})
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def before_torch(tmp_path_factory) -> dict[str, dict]:
    """Every case of BEFORE_TORCH in one fresh interpreter, so that whether torch was
    imported can be seen; the folder it runs in must stay empty (no runs/... made)."""
    base = tmp_path_factory.mktemp("args")
    held, work = base / "held", base / "work"
    held.mkdir()
    work.mkdir()
    (held / "config.toml").write_text('model = "scratch"\n')
    (base / "a-file").write_text("x")
    fill = {"{held}": str(held), "{file}": str(base / "a-file"), "{nowhere}": str(base / "nowhere")}
    cases = [[fill.get(a, a) for a in args] for args, _ in BEFORE_TORCH]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cases)], capture_output=True, text=True, cwd=work,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(work.iterdir()) == []  # no run folder was started for any of them
    assert sorted(p.name for p in held.iterdir()) == ["config.toml"]
    return {" ".join(args): r for (args, _), r in zip(BEFORE_TORCH, results)}


@pytest.mark.parametrize("args,words", BEFORE_TORCH, ids=[" ".join(a) for a, _ in BEFORE_TORCH])
def test_bad_argument_exits_2_before_torch_is_imported(before_torch, args, words):
    result = before_torch[" ".join(args)]
    assert result["code"] == 2, result
    assert result["stderr"].startswith("Error: "), result
    for word in words:
        assert word in result["stderr"]
    assert "Traceback" not in result["stderr"]
    assert not result["torch"], f"torch was imported before rejecting {args}"


def _run(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)
    finally:
        os.chdir(old)


@pytest.mark.parametrize("device,words", [
    ("mps", ["device 'mps' is not available", "Use --device cpu"]),
    ("cuda:99", ["'cuda:99'", "Available: cpu"]),  # no machine has 100 GPUs
])
def test_device_this_machine_lacks_exits_2_before_data_or_folder(device, words, tmp_path):
    # the data root does not exist: reaching the data would be a different error
    result = _run(["--device", device, "--data-root", str(tmp_path / "no-data"), "-o", "dataset.download=false"],
                  tmp_path)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.stderr
    assert not (tmp_path / "runs").exists()


def test_cuda_without_a_visible_gpu_exits_2(tmp_path):
    """CUDA_VISIBLE_DEVICES='' hides every GPU, so this holds on a GPU machine too."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    proc = subprocess.run([str(exe), "run", "--device", "cuda", "--data-root", str(tmp_path / "no-data")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "device 'cuda' is not available" in proc.stderr and "Use --device cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_resize_below_one_exits_2_before_data_and_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    result = _run(["--device", "cpu", "-o", "dataset.resize=0", "--data-root", str(tmp_path / "no-data"),
                   "-o", "dataset.download=false", "--out", str(out)], tmp_path)
    assert result.exit_code == 2, result.output
    assert "option 'resize' of dataset 'fashion-mnist' must be at least 1" in result.stderr
    assert not out.exists()  # so the same command, fixed, can use the same --out


def test_a_failed_start_leaves_the_out_folder_free(tiny_data, tmp_path):
    """A run that fails while building its components leaves no half run behind."""
    out = tmp_path / "run"
    labels = tiny_data / "t10k-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes(good[:-3])
    args = ["--device", "cpu", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "1",
            "--seed", "1", "--visualizer", "none", "--out", str(out)]
    failed = _run(args, tmp_path)
    assert failed.exit_code == 1 and f"{labels}: the header says 40 = 40 values but the file holds 37" in failed.stderr
    assert not out.exists()
    labels.write_bytes(good)
    fixed = _run(args, tmp_path)
    assert fixed.exit_code == 0, fixed.output
