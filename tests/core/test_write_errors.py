"""Every failed write is one paragraph naming the path and what to do, exit 1 (2 before any work),
and what was already written stays whole.

Two ways to make writes fail: an error injected in-process (``os.replace`` raising ENOSPC for one
file name: every file a run writes, on any machine), and the real thing, a small tmpfs and a
read-only bind mount, mounted inside a private user and mount namespace (``unshare -rm``), which
needs no root; those tests skip, saying why, where the kernel does not allow such namespaces.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from fmclf.cli import cli

TINY = ["-o", "dataset.verify=false", "--epochs", "2", "--batch-size", "32", "--visualizer", "none", "--seed", "3",
        "--device", "cpu"]
EXE = pathlib.Path(sys.executable).with_name("fmclf")
FMCLF = str(EXE) if EXE.exists() else f"{sys.executable} -m fmclf"


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def temporaries(folder: pathlib.Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.exists() else []


def full_disk_at(monkeypatch, name: str, times: int = 1):
    """Make the ``times``-th atomic write of a file called ``name`` fail with ENOSPC at the rename."""
    real, seen = os.replace, []

    def replace(src, dst, *a, **k):
        if pathlib.Path(dst).name == name:
            seen.append(dst)
            if len(seen) == times:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_disk_full_at_config_toml_removes_the_folder_it_made(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    full_disk_at(monkeypatch, "config.toml")
    result = invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert f"Error: cannot write '{out / 'config.toml'}': No space left on device. The disk is full" in result.output
    assert not out.exists()


@pytest.mark.parametrize("name,times,kept", [
    ("checkpoint.pt", 1, "holds no checkpoint"),
    ("checkpoint.pt", 2, "keeps its last good checkpoint (after epoch 1)"),
    ("metrics.jsonl", 2, "keeps its last good checkpoint (after epoch 2)"),  # written before metrics.jsonl
])
def test_disk_full_during_training_keeps_the_last_checkpoint_and_resume_continues(tiny_data, tmp_path, monkeypatch,
                                                                                  name, times, kept):
    out = tmp_path / "run"
    full_disk_at(monkeypatch, name, times)
    result = invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert f"cannot write '{out / name}': No space left on device. The disk is full" in result.output
    assert kept in result.output and f"`fmclf run --resume {out}` continues from it" in result.output
    assert temporaries(out) == []
    monkeypatch.undo()
    resumed = invoke("run", "--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert (out / "report.md").exists() and len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("name", ["model.pt", "summary.json", "confusion.png", "predictions.png", "curves.png",
                                  "report.md"])
def test_disk_full_after_training_says_resume_writes_the_rest(tiny_data, tmp_path, monkeypatch, name):
    out = tmp_path / "run"
    full_disk_at(monkeypatch, name)
    result = invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert f"cannot write '{out / name}': No space left on device" in result.output
    assert "Training has finished" in result.output and f"`fmclf run --resume {out}` writes" in result.output
    assert temporaries(out) == [] and not (out / name).exists()
    monkeypatch.undo()
    resumed = invoke("run", "--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    for file in ("model.pt", "summary.json", "report.md", "predictions.png", "curves.png", "confusion.png"):
        assert (out / file).exists(), file


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from fmclf import atomic
    from fmclf.errors import WriteError

    target = tmp_path / "kept.txt"
    atomic.write_text(target, "old and whole\n")
    full_disk_at(monkeypatch, "kept.txt")
    with pytest.raises(WriteError, match="No space left on device. The disk is full") as info:
        atomic.write_text(target, "new")
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC  # code catching OSError still does
    assert target.read_text() == "old and whole\n" and sorted(os.listdir(tmp_path)) == ["kept.txt"]


def test_predict_out_naming_a_folder_is_refused_before_any_work(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(out)).exit_code == 0
    folder = tmp_path / "pictures.png"
    folder.mkdir()
    result = invoke("predict", str(out), "--out", str(folder))
    assert result.exit_code == 2 and "is a folder; name the picture file" in result.output
    result = invoke("show", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--out", str(folder))
    assert result.exit_code == 2 and "is a folder; name the picture file" in result.output


def test_standard_output_on_dev_full_does_not_stop_the_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*FMCLF.split(), "run", "--data-root", str(tiny_data), *TINY, "--out", str(out)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Error: could not write to standard output (No space left on device)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "report.md").exists() and len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_closed_pipe_does_not_stop_the_run(tiny_data, tmp_path):
    """`fmclf run | head -1`: head reads the first line and goes; the run trains on and exits 0."""
    out = tmp_path / "run"
    script = (f"{FMCLF} run --data-root {tiny_data} {' '.join(TINY)} --out {out} | head -1; "
              f"echo \"rc=${{PIPESTATUS[0]}}\"")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("training scratch + fused + sgd") and lines[-1] == "rc=0", (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr and "visualizer" not in proc.stderr
    assert (out / "report.md").exists() and len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_closed_standard_streams_are_not_taken_by_the_files_of_the_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(["bash", "-c", f"{FMCLF} run --data-root {tiny_data} {' '.join(TINY)} --out {out} >&- 2>&-"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert (out / ".lock").read_text() == "" and (out / "config.toml").read_text().startswith("# fmclf run")


# --- the real thing: a small tmpfs and a read-only mount, in a private namespace ------------------------


def in_namespace(script: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) as root of a private user and mount namespace; skip where that is not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) (util-linux) to mount a small tmpfs without root")
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {tmp_path}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel or container does not allow mounting a tmpfs in a private namespace "
                    f"(`unshare -rm mount -t tmpfs` says: {probe.stderr.strip()[:200]})")
    return subprocess.run([unshare, "-rm", "sh", "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=900, env={**os.environ})


def test_a_really_full_disk_at_a_checkpoint_then_more_space_and_resume(tiny_data, tmp_path):
    disk, keep = tmp_path / "disk", tmp_path / "keep"
    disk.mkdir()
    keep.mkdir()
    # 60 kB: the lock, config.toml and the first checkpoint (43 kB) fit; a second checkpoint beside it does not
    result = in_namespace(f"""
        mount -t tmpfs -o size=60k tmpfs {disk}
        {FMCLF} run --data-root {tiny_data} {' '.join(TINY)} --out {disk}/run > {keep}/out1 2> {keep}/err1
        echo $? > {keep}/rc1
        cp -a {disk}/run {keep}/full
        mount -o remount,size=8m {disk}
        {FMCLF} run --resume {disk}/run > {keep}/out2 2> {keep}/err2
        echo $? > {keep}/rc2
        cp -a {disk}/run {keep}/resumed
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    err1 = (keep / "err1").read_text()
    assert (keep / "rc1").read_text().strip() == "1", err1
    assert f"cannot write '{disk}/run/checkpoint.pt': No space left on device. The disk is full" in err1
    assert "keeps its last good checkpoint (after epoch 1)" in err1 and "Traceback" not in err1
    assert temporaries(keep / "full") == [] and (keep / "full" / "checkpoint.pt").stat().st_size > 40000
    assert (keep / "rc2").read_text().strip() == "0", (keep / "err2").read_text()
    assert (keep / "resumed" / "report.md").exists()
    assert len((keep / "resumed" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_really_full_disk_at_config_toml(tiny_data, tmp_path):
    disk, keep = tmp_path / "disk", tmp_path / "keep"
    disk.mkdir()
    keep.mkdir()
    result = in_namespace(f"""
        mount -t tmpfs -o size=4k tmpfs {disk}
        {FMCLF} run --data-root {tiny_data} {' '.join(TINY)} --out {disk}/run > {keep}/out 2> {keep}/err
        echo $? > {keep}/rc
        ls -A {disk} > {keep}/left
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    err = (keep / "err").read_text()
    assert (keep / "rc").read_text().strip() in ("1", "2"), err
    assert "No space left on device. The disk is full" in err and "Traceback" not in err
    assert (keep / "left").read_text().strip() == ""


def test_a_read_only_run_folder_on_resume_and_predict(tiny_data, tmp_path):
    run, keep = tmp_path / "run", tmp_path / "keep"
    keep.mkdir()
    assert invoke("run", "--data-root", str(tiny_data), *TINY, "--epochs", "1", "--out", str(run)).exit_code == 0
    before = sorted(os.listdir(run))
    result = in_namespace(f"""
        mount --bind {run} {run} && mount -o remount,bind,ro {run}
        {FMCLF} run --resume {run} --epochs 2 > {keep}/out1 2> {keep}/err1; echo $? > {keep}/rc1
        {FMCLF} predict {run} -n 4 > {keep}/out2 2> {keep}/err2; echo $? > {keep}/rc2
        {FMCLF} predict {run} -n 4 --out {keep}/p.png > {keep}/out3 2> {keep}/err3; echo $? > {keep}/rc3
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    err1, err2 = (keep / "err1").read_text(), (keep / "err2").read_text()
    assert (keep / "rc1").read_text().strip() == "2", err1
    assert f"cannot write to the run folder '{run}'" in err1 and "read-only file system" in err1
    assert "cannot resume it" in err1 and "Traceback" not in err1
    assert (keep / "rc2").read_text().strip() == "2", err2
    assert f"cannot write '{run}/predictions.png': Read-only file system" in err2 and "Traceback" not in err2
    assert (keep / "rc3").read_text().strip() == "0", (keep / "err3").read_text()
    assert (keep / "p.png").stat().st_size > 0
    assert sorted(os.listdir(run)) == before


def test_a_fit_whose_folder_fills_up_says_how_to_go_on_in_python(tiny_data, tmp_path, monkeypatch):
    """The way on after a failed write is worded by the front end that started the run: fit's call, not a command."""
    import fmclf
    from fmclf.errors import WriteError

    out = tmp_path / "run"
    full_disk_at(monkeypatch, "checkpoint.pt", 2)
    with pytest.raises(WriteError) as caught:
        fmclf.fit(epochs=2, batch_size=32, seed=3, device="cpu", visualizers=(), out=out,
                  options={"dataset": {"data_root": str(tiny_data), "verify": False}})
    assert f"`fmclf.fit(resume={str(out)!r})` continues from it" in str(caught.value)
    assert "fmclf run" not in str(caught.value)
