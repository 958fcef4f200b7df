"""Loading plugins from real (tiny) installed distributions: failures stay local,
collisions are explicit, autoload and -p control what loads."""

from __future__ import annotations

import importlib
import sys

import pytest

import fmclf
from fmclf.errors import AmbiguousComponentError, PluginError, UnknownComponentError
from fmclf.host.loading import load_plugins

from plugin_dists import make_dist, model_plugin

BUILTIN_MODELS = {"scratch", "nn"}


@pytest.fixture(scope="module")
def installed():
    """Model names the environment provides already (the built-ins, and the
    example plugin where it is installed)."""
    return names(load_plugins())


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path to install fake distributions into; returns ``install(dist, ...)``.
    Modules imported from it are forgotten afterwards, so names can repeat across tests."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)

    def install(dist: str, **kwargs):
        make_dist(root, dist, **kwargs)
        importlib.invalidate_caches()
        return root

    yield install
    for name in set(sys.modules) - before:
        if str(root) in str(getattr(sys.modules[name], "__file__", "") or ""):
            del sys.modules[name]


def names(host, kind="model"):
    return {r.name for r in host.registry.list(kind)}


def test_a_plugin_that_fails_to_import_is_a_warning_naming_it_and_the_rest_works(site, installed):
    site("fmclf-broken", version="2.3", modules={"fmclf_broken": "import fmclf\nimport no_such_module_xyz\n"})
    site("fmclf-good", modules={"fmclf_good": model_plugin("good")})
    host = load_plugins()
    assert names(host) == installed | {"good"}
    (failure,) = host.failures
    message = failure.message()
    assert failure.stage == "import"
    for part in ("fmclf-broken 2.3", "fmclf_broken", "ModuleNotFoundError", "no_such_module_xyz", "-p no:fmclf_broken"):
        assert part in message


def test_a_plugin_that_exits_at_import_does_not_end_the_process(site, installed):
    site("fmclf-exits", modules={"fmclf_exits": "raise SystemExit(3)\n"})
    host = load_plugins()
    assert [f.plugin.dist for f in host.failures] == ["fmclf-exits"]
    assert "SystemExit" in host.failures[0].error
    assert names(host) == installed


