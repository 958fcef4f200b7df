"""`fmclf plugins`, `-p`, and plugin failures as the command line shows them.
The tests that assert torch is not imported run in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fmclf.cli import cli

from plugin_dists import make_dist, model_plugin
from test_plugins_loading import site  # noqa: F401 - the fixture

BROKEN = {"fmclf_broken": "import fmclf\nraise RuntimeError('cannot find libfoo')\n"}


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_plugins_lists_plugins_and_components_with_their_options(site):  # noqa: F811
    site("fmclf-good", version="1.2", modules={"fmclf_good": model_plugin("good", hidden_default=7)})
    result = invoke("plugins", "--kind", "model")
    assert result.exit_code == 0, result.output
    assert "fmclf_good" in result.stdout and "fmclf-good 1.2" in result.stdout
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["good"])
    assert "a test model" in lines[at] and "[fmclf-good 1.2]" in lines[at]
    assert lines[at + 1].split() == ["hidden", "int", "=", "7", "units"]
    assert "losses" not in result.stdout  # --kind model


def test_plugins_json_is_complete_and_filterable(site):  # noqa: F811
    site("fmclf-good", version="1.2", modules={"fmclf_good": model_plugin("good", hidden_default=7)})
    data = json.loads(invoke("plugins", "--json", "fmclf-good").stdout)
    assert [(p["name"], p["dist"], p["version"], p["module"], p["builtin"]) for p in data["plugins"]] == [
        ("fmclf_good", "fmclf-good", "1.2", "fmclf_good", False)
    ]
    (component,) = data["components"]
    assert (component["kind"], component["name"], component["qualified_name"],
            component["select_as"]) == ("model", "good", "fmclf-good:good", "good")
    assert component["options"] == [{"name": "hidden", "type": "int", "default": 7, "required": False, "help": "units",
                                     "bounds": {"min": None, "max": None, "min_open": False, "max_open": False,
                                                "inf": False}}]
    every = json.loads(invoke("plugins", "--json").stdout)
    assert {c["name"] for c in every["components"]} >= {"good", "scratch", "fused", "sgd", "tqdm", "fashion-mnist"}


def test_a_broken_plugin_warns_on_stderr_and_the_command_works(site):  # noqa: F811
    site("fmclf-broken", version="0.9", modules=BROKEN)
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "Warning: plugin 'fmclf_broken' (fmclf-broken 0.9" in result.stderr
    assert "RuntimeError: cannot find libfoo" in result.stderr
    assert "FAILED at import" in result.stdout and "scratch" in result.stdout


def test_strict_plugins_makes_the_command_fail(site):  # noqa: F811
    site("fmclf-broken", version="0.9", modules=BROKEN)
    result = invoke("plugins", env={"FMCLF_STRICT_PLUGINS": "1"})
    assert result.exit_code == 1
    assert "Error: strict plugin loading is on" in result.stderr and "fmclf-broken 0.9" in result.stderr


def test_an_ambiguous_name_stops_a_run_before_it_starts_and_a_qualified_name_or_block_fixes_it(site,  # noqa: F811
                                                                                               tmp_path, tiny_data):
    site("fmclf-a", modules={"fmclf_a": model_plugin("twin")})
    site("fmclf-b", modules={"fmclf_b": model_plugin("twin")})
    result = invoke("run", "--model", "twin", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "fmclf-a 1.0 and fmclf-b 1.0" in result.stderr and "'fmclf-a:twin', 'fmclf-b:twin'" in result.stderr
    assert not (tmp_path / "run").exists()
    listing = json.loads(invoke("plugins", "--json", "--kind", "model").stdout)
    assert {c["select_as"] for c in listing["components"]} >= {"fmclf-a:twin", "fmclf-b:twin"}
    # the qualified name selects fmclf-b's factory (which raises on purpose, naming its component)
    picked = invoke("run", "--model", "fmclf-b:twin", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                    "--visualizer", "none", "--out", str(tmp_path / "run"))
    assert picked.exit_code == 1
    assert "model 'twin' (fmclf-b 1.0) failed to build: RuntimeError: not built in these tests" in picked.stderr
    blocked = json.loads(invoke("-p", "no:fmclf-a", "plugins", "--json", "--kind", "model").stdout)
    assert [c["select_as"] for c in blocked["components"] if c["name"] == "twin"] == ["twin"]


def test_p_flag_loads_a_plugin_when_autoload_is_off(site):  # noqa: F811
    site("fmclf-good", modules={"fmclf_good": model_plugin("good")})
    off = {"FMCLF_DISABLE_PLUGIN_AUTOLOAD": "1"}
    assert "good" not in {c["name"] for c in json.loads(invoke("plugins", "--json", env=off).stdout)["components"]}
    loaded = json.loads(invoke("-p", "fmclf-good", "plugins", "--json", env=off).stdout)
    assert "good" in {c["name"] for c in loaded["components"]}


_DRIVER = """
import atexit, json, os, runpy, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["fmclf", *sys.argv[1:]]
runpy.run_module("fmclf", run_name="__main__")
"""


def _fresh(args: list[str], tmp_path, pythonpath: str = "") -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -m fmclf ARGS`` in a fresh interpreter; return it and every module it imported."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "MODULES_OUT": str(out),
           "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-c", _DRIVER, *args], capture_output=True, text=True, env=env, timeout=120)
    return done, set(json.loads(out.read_text()))


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"], ["run", "--help"]])
def test_help_and_plugins_do_not_import_torch(args, tmp_path):
    # a third-party plugin is installed too: loading it must not pull torch in either
    root = make_dist(tmp_path / "site", "fmclf-light", modules={"fmclf_light": model_plugin("light")})
    done, imported = _fresh(args, tmp_path, str(root))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fmclf.cli" in imported
    if args[0] == "plugins":
        assert "fmclf_light" in imported and "fmclf_plugins.models" in imported
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}


def test_plugins_flags_a_plugin_that_imports_torch_at_import_time(tmp_path):
    root = make_dist(tmp_path / "site", "fmclf-heavy", version="0.1",
                     modules={"fmclf_heavy": model_plugin("heavy", imports="torch")})
    # A stand-in torch: what is detected is a module named torch appearing, and the real one takes seconds to import.
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text("")
    done, imported = _fresh(["plugins", "--json", "heavy"], tmp_path, str(root))
    assert "torch" in imported
    assert done.returncode == 0, done.stderr[-2000:]
    (plugin,) = json.loads(done.stdout)["plugins"]
    assert plugin["dist"] == "fmclf-heavy" and plugin["imports_torch"] is True
