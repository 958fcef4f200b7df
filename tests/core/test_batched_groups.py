"""Batched groups (issue 23): many runs trained as one computation, each member the run it would have been alone."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch

import fmclf
from fmclf.draw.report import RunReport, write_report
from fmclf.host.loading import load_plugins
from fmclf.run import folder
from fmclf.run.config import RunConfig
from fmclf.run.group import MemberSpec, batch_key, read_spec, run_group, write_spec
from fmclf.run.plan import resolve
from fmclf.run.runner import run_new
from fmclf.testing import ContractError, check_batched

EPOCHS = 3


def _config(data: pathlib.Path, seed: int, lr: float, options: dict | None = None, **settings) -> RunConfig:
    opts = {"dataset": {"data_root": str(data), "verify": False}}
    for target, values in (options or {}).items():
        opts.setdefault(target, {}).update(values)
    settings = {"epochs": EPOCHS, "batch_size": 16, "threads": 1, "visualizers": ["none"], **settings}
    return RunConfig(seed=seed, lr=lr, options=opts, **settings)


def _group(tmp: pathlib.Path, configs: list[RunConfig], name: str = "g") -> tuple[pathlib.Path, list[pathlib.Path]]:
    """Write the settings and the spec of a group of ``configs``; returns the spec and the members' folders."""
    (tmp / "jobs").mkdir(parents=True, exist_ok=True)
    specs = []
    for i, config in enumerate(configs):
        settings = tmp / "jobs" / f"{name}{i}.toml"
        settings.write_text(config.to_toml(None, ""), encoding="utf-8")
        specs.append(MemberSpec(f"{name}{i}", tmp / "runs" / f"{name}{i}", settings, tmp / "jobs" / f"{name}{i}.log"))
    spec = tmp / "jobs" / f"{name}.json"
    write_spec(spec, specs)
    return spec, [s.run_dir for s in specs]


def _quiet(_text: str) -> None:
    pass


def _close(a: dict, b: dict, rel: float = 1e-4) -> None:
    """A member's metrics row against its run alone's: losses within ``rel``, accuracies within 0.002."""
    for key, value in a.items():
        if key.endswith("_loss"):
            assert math.isclose(value, b[key], rel_tol=rel), (key, value, b[key])
        elif key.endswith("_acc") and not isinstance(value, dict):
            assert abs(value - b[key]) <= 0.002, (key, value, b[key])


COMBOS = [
    ("scratch", "fused", "sgd", [{}, {}]),
    ("nn", "naive", "sgd", [{}, {}]),
    ("scratch", "fused", "torch-sgd", [{"updater": {"momentum": 0.9, "schedule": "cosine"}},
                                       {"updater": {"momentum": 0.5, "nesterov": True, "weight_decay": 0.01}}]),
    ("nn", "fused", "torch-sgd", [{"updater": {"warmup": 0.5, "schedule": "step", "step_epochs": 1}},
                                  {"loss": {"label_smoothing": 0.1}, "updater": {"dampening": 0.2, "momentum": 0.8}}]),
]


@pytest.mark.parametrize(("model", "loss", "updater", "per_model"), COMBOS,
                         ids=lambda v: v if isinstance(v, str) else "")
