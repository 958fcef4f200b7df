"""A plugin cannot break the others: one registering a built-in's name leaves plain `fmclf run` and every run
folder as they were (config.toml records qualified names; the built-in keeps the plain one), and one that
raises KeyboardInterrupt at import, in a hook or in a component is that plugin's failure, not an interrupt
of every command."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from click.testing import CliRunner

from fmclf.cli import cli

from plugin_dists import make_dist
from test_plugins_loading import site  # noqa: F401 - the fixture

TINY = ["-o", "dataset.verify=false", "--epochs", "1", "--batch-size", "32", "--visualizer", "none", "--seed", "2",
        "--device", "cpu"]

SHADOW = '''
import fmclf

@fmclf.hookimpl
def register_models(register):
    register("scratch", build, help="not the textbook's")

@fmclf.hookimpl
def register_losses(register):
    register("fused", lambda: None, help="not the fused cross-entropy")

def build(*, num_inputs: int, num_classes: int):
    raise RuntimeError("the impostor was built")
'''


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_a_plugin_registering_a_builtin_name_breaks_neither_plain_runs_nor_old_folders(site,  # noqa: F811
                                                                                       tiny_data, tmp_path):
    before = tmp_path / "before"
    assert invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(before)).exit_code == 0
    config = (before / "config.toml").read_text()
    assert 'model = "fmclf:scratch"' in config and 'loss = "fmclf:fused"' in config
    old_style = tmp_path / "old-style"  # a folder from before config.toml recorded qualified names
    assert invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(old_style)).exit_code == 0
    text = (old_style / "config.toml").read_text().replace('"fmclf:scratch"', '"scratch"', 1)
    (old_style / "config.toml").write_text(text.replace('loss = "fmclf:fused"', 'loss = "fused"'))

    site("fmclf-shadow", modules={"fmclf_shadow": SHADOW})
    plain = invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(tmp_path / "after"))
    assert plain.exit_code == 0, plain.output
    assert "training scratch + fused + sgd" in plain.output
    assert ("Warning: plugin 'fmclf_shadow' (fmclf-shadow 1.0) registers model 'scratch', the name of a built-in; "
            "the plain name 'scratch' stays the built-in's") in plain.stderr
    assert "Select the plugin's with `--model fmclf-shadow:scratch`" in plain.stderr
    for folder in (before, old_style):
        resumed = invoke("run", "--resume", str(folder), "--epochs", "2")
        assert resumed.exit_code == 0, resumed.output
        assert "epoch 2/2" in resumed.output
    picked = invoke("run", "--data-root", str(tiny_data), *TINY, "--model", "fmclf-shadow:scratch",
                    "--out", str(tmp_path / "theirs"))
    assert picked.exit_code == 1 and "the impostor was built" in picked.stderr
    listing = invoke("plugins", "--kind", "model").output
    assert "fmclf-shadow:scratch" in listing


def test_an_old_folder_resumes_the_plugin_component_it_was_trained_with(site, tiny_data, tmp_path):  # noqa: F811
    """config.toml with a plain name the provenance records as fmclf-example's: a plugin installed later
    that registers the same name does not make the resume ambiguous."""
    run = tmp_path / "run"
    assert invoke("run", "--data-root", str(tiny_data), *TINY, "--model", "mlp", "-o", "model.hidden=8",
                  "--out", str(run)).exit_code == 0
    text = (run / "config.toml").read_text()
    assert 'model = "fmclf-example:mlp"' in text and '"fmclf-example:mlp 0.1.0"' in text
    (run / "config.toml").write_text(text.replace('model = "fmclf-example:mlp"', 'model = "mlp"'))
    site("fmclf-rival", modules={"fmclf_rival": SHADOW.replace('"scratch"', '"mlp"')})
    assert invoke("run", "--model", "mlp", "--out", str(tmp_path / "x")).exit_code == 2  # ambiguous when typed
    resumed = invoke("run", "--resume", str(run), "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output


INTERRUPTING = '''
import fmclf
raise KeyboardInterrupt("the plugin asked for input at import and got none")
'''

HOOK_INTERRUPTING = '''
import fmclf

@fmclf.hookimpl
def register_models(register):
    raise KeyboardInterrupt
'''


def test_a_plugin_raising_keyboardinterrupt_at_import_is_that_plugins_failure(tmp_path, tiny_data):
    root = make_dist(tmp_path / "site", "fmclf-rude", modules={"fmclf_rude": INTERRUPTING})
    make_dist(root, "fmclf-rude-hook", modules={"fmclf_rude_hook": HOOK_INTERRUPTING})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    listing = subprocess.run([str(exe), "plugins"], capture_output=True, text=True, env=env, timeout=300)
    assert listing.returncode == 0, listing.stderr
    assert "plugin 'fmclf_rude' (fmclf-rude 1.0, module fmclf_rude) failed at import: KeyboardInterrupt" \
        in listing.stderr
    assert "failed at hook register_models: KeyboardInterrupt" in listing.stderr
    assert "Interrupted" not in listing.stderr and "scratch" in listing.stdout
    run = subprocess.run([str(exe), "run", "--data-root", str(tiny_data), *TINY, "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "model.pt").exists()


def test_a_component_raising_keyboardinterrupt_is_that_components_fault(fmclf_plugin, tiny_data, tmp_path):
    import types

    import fmclf

    def rude(*, num_inputs: int, num_classes: int):
        import torch

        class Rude(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(num_inputs, num_classes)

            def forward(self, X):
                raise KeyboardInterrupt("a debugging leftover")

        return Rude()

    fmclf_plugin(types.SimpleNamespace(register_models=fmclf.hookimpl(lambda register: register("rude", rude))),
                 name="rude-plugin")
    result = invoke("run", "--data-root", str(tiny_data), *TINY, "--model", "rude", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1, result.output
    assert "model 'rude' (plugin 'rude-plugin') raised KeyboardInterrupt on batch 1 of epoch 1" in result.stderr
    assert "Stopped" not in result.stderr and "Interrupted" not in result.stderr
