"""table.py turns saved benchmark JSON into README's table, and touches nothing else."""

from __future__ import annotations

import json

import table


def _bench(group, label, best, **info):
    return {"group": group, "name": f"test_{label}", "stats": {"min": best, "median": best * 1.1},
            "extra_info": {"label": label, **info}}


RUN = {
    "datetime": "2026-11-28T15:00:00.000000",
    "machine_info": {"cpu": {"brand_raw": "AMD EPYC", "count": 2}, "system": "Linux", "release": "6.1",
                     "python_version": "3.11.7", "torch": "2.14.1", "torch_threads": 1},
    "benchmarks": [
        _bench("epoch", "plain torch loop", 0.080, baseline=True),
        _bench("epoch", "textbook", 2.5),
        _bench("epoch", "fmclf engine", 0.082, vs_reference_interleaved=1.021),
        _bench("epoch", "numpy", 0.060),
        _bench("whole-run", "plain torch loop", 0.0, time_s=0.053, fixed_s=1.52, baseline=True),
        _bench("whole-run", "fmclf run (defaults)", 0.0, time_s=0.055, fixed_s=1.70, fixed_vs_reference_s=0.18),
        _bench("startup", "fmclf --help", 0.15, vs="import torch"),
        _bench("startup", "import torch", 1.5),
        _bench("stability", "naive ties 3e38", 0.001, readme=False),
    ],
}


def test_the_table_gives_ratios_in_one_form_and_the_machine(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(RUN))
    text = table.table([path])
    assert "AMD EPYC (2 cores)" in text and "torch 2.14.1" in text
    assert "| plain torch loop | 80.0 ms | 88.0 ms | reference |" in text
    assert "| textbook | 2.50 s | 2.75 s | 31× slower than plain torch loop |" in text
    assert ("| fmclf engine | 82.0 ms | 90.2 ms | 1.02× slower than plain torch loop; "
            "1.02× slower with the rounds interleaved |" in text)
    assert "| numpy | 60.0 ms | 66.0 ms | 1.33× faster than plain torch loop |" in text
    assert "| fmclf run (defaults) | 55.0 ms | 1.70 s | 1.04× slower than plain torch loop | +0.18 s |" in text
    assert "| fmclf --help | 150.0 ms | 165.0 ms | 10× faster than import torch |" in text
    assert "stability" not in text and "%" not in text and "x slower" not in text


def test_ratios_read_the_same_both_ways():
    assert table.ratio(2.1, 1.0) == "2.1× slower" and table.ratio(1.0, 2.1) == "2.1× faster"
    assert table.ratio(1.04, 1.0) == "1.04× slower" and table.ratio(47.0, 1.0) == "47× slower"


def test_readme_gets_the_table_under_its_anchor_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- section: other -->\nkeep\n\n<!-- section: benchmarks -->\n\n"
                      "## Development\nkeep too\n")
    table.write_readme(readme, "| a |\n| 1 |")
    table.write_readme(readme, "| b |\n| 2 |")  # a second run replaces the first table
    text = readme.read_text()
    assert text.count("## Benchmarks") == 1 and "| a |" not in text and "| b |\n| 2 |" in text
    assert text.index("<!-- section: benchmarks -->") < text.index("| b |") < text.index("## Development")
    assert "keep\n" in text and "keep too" in text


def test_whole_runs_with_cpu_seconds_get_two_more_columns(tmp_path):
    run = {**RUN, "benchmarks": [
        _bench("whole-run", "plain torch loop", 0.0, time_s=0.053, fixed_s=1.52, cpu_epoch_s=0.05, cpu_fixed_s=1.9,
               baseline=True),
        _bench("whole-run", "fmclf run (defaults)", 0.0, time_s=0.055, fixed_s=1.70, fixed_vs_reference_s=0.18,
               cpu_epoch_s=0.055, cpu_fixed_s=2.6, cpu_vs_reference=[1.1, 0.7]),
    ]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    text = table.table([path])
    assert "| CPU per epoch, fixed | CPU vs reference |" in text
    assert "| plain torch loop | 53.0 ms | 1.52 s | reference | reference | 50.0 ms, 1.90 s | reference |" in text
    assert ("| fmclf run (defaults) | 55.0 ms | 1.70 s | 1.04× slower than plain torch loop | +0.18 s | "
            "55.0 ms, 2.60 s | 1.10× slower, +0.70 s |") in text
