"""What the command line says about itself: help texts, --version, shell completion,
run --dry-run, `fmclf plugins` columns and misses, and the hints a slip gets.
The tests that assert torch is not imported run in a fresh interpreter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.cli._help import ENVIRONMENT

from plugin_dists import make_dist, model_plugin
from test_plugins_loading import site  # noqa: F401 - the fixture

ENV_NAMES = [name.split("=")[0] for name, _ in ENVIRONMENT]


def invoke(*args: str, env: dict[str, str] | None = None, **kwargs):
    return CliRunner().invoke(cli, list(args), env=env, **kwargs)


_DRIVER = """
import atexit, json, os, runpy, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["fmclf", *sys.argv[1:]]
runpy.run_module("fmclf", run_name="__main__")
"""


def fresh(args: list[str], tmp_path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -m fmclf ARGS`` in a fresh interpreter: the result and every module it imported."""
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", _DRIVER, *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "MODULES_OUT": str(out), **(env or {})}, cwd=tmp_path)
    return done, set(json.loads(out.read_text()))


def uses_torch(modules: set[str]) -> bool:
    return any(m == "torch" or m.startswith("torch.") for m in modules)


# --- help ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_names_the_environment_the_exit_codes_and_the_docs(args):
    out = invoke(*args, terminal_width=80).output
    for name in ("FMCLF_DATA", "FMCLF_DEBUG", "FMCLF_STRICT_PLUGINS", "FMCLF_DISABLE_PLUGIN_AUTOLOAD",
                 "FMCLF_DIST_TIMEOUT"):
        assert name in ENV_NAMES and name in out
    assert "Exit codes:" in out and "130" in out and "bad input" in out
    assert re.search(r"Docs: \S*README\.md", out)


def test_command_summaries_are_whole_and_defaults_never_wrap_inside_a_word():
    top = invoke("--help", terminal_width=80).output
    commands = top[top.index("Commands:"):top.index("Environment:")]
    assert "..." not in commands and "…" not in commands
    assert "List plugins and their components with every option (does not" in top  # once cut at "(does not..."
    assert "import torch)." in top
    text = invoke("run", "--help", terminal_width=80).output
    assert "[default: fashion-mnist]" in text and "[default: runs/DATE-TIME-MODEL-LOSS]" in text
    assert "[default: drawn and recorded]" in text
    lines = text.splitlines()
    assert not [line for line in lines if line.rstrip().endswith(("-", "[default:"))]
    assert max(map(len, lines)) <= 80


def test_version_reports_torch_cuda_and_the_plugins(site):  # noqa: F811
    site("fmclf-good", version="1.2", modules={"fmclf_good": model_plugin("good")})
    import torch

    out = invoke("--version").output
    assert out.startswith("fmclf 0.1.0")
    assert f"torch {torch.__version__}" in out and "CUDA available: " in out
    assert "fmclf.models" in out and "fmclf-good 1.2" in out


def test_help_does_not_import_torch_but_version_does(tmp_path):
    done, imported = fresh(["--help"], tmp_path)
    assert done.returncode == 0 and not uses_torch(imported)
    done, imported = fresh(["--version"], tmp_path)
    assert done.returncode == 0 and uses_torch(imported) and "CUDA available" in done.stdout


def test_a_group_flag_after_the_subcommand_gets_a_hint():
    result = invoke("run", "-p", "my-plugin", "--epochs", "1")
    assert result.exit_code == 2
    assert "-p is an option of fmclf itself" in result.output
    assert "`fmclf -p my-plugin run ...`" in result.output


# --- shell completion -----------------------------------------------------------------------------

def complete(words: str, tmp_path, shell: str = "bash") -> tuple[list[str], set[str]]:
    env = {"_FMCLF_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    done, imported = fresh([], tmp_path, env)
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines()], imported


def test_completion_offers_component_names_from_the_registry_without_torch(tmp_path):
    losses, imported = complete("fmclf run --loss ", tmp_path)
    assert {"fused", "naive"} <= set(losses)
    assert not uses_torch(imported)
    visualizers, _ = complete("fmclf run --visualizer t", tmp_path)
    assert {"tqdm", "tensorboard"} <= set(visualizers) and "csv" not in visualizers


