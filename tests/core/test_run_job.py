"""A comparison's in-process job (fmclf.compare.executor.run_job): the Python API, worded and exiting as
`fmclf ARGS` would."""

from __future__ import annotations

from fmclf.compare.executor import run_job


def test_a_job_that_is_no_comparison_job_is_refused_with_exit_2(capsys):
    assert run_job(["run", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "`fmclf run --lr 0.1`" in err


def test_a_bad_settings_file_is_the_command_lines_error(tmp_path, capsys):
    assert run_job(["-p", "no:nothing", "run", "--config", str(tmp_path / "absent.toml"), "--out",
                    str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Error: config file" in err and "does not exist" in err
    assert not (tmp_path / "run").exists()


def test_a_run_job_trains_and_prints_the_summary(tiny_data, tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text(f'epochs = 1\nbatch_size = 64\nseed = 3\ndevice = "cpu"\nvisualizers = ["none"]\n'
                        f'[options.dataset]\ndata_root = "{tiny_data}"\nverify = false\n')
    assert run_job(["run", "--config", str(settings), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "done: 1 epoch(s)" in out and f"run folder: {tmp_path / 'run'}" in out
    assert (tmp_path / "run" / "report.md").is_file()  # the report is drawn, as by `fmclf run`
    assert run_job(["run", "--resume", str(tmp_path / "run"), "--epochs", "2", "--device", "cpu",
                    "--no-cuda-graphs"]) == 0
    assert "done: 2 epoch(s) (1 of them in this session)" in capsys.readouterr().out
