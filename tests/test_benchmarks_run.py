"""The benchmarks still run: each at a toy size, checked for its figures, never its times.

`make bench` runs them at full size and nothing else calls them, so a change in a
shared helper (benchmarks/common.py) broke plan_scale.py unnoticed once. These runs
assert only that each script finishes and prints its JSON line with the figures the
README's performance table quotes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(tmp_path: Path, script: str, *args: str) -> dict[str, object]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    figures: dict[str, object] = json.loads(last)
    return figures


def test_plan_scale_prints_compiled_and_interpreted_ratios(tmp_path: Path) -> None:
    figures = _run(
        tmp_path, "plan_scale.py", "--recipients", "300", "--shapes", "", "--repeat", "1"
    )
    for key in ("ratio", "cpu_ratio", "interpreted_ratio", "plan_peak_rss_mb", "build"):
        assert key in figures, key
    assert figures["recipients"] == 300


def test_fleet_prints_cold_and_unchanged_for_both_job_counts(tmp_path: Path) -> None:
    figures = _run(
        tmp_path,
        "fleet.py",
        *("--municipalities", "6", "--recipients", "900", "--largest", "400"),
        *("--jobs", "2", "--data", str(tmp_path / "fleet")),
    )
    assert figures["municipalities"] == 6 and figures["recipients"] == 900
    for key in ("cold_j1", "unchanged_j1", "cold_j2", "unchanged_j2"):
        assert isinstance(figures[key], dict) and "seconds" in figures[key], key


@pytest.mark.broker
def test_apply_throughput_prints_the_end_to_end_figures(tmp_path: Path) -> None:
    figures = _run(tmp_path, "apply_throughput.py", "--part-mb", "0.2", "--parts", "1")
    for key in ("ratio", "end_to_end_s", "send_window_s", "plan_s", "e2e_target_met"):
        assert key in figures, key
