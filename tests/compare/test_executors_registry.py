"""The executor table (built-in names, a third party's through the entry-point group), the command
line's --executor options and their errors, and the pieces a cluster task runs on its node: all fast,
without Ray, submitit or SLURM."""

from __future__ import annotations

import _thread
import json
import pathlib
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.compare import executors, grid
from fmclf.compare.executor import Call, InProcessExecutor, Job, LocalExecutor
from fmclf.compare.executors import ExecutorSettings, local, node, slurm_array
from fmclf.errors import Interrupted, UsageError


def test_the_built_in_executors_come_first_and_local_is_the_default():
    assert executors.names()[:3] == ["local", "ray", "slurm"] and executors.DEFAULT == "local"


def test_local_is_the_pool_or_this_process_as_before():
    assert isinstance(executors.make("local", ExecutorSettings()), InProcessExecutor)
    pool = executors.make("local", ExecutorSettings(jobs=3))
    assert isinstance(pool, LocalExecutor) and pool.workers == 3


@pytest.mark.parametrize(("args", "says"), [
    (["--executor", "dask"], "--executor 'dask' is not an executor fmclf knows. Choose one of: local, ray, slurm"),
    (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["--detach"], "--detach needs an executor that keeps running without this process"),
    (["--executor", "ray"], "--executor ray needs --threads N"),
    (["--executor", "ray", "--threads", "1", "--detach"], "--detach works with --executor slurm only"),
    (["--executor", "slurm"], "--executor slurm needs --threads N"),
    (["--executor", "slurm", "--threads", "1", "--slurm-time", "soon"], "--slurm-time 'soon' is not a time sbatch"),
    (["--executor", "slurm", "--threads", "1", "--slurm-cpus", "0"], "--slurm-cpus must be at least 1, got 0"),
    (["--executor", "slurm", "--threads", "1", "--slurm-option", "mem"], "--slurm-option 'mem' is not KEY=VALUE"),
])
def test_bad_executor_options_say_what_to_do_before_anything_runs(tmp_path, args, says):
    result = CliRunner().invoke(cli, ["compare", "--out", str(tmp_path / "cmp"), *args])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cmp").exists()


def test_compare_help_lists_the_executors_and_their_options():
    text = CliRunner().invoke(cli, ["compare", "--help"], terminal_width=200).output
    for flag in ("--executor NAME", "--ray-address", "--slurm-partition", "--slurm-time", "--slurm-cpus",
                 "--slurm-gpus", "--slurm-array-parallelism", "--slurm-option KEY=VALUE", "--detach"):
        assert flag in text
    assert "local, ray, slurm" in text


_THIRD_PARTY = '''
from fmclf.compare.executor import InProcessExecutor

CALLS = []


class Recording(InProcessExecutor):
    def run(self, jobs, done):
        CALLS.extend(job.name for job in jobs)
        super().run(jobs, done)


def make(settings):
    CALLS.append(("threads", settings.threads))
    return Recording()
'''


