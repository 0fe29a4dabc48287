"""Bench: what the self-crossing check (policy.check_polygons) costs at accept, on the loop.

    python bench/area_check_bench.py [--points 1000,10000,100000] [--repeat 5]

For each ring size, three rings of about that many points (a circle of 1° around 45N 5E):
a simple one (GEOS's validity check ends it), one that touches itself (a chord out to a
vertex on the far side and back: GEOS calls it invalid, so the edges are examined, and
nothing is refused) and one that crosses itself (two neighbouring points swapped). Prints the median of `--repeat` runs of
check_polygons over one alert holding that ring, in milliseconds. The ring is the
alert's whole budget of points at 100,000 (`TOCSIN_MAX_ALERT_POINTS`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime

from tocsin.cap.model import Alert, Area, Category, Certainty, Info, MsgType, Polygon, Scope, Severity, Status, Urgency
from tocsin.errors import Rejected
from tocsin.policy import check_polygons


def circle(points: int) -> list[tuple[float, float]]:
    return [(45.0 + math.sin(2 * math.pi * k / points), 5.0 + math.cos(2 * math.pi * k / points)) for k in range(points)]


def rings(points: int) -> dict[str, Polygon]:
    """Each ring closed, of about `points` points."""
    base = circle(points - 2)
    far = len(base) // 2
    # A chord out to the far side and back: that vertex is visited twice (a touch).
    touching = base[:10] + [base[far]] + base[10:]
    crossing = base[:100] + [base[101], base[100]] + base[102:]
    return {name: tuple(ring + [ring[0]]) for name, ring in
            (("simple", base), ("touching", touching), ("crossing", crossing))}


def alert_over(ring: Polygon) -> Alert:
    info = Info(categories=(Category.MET,), event="bench", urgency=Urgency.IMMEDIATE, severity=Severity.SEVERE,
                certainty=Certainty.OBSERVED, areas=(Area(area_desc="bench", polygons=(ring,)),))
    return Alert(identifier="bench", sender="bench@example.org", sent=datetime.now(UTC).replace(microsecond=0), status=Status.ACTUAL,
                 msg_type=MsgType.ALERT, scope=Scope.PUBLIC, infos=(info,))


def measure(alert: Alert, repeat: int) -> tuple[float, str]:
    times, outcome = [], "accepted"
    for _ in range(repeat):
        fresh = replace(alert)  # no cache between runs
        start = time.perf_counter()
        try:
            check_polygons(fresh)
        except Rejected:
            outcome = "refused"
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'points':>8} {'ring':>9} {'ms':>8} outcome")
    for points in (int(p) for p in args.points.split(",")):
        for name, ring in rings(points).items():
            ms, outcome = measure(alert_over(ring), args.repeat)
            print(f"{len(ring):>8} {name:>9} {ms:>8.1f} {outcome}")


if __name__ == "__main__":
    main()
