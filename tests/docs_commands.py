"""The commands README.md and docs/*.md show, found the way a reader finds them.

A command is a line of a code block (fenced or indented) or an inline code
span that starts (after ``VAR=value`` assignments and a ``$ `` prompt) with
``fmclf``, ``python -m fmclf``, ``torchrun``, ``pip install`` or
``python3 -m venv``; ``&&`` chains them, ``\\`` continues a line. In a block
where some lines start with ``$ ``, only those are commands (the rest is
output). Blocks in another language (```` ```python ````, ``toml``...) hold no
commands.

An HTML comment before a block or paragraph says how to treat it:

    <!-- docs-test: skip, needs a GPU -->      not run where torch sees no GPU
    <!-- docs-test: skip, needs a cluster -->  never run here (several machines)
    <!-- docs-test: exit 1 -->                 the documented failure: exit code 1
    <!-- docs-test: file PATH -->              the block is a file of the docs' own
                                               (a tutorial's plugin): written to PATH

Those are the only skips. Commands written as a synopsis (``[--json]``,
``NAME``, ``...``, ``<TAB>``) are not run; their subcommand and flags are
checked against the CLI instead.
"""

from __future__ import annotations

import pathlib
import re
import shlex
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<what>.*?)\s*-->$")
SKIP_REASONS = {"needs a GPU": "gpu", "needs a cluster": "cluster"}
_ENV = r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
STARTS = re.compile(_ENV + r"(?:fmclf(?:\s|$)|python3? -m (?:fmclf|venv)\b|torchrun\s|pip3? install\s"
                           r"|\. \.venv/bin/activate)")
SHELL_INFO = {"", "sh", "bash", "shell", "console", "text"}
#: Placeholders that stand for a run folder; the test gives each command a finished run there.
RUN_PLACEHOLDERS = ("RUN_DIR",)
SYNOPSIS = re.compile(r"\[|\]|\.\.\.|<|>|(?<![\w.-])[A-Z][A-Z0-9_]*(?![\w-])")


@dataclass
class Marker:
    """What a docs-test comment says."""

    skip: str = ""  #: "gpu" or "cluster"
    exit_code: int = 0
    file: str = ""  #: the block is the file at this path

    @classmethod
    def parse(cls, text: str, where: str) -> Marker:
        text = text.strip()
        if text.startswith("skip"):
            reason = text.partition(",")[2].strip()
            if reason not in SKIP_REASONS:
                raise ValueError(f"{where}: a docs-test skip must say one of {sorted(SKIP_REASONS)}, not {reason!r}")
            return cls(skip=SKIP_REASONS[reason])
        if m := re.fullmatch(r"exit (\d+)", text):
            return cls(exit_code=int(m.group(1)))
        if m := re.fullmatch(r"file (\S+)", text):
            return cls(file=m.group(1))
        raise ValueError(f"{where}: unknown docs-test marker {text!r}")


@dataclass
class Chunk:
    """A code block or a paragraph, with the marker before it."""

    path: pathlib.Path
    line: int
    kind: str  #: "code" or "text"
    info: str
    lines: list[str]
    marker: Marker | None = None


@dataclass
class Command:
    """One command as the docs show it."""

    text: str
    path: pathlib.Path
    line: int
    marker: Marker = field(default_factory=Marker)
    inline: bool = False  #: from an inline code span (a mention in running text), not a code block

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def synopsis(self) -> bool:
        """Written as a usage pattern, not as a command to run: its fmclf part has a placeholder."""
        for part in split_chain(self.text):
            for placeholder in RUN_PLACEHOLDERS:
                part = part.replace(placeholder, "run")
            env = re.match(_ENV, part).group(0)
            if STARTS.match(part) and not re.match(_ENV + r"pip3? install|python3? -m venv|\. ", part) \
                    and SYNOPSIS.search(part[len(env):]):
                return True
        return False


