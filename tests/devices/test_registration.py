"""Registration on a real node over loopback: strict input, canonical cells, limits by source."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import h3
import httpx
import pytest

from tests.devices.conftest import OTHER_SOURCE, client_from, device_settings, open_files, rss_kib
from tests.e2e.conftest import ISSUER_TOKEN, start_node, stop_node
from tests.e2e.devices import sse_device
from tests.health.conftest import Readyz, fast_settings
from tests.samples import IN_PARIS, alert_xml
from tocsin.cluster.nats_server import NatsServer
from tocsin.geo.cells import cell_for_point

PARIS_CELL = cell_for_point(*IN_PARIS)
FINE_PARIS_CELL = str(h3.latlng_to_cell(*IN_PARIS, 9))
PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


async def test_padded_capital_duplicate_and_fine_cells_are_stored_once_canonically(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    running = await start_node(device_settings(tmp_path, nats_server))
    node = running[0]
    try:
        cells = [PARIS_CELL, f"  {PARIS_CELL}  ", PARIS_CELL.upper(), f"\t{FINE_PARIS_CELL}\n"]
        async with client_from(node.url) as http:
            response = await http.post("/api/v1/devices", json={"cells": cells, "points": [
                {"lat": IN_PARIS[0], "lon": IN_PARIS[1]}], "languages": ["fr", "fr", "en-GB"]})
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["cells"] == [PARIS_CELL]
        assert answer["languages"] == ["fr", "en-GB"]
        assert response.headers["location"] == f"/api/v1/devices/{answer['id']}"
        stored = await node.services.store.devices.get(answer["id"])
        assert stored is not None
        assert (stored["cells"], stored["languages"], stored["tests"]) == ([PARIS_CELL], ["fr", "en-GB"], False)
        assert node.services.device_cache[answer["id"]]["cells"] == [PARIS_CELL]
    finally:
        await stop_node(*running)


BAD_BODIES: list[tuple[object, int, str, str]] = [
    ({"points": [{"lat": 48.8, "lon": 2.3}], "tests": "false"}, 422, "device.invalid", "tests"),
    ({"points": [{"lat": 48.8, "lon": 2.3}], "canary": "false"}, 422, "device.invalid", "canary"),
    ({"points": [{"lat": 48.8, "lon": 2.3}], "tests": 0}, 422, "device.invalid", "tests"),
    ({"points": [{"lat": 48.8, "lon": 2.3}], "test": True}, 422, "device.invalid", "test"),
    ({"cells": PARIS_CELL}, 422, "device.invalid", "cells"),
    ({"cells": [604040104855470079]}, 422, "device.cell-invalid", "cells[0]"),
    ({"cells": [PARIS_CELL + " x"]}, 422, "device.cell-invalid", "cells[0]"),
    ({"cells": [" " * 5000 + PARIS_CELL]}, 422, "device.cell-invalid", "cells[0]"),
    ({"cells": ["8" * 15]}, 422, "device.cell-invalid", "cells[0]"),
    ({"cells": [None]}, 422, "device.cell-invalid", "cells[0]"),
    ({"cells": [PARIS_CELL] * 65}, 422, "device.too-many-cells", ""),
    ({"points": [{"lat": True, "lon": 2.3}]}, 422, "device.invalid", "points[0]"),
    ({"points": [{"lat": "48.8", "lon": 2.3}]}, 422, "device.invalid", "points[0]"),
    ({"points": [{"lat": 91, "lon": 2.3}]}, 422, "device.invalid", "points[0]"),
    ({"points": [{"lat": 48.8, "lon": 2.3, "alt": 3}]}, 422, "device.invalid", "points[0]"),
    ({"points": [[48.8, 2.3]]}, 422, "device.invalid", "points[0]"),
    ({"points": {"lat": 48.8, "lon": 2.3}}, 422, "device.invalid", "points"),
    ({"points": [{"lat": 48.8, "lon": 2.3}], "languages": "fr"}, 422, "device.invalid", "languages"),
    ({"points": [{"lat": 48.8, "lon": 2.3}], "languages": ["fr; rm -rf"]}, 422, "device.invalid", "languages"),
    ({}, 422, "device.invalid", "cells"),
    ([], 422, "device.invalid", ""),
    ("false", 422, "device.invalid", ""),
]
RAW_BODIES = [b'{"points": [{"lat": NaN, "lon": 2.3}]}', b"[" * 50_000, b"\xff\xfe", b'{"cells": ["' + b"9" * 5000 + b'"]}']


async def test_bad_input_is_a_problem_naming_the_field_never_a_500(tmp_path: Path, nats_server: NatsServer) -> None:
    running = await start_node(device_settings(tmp_path, nats_server, registrations_per_source_per_min=0))
    node = running[0]
    try:
        async with client_from(node.url) as http:
            for body, status, code, path in BAD_BODIES:
                response = await http.post("/api/v1/devices", content=json.dumps(body),
                                           headers={"Content-Type": "application/json"})
                problem = assert_problem(response, status, code)
                if path:
                    assert path in [e["path"] for e in problem.get("errors", [])] or path in problem["detail"], problem
            for raw in RAW_BODIES:
                response = await http.post("/api/v1/devices", content=raw, headers={"Content-Type": "application/json"})
                assert response.status_code in (400, 422), (raw[:40], response.text)
                assert response.headers["content-type"] == PROBLEM
        assert len(node.services.device_cache) == 0  # nothing was stored
    finally:
        await stop_node(*running)


async def test_a_registration_flood_from_one_source_is_refused_while_others_are_served(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    per_source = 20
    settings = fast_settings(tmp_path, nats_server, registrations_per_source_per_min=per_source,
                             registrations_per_min=1000, device_bucket=device_settings(tmp_path, nats_server).device_bucket)
    running = await start_node(settings)
    node = running[0]
    readyz = Readyz(node.url)
    try:
        async with client_from(node.url) as admin_http, httpx.AsyncClient(timeout=5) as sampler:
            await readyz.until(sampler, ready=True, within_s=15)
            good = await admin_http.post("/api/v1/devices", json={"points": [{"lat": IN_PARIS[0], "lon": IN_PARIS[1]}]})
            assert good.status_code == 201
            async with sse_device(node.url, good.json()["token"]) as watcher:
                await watcher.next("synced")
                rss_before, files_before = rss_kib(), open_files()
                flood_started = time.monotonic()
                statuses, retry_after = await _flood(node.url, attempts=1000, deadline_s=20)
                rss_after, files_after = rss_kib(), open_files()
                # Still green: the flood was refused cheaply and the prober kept delivering.
                assert (await readyz.sample(sampler)).status == 200
                async with client_from(node.url, OTHER_SOURCE) as other:
                    served = await other.post("/api/v1/devices", json={"points": [{"lat": 45.7, "lon": 4.8}]})
                assert served.status_code == 201, served.text
                issued = await admin_http.post("/api/v1/alerts", content=alert_xml(),
                                               headers={"Authorization": f"Bearer {ISSUER_TOKEN}",
                                                        "Content-Type": "application/cap+xml"})
                assert issued.status_code == 201, issued.text
                assert (await watcher.next_alert())["id"] == issued.json()["id"]
        # A full burst (`per_source`, less the one registered above), plus what refilled meanwhile.
        refilled = math.ceil((time.monotonic() - flood_started) * per_source / 60)
        assert per_source - 1 <= statuses[201] <= per_source - 1 + refilled
        assert statuses[429] == 1000 - statuses[201]
        assert 1 <= retry_after <= 60
        print(f"flood: {dict(statuses)}; RSS {rss_before} -> {rss_after} KiB; open files {files_before} -> {files_after}")
        assert rss_after - rss_before < 64 * 1024
        assert files_after - files_before < 20
        # And the first, the other source, and a canary per channel the prober reads (sse, webpush).
        assert node.services.prober is not None
        assert len(node.services.device_cache) == statuses[201] + 2 + len(node.services.prober.channels)
        assert node.services.metrics.refused.labels("device.too-many-registrations")._value.get() == statuses[429]
    finally:
        await stop_node(*running)


async def _flood(url: str, *, attempts: int, deadline_s: float) -> tuple[dict[int, int], int]:
    """`attempts` registrations from 127.0.0.1 over 20 keep-alive connections, bounded in time."""
    statuses: dict[int, int] = {201: 0, 429: 0}
    retry_after = 0
    body = {"cells": [PARIS_CELL]}
    async with client_from(url) as http:
        async def worker(n: int) -> None:
            nonlocal retry_after
            for _ in range(n):
                response = await http.post("/api/v1/devices", json=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 429:
                    assert_problem(response, 429, "device.too-many-registrations")
                    retry_after = int(response.headers["retry-after"])
        started = time.monotonic()
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(*(worker(attempts // 20) for _ in range(20)))
        print(f"flood of {attempts} in {time.monotonic() - started:.1f} s")
    return statuses, retry_after


async def test_registrations_in_all_are_limited_per_node(tmp_path: Path, nats_server: NatsServer) -> None:
    running = await start_node(device_settings(tmp_path, nats_server, registrations_per_min=3,
                                               registrations_per_source_per_min=100))
    node = running[0]
    try:
        body = {"cells": [PARIS_CELL]}
        async with client_from(node.url) as first, client_from(node.url, OTHER_SOURCE) as second:
            answers = [await http.post("/api/v1/devices", json=body) for http in (first, second, first, second)]
            assert [r.status_code for r in answers[:3]] == [201, 201, 201]
            assert_problem(answers[3], 429, "device.registrations-busy")
            assert int(answers[3].headers["retry-after"]) >= 1
            # A canary is the node's own prober (an issuer token): never crowded out.
            canary = await first.post("/api/v1/devices", json={**body, "canary": True},
                                      headers={"Authorization": f"Bearer {ISSUER_TOKEN}"})
            assert canary.status_code == 201, canary.text
    finally:
        await stop_node(*running)


@pytest.mark.parametrize("changes", [{"max_device_cells": 2}])
async def test_the_cell_limit_is_a_setting(tmp_path: Path, nats_server: NatsServer, changes: dict[str, Any]) -> None:
    running = await start_node(device_settings(tmp_path, nats_server, **changes))
    node = running[0]
    try:
        async with client_from(node.url) as http:
            two = await http.post("/api/v1/devices", json={"cells": [PARIS_CELL], "points": [{"lat": 45.7, "lon": 4.8}]})
            assert two.status_code == 201, two.text
            three = await http.post("/api/v1/devices", json={"cells": [PARIS_CELL, PARIS_CELL, PARIS_CELL]})
            assert_problem(three, 422, "device.too-many-cells")
    finally:
        await stop_node(*running)
