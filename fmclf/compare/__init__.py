"""Comparing components: ``fmclf compare`` (a grid of runs over components,
options and seeds, with statistics) and ``fmclf bench loss`` (every loss on a
stress grid against a float64 reference, and its speed by pytest-benchmark).

    grid       the axes, cells and paired seeds
    jobs       the runs on disk and what each needs next (continuation)
    executor   where runs execute: a job's Call, the Executor interface, the local process pool
    worker     python -m fmclf.compare.worker: one job's call in a process of its own
    comparison running a comparison, then writing its results
    tuning     --tune: the search space, the Optuna studies, the choice on validation
    dryrun     --dry-run: the grid printed
    stats      scipy.stats: t intervals, IQM, the paired t-test, Holm, P(A>B), bootstrap
    results    compare.json      markdown  compare.md      curves  curves.png      scores  scores.png
    stress     the stress grid of logits, the float64 reference, errors in ulps
    bench      fmclf bench loss: stability, and speed through speed_suite (a pytest module)

Importing this package imports neither torch nor pytest.
"""
