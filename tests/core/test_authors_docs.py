"""What a plugin author and a newcomer read is true: docs/plugins.md's focal loss passes fmclf's own
check_loss (and its reference is finite on every stress case), check_loss says briefly why a gradient
fails, check_plugin returns what it checked, and the command line's hints fit what is installed."""

from __future__ import annotations

import pathlib
import re
import types

import pytest
import torch
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli
from fmclf.testing import ContractError, check_loss, check_plugin, stress_loss

ROOT = pathlib.Path(__file__).parents[2]


def _focal_module() -> types.ModuleType:
    text = (ROOT / "docs" / "plugins.md").read_text()
    block = text.split("<!-- docs-test: file fmclf-focal/fmclf_focal/__init__.py -->\n```python\n", 1)[1]
    module = types.ModuleType("focal_from_the_docs")
    exec(block.split("```", 1)[0], module.__dict__)  # noqa: S102 - the docs' own example
    return module


def test_the_focal_loss_of_the_docs_passes_check_loss_and_its_reference_is_finite():
    focal = _focal_module()
    check_loss(focal.focal)
    results = stress_loss(focal.focal().reference)
    assert results and not [r for r in results if r.loss_inf or r.loss_nan or r.grad_inf or r.grad_nan]


def test_a_loss_that_downcasts_is_told_so_not_blamed_for_its_gradient():
    def downcast(logits, y):
        return torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")

    with pytest.raises(ContractError, match=r"for float64 logits it returned torch.float32: it computes in another "
                                            r"precision .* Keep the logits' dtype"):
        check_loss(lambda: downcast)


def test_a_wrong_gradient_is_one_short_sentence():
    def detached_target(logits, y):  # its value is cross-entropy, its gradient lacks the target's -1
        return logits.logsumexp(1) - logits.detach().gather(1, y[:, None]).squeeze(1)

    with pytest.raises(ContractError) as err:
        check_loss(lambda: detached_target)
    text = str(err.value)
    assert re.search(r"the largest difference is at example \d, class \d: autograd gives -?[\d.e-]+, finite "
                     r"differences -?[\d.e-]+", text)
    assert len(text) < 500 and "\n" not in text and "numerical:" not in text


def test_check_plugin_returns_only_what_it_checked():
    class Two:
        @fmclf.hookimpl
        def register_models(self, register):
            register("two-linear", lambda *, num_inputs, num_classes: torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(num_inputs, num_classes)))

        @fmclf.hookimpl
        def register_datasets(self, register):
            register("two-files", lambda *, batch_size, device: None)

    assert [r.name for r in check_plugin(Two(), name="two", skip=("dataset",))] == ["two-linear"]


def test_an_unknown_option_names_the_installed_components_that_have_it():
    result = CliRunner().invoke(cli, ["run", "--dry-run", "-o", "updater.momentum=0.9"])
    assert result.exit_code == 2
    assert "'momentum' is an option of updater 'torch-sgd'" in result.output
    assert "Updater 'sgd' itself has no options." in result.output
    nowhere = CliRunner().invoke(cli, ["run", "--dry-run", "-o", "updater.flux=0.9"])
    assert "No installed updater has an option 'flux'." in nowhere.output


def test_the_dry_run_says_nothing_of_python_objects_and_the_help_example_fits_a_built_in():
    dry = CliRunner().invoke(cli, ["run", "--dry-run"])
    assert dry.exit_code == 0 and "from_python" not in dry.output
    helped = CliRunner().invoke(cli, ["run", "--help"])
    example = re.search(r"e\.g\. -o (\S+)=(\S+?),", " ".join(helped.output.split()))
    assert example, helped.output
    target, value = example.groups()
    tried = CliRunner().invoke(cli, ["run", "--dry-run", "-o", f"{target}={value}"])
    assert tried.exit_code == 0, tried.output  # the example works with the default components


def test_show_without_out_says_where_it_wrote(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["show", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "-n", "2"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "fashion-mnist-train.png"
    assert written.is_file()
    assert f"wrote {written} (in the current folder; --out chooses another place)" in result.output
