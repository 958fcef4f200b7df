"""``compare.md``: the cells ranked by one metric, each with the paired comparison
against the best cell that says whether the difference is beyond the seeds' noise."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from . import stats
from .grid import varying
from .results import EXAMPLE_METRIC, NOT_METRICS, CellResult, Ranking, metric_names
from .tuning import space_text

COMPARE_MD = "compare.md"


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _mean_ci(s: stats.Summary, digits: int = 4) -> str:
    if s.mean is None:
        return "—"
    return _num(s.mean, digits) + (f" ± {_num(s.ci95, digits)}" if s.ci95 is not None else "")


def _mean_sd(s: stats.Summary, digits: int = 4) -> str:
    if s.mean is None:
        return "—"
    return _num(s.mean, digits) + (f" ± {_num(s.std, digits)}" if s.std is not None else "")


def verdict(p: stats.Paired | None, best: bool) -> str:
    """The "vs best" cell: the mean paired difference, its 95% interval and what it means."""
    if best:
        return "best"
    if p is None:
        return "no shared seed"
    if p.beyond_noise is None:
        return f"{p.mean_diff:+.4f} (1 shared seed: cannot tell)"
    what = "beyond noise" if p.beyond_noise else "within noise"
    return f"{p.mean_diff:+.4f} ± {p.ci95:.4f}, p = {p.p:.2g}: {what}"


def more_stats(p: stats.Paired | None, test: stats.Paired | None = None) -> list[str]:
    """The columns beside "vs best": the bootstrap interval (of the test difference, ``test``, when a
    validation metric ranks), Holm's p and P(> best)."""
    if p is None:
        return ["—"] * 3
    boot = (test or p).bootstrap
    return [f"{boot[0]:+.4f}..{boot[1]:+.4f}" if boot is not None else "—",
            f"{p.p_holm:.2g}" if p.p_holm is not None else "—",
            f"{p.prob_improvement:.2f}" if p.prob_improvement is not None else "—"]


def runs_phrase(r: CellResult) -> str:
    """``5 of 5``, or ``2 of 5; diverged in 3 of 5 seeds``."""
    n = len(r.runs)
    parts = [f"{len(r.finished)} of {n}"]
    diverged = sum(1 for run in r.failed if run.diverged)
    other = len(r.failed) - diverged
    if diverged:
        parts.append(f"diverged in {diverged} of {n} seeds")
    if other:
        parts.append(f"failed in {other} of {n} seeds")
    if r.missing:
        parts.append(f"{len(r.missing)} not trained yet")
    return "; ".join(parts)


