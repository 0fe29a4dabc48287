"""Baseline: a minimal Python server on uvloop writing one SSE event to every device.

The same wire behaviour as `sse_server.c` (read that docstring): devices send any HTTP
request and get a chunked `text/event-stream` head and an `event: synced` chunk; the bench
sends `P <seq> <count>` lines on the control port and each event, built once, is written
with one `transport.write()` per device; the answer is `D <seq>`.

    python bench/baselines/uvloop_sse.py DEVICE_PORT CONTROL_PORT PAYLOAD
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SYNCED = chunk(b"event: synced\ndata: {}\n\n")
devices: list[asyncio.Transport] = []


class Device(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.request = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.request is None:
            return
        self.request += data
        if b"\r\n\r\n" in self.request:
            self.request = None  # type: ignore[assignment]
            assert self.transport is not None
            self.transport.write(HEAD + SYNCED)
            devices.append(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.request is None and self.transport in devices:
            devices.remove(self.transport)


class Control(asyncio.Protocol):
    def __init__(self, payload: int) -> None:
        self.payload = payload
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            _, seq, count = line.split()
            for s in range(int(seq), int(seq) + int(count)):
                framed = chunk(b"id: %d\nevent: alert\ndata: %s\n\n" % (s, b"x" * self.payload))
                for transport in devices:
                    transport.write(framed)
            self.transport.write(b"D %s\n" % seq)


async def main() -> None:
    device_port, control_port, payload = (int(a) for a in sys.argv[1:4])
    loop = asyncio.get_running_loop()
    await loop.create_server(Device, "127.0.0.1", device_port, backlog=4096)
    await loop.create_server(lambda: Control(payload), "127.0.0.1", control_port)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main())
