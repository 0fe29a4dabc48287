"""`tocsin watch` as a process against a real node: statuses, Update and Cancel as printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator

import httpx

from tests.e2e.conftest import ADMIN_TOKEN
from tests.e2e.test_follow_ups import ADMIN, follow_up_xml
from tests.e2e.test_watcher import XML, issue
from tests.samples import IN_PARIS, alert_xml
from tocsin.app import Node

TOCSIN = [sys.executable, "-m", "tocsin.cli.main"]


@contextlib.asynccontextmanager
async def tocsin_watch(node: Node, *args: str) -> AsyncIterator[asyncio.StreamReader]:
    """`tocsin watch` on IN_PARIS, its stdout to read; stopped by its pid at the end."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOCSIN_KEYS", "TOCSIN_URL")}
    process = await asyncio.create_subprocess_exec(
        *TOCSIN, "watch", "--url", node.url, "--place", f"{IN_PARIS[0]},{IN_PARIS[1]}", "--trust-on-first-use",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )
    assert process.stdout is not None
    try:
        yield process.stdout
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def lines_until(out: asyncio.StreamReader, marker: str, timeout_s: float = 20) -> list[str]:
    """The lines printed up to the one holding `marker` (included)."""
    found: list[str] = []
    async with asyncio.timeout(timeout_s):
        while marker not in (found[-1] if found else ""):
            line = await out.readline()
            assert line, "tocsin watch ended"
            found.append(line.decode().rstrip("\n"))
    return found


async def test_tocsin_watch_prints_statuses_updates_and_cancels_as_such(node: Node, http: httpx.AsyncClient) -> None:
    async with tocsin_watch(node, "--tests") as tests, tocsin_watch(node, "--json") as plain:
        await issue(http, ADMIN, alert_xml(identifier="CLI-SYNC", headline="sync"))
        for out in (tests, plain):
            await lines_until(out, "CLI-SYNC")  # replayed on connect: both are following
        # Whatever the text says, an Exercise is marked as one, and only shown on opt-in.
        await issue(http, ADMIN, alert_xml(identifier="CLI-EX", status="Exercise", headline="ACTUAL ALERT: leave now"))
        # System: the admin's (an automated source may not send it; it never waits for approval).
        await issue(http, {"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    alert_xml(identifier="CLI-SYS", status="System", headline="probe"))
        draft = await http.post("/api/v1/alerts", content=alert_xml(status="Draft"), headers={**ADMIN, **XML})
        assert (draft.status_code, draft.json()["code"]) == (422, "policy.draft")
        original = await issue(http, ADMIN, alert_xml(identifier="CLI-1", headline="Crue"))
        await issue(http, ADMIN, follow_up_xml("CLI-2", "Update", original, headline="Crue majeure"))
        await issue(http, ADMIN, follow_up_xml("CLI-3", "Cancel", original, headline="Fin"))
        printed = await lines_until(tests, "CLI-3")
        shown = [json.loads(line) for line in await lines_until(plain, "CLI-3")]
    assert printed[0].startswith("[EXERCISE] Inondation: ACTUAL ALERT: leave now [")
    assert printed[1].startswith("Inondation: Crue [")
    assert printed[2].startswith("(UPDATE, replaces CLI-1) Inondation: Crue majeure [")
    assert printed[3].startswith("(CANCELLED CLI-1) Inondation: Fin [")
    assert len(printed) == 4  # no System line: only canaries get those
    assert [(d["identifier"], d["kind"]) for d in shown] == [("CLI-1", "alert"), ("CLI-2", "update"), ("CLI-3", "cancel")]
    assert shown[1]["replaces"] == [{"sender": "prefecture-75@interieur.gouv.fr", "identifier": "CLI-1"}]
