"""The probe alert, the prober's account, and the bounded history behind /status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tocsin.cap.model import Status
from tocsin.cap.parse import parse_xml
from tocsin.audience import Audience
from tocsin.errors import Rejected
from tocsin.policy import check
from tocsin.prober.history import DAY_MINUTES, History
from tocsin.prober.probe import issuer_client, load_or_create_token, probe_xml, prober_account, prober_sender


def test_probe_is_a_valid_system_alert_the_prober_may_send() -> None:
    sent = datetime(2026, 5, 1, 12, 0, 0, 900_000, tzinfo=UTC)
    alert = parse_xml(probe_xml(sender=prober_sender("node 1"), identifier="probe-x-1", sent=sent, expires_in_s=1))
    assert alert.status is Status.SYSTEM and alert.sender == "tocsin-prober@node-1"
    assert alert.expires is not None and alert.expires > sent  # never already expired when sent
    check(alert, prober_account("node 1"), now=sent, max_skew_s=300)


def test_prober_account_may_send_nothing_but_its_own_system_alerts() -> None:
    account = prober_account("n1")
    now = datetime.now(UTC)
    other = parse_xml(probe_xml(sender="prefecture@example.org", identifier="p-1", sent=now, expires_in_s=30))
    with pytest.raises(Rejected):
        check(other, account, now=now, max_skew_s=300)
    actual = probe_xml(sender=prober_sender("n1"), identifier="p-2", sent=now, expires_in_s=30)
    with pytest.raises(Rejected):
        check(parse_xml(actual.replace(b"<status>System</status>", b"<status>Actual</status>")), account,
              now=now, max_skew_s=300)
    # And System alerts reach canaries only.
    assert Audience(canary=True).receives("System") and not Audience(tests=True).receives("System")


def test_prober_token_is_kept_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "prober-token"
    first = load_or_create_token(path)
    assert first.startswith("tcp_") and load_or_create_token(path) == first
    assert path.stat().st_mode & 0o077 == 0


def test_history_availability_and_latency_by_window() -> None:
    now = [1_000_000.0]
    history = History(wall=lambda: now[0])
    for latency in (0.004, 0.02, 0.03, None):
        history.record("sse", latency)
    now[0] += 2 * 3600  # two hours later: out of the hour, still in the day
    history.record("sse", 0.2)
    hour, day = history.summary("sse", 3600), history.summary("sse", 86400)
    assert (hour.probes, hour.delivered, hour.availability) == (1, 1, 1.0)
    assert (day.probes, day.delivered, day.availability) == (5, 4, 0.8)
    assert day.p50_s == 0.025 and day.p99_s == 0.25 and day.max_s == 0.2
    assert history.as_json()["day"]["sse"]["availability"] == 0.8


def test_history_keeps_at_most_a_day_of_minutes() -> None:
    now = [0.0]
    history = History(wall=lambda: now[0])
    for _ in range(DAY_MINUTES + 500):
        history.record("sse", 0.01)
        now[0] += 60
    assert len(history._minutes["sse"]) == DAY_MINUTES
    assert history.summary("sse", timedelta(days=1).total_seconds()).probes <= DAY_MINUTES


class _ClosesIdleConnections:
    """An HTTP server that answers the first request of each connection, and closes the
    connection without an answer when another request comes on it: what a server's
    keep-alive timeout does when it fires just as a request arrives."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            first = True
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                if not first:
                    return  # the idle timer fired: closed, no answer
                first = False
                self.answered += 1
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_each_probe_takes_a_fresh_connection_so_no_idle_timeout_can_refuse_it() -> None:
    server = _ClosesIdleConnections()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with issuer_client(f"http://127.0.0.1:{port}", timeout_s=5) as http:
            for _ in range(5):
                response = await http.post("/api/v1/alerts", content=b"<alert/>")
                assert response.status_code == 201
        assert server.connections == 5 and server.answered == 5
        # The race it avoids: a kept-alive connection meets the server's close.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as kept:
            assert (await kept.post("/api/v1/alerts", content=b"<alert/>")).status_code == 201
            with pytest.raises(httpx.RemoteProtocolError):
                await kept.post("/api/v1/alerts", content=b"<alert/>")
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_canary_stream_is_reopened_only_for_a_probe_lost_while_it_was_live() -> None:
    """A stream that synced after the lost probe was issued had it only by replay (the probe came
    while the canary was between streams): dropping it would lose the next probe in the gap,
    and so on (a repaired channel stayed red). One live at the probe's issue, or one that never
    synced (a channel that writes nothing), is reopened."""
    from tocsin.prober.canary import SseCanary

    async with httpx.AsyncClient() as http:
        canary = SseCanary(http, lambda forget: None, read_timeout_s=5.0)
        for connected_at, issued, reopened in ((10.0, 9.5, False), (10.0, 10.5, True), (None, 9.5, True)):
            async with asyncio.timeout(None) as scope:
                canary._scope, canary.connected_at = scope, connected_at
                canary.reconnect(issued)
                assert (scope.when() is not None) is reopened, (connected_at, issued)
                scope.reschedule(None)
