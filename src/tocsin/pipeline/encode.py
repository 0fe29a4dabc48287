"""An active alert's event: its bytes for SSE and for WebSocket, framed once for every device."""

from __future__ import annotations

import json

from tocsin.channels.live import Event, http_chunk, ws_text_frame
from tocsin.pipeline.replay import event_id
from tocsin.store.base import Envelope, Stored


def encode_event(stored: Stored, status: str, *, cursor: str | None = None, key: int | None = None) -> Event:
    """The alert's event bytes, once for SSE and once for WebSocket, framed for the wire.

    `cursor` and `key` for an alert fanned out ahead of its seq (fanout.py, a burst): the
    event id devices resume from, and the live order the connections check (Event.seq).
    """
    env = stored.envelope
    cursor = cursor if cursor is not None else event_id(stored.seq, env.alert_id)
    return _framed(env, status, seq=stored.seq, cursor=cursor, key=stored.seq if key is None else key)


def encode_early(envelope: Envelope, status: str) -> Event:
    """An early copy's event (early.py): the same, without a cursor (`seq` and `event_id`
    null, no SSE `id:` field, so no device's last event id moves)."""
    return _framed(envelope, status, seq=None, cursor=None, key=0)


def _framed(env: Envelope, status: str, *, seq: int | None, cursor: str | None, key: int) -> Event:
    body = {
        "seq": seq,
        "event_id": cursor,
        "id": env.alert_id,
        "kid": env.kid,
        "sig": env.sig,
        "cap": env.payload.decode("utf-8"),
    }
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    sse = (f"id: {cursor}\n" if cursor is not None else "") + f"event: alert\ndata: {data}\n\n"
    ws = json.dumps({"type": "alert", **body}, ensure_ascii=False, separators=(",", ":"))
    sse_bytes = sse.encode()
    return Event(seq=key, status=status, sse=sse_bytes, ws=ws, sse_chunk=http_chunk(sse_bytes), ws_frame=ws_text_frame(ws))
