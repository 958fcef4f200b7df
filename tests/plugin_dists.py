"""Real (tiny) installed distributions for plugin tests.

``make_dist`` writes a module and a ``NAME-VERSION.dist-info`` folder with
``METADATA`` and ``entry_points.txt`` into a folder; with that folder on
``sys.path`` (or ``PYTHONPATH`` for a subprocess), ``importlib.metadata``
finds the distribution exactly as it finds one pip installed.
"""

from __future__ import annotations

import pathlib
import textwrap


def make_dist(root: pathlib.Path, dist: str, *, version: str = "1.0", modules: dict[str, str],
              entry_points: dict[str, str] | None = None) -> pathlib.Path:
    """Write ``modules`` (import name -> source) and the metadata of ``dist``,
    whose ``fmclf`` entry points are ``entry_points`` (name -> module),
    by default one per module, named after it. Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    eps = entry_points if entry_points is not None else {m: m for m in modules}
    (info / "entry_points.txt").write_text("[fmclf]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()),
                                           encoding="utf-8")
    return root


def model_plugin(name: str, *, hidden_default: int = 4, imports: str = "") -> str:
    """Source of a plugin module registering model ``name`` with an int option
    (and importing ``imports`` at import time)."""
    return f'''
        import fmclf
        {f"import {imports}" if imports else ""}

        @fmclf.hookimpl
        def register_models(register):
            register({name!r}, build, help="a test model")

        def build(*, num_inputs: int, num_classes: int, hidden: int = {hidden_default}):
            """A test model.

            Options:
                hidden: units
            """
            raise RuntimeError("not built in these tests")
        '''
