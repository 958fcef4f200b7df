"""A comparison's in-process job (fmclf.compare.executor.run_job): a Call made through the Python API, worded
and exiting as `fmclf` with the call's arguments would."""

from __future__ import annotations

from fmclf.compare.executor import Call, run_job


def test_a_bad_settings_file_is_the_command_lines_error(tmp_path, capsys):
    assert run_job(Call(out=tmp_path / "run", settings=tmp_path / "absent.toml", plugins=("no:nothing",))) == 2
    err = capsys.readouterr().err
    assert "Error: config file" in err and "does not exist" in err
    assert not (tmp_path / "run").exists()


def test_a_run_job_trains_resumes_and_prints_the_summary(tiny_data, tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text(f'epochs = 1\nbatch_size = 64\nseed = 3\ndevice = "cpu"\nvisualizers = ["none"]\n'
                        f'[options.dataset]\ndata_root = "{tiny_data}"\nverify = false\n')
    assert run_job(Call(out=tmp_path / "run", settings=settings)) == 0
    out = capsys.readouterr().out
    assert "done: 1 epoch(s)" in out and f"run folder: {tmp_path / 'run'}" in out
    assert (tmp_path / "run" / "report.md").is_file()  # the report is drawn, as by `fmclf run`
    again = Call(out=tmp_path / "run", overrides=(("epochs", 2), ("device", "cpu"), ("cuda_graphs", False)))
    assert run_job(again) == 0
    assert "done: 2 epoch(s) (1 of them in this session)" in capsys.readouterr().out
