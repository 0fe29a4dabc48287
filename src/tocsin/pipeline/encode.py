"""An active alert's event: its bytes for SSE and for WebSocket, framed once for every device."""

from __future__ import annotations

import json

from tocsin.channels.live import Event, http_chunk, ws_text_frame
from tocsin.pipeline.replay import event_id
from tocsin.store.base import Stored


def encode_event(stored: Stored, status: str, *, cursor: str | None = None, key: int | None = None) -> Event:
    """The alert's event bytes, once for SSE and once for WebSocket, framed for the wire.

    `cursor` and `key` for an alert fanned out ahead of its seq (fanout.py, a burst): the
    event id devices resume from, and the live order the connections check (Event.seq).
    """
    env = stored.envelope
    cursor = cursor if cursor is not None else event_id(stored.seq, env.alert_id)
    body = {
        "seq": stored.seq,
        "event_id": cursor,
        "id": env.alert_id,
        "kid": env.kid,
        "sig": env.sig,
        "cap": env.payload.decode("utf-8"),
    }
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    sse = f"id: {cursor}\nevent: alert\ndata: {data}\n\n".encode()
    ws = json.dumps({"type": "alert", **body}, ensure_ascii=False, separators=(",", ":"))
    return Event(seq=stored.seq if key is None else key, status=status, sse=sse, ws=ws, sse_chunk=http_chunk(sse), ws_frame=ws_text_frame(ws))