def render(results: Sequence[CellResult], ranking: Ranking | None, *, seeds: list[int], epochs: int,
           command: str | None = None, root: pathlib.Path | None = None,
           protocol: dict[str, Any] | None = None) -> str:
    """The whole of compare.md."""
    cells = [r.cell for r in results]
    axes = varying(cells) or list(cells[0].components)[:2] if cells else []
    metrics = metric_names(results)
    shown = [ranking.metric, ranking.reported] if ranking is not None else []
    others = [m for m in metrics if m not in shown]
    n_runs = sum(len(r.runs) for r in results)
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
    lines = [
        f"# Comparison: {len(cells)} cell(s) × {len(seeds)} seed(s), {epochs} epoch(s)",
        "",
        f"{n_runs} runs ({seed_text}, the same in every cell, so cells are paired by seed); each run folder is under "
        f"`runs/`.",
    ]
    if command:
        lines += ["", f"    {command}"]
    lines.append("")
    if ranking is not None:
        lines += [(
            f"Ranked by **{ranking.metric}** ({'higher' if ranking.higher_is_better else 'lower'} is better) at "
            f"the last epoch: mean ± the 95% confidence interval of the mean over the seeds (Student's t). "
            f"*vs best*: the mean difference from the best cell over the seeds both finished, ± its 95% interval, "
            f"and the paired t-test's p; *beyond noise* when that interval excludes 0. *bootstrap 95%*: the "
            f"difference's percentile bootstrap interval (resampling the seeds, and for {EXAMPLE_METRIC} the test "
            f"examples with them, from each run's predictions); *Holm p*: p adjusted for the "
            f"{max(0, len(results) - 1)} comparisons with the best; *P(>best)*: the probability that a seed of the "
            f"cell beats a seed of the best. Other metrics: "
            f"mean ± standard deviation."),
            "",
        ]
        if ranking.reported:
            lines += [f"The cells are chosen and ranked on the validation split (**{ranking.metric}**); "
                      f"**{ranking.reported}** is reported beside it and was not used to choose.", ""]
        if len(seeds) < stats.FEW_SEEDS:
            lines += [f"**Warning**: {len(seeds)} seed(s) per cell: too few to rest a conclusion on (give --seeds "
                      f"{stats.FEW_SEEDS} or more).", ""]
    if protocol:
        lines += _protocol_lines(protocol)
    head = ["rank", *axes]
    if ranking is not None:
        boot = f"{ranking.reported or ranking.metric} diff, bootstrap 95%"
        head += [f"{ranking.metric}", "vs best", boot, "Holm p", "P(>best)"]
        head += [ranking.reported] if ranking.reported else []
    head += ["lr"] if "lr" not in axes else []
    head += [*others, "s/epoch", "runs"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(results, start=1):
        row = [str(i), *r.cell.label(axes).values()]
        if ranking is not None:
            row += [_mean_ci(r.summary(ranking.metric)),
                    verdict(r.vs_best, i == 1 and bool(r.values.get(ranking.metric)))
                    if r.values.get(ranking.metric) else "—", *more_stats(r.vs_best, r.vs_best_test)]
            row += [_mean_ci(r.summary(ranking.reported))] if ranking.reported else []
        row += [f"{r.cell.config.lr:g}"] if "lr" not in axes else []
        row += [_mean_sd(r.summary(m)) for m in others]
        row += [_mean_sd(stats.summarize(list(r.epoch_seconds.values())), 3), runs_phrase(r)]
        lines.append("| " + " | ".join(row) + " |")
    failed = [run for r in results for run in r.failed]
    if failed:
        lines += ["", "Failed runs (kept as they stopped; `--retry-failed` trains them again):", ""]
        for run in failed:
            where = (run.run_dir.relative_to(root) if root is not None and run.run_dir.is_relative_to(root)
                     else run.run_dir)
            lines.append(f"- `{where}`: {run.reason}")
    missing = sum(len(r.missing) for r in results)
    if missing:
        lines += ["", f"**Incomplete**: {missing} run(s) not trained yet. The same command again continues."]
    if ranking is not None and ranking.metric not in metrics:
        lines += ["", f"No finished run recorded {ranking.metric!r}; its metrics are: "
                      f"{', '.join(metrics) or 'none yet'}."]
    lines += ["", "Curves: [curves.png](curves.png) (mean per cell, band: ± one standard deviation over the seeds).",
              "Scores: [scores.png](scores.png) (every seed of every cell; with tuning, every trial's validation "
              "value against the tuned setting).",
              f"Metrics read from each run's metrics.jsonl (every numeric key but {', '.join(sorted(NOT_METRICS))}).",
              ""]
    return "\n".join(lines)


def _protocol_lines(protocol: dict[str, Any]) -> list[str]:
    """The tuning protocol and each cell's choice."""
    space = space_text(protocol["space"])
    lines = [f"Tuned: every cell got the same {protocol['trials_per_cell']} trial(s) over {space}, drawn by "
             f"{protocol['sampler']}, scored on the validation split with seeds disjoint from the reported ones "
             f"({protocol['trial_seeds']}); each cell's best trial is what the table reports.", ""]
    if protocol.get("prune") == "halving":
        lines += ["Successive halving, the same rungs for every cell: " + ", ".join(
            f"{r['trials']} trial(s) to {r['epochs']} epoch(s)" for r in protocol["rungs"]) + "; at each rung the "
            "better half on validation resumed from its checkpoint, the rest stopped there (their values are in "
            "compare.json).", ""]
    lines += ["| cell | chosen | trial | validation |", "|---|---|---|---|"]
    for name, cell in protocol["cells"].items():
        chosen = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                           for k, v in (cell["chosen"] or {}).items())
        chosen = chosen or ("—" if cell["chosen"] is None else "as given")
        trial = cell["chosen_trial"]
        value = next((t["value"] for t in cell["trials"] if t["number"] == trial), None)
        lines.append(f"| {name} | {chosen} | {'—' if trial is None else trial} | {_num(value)} |")
    return [*lines, ""]
