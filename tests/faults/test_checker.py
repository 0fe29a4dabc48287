"""A checker that never fails proves nothing: it must flag each kind of violation."""

from __future__ import annotations

from typing import Any

from tocsin.faults.checker import Expect, check

A, B = "a" * 32, "b" * 32


def history(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    base: list[dict[str, Any]] = [
        {"t": 0.0, "k": "fleet", "devices": [{"i": 0, "inside": True}, {"i": 1, "inside": True},
                                             {"i": 2, "inside": False}]},
        {"t": 1.0, "k": "phase", "what": "issuing"},
        {"t": 1.1, "k": "issue_start", "id": A},
        {"t": 1.2, "k": "acked", "id": A, "seq": 1, "node": "node1", "first_t": 1.1},
        {"t": 1.3, "k": "d", "dev": 0, "seq": 1, "id": A, "disp": True, "why": "", "stale": False},
        {"t": 1.3, "k": "d", "dev": 1, "seq": 1, "id": A, "disp": True, "why": "", "stale": False},
        {"t": 2.0, "k": "phase", "what": "issuing stopped"},
    ]
    return sorted(base + list(extra), key=lambda e: e["t"])


def final(stream: dict[str, list[int]] | None = None, **replicas: Any) -> dict[str, Any]:
    state = {"messages": 1, "bytes": 10, "first_seq": 1, "last_seq": 1, "num_deleted": None}
    return {"stream": {A: [1]} if stream is None else stream,
            "replicas": {"node1": state, "node2": state, "node3": {**state, **replicas}}}


def test_a_clean_history_passes() -> None:
    assert check("T", history(), final(), Expect()).violations == []


def test_an_acknowledged_alert_missing_from_the_stream_is_lost() -> None:
    result = check("T", history(), final(stream={}), Expect())
    assert result.lost == 1 and "not in the stream" in result.violations[0]


def test_an_acknowledged_alert_restored_at_another_seq_is_reported_not_lost() -> None:
    """The stream lost it and a ledger put it back: shown everywhere, so not lost end to end,
    but the stream's loss is reported, and it makes a mutation run pass."""
    result = check("T", history(), final(stream={A: [7]}), Expect())
    assert result.lost == 0 and result.restored == 1 and not result.violations
    assert any("the stream lost 1 acknowledged writes" in note for note in result.notes)
    result.mutation = True
    assert result.verdict == "pass: loss detected"


def test_an_alert_not_shown_on_a_device_in_its_area_is_lost() -> None:
    entries = [e for e in history() if not (e["k"] == "d" and e["dev"] == 1)]
    assert check("T", entries, final(), Expect()).lost == 1


def test_a_second_display_and_a_resent_event_are_flagged() -> None:
    again = {"t": 1.5, "k": "d", "dev": 0, "seq": 1, "id": A, "disp": True, "why": "", "stale": True}
    result = check("T", history(again), final(), Expect())
    assert result.duplicated == 1 and result.redelivered == 1


def test_an_identity_stored_twice_is_a_duplicate() -> None:
    assert check("T", history(), final(stream={A: [1, 2]}), Expect()).duplicated == 1


def test_forged_foreign_and_astray_displays_are_flagged() -> None:
    forged = {"t": 1.4, "k": "d", "dev": 0, "seq": 2, "id": B, "disp": False, "why": "bad signature", "stale": False}
    foreign = {"t": 1.4, "k": "d", "dev": 1, "seq": 3, "id": B, "disp": True, "why": "", "stale": False}
    astray = {"t": 1.4, "k": "d", "dev": 2, "seq": 1, "id": A, "disp": True, "why": "", "stale": False}
    text = " ".join(check("T", history(forged, foreign, astray), final(), Expect()).violations)
    assert "signature" in text and "never issued" in text and "outside" in text


def test_replicas_that_disagree_are_flagged() -> None:
    assert "replicas disagree" in " ".join(check("T", history(), final(last_seq=2), Expect()).violations)


def test_a_long_gap_and_a_late_readyz_are_flagged() -> None:
    entries = history(
        {"t": 1.05, "k": "fault", "what": "x"},
        {"t": 1.9, "k": "heal", "what": "x"},
        {"t": 1.1, "k": "ready", "node": "node1", "ok": True},
        {"t": 1.95, "k": "ready", "node": "node1", "ok": True},
    )
    entries = [{**e, "t": e["t"] * 20} for e in entries]  # a 14 s gap between 26 s and 40 s
    result = check("T", entries, final(), Expect(max_gap_s=5.0, red_nodes=("node1",)))
    text = " ".join(result.violations)
    assert "delivery gap" in text and "not red" in text


def timeline(shown_at: dict[int, Any], seconds: int = 40) -> list[dict[str, Any]]:
    """One alert a second for `seconds`; `shown_at[dev](issued_t)` is when the device shows it."""
    entries: list[dict[str, Any]] = [
        {"t": 0.0, "k": "fleet", "devices": [{"i": 0, "inside": True}, {"i": 1, "inside": True}]},
        {"t": 0.5, "k": "phase", "what": "issuing"},
        {"t": seconds + 1.0, "k": "phase", "what": "issuing stopped"},
    ]
    for n in range(1, seconds):
        alert_id, t = f"{n:032x}", float(n)
        entries += [{"t": t, "k": "issue_start", "id": alert_id},
                    {"t": t, "k": "acked", "id": alert_id, "seq": n, "node": "node1", "first_t": t}]
        entries += [{"t": shown_at[dev](t), "k": "d", "dev": dev, "node": "node3" if dev else "node1", "seq": n,
                     "id": alert_id, "disp": True, "why": "", "stale": False} for dev in (0, 1)]
    return sorted(entries, key=lambda e: e["t"])


def timeline_final(seconds: int = 40) -> dict[str, Any]:
    return final(stream={f"{n:032x}": [n] for n in range(1, seconds)})


def at_once(t: float) -> float:
    return t + 0.1


def stuck_from_10_to_22(t: float) -> float:
    """A device on a node that stopped delivering at 10 s; it moved away at 22.5 s."""
    return 22.5 if 10 <= t < 22.5 else t + 0.1


def test_a_device_left_on_a_bad_node_while_others_deliver_is_stranded() -> None:
    entries = timeline({0: at_once, 1: stuck_from_10_to_22})
    result = check("T", entries, timeline_final(), Expect(max_stranded_s=10.0))
    assert result.max_stranded_s == 12.4  # alert issued at 10 s, first shown 10.1 s, on device 1 at 22.5 s
    assert any("device 1" in v and "stranded" in v for v in result.violations), result.violations
    # Without the bound the figure is still reported, and it is not a violation.
    unbounded = check("T", entries, timeline_final(), Expect())
    assert unbounded.max_stranded_s == 12.4 and unbounded.violations == []


def test_a_device_that_moves_within_the_bound_passes() -> None:
    def moved_after_7_s(t: float) -> float:
        return 17.0 if 10 <= t < 17 else t + 0.1

    result = check("T", timeline({0: at_once, 1: moved_after_7_s}), timeline_final(), Expect(max_stranded_s=10.0))
    assert result.max_stranded_s == 6.9 and result.violations == []


def test_an_early_copy_shown_on_a_cut_off_node_starts_no_stranding_clock() -> None:
    """Device 0's node, cut off from 10 s to 22.5 s, shows its own alerts' early copies at once
    (no seq: nobody else can deliver them before they are stored); device 1 has them once
    stored, at 22.5 s. Device 1 was not stranded: no node could deliver them before."""
    entries = timeline({0: at_once, 1: stuck_from_10_to_22})
    for e in entries:
        if e["k"] == "d" and e["dev"] == 0 and 10 <= e["t"] < 22.5:
            e["seq"] = None
    result = check("T", entries, timeline_final(), Expect(max_stranded_s=10.0))
    assert result.max_stranded_s < 0.5 and result.violations == [], result.violations


def test_a_gap_while_no_node_delivers_is_not_stranding() -> None:
    """Every node down from 10 s to 25 s: every device waits, the device gap is long, but no
    node was delivering meanwhile, so no device was stranded."""
    def nobody_delivers(t: float) -> float:
        return 25.0 + t / 100 if 10 <= t < 25 else t + 0.1

    result = check("T", timeline({0: nobody_delivers, 1: nobody_delivers}), timeline_final(),
                   Expect(max_gap_s=None, max_stranded_s=10.0))
    assert result.max_device_gap_s > 10.0
    assert result.max_stranded_s < 0.5 and result.violations == []


# -- push devices ---------------------------------------------------------------------------

INSIDE, OUTSIDE, CROWD = "s-in", "s-out", "s-crowd"


def push_history(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    devices = [{"i": 0, "sub": INSIDE, "inside": True, "crowd": False},
               {"i": 1, "sub": OUTSIDE, "inside": False, "crowd": False},
               {"i": 2, "sub": CROWD, "inside": False, "crowd": True}]
    return history({"t": 0.5, "k": "push_devices", "devices": devices}, *extra)


def pushed(*messages: tuple[str, str, str]) -> dict[str, Any]:
    return {**final(), "push": [{"event": "message", "subscription": sub, "alert_id": alert_id, "topic": topic}
                                for sub, alert_id, topic in messages]}


def test_every_push_made_once_passes_and_counts() -> None:
    result = check("T", push_history(), pushed((INSIDE, A, "t1")), Expect())
    assert result.violations == []
    assert (result.push_expected, result.push_received, result.push_lost, result.push_repeats) == (1, 1, 0, 0)


def test_a_push_never_made_is_lost_and_one_outside_the_area_is_astray() -> None:
    result = check("T", push_history(), pushed((OUTSIDE, A, "t1"), (CROWD, A, "t1")), Expect())
    assert result.push_lost == 1 and result.push_astray == 2
    assert any("never made" in v for v in result.violations)
    assert any("outside the alert's area" in v for v in result.violations)


def test_the_crowd_expects_its_crowd_alert_only() -> None:
    crowd = {"t": 1.15, "k": "crowd_alert", "id": A}
    assert check("T", push_history(crowd), pushed((INSIDE, A, "t1")), Expect()).push_lost == 1
    assert check("T", push_history(crowd), pushed((INSIDE, A, "t1"), (CROWD, A, "t1")), Expect()).violations == []


def test_repeats_are_a_figure_within_the_sends_in_flight_and_a_violation_beyond() -> None:
    kill = {"t": 1.25, "k": "fault", "what": "kill", "repeat_bound": 1}
    twice = pushed((INSIDE, A, "t1"), (INSIDE, A, "t1"))
    within = check("T", push_history(kill), twice, Expect(max_gap_s=None))
    assert within.violations == [] and (within.push_repeats, within.push_repeat_bound) == (1, 1)
    beyond = check("T", push_history(), twice, Expect())
    assert any("more than the 0 sends" in v for v in beyond.violations)


def test_one_alert_under_two_topics_is_shown_twice() -> None:
    kill = {"t": 1.25, "k": "fault", "what": "kill", "repeat_bound": 5}
    result = check("T", push_history(kill), pushed((INSIDE, A, "t1"), (INSIDE, A, "t2")), Expect(max_gap_s=None))
    assert any("shown twice" in v for v in result.violations)


def test_a_push_that_does_not_decrypt_or_was_never_issued_is_flagged() -> None:
    data = pushed((INSIDE, A, "t1"), (INSIDE, B, "t9"))
    data["push"].append({"event": "undecryptable", "subscription": INSIDE})
    result = check("T", push_history(), data, Expect())
    assert any("did not decrypt" in v for v in result.violations)
    assert any("not issued" in v for v in result.violations)
