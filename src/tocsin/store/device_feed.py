"""The device bucket, read fast into every node's audience index: at start and then live.

A KV watch through nats-py costs about 20 µs a record (its parser, a Msg and an entry per
message, an asyncio queue hop): 21 s for a million devices before any indexing. This feed
reads the bucket's stream `KV_<bucket>` itself instead: an ephemeral push consumer
(deliver last per subject, no acks, flow control, idle heartbeats) delivers to a
subscription on a connection of its own, and the feed parses the raw protocol in 64 KiB
chunks. The first pass ends when a message's reply subject says nothing more is pending
(or at once for an empty bucket); after it, the same consumer carries every put, delete
and expiry marker as it happens.

Any doubt (a gap in the consumer's sequence, no heartbeat for three intervals, a closed
connection, a protocol error) ends the feed; the caller starts it again, which makes a new
first pass, and keys that pass does not meet are dropped (they were deleted or expired
meanwhile, their markers perhaps gone).

A node that loaded a snapshot of its index (api/device_snapshots.py) gives `after`, the
stream position the snapshot is complete up to: the consumer then delivers every message
after it in order (deliver by start sequence), and its first pass drops nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from typing import Any
from urllib.parse import ParseResult

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tocsin.store.base import DeviceSink, StreamPosition

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
_CHUNK = 1 << 16
# A control line (INFO, -ERR, a message's header line) longer than this is not NATS.
_MAX_LINE = 1 << 16
# MSG <subject> <sid> <reply> <bytes>: a stored value without headers.
_MSG = re.compile(rb"MSG ([^ \r\n]+) [^ \r\n]+ ([^ \r\n]+) (\d{1,9})\r\n")
_DELETED = (b"KV-Operation: DEL", b"KV-Operation: PURGE", b"Nats-Marker-Reason:")


class FeedBroken(Exception):
    """The feed can no longer vouch for what it delivers; start it again."""


class SnapshotStale(FeedBroken):
    """The stream cannot continue a snapshot (another stream, or messages after it gone)."""


class _Reader:
    """Parses what the server sends on the feed's connection; acts on each message."""

    def __init__(self, sink: DeviceSink, prefix: bytes, inbox: bytes, writer: asyncio.StreamWriter,
                 created: str, after: StreamPosition | None) -> None:
        self.sink = sink
        self.created = created
        # From a snapshot: every message after it, in order (so the position holds throughout,
        # and the pass drops nothing). Otherwise the last message of each key, by key.
        self.in_order = after is not None
        self.seq = after.seq if after is not None else 0  # the highest stream sequence applied
        self.prefix = prefix
        self.inbox = inbox
        self.writer = writer
        self.buffer = bytearray()
        self.delivered = 0  # the consumer sequence of the last message
        self.in_first_pass = True
        self.skipped = 0
        self.puts: list[tuple[str, bytes]] = []

    def feed(self, data: bytes) -> None:
        """Handle every whole frame in the buffer, keep the rest."""
        buffer = self.buffer
        buffer += data
        at = 0
        while True:
            plain = _MSG.match(buffer, at)  # the common frame, read by one match
            if plain is not None:
                start = plain.end()
                total = int(plain[3])
                if len(buffer) < start + total + 2:
                    break
                self._message(plain[1], plain[2], b"", bytes(buffer[start:start + total]))
                at = start + total + 2
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                if len(buffer) - at > _MAX_LINE:
                    raise FeedBroken("a protocol line without end")
                break
            line = bytes(buffer[at:end])
            if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                parts = line.split(b" ")
                total = int(parts[-1])
                start = end + 2
                if len(buffer) < start + total + 2:
                    break
                with_headers = parts[0] == b"HMSG"
                headers = int(parts[-2]) if with_headers else 0
                reply = parts[3] if len(parts) == (6 if with_headers else 5) else b""
                self._message(parts[1], reply, bytes(buffer[start:start + headers]),
                              bytes(buffer[start + headers:start + total]))
                at = start + total + 2
                continue
            at = end + 2
            if line == b"PING":
                self.writer.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise FeedBroken(line[:200].decode(errors="replace"))
        del buffer[:at]
        self.flush()
        if self.in_order or not self.in_first_pass:
            self.sink.position = StreamPosition(self.created, self.seq)

    def flush(self) -> None:
        """Put the records met so far in one batch (before any delete, so order holds)."""
        if self.puts:
            skipped = self.sink.put_many(self.puts)
            if skipped:
                self.skipped += skipped
                log.warning("device feed skipped values it cannot read", extra={"values": skipped})
            self.puts = []

    def _message(self, subject: bytes, reply: bytes, headers: bytes, payload: bytes) -> None:
        if subject == self.inbox:  # a heartbeat or a flow-control request
            self._control(reply, headers)
            return
        tokens = reply.split(b".")
        if len(tokens) < 9 or tokens[0] != b"$JS" or not subject.startswith(self.prefix):
            raise FeedBroken(f"not a consumer's message: {subject[:80]!r}")
        # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>,
        # or with a domain and account hash first (12 tokens).
        stream_seq, seq, pending = ((int(tokens[5]), int(tokens[6]), int(tokens[8])) if len(tokens) == 9
                                    else (int(tokens[7]), int(tokens[8]), int(tokens[10])))
        if seq != self.delivered + 1:
            raise FeedBroken(f"consumer sequence {seq} after {self.delivered}: a message was lost")
        self.delivered = seq
        self.seq = max(self.seq, stream_seq)
        key = subject[len(self.prefix):].decode()
        if not payload or (headers and any(marker in headers for marker in _DELETED)):
            self.flush()
            self.sink.discard(key)
        else:
            self.puts.append((key, payload))
        if pending == 0 and self.in_first_pass:
            self.end_first_pass()

    def _control(self, reply: bytes, headers: bytes) -> None:
        if reply:  # flow control: answer so that the server sends on
            self.writer.write(b"PUB " + reply + b" 0\r\n\r\n")
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"nats-consumer-stalled" and value.strip():
                self.writer.write(b"PUB " + value.strip() + b" 0\r\n\r\n")

    def end_first_pass(self) -> None:
        self.flush()
        self.in_first_pass = False
        self.sink.position = StreamPosition(self.created, self.seq)
        self.sink.end_pass(drop_unmet=not self.in_order)


