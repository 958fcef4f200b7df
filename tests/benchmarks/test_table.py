"""table.py turns saved benchmark JSON into README's table, and touches nothing else."""

from __future__ import annotations

import json

import table


def _bench(group, label, best, **info):
    return {"group": group, "name": f"test_{label}", "stats": {"min": best, "median": best * 1.1}, "extra_info": {"label": label, **info}}


RUN = {
    "datetime": "2026-11-28T15:00:00.000000",
    "machine_info": {"cpu": {"brand_raw": "AMD EPYC", "count": 2}, "system": "Linux", "release": "6.1", "python_version": "3.11.7", "torch": "2.14.1", "torch_threads": 1},
    "benchmarks": [
        _bench("epoch", "textbook", 2.5, baseline=True),
        _bench("epoch", "hand-written loop", 0.080),
        _bench("epoch", "fmclf engine", 0.082, vs="hand-written loop", overhead_vs_hand_interleaved=0.021),
        _bench("startup", "fmclf --help", 0.15, vs="import torch"),
        _bench("startup", "import torch", 1.5),
        _bench("stability", "naive ties 3e38", 0.001, readme=False),
    ],
}


def test_the_table_gives_ratios_and_the_machine(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(RUN))
    text = table.table([path])
    assert "AMD EPYC (2 cores)" in text and "torch 2.14.1 (1 threads)" in text
    assert "| epoch | textbook | 2.50 s | 2.75 s | baseline |" in text
    # one ratio format throughout: "N× faster" or "N× slower", never percentages
    assert "| epoch | fmclf engine | 82.0 ms | 90.2 ms | 30× faster; 1.02× slower than hand-written loop; 1.02× slower than hand-written loop, rounds interleaved |" in text
    assert "%" not in text
    assert "| startup | fmclf --help | 150.0 ms | 165.0 ms | 10× faster than import torch |" in text
    assert "stability" not in text


def test_readme_gets_the_table_under_its_anchor_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- section: other -->\nkeep\n\n<!-- section: benchmarks -->\n\n## Development\nkeep too\n")
    table.write_readme(readme, "| a |\n| 1 |")
    table.write_readme(readme, "| b |\n| 2 |")  # a second run replaces the first table
    text = readme.read_text()
    assert text.count("## Benchmarks") == 1 and "| a |" not in text and "| b |\n| 2 |" in text
    assert text.index("<!-- section: benchmarks -->") < text.index("| b |") < text.index("## Development")
    assert "keep\n" in text and "keep too" in text


def test_every_comparison_reads_as_faster_or_slower():
    assert table.versus(1.0, 2.1) == "2.10× faster" and table.versus(1.4, 1.0) == "1.40× slower"
    assert table.versus(0.1, 4.9) == "49× faster" and table.versus(1.0, 1.0) == "1.00× faster"
