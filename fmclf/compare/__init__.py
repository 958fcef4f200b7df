"""Comparing components: ``fmclf compare`` (a grid of runs over components,
options and seeds, with statistics) and ``fmclf bench loss`` (every loss on a
stress grid against a float64 reference, and its speed by pytest-benchmark).

    grid       the axes, cells and paired seeds
    jobs       the runs on disk and what each needs next (continuation)
    executor   where runs execute: the Executor interface and the local process pool
    engine     running a comparison, then writing its results
    stats      mean, std, Student's t intervals, the paired t-test
    results    compare.json      markdown  compare.md      curves  curves.png
    stress     the stress grid of logits, the float64 reference, errors in ulps
    bench      fmclf bench loss: stability, and speed through speed_suite (a pytest module)

Importing this package imports neither torch nor pytest.
"""
