"""The report gives the push devices' figures of the runs that had push devices, only those."""

from __future__ import annotations

from tocsin.faults.checker import Result
from tocsin.faults.report import render


def test_push_figures_get_their_own_table() -> None:
    push = Result(fault="F28-node", acked=3, push_devices=2, push_expected=6, push_received=7, push_repeats=1,
                  push_repeat_bound=48)
    plain = Result(fault="F01", acked=3)
    text = render([plain, push], command="tocsin-faults --only F01,F28-node", scenarios={})
    assert "| F28-node | 2 | 6 | 7 | 0 | 0 | 1 | 48 | **pass** |" in text
    assert "| F01 | 2 |" not in text
    assert "Push devices (F28)" not in render([plain], command="c", scenarios={})