def test_strict_mode_turns_a_failing_plugin_into_an_error(site, monkeypatch):
    site("fmclf-broken", version="2.3", modules={"fmclf_broken": "raise ImportError('needs libfoo')\n"})
    monkeypatch.setenv("FMCLF_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"fmclf-broken 2\.3.*ImportError: needs libfoo"):
        load_plugins()


def test_a_raising_hook_costs_only_what_that_hook_registers(site):
    site("fmclf-half", version="0.4", modules={"fmclf_half": """
        import fmclf

        @fmclf.hookimpl
        def register_models(register):
            register("half-model", lambda *, num_inputs, num_classes: None)
            raise KeyError("oops")

        @fmclf.hookimpl
        def register_losses(register):
            register("half-loss", lambda: None)
        """})
    host = load_plugins()
    assert "half-loss" in names(host, "loss")
    assert "half-model" not in names(host)  # registered before the raise: dropped with its hook
    (failure,) = host.failures
    assert failure.stage == "hook register_models"
    assert "fmclf-half 0.4" in failure.message() and "KeyError: 'oops'" in failure.message()
    assert "the components that hook registers are not available" in failure.message()


def test_a_collision_makes_only_that_name_ambiguous(site):
    site("fmclf-a", modules={"fmclf_a": model_plugin("mlp")})
    site("fmclf-b", version="2.0",
         modules={"fmclf_b": model_plugin("mlp") + "\n        @fmclf.hookimpl\n"
                                                   "        def register_losses(register):\n"
                                                   "            register('only-b', lambda: None)\n"})
    host = load_plugins()
    with pytest.raises(AmbiguousComponentError) as caught:
        host.registry.get("model", "mlp")
    message = str(caught.value)
    for part in ("fmclf-a 1.0", "fmclf-b 2.0", "'fmclf-a:mlp'", "'fmclf-b:mlp'", "-p no:"):
        assert part in message
    assert host.registry.get("model", "fmclf-a:mlp").plugin.dist == "fmclf-a"
    assert host.registry.get("model", "FMCLF_B:mlp").plugin.dist == "fmclf-b"  # compared as pip compares names
    assert host.registry.get("loss", "only-b").plugin.dist == "fmclf-b"
    assert host.registry.get("model", "scratch").plugin.builtin
    assert {"fmclf-a:mlp", "fmclf-b:mlp"} <= set(host.registry.names("model"))
    with pytest.raises(UnknownComponentError, match="no plugin named 'fmclf-c' registers model 'mlp'.*'fmclf-a:mlp'"):
        host.registry.get("model", "fmclf-c:mlp")
    assert not host.failures


def test_two_distributions_may_use_the_same_entry_point_name(site):
    site("fmclf-one", modules={"fmclf_one": model_plugin("dup")}, entry_points={"plugin": "fmclf_one"})
    site("fmclf-two", modules={"fmclf_two": model_plugin("dup")}, entry_points={"plugin": "fmclf_two"})
    host = load_plugins()
    assert not host.failures
    assert {"fmclf-one", "fmclf-two"} <= {p.info.dist for p in host.plugins}
    assert {"fmclf-one:dup", "fmclf-two:dup"} <= set(host.registry.names("model"))
    assert "dup" not in host.registry.names("model")


def test_autoload_off_loads_the_builtins_and_what_p_names(site, monkeypatch):
    site("fmclf-good", modules={"fmclf_good": model_plugin("good")})
    monkeypatch.setenv("FMCLF_DISABLE_PLUGIN_AUTOLOAD", "1")
    host = load_plugins()
    assert names(host) == BUILTIN_MODELS and names(host, "loss") == {"fused", "naive"}
    assert names(load_plugins(include=["fmclf-good"])) == BUILTIN_MODELS | {"good"}  # by distribution
    assert names(load_plugins(include=["fmclf_good"])) == BUILTIN_MODELS | {"good"}  # by entry-point name


def test_block_keeps_a_plugin_out_and_says_when_it_blocks_nothing(site, installed):
    site("fmclf-good", modules={"fmclf_good": model_plugin("good")})
    assert names(load_plugins(block=["fmclf-good"])) == installed
    host = load_plugins(block=["fmclf-godo"])
    assert "good" in names(host)
    assert any("blocks nothing" in n and "Did you mean 'fmclf-good'?" in n for n in host.notes)


def test_p_imports_a_module_that_is_no_entry_point_and_names_unknown_ones(site, tmp_path):
    root = site("fmclf-other", modules={"fmclf_other": model_plugin("other")})
    (root / "loose_plugin.py").write_text(model_plugin("loose").replace("\n        ", "\n"))
    host = load_plugins(autoload=False, include=["loose_plugin", "fmclf-othre"])
    assert "loose" in names(host) and "other" not in names(host)
    (failure,) = host.failures
    assert "no installed plugin or importable module is named 'fmclf-othre'" in failure.message()
    assert "Did you mean 'fmclf-other'?" in failure.message()


def test_a_misspelled_hook_is_reported_naming_the_plugin(site):
    site("fmclf-typo", version="0.2", modules={"fmclf_typo": """
        import fmclf

        @fmclf.hookimpl
        def register_model(register):
            register("never", lambda *, num_inputs, num_classes: None)
        """})
    host = load_plugins()
    (failure,) = host.failures
    assert failure.plugin.dist == "fmclf-typo"
    assert "'register_model' names no fmclf hook (did you mean 'register_models'?)" in failure.message()
    assert "fmclf-typo 0.2" in failure.message()


@pytest.mark.parametrize(("signature", "why"), [
    ("registr", "it asks for 'registr' (did you mean 'register'?), and the hook passes only 'register'"),
    ("register, device", "it asks for 'device'"),
    ("*, register", "'register' is keyword-only"),
])
def test_a_hook_with_the_wrong_signature_is_reported_naming_the_plugin(site, signature, why):
    site("fmclf-sig", modules={"fmclf_sig": f"""
        import fmclf

        @fmclf.hookimpl
        def register_losses({signature}):
            pass
        """})
    (failure,) = load_plugins().failures
    assert failure.plugin.dist == "fmclf-sig" and failure.stage == "registration"
    assert f"register_losses({signature}) does not match the hook register_losses(register)" in failure.message()
    assert why in failure.message()


def test_a_hook_without_the_decorator_is_a_note(site):
    site("fmclf-plain", modules={"fmclf_plain": "def register_models(register):\n    register('x', print)\n"})
    host = load_plugins()
    assert not host.failures
    assert any("register_models without @fmclf.hookimpl" in n and "fmclf-plain" in n for n in host.notes)


def test_bad_registrations_fail_their_hook_with_the_reason(site):
    site("fmclf-badreg", modules={"fmclf_badreg": """
        import fmclf, os

        @fmclf.hookimpl
        def register_models(register):
            register("two words", lambda: None)

        @fmclf.hookimpl
        def register_losses(register):
            register("os", os)
        """})
    errors = {f.stage: f.error for f in load_plugins().failures}
    assert "component names are non-empty strings" in errors["hook register_models"]
    assert "is the module os" in errors["hook register_losses"]


def test_builtins_load_first_and_components_know_their_plugin(site):
    site("fmclf-good", version="3.1", modules={"fmclf_good": model_plugin("good")})
    host = load_plugins()
    assert [p.info.builtin for p in host.plugins] == sorted((p.info.builtin for p in host.plugins), reverse=True)
    record = host.registry.get("model", "good")
    assert (record.plugin.dist, record.plugin.version, record.plugin.module) == ("fmclf-good", "3.1", "fmclf_good")
    assert record.help == "a test model"


def test_extra_plugin_objects_register_like_installed_ones():
    class Plugin:
        @fmclf.hookimpl
        def register_updaters(self, register):
            register("noop", lambda *, params, lr: None)

    host = load_plugins(extra=[("mine", Plugin())])
    record = host.registry.get("updater", "noop")
    assert record.plugin.name == "mine" and record.plugin.dist is None
    # given once, as any iterable: blocking another plugin does not use it up before it is registered
    host = load_plugins(extra=(pair for pair in [("mine", Plugin())]), block=["nothing-by-that-name"])
    assert host.registry.get("updater", "noop").plugin.name == "mine"


def test_two_in_process_plugins_alike_in_name_and_module_are_a_named_failure_not_a_traceback():
    import types

    def plugin():
        module = types.ModuleType("sameplug")

        @fmclf.hookimpl
        def register_models(register):
            register("dup", lambda: None)

        module.register_models = register_models
        return module

    host = load_plugins(extra=[("mine", plugin()), ("mine", plugin())])
    assert host.registry.get("model", "dup").plugin.name == "mine"  # the first one's
    assert any("plugin 'mine'" in w and "registered twice" in w for w in host.warnings())