def test_a_third_party_executor_registered_under_the_entry_point_group_runs_the_comparison(
        tiny_data, tmp_path, monkeypatch):
    (tmp_path / "fmclf_recording.py").write_text(_THIRD_PARTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name="recording", value="fmclf_recording:make", group=executors.ENTRY_POINT_GROUP)
    real = metadata.entry_points

    def entry_points(**kw):
        return [point] if kw.get("group") == executors.ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    assert executors.names() == ["local", "ray", "slurm", "recording"]
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, ["compare", "--executor", "recording", "--threads", "1", "--seeds", "1",
                                      "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--batch-size",
                                      "16", "--device", "cpu", "--epochs", "1", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import fmclf_recording

    assert fmclf_recording.CALLS == [("threads", 1), "scratch-fused-sgd-fashion-mnist-seed0"]
    assert json.loads((out / "compare.json").read_text())["complete"] is True


def test_a_broken_third_party_executor_is_named_not_a_traceback(tmp_path, monkeypatch):
    point = metadata.EntryPoint(name="broken", value="no_such_module_here:make", group=executors.ENTRY_POINT_GROUP)
    monkeypatch.setattr(executors, "_entry_points", lambda: {"broken": point})
    result = CliRunner().invoke(cli, ["compare", "--executor", "broken", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 2 and "its package's entry point 'no_such_module_here:make' failed to load" in \
        result.output


def test_a_new_run_whose_folder_an_earlier_attempt_began_is_resumed(tmp_path):
    run = tmp_path / "runs" / "a"
    call = Call(out=run, settings=tmp_path / "a.toml", plugins=("x",))
    assert call.args == ("-p", "x", "run", "--config", str(tmp_path / "a.toml"), "--out", str(run))
    assert call.continuing() == call  # nothing there yet: start it
    run.mkdir(parents=True)
    assert call.continuing() == call  # an empty folder: still a new run
    (run / "config.toml").write_text("")
    assert call.continuing().args == ("-p", "x", "run", "--resume", str(run))
    resume = Call(out=run, overrides=(("epochs", 3), ("cuda_graphs", False)))
    assert resume.continuing() == resume and resume.args == ("run", "--resume", str(run), "--epochs", "3",
                                                             "--no-cuda-graphs")
    group = Call(group=tmp_path / "g.json")
    assert group.continuing() == group and group.args == ("run-group", str(tmp_path / "g.json"))


def test_a_call_goes_to_a_worker_process_as_json_and_comes_back_the_same(tmp_path):
    call = Call(out=tmp_path / "run", overrides=(("epochs", 3), ("device", "cpu"), ("cuda_graphs", True)),
                plugins=("x", "no:y"))
    assert Call.from_json(call.to_json()) == call
    assert call.worker()[:3] == [sys.executable, "-m", "fmclf.compare.worker"]
    assert Call.from_json(call.worker()[3]) == call


def test_a_worker_process_makes_its_call_and_prints_and_exits_as_fmclf_would(tmp_path):
    """What a local worker, a Ray task's child and a SLURM task's child run: the Python API in a process of its
    own, its errors worded and its exit code given as the command line's."""
    call = Call(out=tmp_path / "run", settings=tmp_path / "absent.toml")
    done = subprocess.run(call.worker(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Error: config file" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_run_job_logs_the_command_and_passes_a_keyboard_interrupt_on_as_a_signal(tmp_path):
    """What a Ray task does on ray.cancel (a KeyboardInterrupt): the job gets SIGINT once and is
    waited for; its exit code is the task's. The job gets it even where this process blocks SIGINT."""
    log = tmp_path / "jobs" / "a.log"
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n"
             "print('READY', flush=True)\n"
             "time.sleep(60)\n"
             "sys.exit(3)\n")  # never interrupted: not mistaken for a clean exit

    def interrupt_when_ready(process):
        def wait():
            while "\nREADY" not in log.read_text():  # the header line holds the code, READY in quotes
                time.sleep(0.05)
            _thread.interrupt_main()

        threading.Thread(target=wait, daemon=True).start()

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])  # as a Ray worker's threads have it
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # interrupt_main does nothing under SIG_IGN
    started = time.monotonic()
    try:
        code = node.run_job(["-c", child], log, command=[sys.executable], started=interrupt_when_ready)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGINT, handler)
    assert code == 130, (code, f"{time.monotonic() - started:.1f} s", log.read_text()[-300:])
    assert log.read_text().startswith("$ fmclf -c import signal")


@pytest.mark.parametrize("cancel_too", [False, True])
def test_run_job_stops_its_job_when_the_stop_file_appears_and_counts_a_cancel_after_it_as_the_same_stop(
        tmp_path, cancel_too):
    """Ray's cancel does not always reach a task; the comparison's stop file does. The job gets one
    SIGINT for the file and the cancel together (a second would stop it without its checkpoint)."""
    log, stop_file = tmp_path / "jobs" / "a.log", tmp_path / "jobs" / node.STOP_FILE
    child = ("import signal, sys, time\n"
             "got = []\n"
             "signal.signal(signal.SIGINT, lambda *a: got.append(1))\n"
             "print('READY', flush=True)\n"
             "end = time.monotonic() + 60\n"
             "while not got and time.monotonic() < end: time.sleep(0.05)\n"
             "time.sleep(1.5)\n"  # what a second signal would interrupt: the checkpoint's writing
             "print('SIGINTS', len(got), flush=True)\n"
             "sys.exit(130 if len(got) == 1 else 3)\n")

    def stop_when_ready(process):
        def stop():
            while "\nREADY" not in log.read_text():
                time.sleep(0.05)
            stop_file.touch()
            if cancel_too:
                time.sleep(0.5)
                _thread.interrupt_main()  # Ray's cancel, arriving after the file

        threading.Thread(target=stop, daemon=True).start()

    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = node.run_job(["-c", child], log, command=[sys.executable], started=stop_when_ready,
                            stop_file=stop_file)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert code == 130 and "SIGINTS 1" in log.read_text(), (code, log.read_text()[-300:])


def test_run_job_forwards_fmclf_settings_and_the_plugin_path():
    env = {"PYTHONPATH": "/p", "FMCLF_DATA": "/d", "HOME": "/h", "RAY_ADDRESS": "x"}
    assert node.forwarded_env(env) == {"PYTHONPATH": "/p", "FMCLF_DATA": "/d"}


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("1:30", 2), ("1:30:00", 90), ("2-00", 2880),
                                               ("1-01:30", 1530), ("0-00:00:30", 1)])