def test_each_member_is_the_run_it_would_have_been_alone(tiny_data, tmp_path, model, loss, updater, per_model):
    host = load_plugins()
    parts = {"model": model, "loss": loss, "updater": updater}
    configs = [_config(tiny_data, seed, lr, per_model[i % 2], **parts)
               for i, (seed, lr) in enumerate([(0, 0.05), (1, 0.2), (0, 0.2), (1, 0.05)])]
    spec, dirs = _group(tmp_path / "cmp", configs)
    assert run_group(spec, host, echo=_quiet, report=write_report) == 0
    for run_dir in dirs:  # every member's folder is complete, as a run alone leaves it
        for name in (folder.CONFIG, folder.METRICS, folder.WEIGHTS, folder.SUMMARY, folder.STATUS, folder.REPORT,
                     folder.CHECKPOINT, folder.TEST_PREDICTIONS):
            assert (run_dir / name).is_file(), name
        assert folder.read_status(run_dir)["status"] == "finished"
        assert json.loads((run_dir / folder.SUMMARY).read_text())["epochs_trained"] == EPOCHS
    for config, run_dir in list(zip(configs, dirs))[:2]:
        alone = run_new(config, host, out=tmp_path / "alone" / run_dir.name, echo=_quiet, report=RunReport)
        rows = folder.read_metrics(run_dir)
        assert len(rows) == len(alone.history) == EPOCHS
        for mine, theirs in zip(rows, alone.history):
            _close(mine, theirs)
            assert mine["lr"] == pytest.approx(theirs["lr"], rel=1e-9)
        weights = torch.load(run_dir / folder.WEIGHTS, weights_only=True)
        for name, value in alone.model.state_dict().items():
            assert torch.allclose(weights[name], value, rtol=1e-4, atol=1e-6), name
        # the test predictions compare's bootstrap resamples: the same examples, nearly every one the same class
        mine, theirs = folder.read_correct(run_dir), folder.read_correct(alone.run_dir)
        assert mine.shape == theirs.shape and (mine != theirs).mean() <= 0.002


@pytest.mark.parametrize("deferred", [False, True], ids=["read-each-batch", "read-at-epoch-end"])
def test_one_members_divergence_does_not_stop_the_others(tiny_data, tmp_path, monkeypatch, deferred):
    from fmclf.train import batched

    if deferred:  # as on an accelerator: the losses are read once, when the epoch ends
        init = batched.BatchedTrainer.__init__

        def deferring(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.defer = True

        monkeypatch.setattr(batched.BatchedTrainer, "__init__", deferring)
    host = load_plugins()
    # on these tiny images the naive loss overflows at --lr 30 (on Fashion-MNIST at --lr 3), and not at 0.1
    configs = [_config(tiny_data, 0, 30.0, loss="naive"), _config(tiny_data, 0, 0.1, loss="naive")]
    spec, (wild, calm) = _group(tmp_path / "cmp", configs)
    assert run_group(spec, host, echo=_quiet, report=write_report) == 0
    status = folder.read_status(wild)
    assert status["status"] == "diverged"
    log = (tmp_path / "cmp" / "jobs" / "g0.log").read_text()
    assert "Error: training diverged: the loss became" in log and "naive loss" in log
    assert not (wild / folder.WEIGHTS).exists()
    assert folder.read_status(calm)["status"] == "finished"
    assert len(folder.read_metrics(calm)) == EPOCHS
    # the run alone diverges on the same batch of the same epoch
    with pytest.raises(fmclf.errors.DivergenceError) as alone:
        run_new(configs[0], host, out=tmp_path / "alone", echo=_quiet, report=RunReport)
    where = str(alone.value).split(" with ")[0]
    assert where in status["reason"]


def test_an_interrupted_group_resumes_to_the_same_result(tiny_data, tmp_path, monkeypatch):
    from fmclf.train import batched

    host = load_plugins()
    per_model = [{"updater": {"momentum": 0.9, "schedule": "cosine"}}, {"updater": {"momentum": 0.5}}]
    configs = [_config(tiny_data, seed, lr, per_model[seed], updater="torch-sgd") for seed, lr in [(0, 0.1), (1, 0.3)]]
    whole, whole_dirs = _group(tmp_path / "whole", configs)
    assert run_group(whole, host, echo=_quiet, report=write_report) == 0
    spec, dirs = _group(tmp_path / "cut", configs)
    epoch = batched.BatchedTrainer.epoch

    def stopped_after_one(self, number, stop=None):  # Ctrl-C during epoch 1's evaluation
        epoch(self, number, stop)
        stop.request("SIGINT")

    monkeypatch.setattr(batched.BatchedTrainer, "epoch", stopped_after_one)
    assert run_group(spec, host, echo=_quiet, report=write_report) == 130
    assert all(folder.read_status(d)["status"] == "interrupted" for d in dirs)
    assert all(len(folder.read_metrics(d)) == 1 for d in dirs)
    monkeypatch.setattr(batched.BatchedTrainer, "epoch", epoch)
    assert run_group(spec, host, echo=_quiet, report=write_report) == 0  # the same command again continues
    for a, b in zip(whole_dirs, dirs):
        for x, y in zip(folder.read_metrics(a), folder.read_metrics(b), strict=True):
            _close(x, y, rel=1e-6)
        wa, wb = (torch.load(d / folder.WEIGHTS, weights_only=True) for d in (a, b))
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-6, atol=1e-7) for k in wa)


