"""The five invariants of RELIABILITY.md, checked against a run's history and final state.

1. no acknowledged alert lost: in the stream and shown by every device inside its area (one
   the stream lost and a ledger restored at a new seq is reported, not counted as lost);
2. no duplicate display per (device, identity); no identity stored twice (events re-sent at
   or below a device's Last-Event-ID, after a cursor its node could not vouch for, are
   reported: the device drops them by identity);
3. nothing shown that was not issued, outside its area, or failing signature verification;
4. replicas agree (last seq, message count and bytes on every node);
5. timeliness: the first delivery after the fault heals within 15 s; `/readyz` red within
   10 s of delivery stopping and green within 15 s of recovery (where the scenario expects
   delivery to stop);
6. no device stranded: while at least one node delivers, no device goes more than 10 s
   without the alerts issued meanwhile (where the scenario sets `max_stranded_s`).

A scenario adds its own figure checks (p99 latency, longest gap, expected 503s...).

Push devices (runs with `Options.push_devices`; RELIABILITY.md F28, "every push delivery
once"), from the Web Push fake's state file (one line per push it accepted and its browser
decrypted):

- lost = 0: every acknowledged alert reaches every push device inside its area at least once
  (the crowd of F28-planner is inside the area of the alerts marked `crowd_alert` only);
- nothing reaches a push device outside the alert's area, no alert the workload never issued
  arrives, and every accepted push decrypts;
- shown once, as a browser shows it: every copy of one alert for one subscription carries
  the same Topic (the browser keeps one message per Topic, and the app drops a repeat by
  identity); copies under two Topics would be shown twice, a violation;
- raw repeats (one alert accepted twice for one subscription) are a figure, not a violation:
  a dispatcher killed between the gateway's 201 and its ack leaves that delivery unacked, and
  the dispatcher that takes it over after ack_wait sends it again. They are bounded by the
  sends in flight at the kills: the `repeat_bound` each fault entry states (the dispatch
  concurrency of every dispatcher it killed or cut off); more repeats than that is a
  violation (a redelivery not caused by the fault).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """What a scenario requires beyond the invariants."""

    max_gap_s: float | None = 15.0  # longest fleet-wide delivery gap (the "canary gap")
    recover_s: float = 15.0  # first delivery after the last heal
    p99_s: float | None = None  # issue-to-display, over every (device, alert)
    # Nodes whose /readyz must turn red within `red_within_s` of the first fault and be
    # green again within `green_within_s` of recovery.
    red_nodes: tuple[str, ...] = ()
    red_within_s: float = 10.0
    green_within_s: float = 15.0
    expect_503: bool = False  # issuers must have been refused (no false success)
    # Acknowledgements that must not happen in a window (F06: the minority never acknowledges).
    no_ack_from: tuple[str, ...] = ()
    refusals_expected: int = 0  # 4xx refusals the scenario provokes on purpose (F15)
    # Invariant 6: the longest any device may show an alert after the first device showed it.
    max_stranded_s: float | None = None


@dataclass(slots=True, kw_only=True)
class Result:
    fault: str
    acked: int = 0
    issued: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0
    gave_up: int = 0
    max_gap_s: float = 0.0
    max_device_gap_s: float = 0.0
    # Invariant 6: the longest a device went without an alert that a node was delivering.
    max_stranded_s: float = 0.0
    recover_s: float | None = None
    p99_s: float | None = None
    red_after_s: dict[str, float | None] = field(default_factory=dict)
    green_after_s: dict[str, float | None] = field(default_factory=dict)
    refused: int = 0
    unavailable: int = 0  # 503 answers
    republished_alarms: int = 0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    duration_s: float = 0.0
    # A mutation run sets up an unsafe cluster on purpose: it passes when the checker
    # reports the loss (RELIABILITY.md: a checker that never fails proves nothing).
    mutation: bool = False
    # Acknowledged writes the stream lost and the reconciler restored from a ledger.
    restored: int = 0
    # Alerts submitted by one person and published by another's approval during the run.
    approved: int = 0
    # Push devices (the checker's docstring): inside/crowd subscriptions, pushes expected
    # ((subscription, alert) pairs), received, missing, astray, raw repeats and their bound.
    push_devices: int = 0
    push_expected: int = 0
    push_received: int = 0
    push_lost: int = 0
    push_astray: int = 0
    push_repeats: int = 0
    push_repeat_bound: int = 0

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "skipped"
        if self.mutation:
            return "pass: loss detected" if self.lost or self.restored else "FAIL: no loss detected"
        return "pass" if not self.violations else "FAIL"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(**{k: v for k, v in data.items() if k in cls.__slots__})

    def as_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["verdict"] = self.verdict
        return out


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))]


class Checker:
    def __init__(self, fault: str, entries: list[dict[str, Any]], final: dict[str, Any], expect: Expect) -> None:
        self.fault = fault
        self.entries = entries
        self.final = final
        self.expect = expect
        self.result = Result(fault=fault)
        self.by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in entries:
            self.by_kind[entry["k"]].append(entry)
        fleet = self.by_kind["fleet"][0]["devices"] if self.by_kind["fleet"] else []
        self.inside = {d["i"] for d in fleet if d["inside"]}
        self.outside = {d["i"] for d in fleet if not d["inside"]}

    def check(self) -> Result:
        r = self.result
        self.acked = {e["id"]: e for e in self.by_kind["acked"]}
        self.issued = {e["id"] for e in self.by_kind["issue_start"]}
        r.acked, r.issued = len(self.acked), len(self.issued)
        r.gave_up = len(self.by_kind["gave_up"])
        r.refused = len(self.by_kind["refused"])
        r.unavailable = sum(1 for e in self.by_kind["issue"] if e.get("status") == 503)
        r.republished_alarms = int(self.final.get("republished_alarms", 0))
        two_person = {e["id"] for e in self.by_kind["issue_start"] if e.get("approval")}
        r.approved = len(two_person & set(self.acked))
        if two_person:
            # Invariant 1 holds for them as for any acknowledged alert (lost() below).
            r.notes.append(f"{r.approved} of {len(two_person)} alerts went through submission and approval "
                           "by a second person during the run")
        self.lost()
        self.duplicates()
        self.foreign()
        self.replicas()
        self.timeliness()
        self.issuers()
        self.push()
        return r

    # 1
    def lost(self) -> None:
        stream: dict[str, list[int]] = self.final.get("stream", {})
        shown: dict[str, set[int]] = defaultdict(set)
        for e in self.by_kind["d"]:
            if e["disp"]:
                shown[e["id"]].add(e["dev"])
        lost = set()
        moved = 0
        for alert_id, ack in self.acked.items():
            seqs = stream.get(alert_id, [])
            if not seqs:
                lost.add(alert_id)
                self._violation(f"acknowledged alert {alert_id} (seq {ack['seq']}) is not in the stream")
            elif ack["seq"] not in seqs:
                # The stream lost this acknowledged write and the reconciler put it back from
                # a node's ledger at a new seq: not lost end to end (devices must still show
                # it), but the stream's loss is reported, and it is what a mutation run shows.
                moved += 1
            missing = self.inside - shown[alert_id]
            if missing:
                lost.add(alert_id)
                self._violation(f"alert {alert_id} (seq {ack['seq']}) not shown by {len(missing)} devices in its area"
                                f" (e.g. device {min(missing)})")
        self.result.lost = len(lost)
        self.result.restored = moved
        if moved:
            self.result.notes.append(
                f"the stream lost {moved} acknowledged writes; the ledgers restored them at new seqs"
            )

    # 2
    def duplicates(self) -> None:
        counts: dict[tuple[int, str], int] = defaultdict(int)
        redelivered = 0
        for e in self.by_kind["d"]:
            if e["disp"]:
                counts[(e["dev"], e["id"])] += 1
            if e.get("stale"):
                redelivered += 1
        dup_displays = sum(n - 1 for n in counts.values() if n > 1)
        stored_twice = [i for i, seqs in self.final.get("stream", {}).items() if len(seqs) > 1]
        self.result.duplicated = dup_displays + len(stored_twice)
        self.result.redelivered = redelivered
        if dup_displays:
            self._violation(f"{dup_displays} duplicate displays")
        for alert_id in stored_twice[:5]:
            self._violation(f"identity {alert_id} stored twice: seqs {self.final['stream'][alert_id]}")
        if redelivered:
            # Not a violation: a node replays every active alert for a cursor it cannot vouch
            # for (a stream that lost its tail); devices drop repeats by identity, and a
            # repeated display is counted above.
            self.result.notes.append(f"{redelivered} events re-sent at or below the device's Last-Event-ID")

    # 3
    def foreign(self) -> None:
        bad = [e for e in self.by_kind["d"] if e["why"] in ("bad signature", "bad identity")]
        if bad:
            self._violation(f"{len(bad)} events failed signature or identity checks (e.g. seq {bad[0]['seq']})")
        not_issued = {e["id"] for e in self.by_kind["d"] if e["disp"] and e["id"] not in self.issued}
        if not_issued:
            self._violation(f"{len(not_issued)} alerts shown that the workload never issued")
        astray = [e for e in self.by_kind["d"] if e["disp"] and e["dev"] in self.outside]
        if astray:
            self._violation(f"{len(astray)} displays on devices outside the alert's area")

    # 4
    def replicas(self) -> None:
        states = self.final.get("replicas", {})
        if not states or any(v is None for v in states.values()):
            self._violation(f"a replica did not report its stream state: {states}")
            return
        distinct = {tuple(sorted(v.items())) for v in states.values()}
        if len(distinct) > 1:
            self._violation(f"replicas disagree: {states}")

    # 5
    def timeliness(self) -> None:
        r, x = self.result, self.expect
        phases = {e["what"]: e["t"] for e in self.by_kind["phase"]}
        start, end = phases.get("issuing"), phases.get("issuing stopped")
        faults = self.by_kind["fault"]
        heals = self.by_kind["heal"]
        displays = [e for e in self.by_kind["d"] if e["disp"] and e["dev"] in self.inside]
        if start is None or end is None:
            return
        # Issue-to-display latency.
        latencies = [d["t"] - self.acked[d["id"]]["first_t"] for d in displays if d["id"] in self.acked]
        r.p99_s = _percentile(latencies, 99)
        if x.p99_s is not None and (r.p99_s is None or r.p99_s > x.p99_s):
            self._violation(f"p99 issue-to-display {r.p99_s} s exceeds {x.p99_s} s")
        # Longest gap between deliveries, fleet-wide (the canary gap) and on any one device.
        window = [start + 2.0] + sorted(d["t"] for d in displays if start + 2.0 <= d["t"] <= end) + [end]
        r.max_gap_s = round(max(b - a for a, b in zip(window, window[1:])), 2)
        per_device: dict[int, list[float]] = defaultdict(list)
        for d in displays:
            if start + 2.0 <= d["t"] <= end:
                per_device[d["dev"]].append(d["t"])
        gaps = [max(b - a for a, b in zip([start + 2.0, *ts, end], [*ts, end])) for ts in per_device.values()]
        r.max_device_gap_s = round(max(gaps, default=0.0), 2)
        if x.max_gap_s is not None and r.max_gap_s > x.max_gap_s:
            self._violation(f"delivery gap {r.max_gap_s} s exceeds {x.max_gap_s} s")
        self.stranded(displays, start + 2.0, end)
        # Recovery: the first delivery after the last heal.
        if heals:
            healed = heals[-1]["t"]
            after = [d["t"] for d in displays if d["t"] >= healed]
            r.recover_s = round(min(after) - healed, 2) if after else None
            if r.recover_s is None or r.recover_s > x.recover_s:
                self._violation(f"no delivery within {x.recover_s} s of the heal (first after {r.recover_s} s)")
        # /readyz: red within 10 s of the fault (delivery stopping), green after recovery.
        if x.red_nodes and faults:
            fault_t = faults[0]["t"]
            recovered_t = (heals[-1]["t"] + (r.recover_s or 0.0)) if heals else end
            samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for e in self.by_kind["ready"]:
                samples[e["node"]].append(e)
            for node in x.red_nodes:
                red = [s["t"] for s in samples[node] if s["t"] >= fault_t and not s["ok"]]
                r.red_after_s[node] = round(red[0] - fault_t, 2) if red else None
                if not red or red[0] - fault_t > x.red_within_s:
                    self._violation(f"/readyz of {node} not red within {x.red_within_s} s of the fault "
                                    f"(first red after {r.red_after_s[node]} s)")
                green = [s["t"] for s in samples[node] if s["t"] >= recovered_t and s["ok"]]
                r.green_after_s[node] = round(green[0] - recovered_t, 2) if green else None
                if not green or green[0] - recovered_t > x.green_within_s:
                    self._violation(f"/readyz of {node} not green within {x.green_within_s} s of recovery "
                                    f"(first green after {r.green_after_s[node]} s)")

    # 6
    def stranded(self, displays: list[dict[str, Any]], start: float, end: float) -> None:
        """How long a device went without an alert while a node was delivering it.

        Measured per alert: from the first display of its stored copy on any device (every
        delivering node delivers it from then on) to its display on each device inside its
        area. A device gap while no node delivers (every node down, no quorum) delays the
        first display too, so it is not counted; a device left on a bad node while others
        deliver is. An early copy (no seq: pipeline/early.py) counts as the device's display
        but starts no clock: a node cut off from the others shows its own alerts early to its
        own devices, which no other node can deliver before the alert is stored. Alerts first
        shown in the window [start, end] of the device-gap figure count.
        """
        r, x = self.result, self.expect
        first: dict[str, float] = {}
        for d in displays:
            if d.get("seq") is not None and (d["id"] not in first or d["t"] < first[d["id"]]):
                first[d["id"]] = d["t"]
        worst: tuple[float, dict[str, Any]] | None = None
        for d in displays:
            begun = first.get(d["id"])
            if begun is not None and start <= begun <= end and (worst is None or d["t"] - begun > worst[0]):
                worst = (d["t"] - begun, d)
        r.max_stranded_s = round(worst[0], 2) if worst else 0.0
        if x.max_stranded_s is not None and worst is not None and worst[0] > x.max_stranded_s:
            late, d = worst
            self._violation(f"device {d['dev']} showed alert {d['id']} {late:.1f} s after the first device "
                            f"(on node {d.get('node')}): stranded longer than {x.max_stranded_s} s")

    def issuers(self) -> None:
        r, x = self.result, self.expect
        if r.gave_up:
            self._violation(f"{r.gave_up} alerts never acknowledged after the issuer's retries")
        if r.refused > x.refusals_expected:
            refusals = self.by_kind["refused"]
            self._violation(f"{r.refused} alerts refused (e.g. {refusals[0]['status']}: {refusals[0]['body'][:120]})")
        if x.expect_503 and not r.unavailable:
            self._violation("the issuer never got a 503 although the stream had no quorum")
        if x.no_ack_from:
            faults = self.by_kind["fault"]
            heals = self.by_kind["heal"]
            if faults and heals:
                a, b = faults[0]["t"], heals[-1]["t"]
                bad = [e for e in self.by_kind["issue"] if e.get("seq") is not None and e["node"] in x.no_ack_from
                       and a + 1.0 <= e["t"] <= b]
                if bad:
                    self._violation(f"{len(bad)} acknowledgements from the cut-off node(s) {x.no_ack_from}")

    # push devices (the module docstring)
    def push(self) -> None:
        registered = self.by_kind["push_devices"]
        if not registered:
            return
        r = self.result
        devices = {d["sub"]: d for d in registered[0]["devices"]}
        crowd_ids = {e["id"] for e in self.by_kind["crowd_alert"]}

        def expected(sub: str, alert_id: str) -> bool:
            device = devices[sub]
            return bool(device["inside"] or (device["crowd"] and alert_id in crowd_ids))

        copies: dict[tuple[str, str], int] = defaultdict(int)
        topics: dict[tuple[str, str], set[str | None]] = defaultdict(set)
        for m in self.final.get("push", []):
            if m.get("event") == "undecryptable":
                self._violation(f"a push to subscription {m['subscription']} did not decrypt")
                continue
            sub, alert_id = str(m["subscription"]), str(m.get("alert_id"))
            if sub not in devices or alert_id not in self.issued:
                self._violation(f"push of {alert_id} to {sub}: not a registered device or not issued")
                continue
            copies[(sub, alert_id)] += 1
            topics[(sub, alert_id)].add(m.get("topic"))
        pairs = [(sub, a) for a in self.acked for sub in devices if expected(sub, a)]
        lost = [p for p in pairs if not copies.get(p)]
        astray = [p for p in copies if not expected(*p)]
        twice = [p for p, t in topics.items() if len(t) > 1]
        r.push_devices = sum(1 for d in devices.values() if d["inside"] or d["crowd"])
        r.push_expected, r.push_received = len(pairs), sum(copies.values())
        r.push_lost, r.push_astray = len(lost), len(astray)
        r.push_repeats = sum(n - 1 for n in copies.values() if n > 1)
        r.push_repeat_bound = sum(int(e.get("repeat_bound", 0)) for e in self.by_kind["fault"])
        if lost:
            sub, alert_id = lost[0]
            self._violation(f"{len(lost)} push deliveries never made (e.g. alert {alert_id} to {sub})")
        if astray:
            self._violation(f"{len(astray)} pushes to devices outside the alert's area (e.g. {astray[0]})")
        if twice:
            self._violation(f"{len(twice)} alerts pushed under two Topics to one device: shown twice")
        if r.push_repeats > r.push_repeat_bound:
            self._violation(f"{r.push_repeats} pushes repeated: more than the {r.push_repeat_bound} sends "
                            "in flight at the kills")
        r.notes.append(f"push: {r.push_devices} devices, {r.push_received} pushes accepted of {r.push_expected} "
                       f"expected, lost {r.push_lost}, astray {r.push_astray}, repeats {r.push_repeats} "
                       f"(bound {r.push_repeat_bound}: sends in flight at the kills), each shown once by Topic")

    def _violation(self, text: str) -> None:
        if len(self.result.violations) < 40:
            self.result.violations.append(text)
        elif len(self.result.violations) == 40:
            self.result.violations.append("... (more)")


def check(fault: str, entries: list[dict[str, Any]], final: dict[str, Any], expect: Expect) -> Result:
    return Checker(fault, entries, final, expect).check()