def test_slurm_times_are_read_as_sbatch_reads_them(text, minutes):
    assert slurm_array.minutes(text) == minutes


def test_the_slurm_task_checkpoints_its_run_and_asks_to_be_requeued(tmp_path):
    """SIGUSR2 before the time limit: submitit calls the task's checkpoint, which stops the run with
    SIGTERM (it writes its checkpoint) and returns the same job to requeue."""
    pytest.importorskip("submitit")
    task = slurm_array.Task()
    log = tmp_path / "a.log"
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').write('stopped'), sys.exit(130)))\n"
             "print('READY', flush=True)\n"
             "time.sleep(60)\n")
    marker = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-c", child, str(marker)], process_group=0, stdout=subprocess.PIPE,
                               text=True)
    task._started(process)
    assert process.stdout.readline().strip() == "READY"  # its handler is set
    again = task.checkpoint(["run", "--out", "x"], str(log))
    assert marker.read_text() == "stopped" and process.wait(timeout=10) == 130
    assert isinstance(again.function, slurm_array.Task) and again.args == (["run", "--out", "x"], str(log))


def test_local_refuses_detach_with_a_clear_reason():
    with pytest.raises(UsageError, match="--detach needs an executor"):
        local.make(ExecutorSettings(detach=True))


@pytest.mark.parametrize(("name", "module", "says"), [("ray", "ray", "pip install 'fmclf[ray]'"),
                                                      ("slurm", "submitit", "pip install 'fmclf[slurm]'")])
