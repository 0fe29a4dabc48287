"""The live registry's fast path: pre-encoded bytes per protocol, slow devices cut off."""

from __future__ import annotations

import asyncio
import contextlib
import json

from tests.waiting import until
from tocsin.audience import Audience
from tocsin.channels.live import (
    Connection,
    Event,
    LiveRegistry,
    Protocol,
    as_transport,
    http_chunk,
    keepalive_ws,
    ws_text_frame,
)


class FakeTransport:
    """Has the transport methods the fast path calls, and is no asyncio.Transport (as uvloop's)."""

    def __init__(self, buffered: int = 0) -> None:
        self.written: list[bytes] = []
        self.buffered = buffered
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.aborted = True


def event(seq: int, status: str = "Actual") -> Event:
    sse = f"id: {seq}\nevent: alert\ndata: {{}}\n\n".encode()
    ws = f'{{"type":"alert","seq":{seq}}}'
    return Event(seq=seq, status=status, sse=sse, ws=ws, sse_chunk=http_chunk(sse), ws_frame=ws_text_frame(ws))


def connection(protocol: Protocol, transport: FakeTransport | None, *, tests: bool = False) -> Connection:
    c = Connection(device_id="d", cells=frozenset({"c1"}), audience=Audience(tests=tests), protocol=protocol, depth=4)
    c.transport = transport  # type: ignore[assignment]
    return c


def decode_ws(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked server frame."""
    length, at = frame[1] & 0x7F, 2
    if length == 126:
        length, at = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, at = int.from_bytes(frame[2:10], "big"), 10
    assert not frame[1] & 0x80, "a server frame is never masked"
    assert len(frame) == at + length
    return frame[0], frame[at:]


def test_a_uvloop_like_transport_is_accepted_by_its_methods() -> None:
    fake = FakeTransport()
    assert not isinstance(fake, asyncio.Transport)
    assert as_transport(fake) is fake
    assert as_transport(object()) is None
    assert as_transport(None) is None


def test_ws_frames_for_every_length_class() -> None:
    for size in (0, 125, 126, 65535, 65536):
        text = "é" * (size // 2) + "x" * (size % 2)
        opcode, payload = decode_ws(ws_text_frame(text))
        assert opcode == 0x81  # FIN + text
        assert payload == text.encode()
    assert decode_ws(ws_text_frame(keepalive_ws({"node": "n1"})))[1] == b'{"type":"keepalive","node":"n1"}'


def test_publish_writes_each_protocols_bytes_once_per_device() -> None:
    live = LiveRegistry()
    sse, ws = FakeTransport(), FakeTransport()
    a, b = connection(Protocol.SSE, sse), connection(Protocol.WS, ws)
    e = event(7)
    assert live.publish(e, [a, b]) == 2
    assert sse.written == [e.sse_chunk]
    assert ws.written == [e.ws_frame]
    assert live.publish(e, [a, b]) == 2  # already sent: nothing written twice
    assert sse.written == [e.sse_chunk] and ws.written == [e.ws_frame]
    assert live.queued[Protocol.SSE] == 2 and live.queued[Protocol.WS] == 2


def test_a_slow_device_is_cut_off_and_the_others_still_get_the_alert() -> None:
    live = LiveRegistry()
    slow_transport, fast_transport = FakeTransport(buffered=10**9), FakeTransport()
    slow, fast = connection(Protocol.SSE, slow_transport), connection(Protocol.SSE, fast_transport)
    assert live.publish(event(1), [slow, fast]) == 1
    assert slow_transport.aborted and slow.dropped and slow_transport.written == []
    assert fast_transport.written == [event(1).sse_chunk]
    assert live.dropped_total == 1
    assert live.publish(event(2), [slow, fast]) == 1  # the cut device stays cut; it resumes by id
    assert len(fast_transport.written) == 2


def test_test_alerts_only_reach_devices_that_opted_in() -> None:
    live = LiveRegistry()
    plain, tester = FakeTransport(), FakeTransport()
    assert live.publish(event(3, "Test"), [connection(Protocol.SSE, plain),
                                           connection(Protocol.SSE, tester, tests=True)]) == 1
    assert plain.written == [] and len(tester.written) == 1


def test_queued_connections_still_get_the_event_for_their_protocol() -> None:
    live = LiveRegistry()
    queued = connection(Protocol.WS, None)
    assert live.publish(event(4), [queued]) == 1
    assert queued.queue.get_nowait() == event(4).ws


async def test_fan_out_in_batches_lets_the_loop_run_and_reaches_everyone_in_order() -> None:
    live = LiveRegistry()
    transports = [FakeTransport() for _ in range(10)]
    connections = [connection(Protocol.SSE, t) for t in transports]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = ticks
        assert await live.publish_in_batches(event(5), connections, batch=3) == 10
        assert await live.publish_in_batches(event(6), connections, batch=3) == 10
    finally:
        other.cancel()
    assert ticks - before >= 6  # 4 batches per alert: the loop ran in between
    assert all(t.written == [event(5).sse_chunk, event(6).sse_chunk] for t in transports)


async def test_keepalives_carry_the_nodes_freshness_to_every_protocol() -> None:
    live = LiveRegistry()
    sse, ws = FakeTransport(), FakeTransport()
    live.add(connection(Protocol.SSE, sse))
    live.add(connection(Protocol.WS, ws))
    ages = iter([0.5, 7.0])
    task = asyncio.get_running_loop().create_task(
        live.keep_alive(0.01, lambda: {"node": "n1", "canary_age_s": next(ages, 7.0), "stale_after_s": 4.0})
    )
    try:
        await until(lambda: len(sse.written) >= 2 and len(ws.written) >= 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    first = b'{"node":"n1","canary_age_s":0.5,"stale_after_s":4.0}'
    assert sse.written[0] == http_chunk(b"event: keepalive\ndata: " + first + b"\n\n")
    assert json.loads(decode_ws(ws.written[0])[1]) == {"type": "keepalive", **json.loads(first)}
    assert b'"canary_age_s":7.0' in sse.written[1]  # encoded afresh at every tick
