"""Every command README.md and docs/*.md show works as written (tests/docs_commands.py finds them).

Each distinct command runs once, in a scratch folder, with the real
Fashion-MNIST as ``FMCLF_DATA``; it must exit 0, or with the code its
``<!-- docs-test: exit N -->`` marker documents, and print no traceback. What
trains is shortened to one epoch (``--epochs 1``; a ``--resume`` with
``--epochs`` trains one epoch more) and given a seed where it would draw one; a
comparison to 2 cells, 2 seeds and 2 ``--trials``, a loss benchmark to one short timing round
(:func:`_shortened`): the same paths, in seconds. ``RUN_DIR`` is a finished
one-epoch run, copied fresh for each command. Commands that start several
processes (torchrun) are in the ``slow`` set. The files the docs spell out (the tutorial's
plugin, a config file) are written where they say, and the tutorial's plugin
is installed for every command as ``pip install -e`` would install it
(importable, with its entry points).

``fmclf`` and ``python -m fmclf`` run in this process, through the same click
entry point the console script calls (with the command's environment
variables and folder): a fresh interpreter per command would spend most of
the time importing torch. ``torchrun`` lines start real processes.

``pip install`` and ``python3 -m venv`` are not run (tox and CI install; a
test must not change the environment it runs in): what they name must exist
(a local folder with its package metadata, each ``[extra]`` declared, any
other package installed). A synopsis (``fmclf plugins [--kind KIND]``) is not
run either: its subcommand and every flag it names must exist.
"""

from __future__ import annotations

import configparser
import importlib
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import traceback
from importlib import metadata

import click
import pytest
from click.testing import CliRunner

from fmclf.cli import cli

import docs_commands as docs

COMMANDS = docs.distinct_commands()
HERE = pathlib.Path(sys.executable).parent
TEMPLATE_EPOCHS = 1


def _id(key) -> str:
    places = COMMANDS[key]
    return f"{places[0].where} {key[0][:60]}"


