"""Bench: what the reach preview's measures cost, off the event loop (api/preview.py).

    python bench/preview_bench.py [--rounds 5] [--json]

Times `geo.measure.shapes_km2` (the union on the sphere; each case measured uncached) for a
département, metropolitan France by its régions and by its départements, and the worst
alert the default limits let through (1,000 polygons of 100 points and 100 circles,
overlapping), and the text budgets of a 1,395-character info. Prints the median and the worst
of the rounds; the figures belong in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tocsin.cap.model import Circle  # noqa: E402
from tocsin.channels.budgets import cell_broadcast, wea  # noqa: E402
from tocsin.geo.gazetteer import builtin  # noqa: E402
from tocsin.geo.measure import shapes_km2  # noqa: E402


def _worst_case() -> tuple[tuple[tuple[tuple[float, float], ...], ...], tuple[Circle, ...]]:
    rng = random.Random(12)
    polygons = []
    for _ in range(1000):
        lat, lon, r = rng.uniform(43, 50), rng.uniform(-1, 7), rng.uniform(0.05, 1.0)
        ring = tuple((lat + r * math.sin(2 * math.pi * k / 99), lon + r * math.cos(2 * math.pi * k / 99))
                     for k in range(99))
        polygons.append(ring + (ring[0],))
    circles = tuple(Circle(lat=rng.uniform(43, 50), lon=rng.uniform(-1, 7), radius_km=rng.uniform(1, 100))
                    for _ in range(100))
    return tuple(polygons), circles


def _time(work: Callable[[], object], rounds: int) -> tuple[float, float, object]:
    took = []
    result: object = None
    for _ in range(rounds):
        shapes_km2.cache_clear()
        started = time.perf_counter()
        result = work()
        took.append(time.perf_counter() - started)
    return statistics.median(took), max(took), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    areas = builtin()
    regions = tuple(p for a in areas if a.scheme == "INSEE-REG" for p in a.polygons)
    departements = tuple(p for a in areas if a.scheme == "INSEE-DEP" for p in a.polygons)
    d06 = next(a for a in areas if (a.scheme, a.code) == ("INSEE-DEP", "06")).polygons
    worst = _worst_case()
    text = "é" * 1000 + "€" * 197
    cases: list[tuple[str, Callable[[], object]]] = [
        ("km² of département 06", lambda: shapes_km2(d06, ())),
        ("km² of France (13 régions)", lambda: shapes_km2(regions, ())),
        ("km² of France (96 départements)", lambda: shapes_km2(departements, ())),
        ("km² of the worst default-limit alert", lambda: shapes_km2(*worst)),
        ("budgets of a 1,395-septet info", lambda: (cell_broadcast(text).length, wea(text).length)),
    ]
    rows = []
    for name, work in cases:
        median_s, worst_s, result = _time(work, args.rounds)
        rows.append({"case": name, "median_ms": round(median_s * 1000, 2), "worst_ms": round(worst_s * 1000, 2),
                     "result": round(result, 1) if isinstance(result, float) else result})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    print(f"{'case':<40} {'median ms':>10} {'worst ms':>10}  result")
    for row in rows:
        print(f"{row['case']:<40} {row['median_ms']:>10} {row['worst_ms']:>10}  {row['result']}")


if __name__ == "__main__":
    main()
