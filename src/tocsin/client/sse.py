"""An incremental Server-Sent Events parser (WHATWG HTML §9.2.6), fed raw bytes."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SseEvent:
    """One dispatched event; `last_event_id` is the stream's id when it was dispatched."""

    event: str = "message"
    data: str = ""
    last_event_id: str = ""


class SseParser:
    """Turns chunks of an event stream into events, whatever the chunk boundaries."""

    __slots__ = (
        "_buffer", "_comments", "_data", "_decoder", "_event", "_pending_cr", "_started",
        "last_event_id", "retry_ms",
    )

    def __init__(self, last_event_id: str = "") -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._pending_cr = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._comments = 0
        self.last_event_id = last_event_id
        # The reconnection time the server asked for with `retry:`, if any.
        self.retry_ms: int | None = None

    @property
    def comments(self) -> int:
        """How many comment lines (keepalives) were seen."""
        return self._comments

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse a chunk; returns the events it completed."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        events: list[SseEvent] = []
        for line in self._lines(text):
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _lines(self, text: str) -> list[str]:
        """Complete lines; CRLF, LF and CR all end a line, even split across chunks."""
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        self._buffer += text
        lines = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        # A trailing CR may be the first half of a CRLF: remember to drop the LF.
        self._pending_cr = self._buffer.endswith("\r")
        self._buffer = lines.pop()
        return lines

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self._comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(
            event=event or "message", data="\n".join(data), last_event_id=self.last_event_id
        )


async def sse_events(chunks: AsyncIterable[bytes], parser: SseParser | None = None) -> AsyncIterator[SseEvent]:
    """The events of a byte stream (e.g. `response.aiter_bytes()`), as they complete.

    The one way tocsin reads an event stream: the client, the prober's canary, the drill,
    the fault fleet (fed from its raw HTTP chunks) and the tests.
    """
    parser = parser or SseParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