def chunks(path: pathlib.Path) -> list[Chunk]:
    """The code blocks and paragraphs of a Markdown file, each with the marker before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Chunk] = []
    pending: Marker | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := MARKER.match(line.strip()):
            if pending is not None:
                raise ValueError(f"{path}:{i + 1}: two docs-test markers in a row")
            pending = Marker.parse(m.group("what"), f"{path}:{i + 1}")
            i += 1
            continue
        if not line.strip() or line.lstrip().startswith("<!--"):
            i += 1
            continue
        start = i
        if line.startswith("```"):
            info, i = line[3:].strip(), i + 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            i += 1
            chunk = Chunk(path, start + 2, "code", info, body)
        elif line.startswith("    ") and (start == 0 or not lines[start - 1].strip()
                                           or MARKER.match(lines[start - 1].strip())):
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            chunk = Chunk(path, start + 1, "code", "", body)
        else:
            body = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith("```") \
                    and not MARKER.match(lines[i].strip()):
                body.append(lines[i])
                i += 1
            chunk = Chunk(path, start + 1, "text", "", body)
        chunk.marker, pending = pending, None
        out.append(chunk)
    if pending is not None:
        raise ValueError(f"{path}: a docs-test marker at the end marks nothing")
    return out


def _is_command(text: str) -> bool:
    return bool(STARTS.match(text)) and text != "fmclf"  # alone, `fmclf` names the tool (or the entry-point group)


def _strip_comment(text: str) -> str:
    return re.sub(r"\s+#\s.*$", "", text).strip()


def commands_of(chunk: Chunk) -> list[Command]:
    """The commands a chunk shows."""
    marker = chunk.marker or Marker()
    found: list[tuple[str, int]] = []
    if chunk.kind == "code":
        if chunk.info not in SHELL_INFO or marker.file:
            return []
        joined: list[tuple[str, int]] = []
        for n, raw in enumerate(chunk.lines):
            if joined and joined[-1][0].endswith("\\"):
                joined[-1] = (joined[-1][0][:-1].rstrip() + " " + raw.strip(), joined[-1][1])
            else:
                joined.append((raw.strip(), chunk.line + n))
        prompted = any(text.startswith("$ ") for text, _ in joined)
        for text, line in joined:
            if prompted and not text.startswith("$ "):
                continue
            text = _strip_comment(text.removeprefix("$ "))
            if text and not text.startswith("#") and _is_command(text):
                found.append((text, line))
    else:
        paragraph = " ".join(chunk.lines)
        for m in re.finditer(r"`([^`]+)`", paragraph):
            text = " ".join(m.group(1).replace("\\|", "|").split())
            if _is_command(text):
                found.append((text, chunk.line))
    return [Command(text, chunk.path, line, marker, inline=chunk.kind != "code") for text, line in found]


def doc_files() -> list[pathlib.Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_commands() -> list[Command]:
    """Every command of every doc file, in order."""
    return [c for path in doc_files() for chunk in chunks(path) for c in commands_of(chunk)]


def distinct_commands() -> dict[tuple[str, int, str], list[Command]]:
    """The commands to try, each once: ``(text, exit code, skip) -> every place it is shown``."""
    out: dict[tuple[str, int, str], list[Command]] = {}
    for command in all_commands():
        out.setdefault((command.text, command.marker.exit_code, command.marker.skip), []).append(command)
    return out


def doc_files_to_write() -> dict[str, str]:
    """The files the docs spell out in full (``docs-test: file PATH``): path -> content."""
    out = {}
    for path in doc_files():
        for chunk in chunks(path):
            if chunk.marker is not None and chunk.marker.file:
                out[chunk.marker.file] = "\n".join(chunk.lines) + "\n"
    return out


def split_chain(text: str) -> list[str]:
    """A command line split at ``&&``."""
    return [part.strip() for part in text.split("&&")]


def env_and_words(part: str) -> tuple[dict[str, str], list[str]]:
    """``A=1 B=2 prog args`` -> ``({"A": "1", "B": "2"}, ["prog", "args"])``."""
    words = shlex.split(part)
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words


def fmclf_args(words: list[str]) -> list[str] | None:
    """The arguments fmclf itself gets from a command's words (None: the words do not run fmclf)."""
    if words[:1] == ["fmclf"]:
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "fmclf" and words[0] in ("python", "python3", "torchrun"):
            return words[i + 2:]
    return None
