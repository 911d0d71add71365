"""benchmarks/page_load.py at a small size (a 3 h run at 60 s, 3 baseline runs, one timed load): it builds its
site, starts the dashboard, measures in Chromium and prints its table with every figure a number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import chromium_or_skip


@pytest.mark.browser
@pytest.mark.slow
def test_page_load_benchmark_runs_at_a_small_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chromium_or_skip()
    from benchmarks.page_load import main

    args = ["--days", "0.125", "--tags", "12", "--interval-s", "60", "--baseline", "3", "--live-hours", "1"]
    assert main([*args, "--repeat", "1", "--refreshes", "2", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    figures = {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(
            r"^(store:.*?|page data:.*?|Chromium:.*?|live refresh:.*?)\s+([\d.]+|nan)\s", out, re.M
        )
    }
    assert len(figures) == 8, out
    assert all(v == v and v > 0 for v in figures.values()), out  # every figure measured (no NaN)
    assert "3 baseline runs overlaid" in out
