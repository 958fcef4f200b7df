"""Plugin mistakes that used to pass in silence, as the command line reports them:
a misspelled keyword to `register()`, and a factory parameter named like a core
parameter its kind is not given. Also pluggy's own hook options and blocking."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import fmclf
from fmclf import kinds
from fmclf.cli import cli
from fmclf.host.loading import load_plugins

from test_plugins_loading import site  # noqa: F401 - the fixture

HLEP = """
    import fmclf

    @fmclf.hookimpl
    def register_models(register):
        register("typo-model", lambda *, num_inputs, num_classes: None, hlep="a model")

    @fmclf.hookimpl
    def register_losses(register):
        register("kept-loss", lambda: None, help="still here")
    """

LOOKALIKES = '''
    import fmclf

    @fmclf.hookimpl
    def register_updaters(register):
        register("sched", sched, help="an updater that wants the run's length")

    @fmclf.hookimpl
    def register_losses(register):
        register("placed", placed, help="a loss that wants the device")

    def sched(*, params, lr: float, model=None, epochs: int = 3, seed: int = 0, momentum: float = 0.0):
        """An updater that wants the run's length."""
        from fmclf_plugins.updaters import sgd
        return sgd(params=params, lr=lr)

    def placed(*, num_classes: int, device: str = "cpu"):
        from fmclf_plugins.losses import fused
        return fused()
    '''


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_an_unknown_register_keyword_fails_that_hook_naming_the_plugin_and_the_keyword_meant(site):  # noqa: F811
    site("fmclf-hlep", version="0.3", modules={"fmclf_hlep": HLEP})
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    warning = result.stderr
    assert "Warning: plugin 'fmclf_hlep' (fmclf-hlep 0.3, module fmclf_hlep) failed at hook register_models" in warning
    assert "unexpected keyword argument 'hlep' (did you mean 'help'?) for model 'typo-model'" in warning
    assert "register(name, factory, *, help=...)" in warning
    assert "FAILED at hook register_models" in result.stdout
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert "typo-model" not in listed
    assert "kept-loss" in listed  # the plugin's other hook still counts


def test_an_unknown_register_keyword_is_an_error_in_strict_mode(site):  # noqa: F811
    site("fmclf-hlep", version="0.3", modules={"fmclf_hlep": HLEP})
    result = invoke("plugins", env={"FMCLF_STRICT_PLUGINS": "1"})
    assert result.exit_code == 1
    assert "Error: strict plugin loading is on" in result.stderr
    assert "fmclf-hlep 0.3" in result.stderr and "'hlep' (did you mean 'help'?)" in result.stderr


def test_several_unknown_keywords_are_all_named(fmclf_plugin):
    class Plugin:
        @fmclf.hookimpl
        def register_losses(self, register):
            register("l", lambda: None, doc="x", hepl="y")

    fmclf_plugin(Plugin(), "kw", strict=False)
    result = invoke("plugins", "--json")
    (failure,) = json.loads(result.stdout)["failures"]
    assert failure["name"] == "kw" and failure["stage"] == "hook register_losses"
    assert "unexpected keyword arguments 'doc', 'hepl' (did you mean 'help'?)" in failure["error"]


def test_a_parameter_named_like_another_kinds_core_parameter_is_a_warning_naming_what_its_kind_gets(site):  # noqa: F811
    site("fmclf-look", version="0.5", modules={"fmclf_look": LOOKALIKES})
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    model, seed = (next(w for w in warnings if f"asks for {p!r}" in w) for p in ("model", "seed"))
    for w in (model, seed):
        assert "plugin 'fmclf_look' (fmclf-look 0.5): updater 'sched'" in w
        assert "an updater gets params, lr, epochs, steps_per_epoch." in w
    assert "which fmclf passes to no factory" in model and "-o updater.model=VALUE" in model
    assert "which fmclf passes only to a dataset" in seed
    device = next(w for w in warnings if "asks for 'device'" in w)
    assert "loss 'placed'" in device and "which fmclf passes only to a dataset" in device
    assert "a loss gets num_classes." in device
    assert not any("momentum" in w or "'lr'" in w for w in warnings)  # an ordinary option and its own core parameter
    assert "sched" in result.stdout and "placed" in result.stdout  # still usable
    notes = json.loads(invoke("plugins", "--json").stdout)["notes"]
    assert sum("asks for" in n for n in notes) == 3


def test_run_prints_the_same_warning_and_trains(site, tiny_data, tmp_path):  # noqa: F811
    site("fmclf-look", version="0.5", modules={"fmclf_look": LOOKALIKES})
    result = invoke("run", "--updater", "sched", "--loss", "placed", "--data-root", str(tiny_data),
                    "-o", "dataset.verify=false", "--epochs", "1", "--batch-size", "32", "--visualizer", "none",
                    "--device", "cpu", "--seed", "1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "updater 'sched' asks for 'seed'" in result.stderr and "loss 'placed' asks for 'device'" in result.stderr
    assert (tmp_path / "run" / "model.pt").exists()


def test_a_lookalike_that_becomes_a_core_parameter_of_its_kind_is_silent(site):  # noqa: F811
    """What issue 12 did for updaters (epochs, steps_per_epoch): one change in the kinds table."""
    site("fmclf-look", version="0.5", modules={"fmclf_look": LOOKALIKES})
    assert kinds.BY_NAME["updater"].core == ("params", "lr", "epochs", "steps_per_epoch")
    stderr = invoke("plugins").stderr
    assert "asks for 'epochs'" not in stderr
    assert "updater 'sched' asks for 'model'" in stderr
    assert "an updater gets params, lr, epochs, steps_per_epoch" in stderr


def test_pluggy_hook_options_mean_what_they_mean_to_pluggy():
    class Plugin:
        @fmclf.hookimpl(specname="register_models")
        def my_models(self, register):
            register("named-by-spec", lambda *, num_inputs, num_classes: None)

        @fmclf.hookimpl(optionalhook=True)
        def register_widgets(self, register):  # a hook this fmclf lacks (a later one's): skipped, not an error
            raise AssertionError("never called")

    host = load_plugins(autoload=False, extra=[("opts", Plugin())])
    assert not host.failures
    assert host.registry.get("model", "named-by-spec").plugin.name == "opts"


def test_p_no_blocks_an_in_process_plugin_too(fmclf_plugin):
    class Plugin:
        @fmclf.hookimpl
        def register_losses(self, register):
            register("blocked-loss", lambda: None)

    fmclf_plugin(Plugin(), "blockme")
    assert "blocked-loss" in invoke("plugins", "--kind", "loss").stdout
    result = invoke("-p", "no:blockme", "plugins", "--kind", "loss")
    assert result.exit_code == 0
    assert "blocked-loss" not in result.stdout and "blocks nothing" not in result.stderr


@pytest.mark.parametrize("plugin_object", ["namespace", "instance"])
def test_any_plugin_object_is_called_on_its_own(plugin_object):
    """A raising plugin costs only itself, whatever object it is (pluggy's subset callers need hashable ones)."""
    import types

    def good(register):
        register("from-good", lambda: None)

    def bad(register):
        raise RuntimeError("bad plugin")

    if plugin_object == "namespace":
        objs = [("good", types.SimpleNamespace(register_losses=fmclf.hookimpl(good))),
                ("bad", types.SimpleNamespace(register_losses=fmclf.hookimpl(bad)))]
    else:
        objs = [(name, type(name, (), {"register_losses": staticmethod(fmclf.hookimpl(f))})())
                for name, f in (("good", good), ("bad", bad))]
    host = load_plugins(autoload=False, extra=objs)
    assert "from-good" in {r.name for r in host.registry.list("loss")}
    (failure,) = host.failures
    assert failure.plugin.name == "bad" and "RuntimeError: bad plugin" in failure.error
