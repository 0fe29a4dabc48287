"""The SSE parser: whatever the chunking, the same events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tocsin.channels.live import keepalive_sse
from tocsin.client.sse import SseEvent, SseParser, sse_events

STREAM = (
    b": keepalive\n\n"
    b"retry: 2500\n"
    b"event: alert\nid: 7\ndata: {\"seq\": 7,\ndata:  \"x\": 1}\n\n"
    b"event: synced\ndata: {\"node\": \"n1\", \"seq\": 7}\n\n"
    b"data: caf\xc3\xa9\n\n"
)
EXPECTED = [
    SseEvent(event="alert", data='{"seq": 7,\n "x": 1}', last_event_id="7"),
    SseEvent(event="synced", data='{"node": "n1", "seq": 7}', last_event_id="7"),
    SseEvent(event="message", data="café", last_event_id="7"),
]


def _feed_all(parser: SseParser, chunks: list[bytes]) -> list[SseEvent]:
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_whole_stream_gives_events_comments_and_retry() -> None:
    parser = SseParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.comments == 1
    assert parser.retry_ms == 2500
    assert parser.last_event_id == "7"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_any_chunk_boundary_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert _feed_all(SseParser(), chunks) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_crlf_cr_and_lf_all_end_lines(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    assert SseParser().feed(stream) == EXPECTED
    one_byte = [stream[i : i + 1] for i in range(len(stream))]
    assert _feed_all(SseParser(), one_byte) == EXPECTED


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == [SseEvent(data="a")]
    assert parser.feed(b"\ndata: b\r\n\r\n") == [SseEvent(data="b")]


def test_event_without_data_is_not_dispatched_and_resets_its_type() -> None:
    parser = SseParser()
    assert parser.feed(b"event: alert\n\ndata: x\n\n") == [SseEvent(data="x")]


def test_field_without_colon_and_unknown_fields() -> None:
    parser = SseParser()
    assert parser.feed(b"data\nfoo: bar\ndata:y\n\n") == [SseEvent(data="\ny")]


def test_bad_retry_and_id_with_nul_are_ignored() -> None:
    parser = SseParser(last_event_id="3")
    parser.feed(b"retry: soon\nid: 4\x00\ndata: x\n\n")
    assert parser.retry_ms is None
    assert parser.last_event_id == "3"


def test_leading_bom_is_dropped_once() -> None:
    parser = SseParser()
    assert parser.feed(b"\xef\xbb\xbfdata: x\n\n") == [SseEvent(data="x")]


def test_incomplete_event_at_end_is_not_dispatched() -> None:
    assert SseParser().feed(b"event: alert\ndata: x\n") == []


async def test_sse_events_reads_any_byte_stream_chunked_anyhow() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(STREAM), 3):
            yield STREAM[i : i + 3]

    assert [event async for event in sse_events(chunks())] == EXPECTED


def test_a_keepalive_with_freshness_is_an_event_that_moves_no_cursor() -> None:
    parser = SseParser()
    events = parser.feed(b"id: 9\nevent: alert\ndata: {}\n\n" + keepalive_sse({"node": "n1", "canary_age_s": 1.5}))
    assert events[1] == SseEvent(event="keepalive", data='{"node":"n1","canary_age_s":1.5}', last_event_id="9")
