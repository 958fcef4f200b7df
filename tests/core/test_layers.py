"""fmclf's layers go one way (docs/architecture.md): host <- train <- run <- draw <- compare, and the
command line on top. A lower layer never imports a higher one, not even inside a function."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest

import fmclf

ROOT = pathlib.Path(fmclf.__file__).parent

#: Each package and the packages it must never import.
FORBIDDEN = {
    "run": ("fmclf.draw", "fmclf.cli", "fmclf.compare", "fmclf.interactive"),
    "train": ("fmclf.draw", "fmclf.cli", "fmclf.compare", "fmclf.run", "fmclf.interactive"),
    "host": ("fmclf.draw", "fmclf.cli", "fmclf.compare", "fmclf.run", "fmclf.train", "fmclf.interactive"),
    "compare": ("fmclf.cli",),
}


def imported(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it, as an absolute name."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from .. import draw`
    return names


def test_the_scan_sees_relative_imports_at_any_depth():
    assert "fmclf.draw.report" in imported(ROOT / "cli" / "run.py")  # inside a function
    assert "fmclf.run.folder" in imported(ROOT / "draw" / "report.py")  # `from ..run import folder`
    assert "fmclf.errors" in imported(ROOT / "compare" / "executors" / "__init__.py")  # three dots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted(imported(path)):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                offenders.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_a_run_alone_and_a_batched_group_stand_on_the_same_steps_not_on_each_other():
    """run/runner.py (a run alone) and run/group.py (a batched group) both use plan and session; neither imports
    the other, and the steps below them import neither."""
    above = {"fmclf.run.runner", "fmclf.run.group"}
    offenders = [f"{name} imports {bad}" for name in ("plan", "session", "runner", "group")
                 for bad in sorted(imported(ROOT / "run" / f"{name}.py") & above - {f"fmclf.run.{name}"})]
    assert not offenders, "\n".join(offenders)


def test_settings_and_plan_are_frozen():
    from fmclf.run.config import Settings
    from fmclf.run.plan import Plan

    settings = Settings(seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 2  # type: ignore[misc]
    plan = Plan(settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.config = Settings()  # type: ignore[misc]
    decided = plan.decided(threads=3, device="cpu")
    assert (decided.config.threads, decided.device, plan.config.threads, plan.device) == (3, "cpu", None, None)


def test_resume_changes_only_what_it_may():
    from fmclf.errors import UsageError
    from fmclf.run.config import RESUMABLE, Settings

    recorded = Settings(visualizers=["tqdm", "csv"], options={"visualizer.csv": {"filename": "m.csv"}}, seed=4)
    resumed = recorded.resumed_with({"epochs": 20, "visualizers": ["tqdm"], "seed": 4})  # the same seed is no change
    assert (resumed.epochs, resumed.visualizers, resumed.options) == (20, ["tqdm"], {})
    with pytest.raises(UsageError, match="lr"):
        recorded.resumed_with({"lr": 0.5})
    assert "lr" not in RESUMABLE and "epochs" in RESUMABLE