def test_a_cluster_executor_without_its_package_says_which_extra_to_install(tmp_path, monkeypatch, name, module,
                                                                           says):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    result = CliRunner().invoke(cli, ["compare", "--executor", name, "--threads", "1", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output


class _Paths:
    def __init__(self, folder: pathlib.Path) -> None:
        self.result_pickle = folder / "result.pkl"


class _FakeTask:
    """What SlurmExecutor reads of a submitit job: done(), cancel(), its result file and result()."""

    def __init__(self, folder: pathlib.Path, job_id: str, on_done=None) -> None:
        self.job_id, self.paths, self.on_done, self.cancelled = job_id, _Paths(folder / job_id), on_done, 0
        self.paths.result_pickle.parent.mkdir(parents=True)

    def done(self) -> bool:
        if self.on_done is not None:
            self.on_done(self)
        return self.paths.result_pickle.exists()

    def cancel(self, check: bool = True) -> None:
        self.cancelled += 1
        self.paths.result_pickle.write_text("130")  # the run stopped with its checkpoint

    def result(self) -> int:
        return int(self.paths.result_pickle.read_text())


def test_ctrl_c_of_a_waiting_array_cancels_its_tasks_and_reports_them_stopped(tmp_path):
    """SIGINT while waiting: every task still out is cancelled once (its run checkpoints, exit 130),
    each is reported, then the comparison is told it was interrupted."""
    jobs = [Job(n, Call(out=tmp_path / n), tmp_path / "jobs" / f"{n}.log") for n in ("a", "b")]
    (tmp_path / "jobs").mkdir()
    fired = []

    def interrupt_once(task):
        if not fired:
            fired.append(task.job_id)
            signal.raise_signal(signal.SIGINT)

    tasks = {"a": _FakeTask(tmp_path, "1_0", interrupt_once), "b": _FakeTask(tmp_path, "1_1")}
    outcomes = []
    executor = slurm_array.SlurmExecutor(cluster="local", poll_seconds=0.01, announce=lambda text: None)
    with pytest.raises(Interrupted, match="stopped by SIGINT"):
        executor._wait(jobs, tasks, outcomes.append)
    assert sorted((o.job.name, o.returncode) for o in outcomes) == [("a", 130), ("b", 130)]
    assert [t.cancelled for t in tasks.values()] == [1, 1]


def test_a_task_that_ended_without_a_result_counts_as_stopped_and_says_so_in_its_log(tmp_path):
    job = Job("a", Call(out=tmp_path / "a"), tmp_path / "a.log")
    task = _FakeTask(tmp_path, "7_3")
    assert slurm_array._exit_code(task, job) == -signal.SIGKILL
    assert "the SLURM task 7_3 ended without a result" in job.log.read_text()


@pytest.mark.parametrize("name", ["local", "ray", "slurm"])
@pytest.mark.parametrize("jobs", [0, -2])
def test_every_built_in_executor_refuses_fewer_than_one_job_in_the_same_words(monkeypatch, name, jobs):
    # from Python too (the command line checks --jobs first): slurm took a 0 for "not given" and a -2 as the
    # array's parallelism; ray said it otherwise
    monkeypatch.setitem(sys.modules, "ray", None)  # the check comes before the package's
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UsageError) as caught:
        executors.make(name, ExecutorSettings(jobs=jobs, threads=1))
    assert str(caught.value) == f"--jobs must be at least 1, got {jobs}. It is how many runs train side by side."


def test_an_executor_made_from_python_takes_more_jobs_than_the_command_line_allows():
    pool = executors.make("local", ExecutorSettings(jobs=grid.MAX_JOBS + 1))
    assert isinstance(pool, LocalExecutor) and pool.workers == grid.MAX_JOBS + 1


def test_a_stop_handler_set_outside_python_is_left_as_it_was(monkeypatch):
    # signal.getsignal says None for a handler C code set: it cannot be put back, so the executors leave it (as
    # atomic.signals_deferred does), where restoring it raised TypeError once the jobs had ended
    from fmclf.compare import executor

    real_get, real_set, set_calls = signal.getsignal, signal.signal, []

    def fake_set(s, h):
        set_calls.append(s)
        if s == signal.SIGTERM and h is not None:
            return None  # what signal.signal gives back for a handler set outside Python
        return real_set(s, h)  # None: TypeError, as Python's own says

    monkeypatch.setattr(signal, "getsignal", lambda s: None if s == signal.SIGTERM else real_get(s))
    monkeypatch.setattr(signal, "signal", fake_set)
    before = real_get(signal.SIGINT)
    with executor._signals(lambda signum, frame: None):
        assert real_get(signal.SIGINT) is not before
    assert real_get(signal.SIGINT) is before and signal.SIGTERM not in set_calls


def test_a_resumed_comparison_run_is_told_every_resumable_setting_it_has_but_the_visualizers(tmp_path):
    from types import SimpleNamespace

    from fmclf.compare.jobs import RESUME, Run
    from fmclf.run.config import RESUMABLE, RunConfig

    config = RunConfig(epochs=4, device="cpu", threads=2, cuda_graphs=False)
    told = dict(Run(SimpleNamespace(name="cell"), 1, config, tmp_path, RESUME).call().overrides)
    assert told == {k: getattr(config, k) for k in RESUMABLE if k != "visualizers"}
    unset = dict(Run(SimpleNamespace(name="cell"), 1, RunConfig(), tmp_path, RESUME).call().overrides)
    assert set(unset) == {"epochs", "device"}  # threads and cuda_graphs unset: the resumed run decides


def test_every_executor_opens_a_jobs_log_as_fmclfs_own_file_and_refuses_a_link(tmp_path):
    # the cluster executors' run_job and their notes opened it with open(): they followed a link the local
    # executors refuse, and appended to whatever file it named
    from fmclf.atomic import RefusedFile
    from fmclf.compare.executor import note

    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("mine\n")
    log = tmp_path / "jobs" / "a.log"
    log.parent.mkdir()
    log.symlink_to(elsewhere)
    job = Job("a", Call(out=tmp_path / "run"), log)
    with pytest.raises(RefusedFile):
        LocalExecutor(command=[sys.executable, "-c", "pass"]).run([job], lambda outcome: None)
    with pytest.raises(RefusedFile):
        node.run_job(["-c", "pass"], log, command=[sys.executable])
    with pytest.raises(RefusedFile):
        note(log, "the task was lost")
    assert elsewhere.read_text() == "mine\n"


def test_a_note_and_the_command_line_start_a_jobs_log_as_before(tmp_path):
    from fmclf.compare.executor import note

    log = tmp_path / "jobs" / "a.log"
    assert node.run_job(["-c", "print('hi')"], log, command=[sys.executable]) == 0
    note(log, "the SLURM task 7_1 ended without a result (cancelled or killed)")
    assert log.read_text() == ("$ fmclf -c print('hi')\nhi\n"
                               "fmclf compare: the SLURM task 7_1 ended without a result (cancelled or killed)\n")
