"""The registry: listing, unknown names with suggestions, ownership, collisions."""

from __future__ import annotations

import pytest

import fmclf
from fmclf.errors import AmbiguousComponentError, UnknownComponentError
from fmclf.host.loading import load_plugins
from fmclf.host.registry import ComponentRecord, PluginInfo, Registry

BUILTINS = {
    "dataset": {"fashion-mnist"},
    "model": {"scratch", "nn"},
    "loss": {"naive", "fused"},
    "updater": {"sgd", "torch-sgd"},
    "visualizer": {"tqdm", "animator", "none"},
}


def test_every_builtin_is_registered_through_the_entry_point_group():
    host = load_plugins(autoload=False)
    for kind, names in BUILTINS.items():
        records = host.registry.list(kind)
        assert names <= {r.name for r in records}
        for r in records:
            if r.name in names:
                assert r.plugin.builtin and r.plugin.dist == "fmclf"
                assert r.plugin.version == fmclf.__version__
                assert r.plugin.module.startswith("fmclf_plugins.")
                assert r.help


def test_public_lookup_names_the_owner():
    record = fmclf.get_component("loss", "fused")
    assert record.kind == "loss" and record.name == "fused"
    assert record.plugin.name == "fmclf.losses"
    assert "fmclf" in record.describe()
    assert {r.name for r in fmclf.list_components("model")} >= {"scratch", "nn"}
    assert [r.name for r in fmclf.list_components("visualizer", filter="anim")] == ["animator"]


def test_unknown_name_suggests_the_closest_and_lists_all():
    with pytest.raises(UnknownComponentError) as info:
        fmclf.get_component("loss", "fusd")
    assert str(info.value).startswith("unknown loss 'fusd' — did you mean 'fused'? available: fused, naive")


def test_unknown_name_without_a_close_match_still_lists_the_names():
    with pytest.raises(UnknownComponentError) as info:
        fmclf.get_component("updater", "zzzzzz")
    message = str(info.value)
    assert "did you mean" not in message and "sgd, torch-sgd" in message


def _record(kind, name, dist):
    return ComponentRecord(kind, name, lambda: None, "", PluginInfo(f"{dist}-ep", f"{dist}.mod", dist, "1.0"))


def test_collision_is_ambiguous_but_qualified_names_and_others_work():
    registry = Registry()
    registry.add(_record("model", "mlp", "fmclf-a"))
    registry.add(_record("model", "mlp", "fmclf-b"))
    registry.add(_record("model", "cnn", "fmclf-b"))
    with pytest.raises(AmbiguousComponentError) as info:
        registry.get("model", "mlp")
    message = str(info.value)
    assert "fmclf-a 1.0" in message and "fmclf-b 1.0" in message
    assert "'fmclf-a:mlp'" in message and "'fmclf-b:mlp'" in message
    assert registry.get("model", "fmclf-b:mlp").plugin.dist == "fmclf-b"
    assert registry.get("model", "cnn").plugin.dist == "fmclf-b"
    assert registry.names("model") == ["cnn", "fmclf-a:mlp", "fmclf-b:mlp"]


def test_unknown_kind():
    with pytest.raises(UnknownComponentError,
                       match="kinds are: dataset, model, loss, updater, metric, visualizer, callback"):
        Registry().get("optimizer", "sgd")