def _gpus_missing(text: str) -> str:
    """Why a GPU command cannot run here ("" when it can): no GPU, or fewer than its processes."""
    import torch

    if not torch.cuda.is_available():
        return "none is visible to torch here"
    wanted = re.search(r"--nproc-per-node[ =](\d+)", text)
    have = torch.cuda.device_count()
    if wanted and int(wanted.group(1)) > have:
        return f"it starts {wanted.group(1)} processes, one per GPU, and torch sees {have}"
    return ""


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> pathlib.Path:
    """``fmclf``, ``python``, ``python3`` and ``torchrun`` of this interpreter (the venv's scripts may
    not be on PATH, and torchrun's script may belong to another Python)."""
    folder = tmp_path_factory.mktemp("bin")
    for name, run in (("fmclf", "-m fmclf"), ("python", ""), ("python3", ""), ("torchrun", "-m torch.distributed.run")):
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {run} "$@"\n')
        script.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def doc_site(tmp_path_factory) -> tuple[pathlib.Path, list[pathlib.Path]]:
    """The files the docs spell out, and a site folder where the packages among them are installed."""
    files = tmp_path_factory.mktemp("doc-files")
    for rel, text in docs.doc_files_to_write().items():
        (files / rel).parent.mkdir(parents=True, exist_ok=True)
        (files / rel).write_text(text, encoding="utf-8")
    site = tmp_path_factory.mktemp("doc-site")
    paths = [site]
    for project in files.glob("*/pyproject.toml"):
        meta = tomllib.loads(project.read_text())["project"]
        info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
        eps = meta.get("entry-points", {})
        (info / "entry_points.txt").write_text(
            "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) for group, items in eps.items()))
        paths.append(project.parent)
    return files, paths


@pytest.fixture(scope="module")
def environment(real_data, bin_dir, doc_site) -> dict[str, str]:
    env = {**os.environ, "FMCLF_DATA": str(real_data),
           "PATH": f"{bin_dir}{os.pathsep}{HERE}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, doc_site[1]), *filter(None, [os.environ.get("PYTHONPATH")])])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "FMCLF_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def template_run(tmp_path_factory, environment) -> pathlib.Path:
    """A finished run of the defaults, one epoch: what RUN_DIR stands for."""
    out = tmp_path_factory.mktemp("template") / "run"
    done = CliRunner().invoke(cli, ["run", "--epochs", str(TEMPLATE_EPOCHS), "--visualizer", "none", "--seed", "1",
                                    "--out", str(out)], env={"FMCLF_DATA": environment["FMCLF_DATA"]})
    assert done.exit_code == 0, done.output[-3000:]
    return out


def _subcommand(args: list[str]) -> tuple[click.Command | None, list[str]]:
    """The click command that ``fmclf ARGS`` reaches and the arguments it gets (group flags skipped)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("-p", "--plugin") and rest:
            rest.pop(0)
    if not rest:
        return None, []
    command: click.Command | None = cli.commands.get(rest.pop(0))
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:  # fmclf bench loss
        command = command.commands[rest.pop(0)]
    return command, rest


def _incomplete(text: str) -> bool:
    """An inline mention of a command rather than one to run: the command alone (`fmclf compare`), or
    ending in an option that still needs its value (`fmclf run --resume`)."""
    words = text.split()
    if "fmclf" not in words or any(w in ("|", "&&", ">") for w in words):
        return False
    command, rest = _subcommand(words[words.index("fmclf") + 1:])
    if command is None:
        return False
    if not rest:
        return True
    last = next((p for p in command.params if rest[-1] in getattr(p, "opts", ())), None)
    return isinstance(last, click.Option) and not last.is_flag and not last.count


#: ``fmclf bench loss`` times each loss and shape for a second (pytest-benchmark); one short round tries
#: the same path (the stability grid is run whole).
BENCH_SHORT = ["--max-time", "0.01", "--min-rounds", "1"]
#: A comparison's grid as the test runs it: this many seeds, and every value of its first repeated axis only
#: (2 cells x 2 seeds x 1 epoch trains, pairs and ranks as the documented 20 runs do).
COMPARE_SEEDS = 2


def _shortened(args: list[str]) -> list[str]:
    """``fmclf ARGS`` trained for one epoch (or, with --resume and --epochs, one epoch more), with a
    fixed seed where it would draw one; a comparison's grid cut to 2 cells and 2 seeds; a loss
    benchmark timed in one short round."""
    command, rest = _subcommand(args)
    if command is None:
        return args
    head = args[: len(args) - len(rest)]
    names = {p.name: p for p in command.params}
    if command.name == "loss" and "max_time" in names:
        return [*head, *rest, *BENCH_SHORT]
    if "epochs" not in names:
        return args
    epochs = TEMPLATE_EPOCHS + 1 if "--resume" in rest else 1
    if "--epochs" in rest:
        i = rest.index("--epochs")
        rest = [*rest[:i], "--epochs", str(epochs), *rest[i + 2:]]
    elif "--resume" not in rest:
        rest = [*rest, "--epochs", str(epochs)]
    if "seeds" in names:
        rest = _small_grid(command, rest)
    elif names.get("seed") is not None and names["seed"].default is None and "--seed" not in rest \
            and "--resume" not in rest:
        rest = [*rest, "--seed", "1"]  # as written it draws its seed: the test must not rest on the draw
    for flag in _COUNTS:  # a comparison's repetitions: two of each (fewer trials and seeds, as an epoch)
        if flag in rest and rest[rest.index(flag) + 1].isdigit():
            i = rest.index(flag)
            rest = [*rest[:i], flag, str(min(2, int(rest[i + 1]))), *rest[i + 2:]]
    return [*head, *rest]


def _small_grid(command: click.Command, rest: list[str]) -> list[str]:
    """A comparison's arguments with at most COMPARE_SEEDS seeds, and after its first repeated axis only the
    first value of each other one."""
    axes = {opt: p.name for p in command.params if getattr(p, "multiple", False) for opt in p.opts}
    seen: dict[str, int] = {}
    out, i = [], 0
    for word in rest:
        if word in axes:
            seen[axes[word]] = seen.get(axes[word], 0) + 1
    repeated = [name for name, count in seen.items() if count > 1]
    counted: dict[str, int] = {}
    while i < len(rest):
        word = rest[i]
        if word == "--seeds":
            out += [word, str(min(int(rest[i + 1]), COMPARE_SEEDS))]
            i += 2
            continue
        if word in axes and i + 1 < len(rest):
            name = axes[word]
            counted[name] = counted.get(name, 0) + 1
            if name in repeated[1:] and counted[name] > 1:
                i += 2
                continue
        out.append(word)
        i += 1
    return out


#: fmclf compare's counts that the docs commands run shortened.
_COUNTS = ("--trials", "--seeds")


def _shell(text: str, run_dir: pathlib.Path | None) -> str:
    """The command line as the test runs it: RUN_DIR filled in, fmclf parts shortened."""
    parts = []
    for part in docs.split_chain(text):
        if run_dir is not None:
            for placeholder in docs.RUN_PLACEHOLDERS:
                part = part.replace(placeholder, str(run_dir))
        env, words = docs.env_and_words(part)
        args = docs.fmclf_args(words)
        if args is not None:
            words = words[: len(words) - len(args)] + _shortened(args)
        parts.append(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(words)]))
    return " && ".join(parts)


def _check_install(words: list[str], files: pathlib.Path) -> None:
    """What ``pip install WORDS`` names exists: local folders with package metadata and the extras
    asked for, or installed (or doc-spelled) distributions."""
    targets, skip = [], False
    for word in words[2:]:
        if skip:
            skip = False
        elif word in ("--index-url", "--extra-index-url", "-i", "-r", "-c"):
            skip = True
        elif not word.startswith("-"):
            targets.append(word)
    assert targets, f"pip install with nothing to install: {words}"
    for target in targets:
        name, extras = re.fullmatch(r"([^\[]+)(?:\[(.*)\])?", target).groups()
        if name.startswith((".", "/")) or "/" in name:
            folder = next((base / name for base in (docs.ROOT, files) if (base / name).is_dir()), None)
            assert folder is not None, f"pip install {target}: no such folder in the repository or the docs"
            declared = _extras(folder)
        else:
            spelled = {tomllib.loads(p.read_text())["project"]["name"] for p in files.glob("*/pyproject.toml")}
            if name == "fmclf":
                declared = _extras(docs.ROOT)
            elif name in spelled:
                declared = set()
            else:
                metadata.distribution(name)  # installed, or PackageNotFoundError names it
                declared = set(metadata.metadata(name).get_all("Provides-Extra") or [])
        missing = {e.strip() for e in (extras or "").split(",") if e.strip()} - declared
        assert not missing, f"pip install {target}: extra(s) {sorted(missing)} are not declared"


def _extras(folder: pathlib.Path) -> set[str]:
    if (folder / "setup.cfg").is_file():
        parser = configparser.ConfigParser()
        parser.read(folder / "setup.cfg")
        if parser.has_section("options.extras_require"):
            return set(parser["options.extras_require"])
    if (folder / "pyproject.toml").is_file():
        project = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
        assert project.get("name"), f"{folder}: pyproject.toml names no project"
        return set(project.get("optional-dependencies", {}))
    raise AssertionError(f"{folder} holds no setup.cfg or pyproject.toml")


def _check_synopsis(text: str) -> None:
    """A usage pattern: its subcommand exists and so does every flag it names."""
    for part in docs.split_chain(text):
        words = part.replace("[", " ").replace("]", " ").replace("|", " ").split()
        if "fmclf" not in words:
            continue
        args = words[words.index("fmclf") + 1:]
        command, _ = _subcommand([a for a in args if a not in ("...", "COMMAND")])
        target = command or cli
        if command is None and any(not a.startswith("-") and a.islower() for a in args):
            name = next(a for a in args if not a.startswith("-") and a.islower() and not a.startswith("no:"))
            assert name in cli.commands or name in ("-p",), f"fmclf has no command {name!r}"
        known = {opt for p in [*target.params, *cli.params] for opt in [*p.opts, *p.secondary_opts]}
        flags = {a.split("=")[0] for a in args if a.startswith("-") and a not in ("...",)}
        assert flags <= known | {"-h", "--help"}, f"{part}: no such option {sorted(flags - known)}"


def _long(key) -> bool:
    """What stays in the slow set: a command that starts several processes (torchrun)."""
    return any(docs.env_and_words(part)[1][:1] == ["torchrun"] for part in docs.split_chain(key[0]))


@pytest.mark.realdata
@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if _long(k) else k for k in COMMANDS],
                         ids=[_id(k) for k in COMMANDS])
def test_documented_command_works_as_written(key, tmp_path, environment, doc_site, template_run, monkeypatch):
    text, exit_code, skip = key
    places = ", ".join(c.where for c in COMMANDS[key])
    if skip == "cluster":
        pytest.skip(f"needs a cluster ({places})")
    if skip == "gpu" and (why := _gpus_missing(text)):
        pytest.skip(f"needs a GPU ({places}): {why}")
    command = COMMANDS[key][0]
    if command.synopsis or (all(c.inline for c in COMMANDS[key]) and _incomplete(text)):
        _check_synopsis(text)
        return
    files, _ = doc_site
    work = tmp_path / "work"
    shutil.copytree(files, work)
    run_dir = None
    if any(p in text for p in docs.RUN_PLACEHOLDERS):
        run_dir = work / "a-run"
        shutil.copytree(template_run, run_dir)
    for doc in [docs.ROOT / "README.md", *(docs.ROOT / "docs").glob("*.md")]:  # for `--update FILE`
        (work / doc.relative_to(docs.ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(doc, work / doc.relative_to(docs.ROOT))
    runnable = []
    for part in docs.split_chain(text):
        # `fmclf run | head -1`: fmclf's side runs here; a real pipe is test_write_errors.py's business
        part = part.split(" | ")[0].strip()
        _, words = docs.env_and_words(part)
        if words[:2] in (["pip", "install"], ["pip3", "install"]):
            _check_install(words, files)
        elif words[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]) or words[:1] == ["."]:
            pass  # an environment to install into; this test runs in one already
        elif words[:1] == ["pytest"]:
            pass  # the test suite itself (README's test command), which is running now
        else:
            assert docs.fmclf_args(words) is not None, f"{places}: does not know how to try {part!r}"
            runnable.append(part)
    for site in doc_site[1]:
        monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.chdir(work)
    for part in runnable:
        _run(_shell(part, run_dir), exit_code, places, work, environment)


def _run(line: str, exit_code: int, places: str, work: pathlib.Path, environment: dict[str, str]) -> None:
    """Run one command: torchrun as a process, fmclf through its click entry point in this process."""
    env, words = docs.env_and_words(line)
    if words[0] == "torchrun":
        done = subprocess.run(["bash", "-c", line], cwd=work, env=environment, capture_output=True, text=True,
                              timeout=600, check=False)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        import torch

        threads = torch.get_num_threads()  # --threads would stay set for the tests after this one
        try:
            result = CliRunner().invoke(cli, docs.fmclf_args(words), prog_name="fmclf",
                                        env={"FMCLF_DATA": environment["FMCLF_DATA"], **env})
        finally:
            torch.set_num_threads(threads)
        code, out, err = result.exit_code, result.stdout, result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            err += "".join(traceback.format_exception(result.exception))
    said = f"{places}: {line}\n--- stdout\n{out[-2000:]}\n--- stderr\n{err[-3000:]}"
    assert code == exit_code, said
    assert "Traceback" not in err, said


def test_the_docs_show_commands_and_markers_mark_something():
    """The extraction finds what the docs show, and every docs-test marker applies to a command or a file."""
    texts = {c.text for c in docs.all_commands()}
    assert {"fmclf runs", "fmclf --version", "fmclf plugins"} <= texts
    assert any(t.startswith("fmclf run --resume") for t in texts)
    assert any(c.marker.exit_code == 1 for c in docs.all_commands())
    for path in docs.doc_files():
        for chunk in docs.chunks(path):
            if chunk.marker is not None and not chunk.marker.file:
                assert docs.commands_of(chunk), f"{path}:{chunk.line}: a docs-test marker on a block with no command"


@pytest.mark.realdata
@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_the_help_examples_do_what_they_say(seed, tmp_path, environment, monkeypatch):
    """`fmclf --help`'s examples: the one that says the naive loss fails diverges, whatever the seed;
    the others work (run for one epoch)."""
    lines = [line.strip() for line in (cli.help or "").splitlines() if line.strip().startswith("fmclf ")]
    examples = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line)[1] for line in lines}
    failing = [cmd for cmd, what in examples.items() if "fail" in what]
    monkeypatch.chdir(tmp_path)
    assert failing == ["fmclf run --loss naive --lr 2"]
    for cmd in examples:
        if seed != 1 and cmd not in failing:
            continue  # the others do not depend on the seed
        args = _shortened(shlex.split(cmd)[1:])
        if args[:1] == ["run"] and "--dry-run" not in args:
            args += ["--seed", str(seed), "--visualizer", "none"]
        done = CliRunner().invoke(cli, [*args, *(["--out", str(tmp_path / "run")] if args[:1] == ["run"] else [])],
                                  env={"FMCLF_DATA": environment["FMCLF_DATA"]})
        if cmd in failing:
            assert done.exit_code == 1 and "training diverged" in done.stderr, (cmd, seed, done.output[-2000:])
        else:
            assert done.exit_code == 0, (cmd, done.output[-2000:])
        shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_long_commands_are_tried_in_short_forms_of_the_same_paths():
    """What the documented-command test runs instead of what trains long: the same subcommand and flags."""
    grid = shlex.split("compare --model scratch --model nn --loss naive --loss fused --seeds 5 --jobs 2 --out cmp")
    assert _shortened(grid) == shlex.split("compare --model scratch --model nn --loss naive --seeds 2 --jobs 2 "
                                           "--out cmp --epochs 1")
    assert _shortened(["compare", "--seeds", "1", "--epochs", "3"]) == ["compare", "--seeds", "1", "--epochs", "1"]
    assert _shortened(["bench", "loss", "naive", "fused"]) == ["bench", "loss", "naive", "fused", *BENCH_SHORT]
    assert _shortened(["run", "--epochs", "20"]) == ["run", "--epochs", "1", "--seed", "1"]
    assert _shortened(["run", "--seed", "7"]) == ["run", "--seed", "7", "--epochs", "1"]
    assert _shortened(["run", "--resume", "r", "--epochs", "9"]) == ["run", "--resume", "r", "--epochs", "2"]
    assert [c[0] for c in COMMANDS if _long(c)] and all("torchrun" in c[0] for c in COMMANDS if _long(c))
