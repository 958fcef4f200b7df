"""Plugin mistakes that used to pass in silence, as the command line reports them:
a misspelled keyword to `register()`, and a factory parameter named like a core
parameter its kind is not given. Also pluggy's own hook options and blocking."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import fmclf
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
        objs = [(name, type(name, (), {"register_losses": staticmethod(fmclf.hookimpl(f))})()) for name, f in (("good", good), ("bad", bad))]
    host = load_plugins(autoload=False, extra=objs)
    assert "from-good" in {r.name for r in host.registry.list("loss")}
    (failure,) = host.failures
    assert failure.plugin.name == "bad" and "RuntimeError: bad plugin" in failure.error
