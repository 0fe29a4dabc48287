"""The follower's stall rule: only a follower the stream is ahead of, still for STALL_S, is stalled."""

from __future__ import annotations

from tocsin.pipeline.follow import STALL_S, is_stalled


def test_a_follower_is_stalled_only_when_behind_and_still_long_enough() -> None:
    assert is_stalled(behind=True, still_s=STALL_S)
    assert not is_stalled(behind=True, still_s=STALL_S - 0.1)
    # A quiet stream: nothing to follow, however long.
    assert not is_stalled(behind=False, still_s=10 * STALL_S)