async def _pong(reader: asyncio.StreamReader) -> None:
    """Wait for the answer to our PING, past the INFO updates the server may send first."""
    async with asyncio.timeout(3 * HEARTBEAT_S):
        while True:
            answer = await reader.readline()
            if answer.startswith(b"PONG"):
                return
            if not answer or not answer.startswith((b"INFO", b"+OK", b"PING")):
                raise FeedBroken(f"the NATS server refused the feed: {answer[:200]!r}")


async def _open(url: ParseResult, nc: Client, tls: ssl.SSLContext | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection of the feed's own to the server `nc` is on, logged in as `nc` is."""
    host, port = url.hostname or "127.0.0.1", url.port or 4222
    reader, writer = await asyncio.open_connection(host, port, limit=_MAX_LINE)
    try:
        info = json.loads((await reader.readline()).decode().partition(" ")[2] or "{}")
        if info.get("tls_required") or url.scheme in ("tls", "nats+tls"):
            await writer.start_tls(tls or ssl.create_default_context(), server_hostname=host)
        user = url.username or nc.options.get("user")
        password = url.password or nc.options.get("password")
        connect: dict[str, Any] = {"verbose": False, "pedantic": False, "protocol": 1, "headers": True,
                                   "no_responders": True, "name": "tocsin-device-feed", "lang": "python"}
        if user:
            connect.update(user=user, **{"pass": password or ""})
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        await _pong(reader)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def feed_devices(nc: Client, js: JetStreamContext, bucket: str, sink: DeviceSink,
                       tls: ssl.SSLContext | None = None, *, after: StreamPosition | None = None) -> None:
    """Fill `sink` from the bucket, then keep it current until something breaks.

    With `after` (the position of a snapshot `sink` holds), the first pass reads every
    message after it in order, deletes and markers included, and drops nothing it does not
    meet; it is refused (SnapshotStale, before `sink` changes) unless the stream is the one
    the snapshot came from and still holds every message after it.

    Raises:
        SnapshotStale: start again without `after` (a full pass).
        FeedBroken, OSError, nats errors: the feed stopped; the caller starts it again.
    """
    stream = f"KV_{bucket}"
    stream_info = await js.stream_info(stream)
    created = stream_info.created.isoformat() if stream_info.created is not None else ""
    if after is not None:
        state = stream_info.state
        if not created or created != after.created:
            raise SnapshotStale(f"the stream was created at {created or 'an unknown time'}, "
                                f"the snapshot's at {after.created}")
        if after.seq > state.last_seq or state.first_seq > after.seq + 1:
            raise SnapshotStale(f"the stream holds {state.first_seq}..{state.last_seq}, "
                                f"the snapshot ends at {after.seq}")
    url = nc.connected_url
    if url is None:
        raise FeedBroken("not connected")
    reader, writer = await _open(url, nc, tls)
    inbox = nc.new_inbox().encode()
    consumer = None
    try:
        writer.write(b"SUB " + inbox + b" 1\r\nPING\r\n")
        await writer.drain()
        await _pong(reader)
        reader_state = _Reader(sink, f"$KV.{bucket}.".encode(), inbox, writer, created, after)
        if after is None:
            sink.position = None
            sink.begin_pass()
        info = await js.add_consumer(stream, ConsumerConfig(
            deliver_subject=inbox.decode(),
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT if after is None else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if after is None else after.seq + 1,
            ack_policy=AckPolicy.NONE, flow_control=True, idle_heartbeat=HEARTBEAT_S,
            filter_subject=f"$KV.{bucket}.>", mem_storage=True, num_replicas=1,
            inactive_threshold=10 * HEARTBEAT_S,
        ))
        consumer = info.name
        if not info.num_pending:
            if after is None:  # every message up to the stream's last when it was read
                reader_state.seq = max(reader_state.seq, stream_info.state.last_seq)
            reader_state.end_first_pass()  # an empty bucket: nothing to wait for
        while True:
            async with asyncio.timeout(3 * HEARTBEAT_S):
                data = await reader.read(_CHUNK)
            if not data:
                raise FeedBroken("the server closed the feed's connection")
            reader_state.feed(data)
            if writer.transport.get_write_buffer_size():
                await writer.drain()
    except TimeoutError:
        raise FeedBroken(f"no heartbeat for {3 * HEARTBEAT_S:.0f} s") from None
    finally:
        writer.close()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, consumer)
