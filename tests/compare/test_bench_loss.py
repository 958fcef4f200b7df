"""fmclf bench loss: a third-party loss beside the built-ins, the reference each is held
to, speed through pytest-benchmark, the tables it writes, and what it needs installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.compare import bench, stress

from helpers import run_fmclf
from plugin_dists import make_dist

LOSSES = '''
    import fmclf

    @fmclf.hookimpl
    def register_losses(register):
        register("focal", focal, help="focal loss: not a cross-entropy, so held to finiteness only")
        register("ce-copy", ce_copy, help="cross-entropy by log_softmax: measured against cross-entropy")
        register("smooth-ref", smooth, help="label smoothing with its own float64 reference")
        register("needs-k", needs_k, help="a loss with a required option")

    def focal(*, gamma: float = 2.0):
        import torch

        def loss(logits, y):
            logp = torch.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
            return -((1 - logp.exp()) ** gamma) * logp
        return loss

    def ce_copy():
        import torch
        return lambda logits, y: -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)

    def smooth(*, eps: float = 0.1):
        import torch
        import torch.nn.functional as F

        class Smooth:
            def __call__(self, logits, y):
                return F.cross_entropy(logits, y, reduction="none", label_smoothing=eps)

            def reference(self, logits, y):
                logp = torch.log_softmax(logits, dim=1)
                return -(1 - eps) * logp.gather(1, y[:, None]).squeeze(1) - eps / logits.shape[1] * logp.sum(1)
        return Smooth()

    def needs_k(*, k: int):
        raise RuntimeError("not built without k")
'''


@pytest.fixture
def third_party(tmp_path):
    """An installed distribution, fmclf-focal, with four losses."""
    root = make_dist(tmp_path / "site", "fmclf-focal", version="2.1", modules={"fmclf_focal": LOSSES})
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def test_a_third_party_loss_is_benched_beside_the_builtins(third_party):
    proc = run_fmclf("bench", "loss", "fused", "naive", "focal", "ce-copy", "smooth-ref", "--json",
                     "--max-time", "0.02", "--min-rounds", "2", "--threads", "1", env=third_party)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    losses = {entry["name"]: entry for entry in doc["losses"]}
    assert list(losses) == ["F.cross_entropy", "fused", "naive", "focal", "ce-copy", "smooth-ref"]
    assert "fmclf-focal 2.1" in losses["focal"]["describe"]
    cases = len(stress.grid())
    refs = {name: {c["reference"] for c in entry["cases"]} for name, entry in losses.items()}
    assert refs == {"F.cross_entropy": {"cross-entropy"}, "fused": {"cross-entropy"}, "naive": {"cross-entropy"},
                    "focal": {"none"}, "ce-copy": {"cross-entropy"}, "smooth-ref": {"own"}}
    for entry in losses.values():
        assert len(entry["cases"]) == cases and entry["stability"]["cases"] == cases
        assert set(entry["speed"]) == {"256x10", "4096x10", "4096x1000"}
        assert all(t["min"] > 0 and t["rounds"] >= 2 for t in entry["speed"].values())
    # the ratio is measured in the same run: each loss's fastest round over torch's
    for shape, t in losses["fused"]["speed"].items():
        assert t["vs_torch"] == pytest.approx(t["min"] / losses["F.cross_entropy"]["speed"][shape]["min"], rel=1e-3)
    assert (losses["fused"]["stability"]["loss_nonfinite_cases"] == 0
            and losses["fused"]["stability"]["max_loss_ulps"] <= 32)
    assert losses["naive"]["stability"]["loss_nonfinite_cases"] > 20
    overflow = next(c for c in losses["naive"]["cases"] if (c["case"], c["dtype"]) == ("overflow", "float32"))
    assert overflow["loss_nan"] == overflow["rows"] == 37 and overflow["loss_ulps"] is None
    assert all(c["loss_ulps"] is None for c in losses["focal"]["cases"])  # finiteness only, said so
    assert losses["focal"]["stability"]["loss_nonfinite_cases"] == 0
    assert losses["ce-copy"]["stability"]["max_loss_ulps"] is not None


def test_every_installed_loss_by_default_leaves_out_those_that_need_options(third_party, monkeypatch):
    monkeypatch.syspath_prepend(third_party["PYTHONPATH"].split(os.pathsep)[0])  # installed, as pip would
    from fmclf.host.loading import load_plugins

    names = [c.name for c in bench.contenders(load_plugins(), [])]
    # not needs-k
    assert names[0] == bench.BASELINE and sorted(names[1:]) == ["ce-copy", "focal", "fused", "naive", "smooth-ref"]
    with pytest.raises(Exception, match="needs option 'k'"):
        bench.contenders(load_plugins(), ["needs-k"])


def test_unknown_loss_and_bad_shapes_exit_2():
    runner = CliRunner()
    unknown = runner.invoke(cli, ["bench", "loss", "fsued", "--no-speed"])
    assert unknown.exit_code == 2 and "unknown loss 'fsued' — did you mean 'fused'?" in unknown.output
    shapes = runner.invoke(cli, ["bench", "loss", "fused", "--shapes", "12by4"])
    assert shapes.exit_code == 2 and "--shapes '12by4': write ROWSxCLASSES" in shapes.output
    nothing = runner.invoke(cli, ["bench", "loss", "--no-speed", "--no-stability"])
    assert nothing.exit_code == 2 and "leave nothing to measure" in nothing.output


def test_without_pytest_benchmark_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytest_benchmark", None)  # as if it were not installed
    result = CliRunner().invoke(cli, ["bench", "loss", "fused"])
    assert result.exit_code == 2
    assert "pytest-benchmark is not installed" in result.output and "pip install 'fmclf[bench]'" in result.output
    assert "--no-speed" in result.output and "Traceback" not in result.output
    alone = CliRunner().invoke(cli, ["bench", "loss", "fused", "--no-speed"])
    assert alone.exit_code == 0, alone.output


def test_update_rewrites_only_the_marked_tables(tmp_path):
    doc = tmp_path / "doc.md"
    start, end = "<!-- fmclf bench loss: summary -->", "<!-- end of fmclf bench loss: summary -->"
    doc.write_text(f"# Mine\n\nkeep this\n\n{start}\nold table\n{end}\n\nand this\n")
    result = CliRunner().invoke(cli, ["bench", "loss", "naive", "--no-speed", "--update", str(doc)])
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert ("old table" not in text and text.startswith("# Mine\n\nkeep this\n\n" + start)
            and text.endswith(end + "\n\nand this\n"))
    assert ("| naive | cross-entropy | 32 of 58 |" in text and "| F.cross_entropy | cross-entropy | 0 of 58 |" in text
            and f"Produced by `fmclf bench loss naive --no-speed --update {doc}`" in text)
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    refused = CliRunner().invoke(cli, ["bench", "loss", "fused", "--no-stability", "--update", str(plain)])
    assert refused.exit_code == 2 and "has no table markers" in refused.output


def test_the_published_stability_table_is_what_the_command_measures():
    """docs/stability.md's cells where a loss goes inf or nan are those the grid gives now."""
    import pathlib

    text = (pathlib.Path(__file__).parents[2] / "docs" / "stability.md").read_text(encoding="utf-8")
    published = bench.published_failures(text)
    report = bench.BenchReport(bench.contenders(__import__("fmclf.host.loading", fromlist=["x"]).load_plugins(),
                                                ["naive", "fused"]))
    report.stability = bench.stability(report.contenders)
    measured = bench.published_failures("\n".join(["<!-- fmclf bench loss: cases -->",
                                                   bench.markdown_table(bench.case_rows(report)),
                                                   "<!-- end of fmclf bench loss: cases -->"]))
    assert measured and published == measured, ("run `fmclf bench loss naive fused --no-speed "
                                                "--update docs/stability.md`")