def test_a_member_of_an_interrupted_group_resumes_alone(tiny_data, tmp_path, monkeypatch):
    from fmclf.run.runner import run_resume
    from fmclf.train import batched

    host = load_plugins()
    configs = [_config(tiny_data, s, 0.1, {"updater": {"momentum": 0.9, "schedule": "cosine"}}, updater="torch-sgd")
               for s in (0, 1)]
    spec, dirs = _group(tmp_path / "cut", configs)
    epoch = batched.BatchedTrainer.epoch

    def stopped_after_one(self, number, stop=None):
        epoch(self, number, stop)
        stop.request("SIGTERM")

    monkeypatch.setattr(batched.BatchedTrainer, "epoch", stopped_after_one)
    assert run_group(spec, host, echo=_quiet, report=write_report) == 130
    monkeypatch.setattr(batched.BatchedTrainer, "epoch", epoch)
    resumed = run_resume(dirs[0], host, echo=_quiet, report=RunReport)
    alone = run_new(configs[0], host, out=tmp_path / "alone", echo=_quiet, report=RunReport)
    for mine, theirs in zip(resumed.history, alone.history, strict=True):
        _close(mine, theirs)


def test_batch_key_groups_what_may_differ_and_nothing_else(tiny_data):
    host = load_plugins()

    def key(**kw):
        return batch_key(resolve(_config(tiny_data, kw.pop("seed", 0), kw.pop("lr", 0.1), kw.pop("options", None),
                                         **kw), host))

    reason, base = key(updater="torch-sgd")
    assert reason is None
    assert key(updater="torch-sgd", seed=5, lr=0.3, options={"updater": {"momentum": 0.9}})[1] == base
    assert key(updater="torch-sgd", epochs=EPOCHS + 1)[1] != base
    assert key(updater="torch-sgd", batch_size=32)[1] != base
    assert key(updater="torch-sgd", model="nn")[1] != base
    assert key(updater="torch-sgd", options={"dataset": {"raw_pixels": True}})[1] != base
    assert key(updater="torch-sgd", options={"loss": {"label_smoothing": 0.1}})[1] == base  # declared per model
    reason, _ = key(metrics=["ece"])
    assert "--metric" in reason


def test_a_component_that_says_nothing_trains_alone_with_its_line(tiny_data, tmp_path, fmclf_plugin):
    from fmclf.compare.batching import plan_jobs
    from fmclf.compare.grid import Cell
    from fmclf.compare.jobs import runs_of

    class Plugin:
        @staticmethod
        @fmclf.hookimpl
        def register_models(register):
            def plain(*, num_inputs: int, num_classes: int):
                return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(num_inputs, num_classes))

            register("plain", plain, help="an nn model that declares nothing")

    host = fmclf_plugin(Plugin(), name="plain-plugin")
    cells = [Cell({"model": "plain"}, {}, _config(tiny_data, 0, 0.1, model="plain")),
             Cell({"model": "scratch"}, {}, _config(tiny_data, 0, 0.1))]
    runs = runs_of(cells, [0, 1, 2], tmp_path, 1)
    (tmp_path / "jobs").mkdir()
    grouping = plan_jobs(runs, host, (), tmp_path)
    assert [len(r) for r in grouping.members.values()] == [3]
    assert any(line.startswith("alone: 3 run(s): model 'plain'") and "does not declare it can be batched" in line
               for line in grouping.lines), grouping.lines
    assert len(grouping.jobs) == 4
    assert read_spec(pathlib.Path(grouping.jobs[0].args[-1]))[0].name.startswith("scratch")
    capped = plan_jobs(runs, host, (), tmp_path, max_models=2)
    assert sorted(len(r) for r in capped.members.values()) == [1, 2]
    assert plan_jobs(runs, host, (), tmp_path, batch=False).members == {}


