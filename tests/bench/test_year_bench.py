"""The year-in-an-hour bench (F23) in its smallest mode, end to end, as a command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.year_bench import LEDGER_ROWS, ROWS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_mode_prints_every_figure_with_its_verdict(tmp_path: Path) -> None:
    # Two real 3-node clusters (fresh and aged) for about a minute; processes stopped by pid.
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "year_bench.py"), "--mode", "smoke", "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for label, _, _ in ROWS:
        row = next((line for line in lines if line.startswith(label)), None)
        assert row is not None, f"{label!r} missing from:\n{done.stdout}"
        assert row.rstrip().endswith(("PASS", "MISS")), row
    for label, _, _ in LEDGER_ROWS:
        assert any(line.startswith(label) for line in lines), label
    assert any("% of the year's" in line for line in lines), done.stdout
    # The bench cleans up after itself: no cluster directory is left behind.
    assert not any(tmp_path.iterdir())
