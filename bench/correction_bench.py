"""Bench: from `POST /api/v1/alerts/{id}/correct` to the last of N live SSE devices.

    python bench/correction_bench.py [--devices 10000] [--rounds 3] [--json] [--save PATH]

It starts `tocsin serve` (an automated source from an accounts file, as every bench) and the
fleet of bench/fleet.py (N devices in the alert's area, one SSE connection each), issues an
Actual alert and waits until every device has it, then times the correction: from just before
the call to when the last device received the "false alert, disregard" Cancel. Each round
uses a fresh alert. The figure is printed as a table (or JSON) and belongs in
docs/performance.md.
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import raise_nofile  # noqa: E402
from bench.serve_bench import (  # noqa: E402
    DISPLAY_POLYGON,
    FLEET_READY_TIMEOUT_S,
    ROUND_GAP_S,
    ROUND_TIMEOUT_S,
    Fleet,
    Server,
    _interrupt,
    check_issued,
    free_port,
    issuer_client,
    machine,
)
from tests.samples import alert_xml  # noqa: E402


def correction_rounds(server: Server, fleet: Fleet, rounds: int) -> list[dict[str, Any]]:
    """Per round: the original displayed everywhere, then the correction timed to the last device."""
    results: list[dict[str, Any]] = []
    with issuer_client(server.url, server.issuer_token) as http:
        http.get("/livez")
        for n in range(1, rounds + 1):
            errors: list[str] = []
            original = check_issued(http.post("/api/v1/alerts", content=alert_xml(
                identifier=f"bench-false-{n}-{secrets.token_hex(4)}", polygon=DISPLAY_POLYGON,
                headline=f"bench false alert {n}")), errors)
            if original is None:
                results.append({"round": n, "error": errors[0]})
                continue
            fleet.send(cmd="round", round=2 * n - 1, seq=int(original["seq"]), issued_at=time.time())
            shown = fleet.expect("round", ROUND_TIMEOUT_S + 30)
            called_at = time.time()
            response = http.post(f"/api/v1/alerts/{original['id']}/correct")
            call_ms = (time.time() - called_at) * 1000
            correction = check_issued(response, errors)
            if correction is None:
                results.append({"round": n, "error": errors[0]})
                continue
            fleet.send(cmd="round", round=2 * n, seq=int(correction["seq"]), issued_at=called_at)
            result = fleet.expect("round", ROUND_TIMEOUT_S + 30)
            result.update(round=n, call_ms=call_ms, original_received=shown["received"])
            results.append(result)
            time.sleep(ROUND_GAP_S)
    return results


def table(report: dict[str, Any]) -> str:
    lines = [f"correction to the last of {report['params']['devices']} live SSE devices "
             f"({report['machine'].get('cpus', '?')} CPUs)",
             "round  call ms  received/expected  p50 ms  p99 ms  last device ms  missing  dup"]
    for r in report["rounds"]:
        if "error" in r:
            lines.append(f"{r['round']:>5}  error: {r['error']}")
            continue
        lines.append(f"{r['round']:>5}  {r['call_ms']:7.1f}  {r['received']:>8}/{r['expected']:<8}  "
                     f"{r['p50_ms']:6.0f}  {r['p99_ms']:6.0f}  {r['max_ms']:14.0f}  {r['missing']:>7}  "
                     f"{r['duplicates']:>3}")
    return "\n".join(lines)


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    nofile = raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-correction-", dir=args.tmp))
    outcome = {"ok": False}
    stack.callback(lambda: shutil.rmtree(workdir, ignore_errors=True) if outcome["ok"] and not args.keep
                   else print(f"logs kept in {workdir}", file=sys.stderr))
    # Every device holds a connection: room for all of them, the issuer and the canary.
    server = Server(data_dir=workdir / "data", port=free_port(), admin_token=f"tca_{secrets.token_urlsafe(24)}",
                    extra_env={"TOCSIN_MAX_CONNECTIONS": str(args.devices + 1000)})
    stack.callback(server.stop)
    server.start()
    fleet = Fleet(url=server.url, devices=args.devices, outside=0.0, log_path=workdir / "fleet.log")
    stack.callback(fleet.stop)
    fleet.start()
    ready = fleet.expect("ready", FLEET_READY_TIMEOUT_S)
    print(f"fleet ready: {ready['devices']} devices", file=sys.stderr, flush=True)
    report = {"machine": machine(), "nofile": nofile, "params": {"devices": args.devices, "rounds": args.rounds},
              "rounds": correction_rounds(server, fleet, args.rounds)}
    outcome["ok"] = all("error" not in r and r["missing"] == 0 for r in report["rounds"])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="live SSE devices in the alert's area")
    parser.add_argument("--rounds", type=int, default=3, help="corrections to time, each of a fresh alert")
    parser.add_argument("--tmp", default=None, help="parent of the temporary directory (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--save", metavar="PATH", help="also write the JSON report to PATH")
    args = parser.parse_args()
    with ExitStack() as stack:
        signal.signal(signal.SIGTERM, _interrupt)
        report = run(args, stack)
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
