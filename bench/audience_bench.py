"""Bench: the audience index at national scale: register devices over France, then memory,
start-up and audience figures.

    python bench/audience_bench.py [--devices 1000000] [--http-s 60] [--clients 2] [--runs 7]
                                   [--max-rss-gb 6] [--tmp DIR] [--keep] [--save FILE]

1. A nats-server is started here (tocsin.cluster.nats_server.NatsServer, file store,
   `sync_interval: always`) and `tocsin serve` beside it (`TOCSIN_NATS_URL`; registration
   rate limits off; `TOCSIN_DEVICE_BUCKET_MAX_BYTES` 2 GiB).
2. Registration through the real HTTP API (`POST /api/v1/devices` with `points`): `--clients`
   processes, 32 requests in flight each, for `--http-s` seconds (or until N).
3. The rest of the N devices are written straight into the bucket (core publishes of the
   same JSON records, cells computed here as the server does), with the nats-server
   restarted without `sync_interval: always` for that fill only (fsync per message caps it
   at ~2,000 a second), then again with it. The node follows the whole fill live.
4. RSS of tocsin and of nats-server, before registration and once the node's index holds
   all N (read from /readyz's `devices` check): per registered device.
5. Start-up: the node is killed by pid (SIGKILL) and started again with its index snapshot
   removed (a full pass of the bucket); the time from its start to /readyz 200 with the
   index holding every device. Then `--restarts` times more from a snapshot: the node is
   stopped cleanly (SIGINT: it writes its snapshot at stop) and started again; the same
   time, with the snapshot's write (time the event loop was held for its copy, total) and
   load as the node logs them, and the file's size.
6. Audience: an index is fed in this process from the same bucket by the same feed
   (store/device_feed.py; its load time and RSS are printed too) and `reach()` timed for
   départements 06 and 75, régions 93 and 11, and all of France (the union of the INSEE-REG
   areas), `--runs` times each (median and max); cover computation is timed apart.

Devices: a home point drawn inside an INSEE-DEP polygon, départements weighted by rough
population (the 20 most populous by approximate figures, 0.45 M for the others); 60 % have
one place, 25 % two, 10 % three, 5 % four to eight (half of the others in the same
département); languages mostly fr; 2 % opt in to tests. Every process is stopped by pid; the
bench stops if tocsin's RSS passes --max-rss-gb.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h3
import httpx
import nats
import numpy as np
import shapely
from shapely.geometry import Polygon as ShapelyPolygon

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serve_bench import Server, free_port, machine, proc_cpu_s, run_in_workdir, stop_pid  # noqa: E402
from bench.year_bench import rss_bytes  # noqa: E402
from tocsin.api.device_index import DeviceIndex  # noqa: E402
from tocsin.api.device_records import record_json  # noqa: E402
from tocsin.cluster.nats_server import NatsServer  # noqa: E402
from tocsin.geo.cells import CELL_RESOLUTION, cover_of_shapes  # noqa: E402
from tocsin.geo.gazetteer import builtin  # noqa: E402
from tocsin.store.device_feed import feed_devices  # noqa: E402

BUCKET = "TOCSIN_DEVICES"
# Approximate populations (millions, rounded) of the most populous départements; others 0.45.
POPULATION_M = {
    "59": 2.6, "75": 2.1, "13": 2.0, "69": 1.9, "92": 1.6, "93": 1.7, "33": 1.7, "62": 1.5, "94": 1.4,
    "31": 1.4, "44": 1.4, "77": 1.4, "78": 1.4, "91": 1.3, "38": 1.3, "76": 1.3, "95": 1.2, "34": 1.2,
    "06": 1.1, "67": 1.1,
}
LANGUAGES = [(["fr"], 80), (["fr", "en"], 6), (["en"], 4), (["ar", "fr"], 3), (["de"], 2), (["es"], 2),
             (["it"], 1), (["pt"], 1), ([], 1)]
PLACES = [(1, 60), (2, 25), (3, 10), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1)]
AUDIENCES = (("INSEE-DEP", "06"), ("INSEE-DEP", "75"), ("INSEE-REG", "93"), ("INSEE-REG", "11"))
BUCKET_MAX_BYTES = 2 * 1024**3


class France:
    """Points inside the built-in départements, drawn in bulk."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.areas = {a.code: a for a in builtin() if a.scheme == "INSEE-DEP"}
        self.codes = sorted(self.areas)
        weights = np.array([POPULATION_M.get(code, 0.45) for code in self.codes])
        self.weights = weights / weights.sum()
        self.shapes = {}
        for code, area in self.areas.items():
            shape = shapely.union_all([ShapelyPolygon([(lon, lat) for lat, lon in ring]).buffer(0)
                                       for ring in area.polygons])
            shapely.prepare(shape)
            self.shapes[code] = shape
        self.pools: dict[str, list[tuple[float, float]]] = {}

    def point(self, code: str) -> tuple[float, float]:
        pool = self.pools.get(code)
        if not pool:
            shape = self.shapes[code]
            west, south, east, north = shape.bounds
            xs = self.rng.uniform(west, east, 4096)
            ys = self.rng.uniform(south, north, 4096)
            inside = shapely.contains_xy(shape, xs, ys)
            pool = self.pools[code] = [(float(y), float(x)) for x, y in zip(xs[inside], ys[inside])]
        return pool.pop()

    def department(self) -> str:
        return str(self.codes[int(self.rng.choice(len(self.codes), p=self.weights))])

    def device_points(self, rng: random.Random) -> list[tuple[float, float]]:
        home = self.department()
        places = rng.choices([n for n, _ in PLACES], [w for _, w in PLACES])[0]
        return [self.point(home if i == 0 or rng.random() < 0.5 else self.department()) for i in range(places)]


