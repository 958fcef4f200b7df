"""What a wheel of fmclf holds: every subpackage of the source tree, so that a
non-editable install (tox, pip install .) has the CLI and the plugin host."""

from __future__ import annotations

import configparser
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_setup_cfg_lists_every_subpackage():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = {p.strip() for p in config["options"]["packages"].replace(",", "\n").splitlines() if p.strip()}
    source = {".".join(d.relative_to(ROOT).parts) for d in (ROOT / "fmclf").rglob("*")
              if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))}
    missing = sorted(source - listed)
    assert not missing, f"setup.cfg [options] packages lacks {missing}: a wheel would leave them out"
    assert {"fmclf", "fmclf_plugins"} <= listed
