"""The fan-out's per-device loop on real loopback sockets, compiled and in Python.

`write_each` sends on the socket itself when the transport has nothing queued, and goes
through the transport otherwise: the bytes must reach each device once, whole and in
order, whichever path they took; a closed transport is never written to.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from tocsin.channels import live
from tocsin.audience import Audience
from tocsin.channels.live import Connection, Protocol, Written, _write_each_py

try:
    from tocsin.channels._fanout import write_each as compiled
except ImportError:  # pragma: no cover - asserted below
    compiled = None

WriteEach = Callable[[list[Connection], int, Protocol, bytes, bytes], Written]
LOOPS: dict[str, WriteEach | None] = {"compiled": compiled, "python": _write_each_py}
# Built at install time when gcc and the Python headers are there; without them tocsin runs
# the Python loop, slower but the same. .ci/run installs both.
NOT_BUILT = ("the compiled fan-out loop (tocsin.channels._fanout) is not built here: it needs gcc and the "
             "Python headers at install time (apt-get install gcc python3-dev, then pip install -e . again)")


def _loop(name: str) -> WriteEach:
    """The loop named `name`; skips the test when it is the compiled one and that is not built."""
    write_each = LOOPS[name]
    if write_each is None:
        pytest.skip(NOT_BUILT)
    return write_each


def test_the_compiled_loop_is_built_here() -> None:
    if compiled is None:
        pytest.skip(NOT_BUILT)
    assert live.write_each is compiled


class Server(asyncio.Protocol):
    def __init__(self, transports: asyncio.Queue[asyncio.Transport]) -> None:
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.put_nowait(transport)  # type: ignore[arg-type]


@asynccontextmanager
async def devices(n: int, *, small_buffers: bool = False) -> AsyncIterator[list[tuple[Connection, asyncio.StreamReader]]]:
    """`n` connections as the fast path holds them, each with the device's reading end."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
    server = await loop.create_server(lambda: Server(accepted), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pairs = []
    writers = []
    try:
        for i in range(n):
            sock = socket.socket()
            if small_buffers:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writers.append(writer)
            transport = await asyncio.wait_for(accepted.get(), 5)
            if small_buffers:
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            connection = Connection(device_id=f"d{i}", cells=frozenset({"c"}), audience=Audience(),
                                    protocol=Protocol.SSE if i % 2 == 0 else Protocol.WS, depth=4,
                                    max_buffer=4 * 1024 * 1024)
            connection.use(transport)
            pairs.append((connection, reader))
        yield pairs
    finally:
        for connection, _ in pairs:
            if connection.transport is not None:
                connection.transport.abort()
        for writer in writers:
            writer.close()
        server.close()


@pytest.mark.parametrize("name", LOOPS)
async def test_each_device_gets_its_protocols_bytes_once_and_in_order(name: str) -> None:
    write_each = _loop(name)
    async with devices(4) as pairs:
        sent_sse, sent_ws, to_drop, to_offer = write_each(
            [c for c, _ in pairs], 7, Protocol.SSE, b"sse-seven|", b"ws-seven|")
        assert (sent_sse, sent_ws, to_drop, to_offer) == (2, 2, [], [])
        write_each([c for c, _ in pairs], 8, Protocol.SSE, b"sse-eight|", b"ws-eight|")
        for connection, reader in pairs:
            expected = b"sse-seven|sse-eight|" if connection.protocol is Protocol.SSE else b"ws-seven|ws-eight|"
            assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
            assert connection.last_seq == 8
        # Already at this seq: left to `offer`, not written again.
        again = write_each([c for c, _ in pairs], 8, Protocol.SSE, b"x", b"y")
        assert again[:3] == (0, 0, []) and len(again[3]) == 4


@pytest.mark.parametrize("name", LOOPS)
async def test_a_partial_send_and_a_queued_transport_keep_every_byte_in_order(name: str) -> None:
    write_each = _loop(name)
    big = bytes(range(256)) * 1024  # 256 KB: more than the small socket buffers take at once
    async with devices(2, small_buffers=True) as pairs:
        connections = [c for c, _ in pairs]
        write_each(connections, 1, Protocol.SSE, big, big)
        # Now the rest of `big` is queued in each transport: the next event goes behind it.
        assert all(c.transport is not None and c.transport.get_write_buffer_size() > 0 for c in connections)
        write_each(connections, 2, Protocol.SSE, b"<second>", b"<second>")
        for _, reader in pairs:
            got = await asyncio.wait_for(reader.readexactly(len(big) + len(b"<second>")), 10)
            assert got == big + b"<second>"


@pytest.mark.parametrize("name", LOOPS)
async def test_a_closed_transport_is_cut_off_and_never_written(name: str) -> None:
    write_each = _loop(name)
    async with devices(2) as pairs:
        (gone, gone_reader), (alive, alive_reader) = pairs
        assert gone.transport is not None
        gone.transport.close()
        assert gone.transport.is_closing()
        sent_sse, sent_ws, to_drop, to_offer = write_each([gone, alive], 3, Protocol.SSE, b"a|", b"b|")
        assert to_drop == [gone] and to_offer == [] and sent_sse + sent_ws == 1
        assert await asyncio.wait_for(alive_reader.readexactly(2), 5) == b"b|"
        assert await asyncio.wait_for(gone_reader.read(), 5) == b""  # closed, nothing written


@pytest.mark.parametrize("name", LOOPS)
async def test_a_device_too_far_behind_is_cut_off(name: str) -> None:
    write_each = _loop(name)
    big = b"z" * (256 * 1024)
    async with devices(1, small_buffers=True) as pairs:
        (slow, _), = pairs
        slow.max_buffer = 64 * 1024
        write_each([slow], 1, Protocol.SSE, big, big)  # the device reads nothing: most stays queued
        sent_sse, sent_ws, to_drop, to_offer = write_each([slow], 2, Protocol.SSE, b"next", b"next")
        assert (sent_sse, sent_ws, to_drop, to_offer) == (0, 0, [slow], [])
        assert slow.last_seq == 1