def test_a_capped_grid_is_split_into_groups_of_whole_seeds(tiny_data, tmp_path):
    from fmclf.compare.batching import plan_jobs
    from fmclf.compare.grid import Cell
    from fmclf.compare.jobs import runs_of

    host = load_plugins()
    cells = [Cell({}, {"lr": str(lr)}, _config(tiny_data, 0, lr)) for lr in (0.05, 0.1)]
    runs = runs_of(cells, [0, 1, 2], tmp_path, 1)  # one group of 6: 2 runs per seed
    (tmp_path / "jobs").mkdir()
    grouping = plan_jobs(runs, host, (), tmp_path, max_models=5)
    groups = sorted(grouping.members.values(), key=len)
    assert [len(g) for g in groups] == [2, 4]  # not 3 and 3, which would cut seed 1's pair in two
    for group in groups:  # as many members for every seed: all seeds train in one batched product
        per_seed = [sum(1 for r in group if r.seed == s) for s in {r.seed for r in group}]
        assert set(per_seed) == {2}


def test_groups_planned_by_separate_calls_keep_their_own_spec_and_log(tiny_data, tmp_path):
    """A tuned comparison plans its trials' groups and then its final runs' groups: the second plan must not
    overwrite the first one's spec and log (they were both jobs/group-001 once)."""
    from fmclf.compare.batching import plan_jobs
    from fmclf.compare.grid import Cell
    from fmclf.compare.jobs import runs_of

    host = load_plugins()
    cells = [Cell({}, {"lr": str(lr)}, _config(tiny_data, 0, lr)) for lr in (0.05, 0.1)]
    (tmp_path / "jobs").mkdir()
    first = plan_jobs(runs_of(cells, [0, 1], tmp_path, 1), host, (), tmp_path)
    second = plan_jobs(runs_of(cells, [5, 6], tmp_path, 1), host, (), tmp_path)
    specs = [pathlib.Path(j.args[-1]) for g in (first, second) for j in g.jobs]
    logs = [j.log for g in (first, second) for j in g.jobs]
    assert len(set(specs)) == len(specs) == 2 and len(set(logs)) == 2
    assert [m.name for m in read_spec(specs[0])] == [r.name for r in first.members[first.jobs[0].name]]


