"""tools/membw.py, the read-bandwidth probe behind bench_cpu's floors, compiles and reports."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import membw  # noqa: E402


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_probe_reports_every_stream_count_and_a_plausible_rate():
    rows = membw.measure(1)
    assert [(t, s) for t, s, _ in rows] == [(1, s) for s in (1, 2, 4, 8, 16)]
    best = membw.best_per_thread_count(rows)
    assert set(best) == {1} and best[1] == max(g for _, _, g in rows)
    assert 0.5 < best[1] < 1000  # GB/s: any machine this runs on, and not a timing error
