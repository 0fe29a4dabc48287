"""Bench: gazetteer import, and the cost of a territory given by gazetteer codes.

    python bench/areas_bench.py [--file F.geojson] [--code-property code] [--name-property nom] [--json]

It starts `tocsin serve` (one node, its own nats-server child), then measures:

- the import of FILE (default: the built-in simplified départements, tests/data/geo) through
  `PUT /api/v1/admin/areas/BENCH` (read, checked whole, one record per area written to the
  areas bucket, shown by the node's gazetteer), end to end from the client, and the check
  alone in this process (`read_geojson`, what the CLI does before sending);
- the largest record of the file (bytes as stored; the bound is MAX_RECORD_BYTES);
- in this process, for territories of the built-in gazetteers and of FILE (its largest area,
  all its areas): the union widened by the default margin (built once per record or
  gazetteer change, off the event loop, then cached) and one check of a 5-point alert
  against it.

Give the full France file (départements with overseas, 3.7 MB) with --file to measure the
largest import the docs speak of. The node is stopped by pid at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.serve_bench import Server, _interrupt, free_port, machine  # noqa: E402
from tocsin.api.areas import read_geojson  # noqa: E402
from tocsin.cap.parse import parse_xml  # noqa: E402
from tocsin.geo.gazetteer import Gazetteer, NamedArea, builtin, record  # noqa: E402
from tocsin.geo.territory import Territory, _union  # noqa: E402
from tocsin.policy import check_territory  # noqa: E402
from tests.samples import alert_xml  # noqa: E402

DEFAULT_FILE = ROOT / "tests" / "data" / "geo" / "departements-version-simplifiee.geojson"
IN_NICE = "43.70,7.25 43.70,7.27 43.72,7.27 43.72,7.25 43.70,7.25"
IN_LYON = "45.70,4.80 45.70,4.90 45.80,4.90 45.80,4.80 45.70,4.80"
# Each territory, and a 5-point alert inside it.
TERRITORIES = {"one département (INSEE-DEP:06)": (["INSEE-DEP:06"], IN_NICE),
               "one région (INSEE-REG:84, 12 départements)": (["INSEE-REG:84"], IN_LYON),
               "all 13 régions": ([f"INSEE-REG:{c}" for c in ("11", "24", "27", "28", "32", "44", "52", "53", "75",
                                                                "76", "84", "93", "94")], IN_NICE)}


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def territory_costs(margin_m: float, repeats: int, imported: list[NamedArea]) -> list[dict[str, Any]]:
    gazetteer = Gazetteer([*builtin(), *imported])
    largest = max(imported, key=lambda a: a.points)
    territories = {**TERRITORIES,
                   f"the largest area of FILE ({largest.code}, {largest.points} points)": (
                       [f"BENCH:{largest.code}"], None),
                   f"every area of FILE ({len(imported)})": ([f"BENCH:{a.code}" for a in imported], None)}
    rows = []
    for label, (areas, inside) in territories.items():
        alert = parse_xml(alert_xml(polygon=inside)) if inside else None
        builds = []
        for _ in range(repeats):
            territory = Territory.from_json({"areas": areas})  # a new object: its union is built again
            start = time.perf_counter()
            _union(territory, gazetteer, margin_m)
            builds.append(_ms(start))
        start = time.perf_counter()
        checks = 200 if alert is not None else 0
        for _ in range(checks):
            check_territory(alert, territory, gazetteer=gazetteer, margin_m=margin_m)  # inside: no refusal
        rows.append({"territory": label, "union_ms": sorted(builds)[len(builds) // 2],
                     "check_ms": _ms(start) / checks if checks else None})
    return rows


def import_cost(url: str, token: str, raw: bytes, code_property: str, name_property: str | None) -> dict[str, Any]:
    params = {"code_property": code_property, **({"name_property": name_property} if name_property else {})}
    start = time.perf_counter()
    answer = httpx.put(f"{url}/api/v1/admin/areas/BENCH", params=params, content=raw, timeout=300,
                       headers={"Authorization": f"Bearer {token}"})
    elapsed = _ms(start)
    answer.raise_for_status()
    return {"import_ms": elapsed, **answer.json()}


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    raw = Path(args.file).read_bytes()
    start = time.perf_counter()
    areas = read_geojson(raw, "BENCH", args.code_property, args.name_property)
    check_ms = _ms(start)
    tracemalloc.start()  # again, for the memory a check holds at its peak (timed above without it)
    read_geojson(raw, "BENCH", args.code_property, args.name_property)
    peak_bytes = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    largest = max(areas, key=lambda a: len(record(a)))
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-areas-", dir=args.tmp))
    stack.callback(lambda: shutil.rmtree(workdir, ignore_errors=True))
    server = Server(data_dir=workdir / "data", port=free_port(), admin_token=f"tca_{secrets.token_urlsafe(24)}",
                    extra_env={"TOCSIN_PROBE_INTERVAL_S": "0"})
    stack.callback(server.stop)
    server.start()
    imported = import_cost(server.url, server.admin_token, raw, args.code_property, args.name_property)
    return {
        "machine": machine(),
        "file": {"path": str(args.file), "bytes": len(raw), "areas": len(areas), "points": sum(a.points for a in areas),
                 "check_ms": check_ms, "check_peak_bytes": peak_bytes, "largest_record": {"code": largest.code, "bytes": len(record(largest)),
                                                          "points": largest.points}},
        "import": imported,
        "territories": territory_costs(args.margin_m, args.repeats, areas),
        "margin_m": args.margin_m,
    }


def table(report: dict[str, Any]) -> str:
    f, i = report["file"], report["import"]
    lines = [
        f"{f['path']}: {f['bytes']:,} bytes, {f['areas']} areas, {f['points']:,} points "
        f"({report['machine'].get('cpus', '?')} CPUs)",
        f"  checked in this process: {f['check_ms']:.0f} ms, peak {f['check_peak_bytes'] / 2**20:.0f} MiB "
        f"allocated; largest record {f['largest_record']['code']} "
        f"{f['largest_record']['bytes']:,} bytes ({f['largest_record']['points']:,} points)",
        f"  PUT /api/v1/admin/areas/BENCH to the answer (stored, shown by the gazetteer): {i['import_ms']:.0f} ms",
        f"territory with margin {report['margin_m']:g} m (union built once per change, off the loop)"
        f"{'':<8}union ms   check of a 5-point alert ms",
    ]
    for row in report["territories"]:
        check = "" if row["check_ms"] is None else f"{row['check_ms']:8.3f}"
        lines.append(f"  {row['territory']:<52} {row['union_ms']:8.1f}   {check}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default=str(DEFAULT_FILE), help="a GeoJSON FeatureCollection to import")
    parser.add_argument("--code-property", default="code")
    parser.add_argument("--name-property", default="nom")
    parser.add_argument("--margin-m", type=float, default=1500.0)
    parser.add_argument("--repeats", type=int, default=5, help="union builds per territory (the median is shown)")
    parser.add_argument("--tmp", default=None, help="parent of the temporary directory (default: $TMPDIR)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    with ExitStack() as stack:
        report = run(args, stack)
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
