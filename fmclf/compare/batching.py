"""Which runs of a comparison train together as batched groups, and which alone, with one line per reason.

Runs whose settings differ only in seed, learning rate and the options their
components declare per model (:func:`fmclf.run.group.batch_key`) form a group,
at most ``max_models`` members each; a group is one :class:`Job`,
``fmclf run-group DIR/jobs/group-of-K-from-RUN.json``, whose members still each leave
their own run folder. Everything else is a job of its own, as without
batching. :func:`plan_jobs` is the one call the comparison makes where its
runs become jobs, and :func:`unfold` turns a group's outcome back into one
outcome per member (read from the status each member's folder records).
Importing this module imports no torch.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import DivergenceError, FmclfError
from ..host.loading import PluginHost
from ..run import folder
from ..run.group import MemberSpec, batch_key, write_spec
from ..run.plan import resolve
from .executor import STOPPED, Call, Job, Outcome
from .jobs import JOBS, NEW, RESUME, Run

#: Members of one group when ``--batch-models`` does not say: the parameters, gradients and gathered
#: batches of this many softmax regressions fit in well under 1 GB.
DEFAULT_MAX_MODELS = 256
#: How a member's status.json ending maps to the exit code the run alone would have given.
EXIT_CODES = {"finished": 0, "interrupted": STOPPED, "diverged": DivergenceError.exit_code,
              "failed": FmclfError.exit_code}


@dataclass
class Grouping:
    """The jobs of a comparison, and what its batching decided."""

    jobs: list[Job] = field(default_factory=list)
    members: dict[str, list[Run]] = field(default_factory=dict)  #: a group job's name -> its runs
    lines: list[str] = field(default_factory=list)  #: how the runs were grouped, and why some train alone


def plan_jobs(todo: Sequence[Run], host: PluginHost, plugins: tuple[str, ...], root: pathlib.Path, *,
              batch: bool = True, max_models: int | None = None) -> Grouping:
    """The jobs that train ``todo``: groups where runs may train together (unless ``batch`` is False),
    single runs otherwise. Writes each group's spec into ``root``/jobs/."""
    out = Grouping()
    if not batch:
        out.jobs = [Job(r.name, r.call(plugins), r.log) for r in todo]
        return out
    cap = max_models or DEFAULT_MAX_MODELS
    keyed: dict[str, list[Run]] = {}
    alone: list[tuple[Run, str]] = []
    for run in todo:
        reason, key = _key(run, host)
        if reason:
            alone.append((run, reason))
        else:
            keyed.setdefault(key, []).append(run)
    groups: list[list[Run]] = []
    for runs in keyed.values():
        if len(runs) == 1:
            alone.append((runs[0], "no other run of the comparison may train with it"))
            continue
        groups += _split(sorted(runs, key=lambda r: r.seed), cap)
    for runs in groups:
        # named by its first member, not by its place in this call: the tuning trials' groups and the final
        # runs' are planned by separate calls, and a numbered name would overwrite the other's spec and log
        name = f"group-of-{len(runs)}-from-{runs[0].name}"
        spec = root / JOBS / f"{name}.json"
        write_spec(spec, [MemberSpec(r.name, r.run_dir, r.settings_file if r.state == NEW else None, r.log)
                          for r in runs])
        out.jobs.append(Job(name, Call(group=spec, plugins=plugins), root / JOBS / f"{name}.log"))
        out.members[name] = runs
    out.jobs += [Job(r.name, r.call(plugins), r.log) for r, _ in alone]
    if groups:
        out.lines.append(f"batched: {sum(len(g) for g in groups)} run(s) in {len(groups)} group(s) of up to "
                         f"{max(len(g) for g in groups)}, each trained as one computation in one process "
                         f"(--no-batch trains them one by one)")
    reasons: dict[str, int] = {}
    for _, reason in alone:
        reasons[reason] = reasons.get(reason, 0) + 1
    out.lines += [f"alone: {n} run(s): {reason}" for reason, n in reasons.items()]
    return out


def _split(runs: list[Run], cap: int) -> list[list[Run]]:
    """``runs`` (sorted by seed) in nearly equal groups of at most ``cap``. When every seed has as many runs (a
    grid) and a seed's runs fit in one group, groups hold whole seeds: each group then has as many members
    for every seed, and trains all its seeds in one batched product (see :mod:`fmclf.train.batched`)."""
    seeds: dict[int, list[Run]] = {}
    for run in runs:
        seeds.setdefault(run.seed, []).append(run)
    counts = {len(members) for members in seeds.values()}
    if len(counts) == 1 and (per_seed := counts.pop()) <= cap:
        blocks = list(seeds.values())
        parts = -(-len(blocks) // max(cap // per_seed, 1))
        size = -(-len(blocks) // parts)
        return [[r for block in blocks[i : i + size] for r in block] for i in range(0, len(blocks), size)]
    parts = -(-len(runs) // cap)
    size = -(-len(runs) // parts)
    return [runs[i : i + size] for i in range(0, len(runs), size)]


def _key(run: Run, host: PluginHost) -> tuple[str | None, str | None]:
    """Why ``run`` trains alone, or the key of the runs it may train with."""
    if run.state not in (NEW, RESUME):
        return "it trains further a run that has finished (--epochs grew)", None
    config = copy.deepcopy(run.config)
    config = dataclasses.replace(config, visualizers=["none"] if config.visualizers in (["none"], [])
                                 else config.visualizers)
    reason, key = batch_key(resolve(config, host))
    if reason:
        return reason, None
    done = len(folder.read_metrics(run.run_dir)) if run.state == RESUME else 0
    return None, f"{done}:{key}"  # a group resumes only members at the same epoch


def unfold(outcome: Outcome, grouping: Grouping, done: Callable[[Outcome], None]) -> None:
    """Report ``outcome`` through ``done``: a group's as one outcome per member, with the exit code that
    member would have given alone (from the status its folder records; the group's own when it has none)."""
    runs = grouping.members.get(outcome.job.name)
    if runs is None:
        done(outcome)
        return
    for run in runs:
        status = (folder.read_status(run.run_dir) or {}).get("status", "")
        if status == "diverged" or (outcome.returncode in (0, STOPPED) and status in EXIT_CODES):
            code = EXIT_CODES[status]
        else:  # the group failed as a whole: its error is each member's reason
            code = outcome.returncode or 1
            _copy_log(outcome.job.log, run.log)
        done(Outcome(Job(run.name, outcome.job.call, run.log), code, outcome.seconds))


def _copy_log(source: pathlib.Path, target: pathlib.Path) -> None:
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
        with open(target, "a", encoding="utf-8") as log:
            log.write(text)
    except OSError:
        pass