def test_compare_trains_a_grid_as_one_group(tiny_data, tmp_path):
    from click.testing import CliRunner

    from fmclf.cli import cli

    out = tmp_path / "cmp"
    args = ["compare", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "2",
            "--batch-size", "16", "--updater", "torch-sgd", "-o", "updater.momentum=0", "-o", "updater.momentum=0.9",
            "--seeds", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "batched: 4 run(s) in 1 group(s)" in result.output
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 4
    for run_dir in runs:
        assert folder.read_status(run_dir)["status"] == "finished"
        assert (run_dir / folder.REPORT).is_file() and (run_dir / folder.WEIGHTS).is_file()
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert sorted(len(r["seeds"]) for r in rows) == [2, 2]
    again = CliRunner().invoke(cli, args)  # the same command again keeps them
    assert again.exit_code == 0 and "nothing to train" in again.output


@pytest.mark.parametrize("text", ["{", '{"format": "other"}', '{"format": "fmclf-group/1", "members": []}'])
def test_run_group_refuses_a_bad_spec_in_one_paragraph(tmp_path, text):
    from click.testing import CliRunner

    from fmclf.cli import cli

    spec = tmp_path / "g.json"
    spec.write_text(text)
    result = CliRunner().invoke(cli, ["run-group", str(spec)])
    assert result.exit_code == 2
    assert "Error:" in result.output and "Traceback" not in result.output
    assert "fmclf compare" in result.output


def test_batchable_declarations():
    assert fmclf.batchable is not None
    with pytest.raises(TypeError):
        fmclf.batchable(per_model="lr")
    with pytest.raises(TypeError):
        fmclf.batchable(stacked=3)

    @fmclf.batchable(per_model=("hidden",))
    def mine(*, num_inputs: int, num_classes: int, hidden: int = 4): ...

    from fmclf.host.batchable import batchable_of

    assert batchable_of(mine).per_model == ("hidden",)
    assert batchable_of(lambda: None) is None


@pytest.mark.parametrize(("kind", "name", "members"), [
    ("model", "scratch", None),
    ("model", "nn", None),
    ("loss", "naive", None),
    ("loss", "fused", [{"seed": 0, "lr": 0.1, "options": {"label_smoothing": 0.1}}, {"seed": 0, "lr": 0.1}]),
    ("updater", "sgd", None),
    ("updater", "torch-sgd", [{"seed": 0, "lr": 0.1, "options": {"momentum": 0.9, "schedule": "onecycle"}},
                              {"seed": 1, "lr": 0.2, "options": {"nesterov": True, "momentum": 0.5}}]),
])
def test_check_batched_passes_every_batchable_builtin(kind, name, members):
    check_batched(kind, name, members=members)


@pytest.mark.parametrize("model", ["scratch", "nn"])
def test_seeds_with_unequal_members_train_one_seed_at_a_time_to_the_same_numbers(model, monkeypatch):
    from fmclf.train import batched

    paths = []
    init = batched.BatchedTrainer.__init__

    def noting(self, *args, **kwargs):
        init(self, *args, **kwargs)
        paths.append(self._seeded is not None)

    monkeypatch.setattr(batched.BatchedTrainer, "__init__", noting)
    check_batched("model", model, members=[{"seed": 0, "lr": 0.05}, {"seed": 0, "lr": 0.2}, {"seed": 1, "lr": 0.1}])
    check_batched("model", model)  # 2 seeds x 2 rates: every seed in one product
    assert paths == [False, True]


def test_check_batched_refuses_an_undeclared_component():
    def plain(*, num_inputs: int, num_classes: int):
        return torch.nn.Linear(num_inputs, num_classes)

    with pytest.raises(ContractError, match="does not declare it can be batched"):
        check_batched("model", plain)


def test_a_model_without_a_stacked_form_runs_under_vmap():
    @fmclf.batchable()
    def mlp(*, num_inputs: int, num_classes: int):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(num_inputs, 5), torch.nn.Tanh(),
                                   torch.nn.Linear(5, num_classes))

    check_batched("model", mlp)


def test_a_group_stopped_after_training_writes_its_final_files_on_resume(tiny_data, tmp_path):
    host = load_plugins()
    spec, dirs = _group(tmp_path / "cmp", [_config(tiny_data, s, 0.1, epochs=1) for s in (0, 1)])
    assert run_group(spec, host, echo=_quiet, report=write_report) == 0
    before = [folder.read_metrics(d) for d in dirs]
    for d in dirs:  # as if the process died after the last checkpoint, before model.pt and the rest
        for name in (folder.WEIGHTS, folder.SUMMARY, folder.REPORT):
            (d / name).unlink()
    assert run_group(spec, host, echo=_quiet, report=write_report) == 0
    for d, rows in zip(dirs, before):
        assert folder.read_metrics(d) == rows
        assert all((d / name).is_file() for name in (folder.WEIGHTS, folder.SUMMARY, folder.REPORT))