def test_help_does_not_import_torch_or_pytest():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from fmclf.cli import cli\n"
        "for args in (['--help'], ['compare', '--help'], ['bench', '--help'], ['bench', 'loss', '--help']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "print(','.join(sorted(m for m in ('torch', 'pytest', 'pytest_benchmark', 'matplotlib')"
        " if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


# --- what fmclf run refuses, bench loss refuses; a reference is checked too (issue 25, classes 2 and 8) ---

def _bench(*args: str):
    return CliRunner().invoke(cli, ["-p", "chaos_plugin", "bench", "loss", *args, "--no-speed"])


@pytest.mark.parametrize("name,raised", [("exit-loss", "SystemExit"), ("quit-loss", "Abandon")])
def test_a_loss_that_raises_a_base_exception_is_blamed_with_exit_1(name, raised):
    result = _bench(name)
    assert result.exit_code == 1, result.output
    assert f"Error: loss '{name}' (plugin 'chaos_plugin') raised {raised}" in result.stderr
    assert "Traceback" not in result.output


def test_a_loss_of_shape_n_by_3_is_refused_as_run_refuses_it():
    result = _bench("wide")
    assert result.exit_code == 1, result.output
    assert "Error: loss 'wide' (plugin 'chaos_plugin') returned shape (" in result.stderr
    assert ", 3) for a batch of" in result.stderr and "0 of 58" not in result.output
    assert "`fmclf run` refuses such a loss" in result.stderr


def test_a_reference_of_the_wrong_shape_is_said_to_be_malformed():
    result = _bench("bad-ref", "--json")
    assert result.exit_code == 1, result.output
    assert "the reference of loss 'bad-ref' (plugin 'chaos_plugin') is malformed" in result.stderr
    assert "e+17" not in result.output and "e17" not in result.output


def test_a_reference_that_raises_is_named_without_a_traceback():
    result = _bench("raising-ref")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: the reference of loss 'raising-ref' (plugin 'chaos_plugin') raised "
                                    "ValueError on stress case"), result.stderr
    assert "Traceback" not in result.output


def test_cases_where_the_reference_is_not_finite_are_named():
    result = _bench("nan-ref")
    assert result.exit_code == 0, result.output
    assert "Note: the reference of loss 'nan-ref' (plugin 'chaos_plugin') is itself inf or nan on" in result.output
    doc = json.loads(_bench("nan-ref", "--json").stdout)
    mine = next(entry for entry in doc["losses"] if entry["name"] == "nan-ref")
    assert mine["stability"]["reference_nonfinite_cases"] > 0
    assert any(not case["reference_finite"] for case in mine["cases"])


def test_the_built_in_losses_have_no_reference_notes():
    result = CliRunner().invoke(cli, ["bench", "loss", "fused", "naive", "--no-speed"])
    assert result.exit_code == 0, result.output
    assert "Note: the reference" not in result.output