def languages(rng: random.Random) -> list[str]:
    return list(rng.choices([x for x, _ in LANGUAGES], [w for _, w in LANGUAGES])[0])


# -- HTTP clients (child processes) ---------------------------------------------------------

async def _register(url: str, france: France, until: float, count: int, seed: int, parallel: int) -> dict[str, Any]:
    rng = random.Random(seed)
    done = errors = 0
    first_error = ""
    started = time.monotonic()
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal done, errors, first_error
            while done + errors < count and time.time() < until:
                body = {"points": [{"lat": lat, "lon": lon} for lat, lon in france.device_points(rng)],
                        "languages": languages(rng), "tests": rng.random() < 0.02}
                try:
                    response = await http.post("/api/v1/devices", json=body)
                    ok = response.status_code == 201
                    text = response.text[:200]
                except httpx.HTTPError as exc:
                    ok, text = False, repr(exc)[:200]
                if ok:
                    done += 1
                else:
                    errors += 1
                    first_error = first_error or text

        await asyncio.gather(*(worker() for _ in range(parallel)))
    return {"registered": done, "errors": errors, "first_error": first_error, "elapsed_s": time.monotonic() - started}


def client_main(args: argparse.Namespace) -> None:
    """Load the départements, say so, read the end time from stdin, register until then."""
    france = France(args.seed)
    print("ready", flush=True)
    until = float(sys.stdin.readline())
    print(json.dumps(asyncio.run(_register(args.client, france, until, args.count, args.seed, 32))))


