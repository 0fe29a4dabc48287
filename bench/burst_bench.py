"""Bench: many issuers at once (issue 11, part 7): do the Actual Extreme alerts go out first?

    python bench/burst_bench.py [--devices 1000] [--issuers 50] [--extreme 3] [--accept-slots N] [--json]

Starts `tocsin serve` (embedded nats-server) with an accounts file of `--issuers` issuer
organisations, each an automated source (`approval = { mode = "none" }`), and connects
`bench/fleet.py` devices over SSE (another process). Then every organisation submits one
alert within the same second, each on its own warm keep-alive connection: `--extreme`
Actual Extreme Immediate alerts (issuers spread through the burst, not first), some
Exercise alerts (for devices that opted in: none here, so they load accept and the follower
only), Minor Actual alerts for the rest, and `--same` Minor alerts whose content is the same
across organisations (the Warntag 2020 case). It prints:

- accept p50/p99/max, and where the Extreme alerts landed in seq order (the accept gate);
- when each Extreme alert reached its last device, against the other Actual alerts, and
  on how many devices every Extreme alert arrived before any other (the follower's order);
- how many answers named a duplicate (`standing.duplicateOf`).

The server, its nats-server child and the fleet are stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import percentile  # noqa: E402
from bench.serve_bench import FLEET_READY_TIMEOUT_S, Fleet, Server, free_port  # noqa: E402
from tests.samples import PARIS_BOX  # noqa: E402
from tocsin.cap.compose import simple_alert  # noqa: E402

XML = "application/cap+xml"
BURST_TIMEOUT_S = 120.0


def accounts_file(path: Path, issuers: int) -> list[str]:
    """Write the accounts file; returns each organisation's token."""
    tokens = [f"tci_burst-bench-{n}-{time.time_ns()}" for n in range(issuers)]
    lines: list[str] = []
    for n, token in enumerate(tokens):
        lines += [
            "[[issuers]]", f'name = "org-{n}"', f'senders = ["org-{n}@example.org"]',
            'statuses = ["Actual", "Exercise", "Test"]',
            'severities = ["Extreme", "Severe", "Moderate", "Minor", "Unknown"]',
            'approval = { mode = "none" }', "[[issuers.clients]]", f'name = "feed-{n}"', 'roles = ["author"]',
            f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"', "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return tokens


def kind_of(n: int, args: argparse.Namespace) -> str:
    """What organisation `n` sends: Extreme issuers sit in the middle and end of the burst."""
    step = max(1, args.issuers // (args.extreme + 1))
    if n % step == step - 1 and n // step < args.extreme:
        return "extreme"
    if n % 5 == 1:
        return "exercise"
    if n % 7 == 3 and sum(1 for m in range(n) if m % 7 == 3) < args.same:
        return "same"
    return "minor"


def alert_for(n: int, kind: str, run: str) -> bytes:
    extreme = kind == "extreme"
    return simple_alert(
        identifier=f"BURST-{run}-{n}", sender=f"org-{n}@example.org", polygon=PARIS_BOX,
        status="Exercise" if kind == "exercise" else "Actual",
        severity="Extreme" if extreme else "Minor", urgency="Immediate" if extreme else "Expected",
        headline="Crue de la Seine: montez aux étages" if kind == "same" else f"Message {n} ({kind})",
        description="La Seine déborde." if kind == "same" else f"Texte {n}.",
    )


async def submit_burst(url: str, tokens: list[str], documents: list[bytes]) -> tuple[float, list[dict[str, Any]]]:
    """Every organisation posts at once, each on its own warm connection."""
    clients = [httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {t}",
                                                                    "Content-Type": XML}) for t in tokens]
    try:
        await asyncio.gather(*(c.get("/livez") for c in clients))  # connections open before the burst
        start = asyncio.Event()

        async def post(client: httpx.AsyncClient, document: bytes) -> dict[str, Any]:
            await start.wait()
            sent = time.perf_counter()
            response = await client.post("/api/v1/alerts", content=document)
            took = time.perf_counter() - sent
            body = response.json()
            return {"status": response.status_code, "s": took, "seq": body.get("seq"),
                    "standing": body.get("standing"), "code": body.get("code")}

        tasks = [asyncio.ensure_future(post(c, d)) for c, d in zip(clients, documents, strict=True)]
        await asyncio.sleep(0)
        issued_at = time.time()
        start.set()
        return issued_at, list(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def report(kinds: list[str], answers: list[dict[str, Any]], burst: dict[str, Any], devices: int) -> dict[str, Any]:
    accept = sorted(a["s"] for a in answers)
    seqs = [a["seq"] for a in answers]
    order = sorted(range(len(seqs)), key=lambda i: seqs[i] or 0)
    last = {int(s): ms for s, ms in burst.get("last_ms_by_seq", {}).items()}
    extreme = [last.get(seqs[i], float("nan")) for i, k in enumerate(kinds) if k == "extreme"]
    others = [last.get(seqs[i], float("nan")) for i, k in enumerate(kinds) if k in ("minor", "same")]
    return {
        "issuers": len(kinds), "devices": devices,
        "answers": {str(code): sum(1 for a in answers if a["status"] == code) for code in {a["status"] for a in answers}},
        "accept_ms": {"p50": percentile(accept, 50) * 1000, "p99": percentile(accept, 99) * 1000, "max": accept[-1] * 1000},
        "extreme_issuers": [i for i, k in enumerate(kinds) if k == "extreme"],
        "extreme_seq_ranks": sorted(order.index(i) for i, k in enumerate(kinds) if k == "extreme"),
        "extreme_last_device_ms": sorted(extreme),
        "others_last_device_ms": {"min": min(others), "p50": percentile(sorted(others), 50), "max": max(others)},
        "devices_with_every_extreme_first": burst.get("first_ahead_devices"),
        "extreme_worst_arrival_positions": sorted(burst.get("first_worst_positions", {}).values()),
        "out_of_seq_order_devices": burst.get("out_of_seq_order_devices"),
        "deliveries": burst.get("deliveries"), "missing": burst.get("missing"),
        "duplicates_flagged": sum(1 for a in answers if (a.get("standing") or {}).get("duplicateOf")),
        "same_content_sent": sum(1 for k in kinds if k == "same"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--issuers", type=int, default=50)
    parser.add_argument("--extreme", type=int, default=3)
    parser.add_argument("--same", type=int, default=5, help="organisations sending the same Minor message")
    parser.add_argument("--accept-slots", type=int, default=0, help="TOCSIN_ACCEPT_SLOTS (0: the default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tocsin-burst-")))
        tokens = accounts_file(work / "accounts.toml", args.issuers)
        server = Server(data_dir=work / "data", port=free_port(), admin_token="tca_burst-bench-admin",
                        extra_env={"TOCSIN_ACCOUNTS_FILE": str(work / "accounts.toml"),
                             **({"TOCSIN_ACCEPT_SLOTS": str(args.accept_slots)} if args.accept_slots else {})})
        stack.callback(server.stop)
        server.start()
        fleet = Fleet(url=server.url, devices=args.devices, outside=0.0, log_path=work / "fleet.log")
        stack.callback(fleet.stop)
        fleet.start()
        fleet.expect("ready", FLEET_READY_TIMEOUT_S)
        run = str(time.time_ns())
        kinds = [kind_of(n, args) for n in range(args.issuers)]
        documents = [alert_for(n, k, run) for n, k in enumerate(kinds)]
        issued_at, answers = asyncio.run(submit_burst(server.url, tokens, documents))
        actual = [a["seq"] for a, k in zip(answers, kinds, strict=True) if k != "exercise" and a["status"] in (200, 201)]
        extreme = [a["seq"] for a, k in zip(answers, kinds, strict=True) if k == "extreme" and a["status"] in (200, 201)]
        fleet.send(cmd="burst", seqs=actual, issued_at=issued_at, first=extreme)
        burst = fleet.expect("burst", BURST_TIMEOUT_S)
        fleet.send(cmd="stop")
        summary = fleet.expect("summary", 30)
        figures = {**report(kinds, answers, burst, args.devices), "sent_twice": summary.get("duplicates")}
        problems = server.log_problems()
    if args.json:
        print(json.dumps({**figures, "server_problems": problems[:5]}))
        return
    print(f"{figures['issuers']} issuers within one second, {figures['devices']} live SSE devices")
    print(f"  answers: {figures['answers']}; accept ms p50 {figures['accept_ms']['p50']:.0f}"
          f" p99 {figures['accept_ms']['p99']:.0f} max {figures['accept_ms']['max']:.0f}")
    print(f"  Extreme alerts (issuers {figures['extreme_issuers']}) got seq ranks {figures['extreme_seq_ranks']}"
          f" of {figures['issuers']}")
    print("  Extreme reached the last device at ms " + ", ".join(f"{v:.0f}" for v in figures["extreme_last_device_ms"])
          + "; the other Actual alerts min {min:.0f} p50 {p50:.0f} max {max:.0f}".format(**figures["others_last_device_ms"]))
    print(f"  devices on which every Extreme came before any other alert: {figures['devices_with_every_extreme_first']}"
          f" of {figures['devices']}; Extreme arrival positions (0 = first, worst device):"
          f" {figures['extreme_worst_arrival_positions']}")
    print(f"  devices that got the burst out of seq order (the follower ranked what waited):"
          f" {figures['out_of_seq_order_devices']}; deliveries {figures['deliveries']}, missing {figures['missing']},"
          f" sent twice {figures['sent_twice']}")
    print(f"  duplicates flagged: {figures['duplicates_flagged']} (same content sent by {figures['same_content_sent']} organisations)")
    if problems:
        print(f"  server warnings/errors: {len(problems)}, e.g. {problems[0]}")


if __name__ == "__main__":
    main()
