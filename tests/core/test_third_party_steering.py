"""The acceptance test of metrics, callbacks and schedules: a third-party package written from
DESIGN.md alone (a callback that stops at epoch N, a top-k metric, a cosine updater that asks for
epochs and steps_per_epoch, and a torchmetrics.Metric as it is), installed as a distribution and
run end to end through the command line."""

from __future__ import annotations

import json
import math
import re

from click.testing import CliRunner

from fmclf.cli import cli

from test_plugins_loading import site  # noqa: F401 - the fixture

STEER = '''
    import fmclf


    @fmclf.hookimpl
    def register_callbacks(register):
        register("stop-at", stop_at, help="stops the run after epoch N")


    @fmclf.hookimpl
    def register_metrics(register):
        register("top-k", top_k, help="the true class among the k largest logits")
        register("tm-top3", tm_top3, help="torchmetrics' top-3 accuracy, as it is")
        register("spread", spread, help="two numbers at once")


    @fmclf.hookimpl
    def register_updaters(register):
        register("cosine", cosine, help="SGD with a cosine schedule over the whole run")


    def stop_at(*, run_dir, epoch: int = 2):
        """Options:
            epoch: the last epoch to train
        """
        class StopAt:
            def on_epoch_end(self, event):
                if event.epoch >= epoch:
                    event.control.stop(f"epoch {epoch} reached")

        return StopAt()


    def top_k(*, num_classes: int, k: int = 3):
        """Options:
            k: how many of the largest logits count
        """
        class TopK:
            def reset(self):
                self.hits, self.seen = 0, 0

            def update(self, logits, y):
                top = logits.topk(min(k, num_classes), dim=1).indices
                self.hits += int((top == y.unsqueeze(1)).any(dim=1).sum())
                self.seen += len(y)

            def compute(self):
                return self.hits / max(self.seen, 1)

        metric = TopK()
        metric.reset()
        return metric


    def tm_top3(*, num_classes: int):
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(num_classes=num_classes, top_k=3, average="micro")


    def spread(*, num_classes: int):
        import torch

        class Spread:
            def reset(self):
                self.values = []

            def update(self, logits, y):
                self.values.append(logits.max(dim=1).values - logits.min(dim=1).values)

            def compute(self):
                v = torch.cat(self.values)
                return {"mean": v.mean(), "max": float(v.max())}

        return Spread()


    def cosine(*, params, lr: float, epochs: int, steps_per_epoch: int):
        import torch

        optimizer = torch.optim.SGD(params, lr=lr)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    '''


def test_a_package_written_from_the_design_note_steers_a_run(site, tiny_data, tmp_path):  # noqa: F811
    site("fmclf-steer", version="1.0", modules={"fmclf_steer": STEER})
    out = tmp_path / "run"
    # The example package registers a top-k metric too: blocked, so the plain name is this package's.
    result = CliRunner().invoke(cli, [
        "-p", "no:example", "run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--batch-size", "16",
        "--epochs", "5", "--seed", "3", "--device", "cpu", "--visualizer", "none", "--out", str(out),
        "--callback", "stop-at", "-o", "callback.stop-at.epoch=3", "--metric", "top-k", "--metric", "tm-top3",
        "--metric", "spread", "--updater", "cosine", "--lr", "0.5",
    ])
    assert result.exit_code == 0, result.output
    assert "asks for" not in result.stderr  # epochs and steps_per_epoch are an updater's core parameters now
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # stopped cleanly at N = 3 of 5
    for row in rows:  # the metric every epoch; a torchmetrics.Metric unchanged agrees with the hand-written one
        assert 0 < row["test_top-k"] <= 1 and math.isclose(row["test_top-k"], row["test_tm-top3"], abs_tol=1e-6)
        assert row["test_spread_max"] >= row["test_spread_mean"] > 0
        assert row["test_top-k"] >= row["test_acc"]
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < 0.5 and lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]  # logged, and falling
    # the schedule spans the whole run it was told of: 5 epochs of 6 batches, stopped after 18 steps
    assert math.isclose(lrs[-1], 0.25 * (1 + math.cos(math.pi * 17 / 30)), rel_tol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == {"by": "callback 'stop-at' (fmclf-steer 1.0)", "reason": "epoch 3 reached", "epoch": 3}
    assert (out / "model.pt").exists() and "Stopped after epoch 3 of 5" in (out / "report.md").read_text()
    assert "stopped after epoch 3 by callback 'stop-at' (fmclf-steer 1.0): epoch 3 reached" in result.output
    listed = CliRunner().invoke(cli, ["-p", "no:example", "plugins", "--kind", "metric"]).output
    assert "top-k" in listed and re.search(r"\n +k +int = 3\n", listed)