def test_completion_offers_the_options_of_the_components_on_the_line(tmp_path):
    options, imported = complete("fmclf run --updater torch-sgd -o upd", tmp_path)
    assert "updater.momentum=" in options and not uses_torch(imported)
    script = subprocess.run([sys.executable, "-m", "fmclf"], env={**os.environ, "_FMCLF_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert "_fmclf_completion" in script.stdout and "complete " in script.stdout


# --- run --dry-run --------------------------------------------------------------------------------

def test_dry_run_prints_every_option_with_its_source_and_reads_back_as_a_config(tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text('epochs = 4\nupdater = "torch-sgd"\n\n[options.updater]\nweight_decay = 0.01\n')
    result = invoke("run", "--dry-run", "--config", str(config), "--lr", "0.3", "-o", "updater.momentum=0.9",
                    "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    lines = {line.split("=")[0].strip(): line for line in result.output.splitlines() if "=" in line and "#" in line}
    assert lines["lr"].endswith("# command line")
    assert lines["epochs"].endswith(f"# config file {config}")
    assert lines["batch_size"].endswith("# default")
    assert lines["momentum"].endswith("# command line") and lines["weight_decay"].endswith(f"# config file {config}")
    assert lines["nesterov"].endswith("# default")  # every option of the chosen components, defaults too
    assert "[options.visualizer.tqdm]" in result.output and "refresh = 0.2" in result.output
    assert not (tmp_path / "r").exists()  # nothing written
    # the output is a config file: read back, it gives the same settings
    saved = tmp_path / "dry.toml"
    saved.write_text(result.output)
    data = tomllib.loads(result.output)
    assert (data["lr"], data["epochs"], data["updater"]) == (0.3, 4, "torch-sgd")
    again = invoke("run", "--dry-run", "--config", str(saved), "--out", str(tmp_path / "r"))
    strip = [re.sub(r"\s+#.*", "", line) for line in result.output.splitlines() if not line.startswith("#")]
    assert [re.sub(r"\s+#.*", "", line) for line in again.output.splitlines() if not line.startswith("#")] == strip


def test_dry_run_checks_like_a_run_and_imports_no_torch(tmp_path):
    done, imported = fresh(["run", "--dry-run", "--loss", "naive", "--seed", "4"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'loss = "naive"' in done.stdout and "seed = 4" in done.stdout and not uses_torch(imported)
    bad = invoke("run", "--dry-run", "-o", "updater.momentum=0.9")
    assert bad.exit_code == 2 and "'momentum' is an option of updater 'torch-sgd'" in bad.output
    assert "`--updater torch-sgd`" in bad.output


def test_dry_run_of_a_resume_shows_the_run_folders_settings(tmp_path, tiny_data):
    out = tmp_path / "run"
    trained = invoke("run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--batch-size", "16",
                     "--epochs", "1", "--visualizer", "none", "--device", "cpu", "--seed", "9", "--out", str(out))
    assert trained.exit_code == 0, trained.output
    result = invoke("run", "--resume", str(out), "--epochs", "3", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = {line.split("=")[0].strip(): line for line in result.output.splitlines() if "=" in line and "#" in line}
    assert lines["epochs"].startswith("epochs = 3") and lines["epochs"].endswith("# command line")
    assert lines["seed"].startswith("seed = 9") and "run folder" in lines["seed"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # nothing trained


# --- options set for a component that is not chosen -----------------------------------------------

def test_an_option_of_another_component_names_it():
    result = invoke("run", "-o", "updater.momentum=0.9", "--dry-run")
    assert result.exit_code == 2
    assert "updater 'sgd' (fmclf 0.1.0) has no option 'momentum'" in result.output
    assert "`--updater torch-sgd`" in result.output
    result = invoke("run", "-o", "visualizer.animator.svg=false", "--dry-run")
    assert result.exit_code == 2 and "add the component (--visualizer animator)" in result.output


# --- fmclf plugins ----------------------------------------------------------------------------------

def test_plugins_says_when_nothing_matches_and_exits_1():
    result = invoke("plugins", "nosuchthing")
    assert result.exit_code == 1
    assert "nothing matches 'nosuchthing'" in result.stderr and result.stdout == ""
    assert invoke("plugins", "--json", "nosuchthing").exit_code == 1
    assert invoke("plugins", "fused").exit_code == 0


def test_plugins_wraps_long_names_and_types_inside_their_columns(site):  # noqa: F811
    long_name = "a-model-with-a-rather-long-name"
    source = model_plugin(long_name).replace(
        "hidden: int = 4", "hidden: int = 4, class_weights_for_every_label: list[float] | None = None")
    site("fmclf-long-distribution-name", version="10.20.30", modules={"fmclf_long_plugin_module": source})
    out = invoke("plugins", "--kind", "model", terminal_width=70, env={"COLUMNS": "70"}).stdout
    lines = out.splitlines()
    assert max(map(len, lines)) <= 70, [line for line in lines if len(line) > 70]
    at = next(i for i, line in enumerate(lines) if "class_weights_for_every_label" in line)
    # a name too long for its column takes its own line; the type starts below, in its column, wrapped
    assert lines[at].strip() == "class_weights_for_every_label"
    column = lines[at + 1].index("comma-separated")
    assert lines[at + 2][column:].startswith("list of float") and not lines[at + 2][:column].strip()
    assert any(line.strip().startswith(long_name) for line in lines)
    assert "[fmclf-long-distribution-name" in out and "10.20.30]" in out  # split only where it must be
    builtin = invoke("plugins", "--kind", "loss", env={"COLUMNS": "70"}).stdout
    assert "[fmclf 0.1.0]" in builtin  # an owner that fits stays on one line


def test_a_blocked_plugins_component_is_named_as_blocked(site, tmp_path):  # noqa: F811
    site("fmclf-good", modules={"fmclf_good": model_plugin("good")})
    result = invoke("-p", "no:fmclf-good", "run", "--model", "good", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert ("model 'good' comes from plugin 'fmclf_good' (fmclf-good 1.0), which `-p no:fmclf-good` blocks"
            in result.stderr)
    assert "unknown" not in result.stderr
    typo = invoke("-p", "no:fmclf-good", "run", "--model", "goood", "--out", str(tmp_path / "r"))
    assert "unknown model 'goood'" in typo.stderr  # a name no plugin has is still unknown


def test_fmclf_plugins_imports_no_torch_with_the_new_visualizers(tmp_path):
    root = make_dist(tmp_path / "site", "fmclf-light", modules={"fmclf_light": model_plugin("light")})
    done, imported = fresh(["plugins", "--kind", "visualizer"], tmp_path, {"PYTHONPATH": str(root)})
    assert done.returncode == 0 and "tensorboard" in done.stdout and "csv" in done.stdout
    assert not uses_torch(imported)