def test_a_group_refuses_a_new_members_folder_that_holds_other_files(tiny_data, tmp_path):
    host = load_plugins()
    spec, dirs = _group(tmp_path / "cmp", [_config(tiny_data, s, 0.1, epochs=1) for s in (0, 1)])
    dirs[1].mkdir(parents=True)
    (dirs[1] / "notes.txt").write_text("mine")
    with pytest.raises(fmclf.UsageError, match="notes.txt|not empty|other files"):
        run_group(spec, host, echo=_quiet, report=write_report)
    assert (dirs[1] / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("updater", ["sgd", "torch-sgd"])
def test_members_match_runs_alone_after_ten_epochs_on_the_real_data(real_data, tmp_path, updater):
    host = load_plugins()
    options = {"updater": {"momentum": 0.9} if updater == "torch-sgd" else {}}
    # Rates where training is stable: above about 0.1 (0.01 with momentum 0.9) softmax regression on these pixels
    # oscillates along the mean image, and any difference in the last bit (a sum in another order) grows by
    # percents within an epoch, alone as in a group.
    low, high = (0.05, 0.1) if updater == "sgd" else (0.005, 0.01)
    configs = [_config(real_data, seed, lr, options, updater=updater, epochs=10, batch_size=256, threads=None)
               for seed, lr in [(0, low), (1, high), (0, high)]]
    spec, dirs = _group(tmp_path / "cmp", configs)
    assert run_group(spec, host, echo=_quiet, report=write_report) == 0
    alone = run_new(configs[1], host, out=tmp_path / "alone", echo=_quiet, report=RunReport)
    for mine, theirs in zip(folder.read_metrics(dirs[1]), alone.history, strict=True):
        _close(mine, theirs)


def _scratch_members(seeds: list[int]) -> tuple[list, object]:
    """Members with the built-in scratch model, fused loss and sgd updater on 4 inputs and 3 classes; and sgd's
    stacked update."""
    from fmclf.host.batchable import batchable_of
    from fmclf.train.batched import Member
    from fmclf.train.updaters import adapt_updater

    registry = load_plugins().registry
    model_rec, loss_rec, updater_rec = (registry.get(k, n) for k, n in
                                        (("model", "scratch"), ("loss", "fused"), ("updater", "sgd")))
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = model_rec.factory(num_inputs=4, num_classes=3)
        updater = updater_rec.factory(params=list(model.parameters()), lr=0.1)
        members.append(Member(model, adapt_updater(updater), loss_rec.factory(num_classes=3), seed))
    return members, batchable_of(updater_rec.factory).stacked


@pytest.mark.parametrize("fault", ["label", "inputs"])
def test_a_group_refuses_bad_labels_and_inputs_as_a_run_alone_does(fault):
    """Labels out of range and examples of the wrong size are the data set's fault, found before training, in a
    group as in a run alone: the same DataError, not a loss's IndexError or a model's shape error."""
    import dataclasses

    from fmclf.errors import DataError
    from fmclf.testing import _tiny_dataset
    from fmclf.train.batched import BatchedTrainer
    from fmclf.train.engine import Parts, Trainer

    data = _tiny_dataset(torch.device("cpu"))
    test = data.test
    if fault == "label":
        y = test.y.clone()
        y[3] = 5
        test = type(test)(test.X, y, test.batch_size, shuffle=False)
    else:
        test = type(test)(test.X[:, :, :1], test.y, test.batch_size, shuffle=False)
    data = dataclasses.replace(data, test=test)
    members, stacked = _scratch_members([0])
    m = members[0]
    with pytest.raises(DataError) as alone:
        Trainer(Parts(data, m.model, m.loss, m.updater), device="cpu", epochs=1, cuda_graphs=False).fit()
    members, stacked = _scratch_members([0, 1])
    with pytest.raises(DataError) as grouped:
        BatchedTrainer(members, data, stacked, device=torch.device("cpu")).epoch(1)
    assert str(grouped.value) == str(alone.value)


def test_a_group_taking_over_a_killed_members_lock_says_so_as_a_run_alone_does(tiny_data, tmp_path):
    host = load_plugins()
    spec, dirs = _group(tmp_path / "cmp", [_config(tiny_data, s, 0.1, epochs=1) for s in (0, 1)])
    dirs[0].mkdir(parents=True)
    (dirs[0] / folder.LOCK).write_text('{"pid": 4242, "host": "elsewhere"}\n')  # named, but nobody holds it
    lines: list[str] = []
    assert run_group(spec, host, echo=lines.append, report=write_report) == 0
    notes = [line for line in lines if line.startswith("Note: took over the lock of")]
    assert len(notes) == 1 and str(dirs[0]) in notes[0] and "process 4242 on elsewhere" in notes[0]
