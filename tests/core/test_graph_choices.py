"""CUDA graphs by default: what is chosen, what is said, and the epoch graph's math, here without a GPU.

The captures themselves run in tests/core/test_cuda.py (``-m cuda``); this file
checks the choices (with device objects of type cuda, which need no GPU), runs
the whole-epoch program eagerly on the CPU against the engine's loop, and
simulates captures and replays that fail: on the default path the run trains
eagerly with one line saying why, and only an explicit ``--cuda-graphs`` is an error.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.dist.comm import Comm, Solo
from fmclf.dist.launch import Launch
from fmclf.errors import UsageError
from fmclf.train import graphs
from fmclf.train.engine import Trainer, TrainState
from fmclf.train.graphs import EpochGraph, GraphedStep, decide, fits_epoch

from helpers import assemble_parts

CUDA = torch.device("cuda", 0)  # only its type is looked at
CPU = torch.device("cpu")


def test_the_default_is_on_for_cuda_when_the_parts_allow_it(tiny_data):
    sgd = assemble_parts(tiny_data).updater
    assert decide(None, CUDA, sgd, Solo()) == (True, None)
    assert decide(False, CUDA, sgd, Solo()) == (False, None)  # --no-cuda-graphs: off, and nothing said
    assert decide(None, CPU, sgd, Solo()) == (False, None)  # nothing to say off CUDA


def test_the_default_falls_back_in_one_line_saying_why(tiny_data):
    parts = assemble_parts(tiny_data, updater="torch-sgd")
    use, note = decide(None, CUDA, parts.updater, Solo(), parts.records["updater"].describe())
    assert not use and "\n" not in note
    assert note.startswith("Note: CUDA graphs are off for this run:") and "does not declare capturable = True" in note
    assert "--no-cuda-graphs" in note
    use, note = decide(None, CUDA, assemble_parts(tiny_data).updater, Comm(Launch(0, 2, 0, 2), "nccl", 10.0))
    assert not use and "distributed training" in note


def test_asking_for_them_explicitly_is_refused_in_words(tiny_data):
    parts = assemble_parts(tiny_data, updater="torch-sgd")
    with pytest.raises(UsageError, match="--cuda-graphs needs a CUDA device"):
        decide(True, CPU, parts.updater, Solo())
    with pytest.raises(UsageError, match="capturable = True"):
        decide(True, CUDA, parts.updater, Solo(), parts.records["updater"].describe())


def test_the_whole_epoch_is_the_unit_for_tensor_batches_on_the_device(tiny_data):
    train = assemble_parts(tiny_data).dataset.train
    assert fits_epoch(train, CPU, batch_listeners=False)
    assert not fits_epoch(train, CUDA, batch_listeners=False)  # held elsewhere
    assert not fits_epoch(train, CPU, batch_listeners=True)  # a callback wants every batch
    assert not fits_epoch(list(train), CPU, batch_listeners=False)  # any other iterable: a graph per step


def test_a_cpu_run_records_that_it_used_none_and_says_nothing(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--epochs", "1", "--visualizer", "none", "--device", "cpu", "--seed", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "cuda_graphs = false" in (out / "config.toml").read_text() and "CUDA graphs" not in result.output


def test_a_gpu_runs_recorded_graphs_are_decided_again_where_it_resumes(tiny_data, tmp_path):
    """config.toml records what the run's device did (true for a default GPU run): resumed on the CPU
    it is no --cuda-graphs to refuse, and the resumed run records what it did there."""
    out = tmp_path / "run"
    run = ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--visualizer", "none"]
    assert CliRunner().invoke(cli, [*run, "--epochs", "1", "--device", "cpu", "--seed", "1", "--out",
                                    str(out)]).exit_code == 0
    config = out / "config.toml"
    config.write_text(config.read_text().replace("cuda_graphs = false", "cuda_graphs = true"))
    result = CliRunner().invoke(cli, ["run", "--resume", str(out), "--epochs", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "cuda_graphs = false" in config.read_text() and "CUDA graphs" not in result.output
    # Asked for now, the refusal stands: a request is the user's, a record is not.
    result = CliRunner().invoke(cli, ["run", "--resume", str(out), "--epochs", "3", "--device", "cpu",
                                      "--cuda-graphs"])
    assert result.exit_code == 2 and "--cuda-graphs needs a CUDA device" in result.output


def test_a_comparisons_resumed_run_passes_graphs_only_when_its_cell_set_them(tmp_path):
    from types import SimpleNamespace

    from fmclf.compare.jobs import RESUME, Run
    from fmclf.run.config import RunConfig

    def args(cuda_graphs):
        return Run(SimpleNamespace(name="cell"), 1, RunConfig(cuda_graphs=cuda_graphs), tmp_path, RESUME).call().args

    assert not {"--cuda-graphs", "--no-cuda-graphs"} & set(args(None))  # the resumed run decides, as the first did
    assert "--no-cuda-graphs" in args(False) and "--cuda-graphs" in args(True)


def test_a_trainer_on_the_cpu_captures_nothing(tiny_data):
    said = []
    trainer = Trainer(assemble_parts(tiny_data), device=CPU, epochs=1, graph_fallback=said.append)
    assert not trainer.cuda_graphs and trainer.epoch_graph is None and trainer.graphed is None and said == []


@pytest.fixture
def ragged_data(tmp_path):
    """100 training images: 12 batches of 8 and a last one of 4."""
    from helpers import write_tiny_fashion

    return write_tiny_fashion(tmp_path / "ragged", n_train=100, n_test=40)


def test_the_epoch_program_is_the_engines_epoch(ragged_data):
    """What the graph records, run eagerly: from the same start, the same order, loss, count and weights
    as the engine's loop, and each batch's loss where the divergence watch reads it."""
    eager = assemble_parts(ragged_data, batch_size=8, seed=4)
    graphed = assemble_parts(ragged_data, batch_size=8, seed=4)
    for epoch in (1, 2):
        history = Trainer(eager, device=CPU, epochs=epoch, cuda_graphs=False).fit(
            TrainState(epoch=epoch - 1)).history[-1]
        program = EpochGraph(graphed.model, graphed.loss, graphed.updater, True, graphed.dataset.train)
        program.run(epoch)
        n = len(graphed.dataset.train.X)
        assert float(program.loss_sum) / n == pytest.approx(history["train_loss"], rel=1e-6)
        assert int(program.correct) / n == history["train_acc"]
        assert len(program.sums) == 13 and float(program.sums.sum()) == pytest.approx(float(program.loss_sum), rel=1e-5)
        for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_the_next_epochs_order_is_drawn_ahead_and_is_the_data_sets(tiny_data):
    train = assemble_parts(tiny_data, seed=2).dataset.train
    program = EpochGraph(assemble_parts(tiny_data).model, assemble_parts(tiny_data).loss,
                         assemble_parts(tiny_data).updater, True, train)
    program.run(3)
    assert set(program._orders) == {4} and torch.equal(program._orders[4], train.permutation(4))
    train.set_epoch(3)
    assert torch.equal(program.perm, train.order())  # what the eager loop would have used


def test_config_files_may_set_it_or_leave_it_out(tmp_path):
    from fmclf.run.config import RunConfig

    RunConfig(cuda_graphs=None).validate()
    with pytest.raises(UsageError, match="cuda_graphs must be true or false"):
        RunConfig(cuda_graphs="yes").validate()
    assert "cuda_graphs" not in RunConfig().to_toml()
    assert json.dumps(RunConfig(cuda_graphs=True).cuda_graphs) == "true"


# --- a capture or replay that fails, simulated on the CPU -------------------------------------------------------

class _Capture:
    """Stands in for torch.cuda.graph: the capture fails as a component that reads a value back makes it fail."""

    def __init__(self, graph, stream=None):
        pass

    def __enter__(self):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    def __exit__(self, *exc):
        return False


class _BrokenGraph:
    def replay(self):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.fixture
def graphs_on_the_cpu(monkeypatch):
    """Graphs chosen as on a CUDA device (the CPU stands in for it), with captures that fail."""
    monkeypatch.setattr(graphs, "decide", lambda requested, *a, **k: (requested is not False, None))
    monkeypatch.setattr(graphs, "check_device", lambda device: None)
    monkeypatch.setattr(graphs, "_warm_up", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", _Capture)


def _history(data, cuda_graphs, said=None, **settings):
    parts = assemble_parts(data, batch_size=8, seed=4, **settings)
    trainer = Trainer(parts, device=CPU, epochs=2, cuda_graphs=cuda_graphs,
                      graph_fallback=None if said is None else said.append)
    return trainer, trainer.fit(TrainState()).history


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_a_capture_that_fails_by_default_trains_eagerly_saying_why_once(ragged_data, graphs_on_the_cpu, monkeypatch,
                                                                        unit):
    if unit == "step":
        monkeypatch.setattr(graphs, "fits_epoch", lambda *a, **k: False)
    _, eager = _history(ragged_data, False)
    said = []
    trainer, history = _history(ragged_data, None, said)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in eager]  # the eager loop's numbers
    assert [h["test_acc"] for h in history] == [h["test_acc"] for h in eager]
    (note,) = said
    assert "\n" not in note and note.startswith("Note: CUDA graphs are off for this run: capturing the training")
    assert "operation not permitted when stream is capturing" in note and "more detail" not in note
    assert not trainer.cuda_graphs and trainer.epoch_graph is None and trainer.graphed is None


def test_without_a_fallback_the_default_warns_and_trains(ragged_data, graphs_on_the_cpu, capsys):
    """A Trainer built with the defaults (no graph_fallback) says it through its warnings."""
    _, history = _history(ragged_data, None)
    assert len(history) == 2 and "Note: CUDA graphs are off for this run" in capsys.readouterr().err


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_a_replay_that_fails_by_default_trains_eagerly(ragged_data, graphs_on_the_cpu, monkeypatch, unit):
    def captured(self, *args):
        self.graph = _BrokenGraph()
        if unit == "step":
            self.X, self.y = args[0].clone(), args[1].clone()

    if unit == "step":
        monkeypatch.setattr(graphs, "fits_epoch", lambda *a, **k: False)
    monkeypatch.setattr(EpochGraph if unit == "epoch" else GraphedStep, "capture", captured)
    _, eager = _history(ragged_data, False)
    said = []
    _, history = _history(ragged_data, None, said)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in eager]
    (note,) = said
    assert "replaying the training" in note and "illegal memory access" in note


def test_asked_for_explicitly_a_failed_capture_is_an_error(ragged_data, graphs_on_the_cpu):
    with pytest.raises(UsageError, match=r"^--cuda-graphs: capturing the training epoch failed \(RuntimeError: "
                                         r"CUDA error: operation not permitted") as info:
        _history(ragged_data, True)
    assert "--no-cuda-graphs" in str(info.value)


def test_a_run_on_the_default_path_says_it_in_one_line_and_finishes(tiny_data, tmp_path, graphs_on_the_cpu):
    """The whole command: a default run prints the note once and exits 0; --cuda-graphs exits 2 in words."""
    args = ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "2", "--seed", "1",
            "--visualizer", "none", "--device", "cpu"]
    done = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "default")])
    assert done.exit_code == 0, done.output
    assert done.output.count("Note: CUDA graphs are off for this run: capturing the training epoch failed") == 1
    asked = CliRunner().invoke(cli, [*args, "--cuda-graphs", "--out", str(tmp_path / "asked")])
    assert asked.exit_code == 2 and "Traceback" not in asked.output
    assert "--cuda-graphs: capturing the training epoch failed" in asked.output


# --- one decision per run ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, used, note", [
    ([], True, "capturing the training epoch failed"),  # on by default; the capture fails and it trains eagerly
    (["--no-cuda-graphs"], False, None),
    (["--cuda-graphs"], True, None),  # asked for, the failed capture is an error
    ([], False, "the updater does not declare capturable = True"),  # the default cannot be honoured
], ids=["default", "off", "asked", "default-off"])
def test_a_run_decides_once_and_records_that_decision(tiny_data, tmp_path, graphs_on_the_cpu, monkeypatch,
                                                      flag, used, note):
    """The session decides (graphs.decide, once), config.toml records it, and the Trainer takes it as it
    is: nothing decides again, and the one note a run may print appears once."""
    asked = []

    def decide(requested, *args, **kwargs):
        asked.append(requested)
        if not used:
            return False, None if requested is False else graphs.off_note(note)
        return True, None

    monkeypatch.setattr(graphs, "decide", decide)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--epochs", "2", "--seed", "1", "--visualizer", "none", "--device", "cpu",
                                      *flag, "--out", str(out)])
    assert asked == [{"--cuda-graphs": True, "--no-cuda-graphs": False}.get(flag[0] if flag else "", None)]
    if flag == ["--cuda-graphs"]:
        assert result.exit_code == 2 and "--cuda-graphs: capturing the training epoch failed" in result.output
        return
    assert result.exit_code == 0, result.output
    assert f"cuda_graphs = {'true' if used else 'false'}" in (out / "config.toml").read_text()
    if note is None:
        assert "CUDA graphs" not in result.output
    else:
        assert result.output.count("Note: CUDA graphs are off for this run") == 1 and note in result.output


def test_a_decision_handed_to_the_trainer_is_not_taken_again(tiny_data, graphs_on_the_cpu, monkeypatch):
    asked = []
    monkeypatch.setattr(graphs, "decide", lambda requested, *a, **k: asked.append(requested) or (True, None))
    for decision in (True, False):
        trainer = Trainer(assemble_parts(tiny_data), device=CPU, epochs=1, cuda_graphs=decision, graphs_decided=True)
        assert trainer.cuda_graphs is decision and (trainer.epoch_graph is not None) is decision
    assert asked == []
    Trainer(assemble_parts(tiny_data), device=CPU, epochs=1)  # on its own, the Trainer decides
    assert asked == [None]