def register_over_http(url: str, total: int, seconds: float, clients: int) -> dict[str, Any]:
    per = -(-total // clients)
    procs = [subprocess.Popen([sys.executable, __file__, "--client", url, "--count", str(per), "--seed", str(1000 + i)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT) for i in range(clients)]
    results = []
    try:
        for proc in procs:  # each has its départements loaded: the clock starts now
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("a registration client did not start")
        until = time.time() + seconds
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{until}\n".encode())
            proc.stdin.flush()
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 120)
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            stop_pid(proc, signal.SIGTERM, 5)  # type: ignore[arg-type]
    registered = sum(r["registered"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    return {"registered": registered, "errors": sum(r["errors"] for r in results), "elapsed_s": elapsed,
            "per_s": registered / elapsed if elapsed else 0.0, "clients": clients, "in_flight": 32 * clients,
            "first_error": next((r["first_error"] for r in results if r["first_error"]), "")}


# -- the straight fill ----------------------------------------------------------------------

async def fill_bucket(nats_url: str, count: int, seed: int) -> dict[str, Any]:
    france, rng = France(seed), random.Random(seed)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    before = (await js.stream_info(f"KV_{BUCKET}")).state.messages
    now = datetime.now(UTC)
    started = time.monotonic()
    try:
        for i in range(count):
            cells = sorted({str(h3.latlng_to_cell(lat, lon, CELL_RESOLUTION)) for lat, lon in france.device_points(rng)})
            record = record_json(cells=cells, languages=languages(rng), tests=rng.random() < 0.02, canary=False,
                                 secret_sha256=secrets.token_hex(32), created=now, renewed=now)
            await nc.publish(f"$KV.{BUCKET}.dev_{secrets.token_hex(12)}", json.dumps(record).encode())
            if i % 2000 == 1999:
                await nc.flush()
        await nc.flush()
        while (await js.stream_info(f"KV_{BUCKET}")).state.messages < before + count:
            await asyncio.sleep(0.2)
        info = await js.stream_info(f"KV_{BUCKET}")
    finally:
        await nc.close()
    elapsed = time.monotonic() - started
    return {"filled": count, "elapsed_s": elapsed, "per_s": count / elapsed if elapsed else 0.0,
            "bucket_bytes": info.state.bytes, "bucket_messages": info.state.messages}


# -- the node ---------------------------------------------------------------------------------

def readyz(url: str) -> tuple[int, int, bool]:
    """(/readyz status, devices the index holds, loaded)."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
        check = response.json().get("checks", {}).get("devices", {}).get("value") or {}
        return response.status_code, int(check.get("devices", 0)), bool(check.get("loaded"))
    except (httpx.HTTPError, ValueError):
        return 0, 0, False


def logged(server: Server, message: str) -> dict[str, Any]:
    """The last JSON log line of the node with this message ({} if none)."""
    found: dict[str, Any] = {}
    for line in server.log_path.read_text(errors="replace").splitlines():
        if message in line:
            with contextlib.suppress(ValueError):
                found = json.loads(line)
    return found


def wait_for(url: str, devices: int, timeout_s: float, server: Server, max_rss: int) -> float:
    started = time.monotonic()
    while True:
        status, held, _ = readyz(url)
        if status == 200 and held >= devices:
            return time.monotonic() - started
        pid = server.process.pid if server.process else None
        if rss_bytes(pid) > max_rss:
            raise RuntimeError(f"tocsin RSS {rss_bytes(pid) / 2**30:.2f} GiB passed the limit: stopped")
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"not ready with {devices} devices after {timeout_s} s (status {status}, {held} held)")
        time.sleep(0.05)


# -- audiences --------------------------------------------------------------------------------

async def audiences(nats_url: str, runs: int) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    index = DeviceIndex()
    rss0 = rss_bytes(os.getpid())
    started = time.monotonic()
    task = asyncio.get_running_loop().create_task(feed_devices(nc, nc.jetstream(), BUCKET, index))
    try:
        while not index.loaded:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        load_s = time.monotonic() - started
        loaded_rss = rss_bytes(os.getpid()) - rss0
        task.cancel()
        areas = {(a.scheme, a.code): a for a in builtin()}
        targets: list[tuple[str, tuple[Any, ...]]] = [
            (f"{scheme} {code} ({areas[(scheme, code)].name})", areas[(scheme, code)].polygons) for scheme, code in AUDIENCES
        ]
        targets.append(("France (every INSEE-REG area)",
                        tuple(p for a in areas.values() if a.scheme == "INSEE-REG" for p in a.polygons)))
        results = []
        for name, polygons in targets:
            t = time.perf_counter()
            cover = cover_of_shapes(tuple(polygons), ())
            cover_s = time.perf_counter() - t
            times, reach = [], None
            for _ in range(runs):
                t = time.perf_counter()
                reach = index.reach(cover, "Actual")
                times.append(time.perf_counter() - t)
            assert reach is not None
            top = sorted(reach.by_language.items(), key=lambda kv: -kv[1])[:3]
            results.append({"area": name, "cover_cells": len(cover.cells), "cover_s": cover_s,
                            "devices": reach.devices, "median_ms": statistics.median(times) * 1000,
                            "max_ms": max(times) * 1000, "by_channel": reach.by_channel, "top_languages": top})
        return {"devices": len(index), "load_s": load_s, "rss_bytes": loaded_rss, "reach": results}
    finally:
        task.cancel()
        await nc.close()


# -- the run ----------------------------------------------------------------------------------

async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "devices": args.devices}
    nats_server = NatsServer(store_dir=workdir / "nats", name="bench-nats")
    await nats_server.start()
    server = Server(data_dir=workdir / "node", port=free_port(), admin_token=f"tca_{secrets.token_urlsafe(24)}",
                    extra_env={"TOCSIN_NATS_URL": nats_server.client_url, "TOCSIN_NATS_MONITOR_URL": nats_server.monitor_url,
                               "TOCSIN_DEVICE_BUCKET_MAX_BYTES": str(BUCKET_MAX_BYTES)})
    max_rss = int(args.max_rss_gb * 2**30)
    try:
        server.start()
        wait_for(server.url, 0, 60, server, max_rss)
        _, base_devices, _ = readyz(server.url)  # the prober's canary
        pid = server.process.pid if server.process else None
        rss_before, nats_before = rss_bytes(pid), rss_bytes(nats_server.pid)
        http = register_over_http(server.url, args.devices, args.http_s, args.clients)
        report["http"] = http
        print(f"http: {http}", file=sys.stderr)
        rest = args.devices - http["registered"]
        if rest > 0:
            nats_server.sync_always = False
            await nats_server.stop()
            await nats_server.start()
            report["fill"] = await fill_bucket(nats_server.client_url, rest, args.seed)
            print(f"fill: {report['fill']}", file=sys.stderr)
            await nats_server.stop()
            nats_server.sync_always = True
            await nats_server.start()
        target = base_devices + args.devices
        report["follow_s"] = wait_for(server.url, target, 600, server, max_rss)
        rss_after, nats_after = rss_bytes(pid), rss_bytes(nats_server.pid)
        report["memory"] = {"tocsin_before": rss_before, "tocsin_after": rss_after,
                            "per_device": (rss_after - rss_before) / args.devices,
                            "nats_before": nats_before, "nats_after": nats_after,
                            "nats_per_device": (nats_after - nats_before) / args.devices}
        print(f"memory: {report['memory']}", file=sys.stderr)
        starts: list[float] = []
        start_cpu: list[float] = []
        snapshots = server.data_dir / "device-index"
        for _ in range(args.restarts):
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
            shutil.rmtree(snapshots, ignore_errors=True)  # a full pass
            t = time.monotonic()
            server.start()
            wait_for(server.url, target, 120, server, max_rss)
            starts.append(time.monotonic() - t)
            # CPU the node spent to get there: the wall time on a busy machine is longer.
            start_cpu.append(proc_cpu_s(server.process.pid if server.process else None))
            print(f"start-up: {starts[-1]:.2f} s, {start_cpu[-1]:.2f} CPU-s", file=sys.stderr)
        report["startup_s"] = starts
        report["startup_cpu_s"] = start_cpu
        from_snapshot: list[dict[str, Any]] = []
        for _ in range(args.restarts):
            t = time.monotonic()
            server.stop()  # SIGINT: a clean stop writes the snapshot
            stop_s = time.monotonic() - t
            written = logged(server, "device snapshot written")
            size = sum(f.stat().st_size for f in snapshots.glob("*.npz"))
            t = time.monotonic()
            server.start()
            wait_for(server.url, target, 120, server, max_rss)
            from_snapshot.append({"startup_s": time.monotonic() - t, "stop_s": stop_s, "file_bytes": size,
                                  "cpu_s": proc_cpu_s(server.process.pid if server.process else None),
                                  "loop_held_ms": written.get("loop_held_ms"), "write_s": written.get("seconds"),
                                  "load_s": logged(server, "device snapshot loaded").get("seconds")})
            print(f"start-up from a snapshot: {from_snapshot[-1]}", file=sys.stderr)
        report["startup_from_snapshot"] = from_snapshot
        pid = server.process.pid if server.process else None
        report["load_average"] = os.getloadavg()
        report["tocsin_rss_after_restart"] = rss_bytes(pid)
        report["audience"] = await audiences(nats_server.client_url, args.runs)
    finally:
        server.stop()
        await nats_server.stop()
    return report


def table(report: dict[str, Any]) -> str:
    m, n = report["machine"], report["devices"]
    lines = [f"audience bench: {n:,} devices; {m['cpus']} CPUs {m['cpu_model']}, {m['memory_gb']} GB; "
             f"Python {m['python']}, nats-server {m['nats_server']}, nats-py {m['nats_py']}"]
    h = report["http"]
    lines.append(f"registration over HTTP: {h['registered']:,} in {h['elapsed_s']:.1f} s = {h['per_s']:,.0f}/s "
                 f"({h['clients']} client processes, {h['in_flight']} in flight, {h['errors']} errors)")
    if "fill" in report:
        f = report["fill"]
        lines.append(f"the other {f['filled']:,} written straight into the bucket (no fsync per message): "
                     f"{f['elapsed_s']:.1f} s = {f['per_s']:,.0f}/s; bucket {f['bucket_bytes'] / 2**20:,.0f} MiB "
                     f"({f['bucket_bytes'] / max(1, f['bucket_messages']):.0f} bytes a record)")
    lines.append(f"the node's index held all of them {report['follow_s']:.1f} s after the fill ended")
    mem = report["memory"]
    lines.append(f"tocsin RSS {mem['tocsin_before'] / 2**20:,.0f} -> {mem['tocsin_after'] / 2**20:,.0f} MiB: "
                 f"{mem['per_device']:.0f} bytes per registered device; nats-server RSS "
                 f"{mem['nats_before'] / 2**20:,.0f} -> {mem['nats_after'] / 2**20:,.0f} MiB ({mem['nats_per_device']:.0f} bytes a device)")
    starts = report["startup_s"]
    lines.append(f"start-up to /readyz 200 with every device indexed (SIGKILL, start): "
                 f"{', '.join(f'{s:.1f}' for s in starts)} s, the node's CPU meanwhile "
                 f"{', '.join(f'{s:.1f}' for s in report['startup_cpu_s'])} s (load average "
                 f"{report['load_average'][0]:.1f} on {m['cpus']} CPUs); RSS after restart "
                 f"{report['tocsin_rss_after_restart'] / 2**20:,.0f} MiB")
    for r in report.get("startup_from_snapshot", []):
        lines.append(f"start-up from the clean stop's snapshot: {r['startup_s']:.1f} s (the node's CPU {r['cpu_s']:.1f} s; "
                     f"load {r['load_s']} s); the stop before it {r['stop_s']:.1f} s, its snapshot written in "
                     f"{r['write_s']} s holding the event loop {r['loop_held_ms']} ms, {r['file_bytes'] / 2**20:,.0f} MiB")
    a = report["audience"]
    lines.append(f"index fed in the bench process: {a['devices']:,} devices in {a['load_s']:.1f} s, "
                 f"RSS +{a['rss_bytes'] / 2**20:,.0f} MiB ({a['rss_bytes'] / max(1, a['devices']):.0f} bytes a device)")
    lines.append(f"{'audience':<44} {'cover cells':>11} {'cover s':>8} {'devices':>10} {'median ms':>10} {'max ms':>8}")
    for r in a["reach"]:
        lines.append(f"{r['area']:<44} {r['cover_cells']:>11,} {r['cover_s']:>8.2f} {r['devices']:>10,} "
                     f"{r['median_ms']:>10.1f} {r['max_ms']:>8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--http-s", type=float, default=60.0, help="seconds of registration over HTTP (at most)")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--max-rss-gb", type=float, default=6.0)
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--save", default="")
    # A registration client (run by the bench itself).
    parser.add_argument("--client", default="", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    if not 1 <= args.devices <= 2_000_000:
        parser.error("--devices must be 1..2,000,000")
    run_in_workdir("audience-bench-", args, lambda workdir: run(args, workdir), table)


if __name__ == "__main__":
    main()
