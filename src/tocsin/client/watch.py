"""What an app does: register, stream, verify, check, dedupe, show, and resume anywhere.

Embeddable:

    keys = load_key_file(Path("deployment-keys.json"))   # tocsin.client.keys
    places = [Place(name="Home", lat=48.8566, lon=2.3522), Place(name="Nice", lat=43.7102, lon=7.2620)]
    async with Watcher(urls=["https://alerts.example"], places=places, keys=keys) as watcher:
        async for display in watcher.displays():
            print(display.headline, "for", ", ".join(display.places))

Only the places' coarse cells are sent to the node; each alert is checked against the
precise places here and shown once, however many of them it holds (client/places.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from tocsin.cap.model import Alert, MsgType
from tocsin.cap.parse import parse_xml
from tocsin.client.backoff import Backoff, Rotation
from tocsin.audience import Audience, expires_at
from tocsin.client.decide import Decision, Subscription, Verdict, decide
from tocsin.client.display import Display, make_display
from tocsin.client.freshness import KEEPALIVE, Freshness, NodeStale, DeliveringNodes, move_target
from tocsin.client.node import (
    STREAM_PATH,
    DeviceUnknown,
    NodeRefused,
    RegistrationRefused,
    fetch_key_set,
    refusal,
    register,
)
from tocsin.client.keys import Keys, NoTrustedKeys, accept_statements, shipped_keys, verify_at
from tocsin.client.sse import SseEvent, sse_events
from tocsin.client.state import Identity, Registration, Shown, Standing, load_state, save_state
from tocsin.client.ws import messages, open_ws
from tocsin.errors import CapInvalid
from tocsin.client.places import Place, as_places, cells_of
from tocsin.signing import keys_by_kid

__all__ = ["Display", "NoTrustedKeys", "Place", "Synced", "WatchStats", "Watcher"]

log = logging.getLogger(__name__)

LatLon = tuple[float, float]
Now = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

# Until a node's keepalive announces its interval (older nodes: a comment every 15 s),
# this long without a byte means the link is dead; then three intervals (client/freshness.py).
READ_TIMEOUT_S = 45.0
CONNECT_TIMEOUT_S = 5.0
# Displays waiting for the consumer of `displays()`; when full, reading the stream pauses.
DISPLAY_QUEUE_DEPTH = 256
# An alert signed by a key not trusted makes the watcher read the node's key-set
# statements again, at most this often (a rotation reaches devices between registrations).
KEY_REFRESH_S = 60.0


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced:
    """The node caught the device up: everything it missed has been replayed."""

    node: str
    seq: int | None
    url: str


@dataclass(slots=True, kw_only=True)
class WatchStats:
    """Counters of what the watcher saw; read them, don't log per event."""

    connects: int = 0
    disconnects: int = 0
    registrations: int = 0
    events: int = 0
    # Of them, early copies: alerts sent before they were stored (an election), no cursor.
    early: int = 0
    bad_signatures: int = 0
    # Key-set statements refused: not signed by a trusted key, or badly signed.
    statements_refused: int = 0
    invalid: int = 0
    # Keepalives saying their node had stopped delivering, and the moves they caused (a
    # stale node is left only for a ready one).
    stale: int = 0
    moves: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)


class Watcher:
    """A device: follows the deployment and yields the alerts to show, each once."""

    def __init__(
        self,
        urls: Sequence[str],
        places: Sequence[Place | LatLon],
        *,
        languages: Sequence[str] = ("en",),
        tests: bool = False,
        canary: bool = False,
        issuer_token: str | None = None,
        state_path: Path | None = None,
        protocol: Literal["sse", "ws"] = "sse",
        keys: Keys | None = None,
        trust_on_first_use: bool = False,
        on_display: Callable[[Display], Awaitable[None]] | None = None,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        now: Now = utc_now,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.places = as_places(places)
        self.subscription = Subscription(
            places=tuple(place.point for place in self.places),
            names=tuple(place.name for place in self.places),
            languages=tuple(languages) or ("en",),
            audience=Audience(tests=tests, canary=canary),
        )
        # Only these coarse cells leave the device (client/places.py, docs/privacy.md).
        self.cells = cells_of(self.places)
        self.rotation = Rotation(urls)
        if protocol not in ("sse", "ws"):
            raise ValueError(f"protocol must be sse or ws, not {protocol!r}")
        self.protocol = protocol
        self.stats = WatchStats()
        self.state = load_state(state_path)
        self._state_path = state_path
        self._trust_on_first_use = trust_on_first_use
        self._trust_from(shipped_keys() if keys is None else dict(keys))
        self._keys_read_at: float | None = None
        self._issuer_token = issuer_token
        self._on_display = on_display
        self._backoff = backoff or Backoff()
        self._transport = transport
        self._now = now
        self._sleep = sleep
        self._queue: asyncio.Queue[Display] = asyncio.Queue(maxsize=DISPLAY_QUEUE_DEPTH)
        self._synced = asyncio.Event()
        self._last_synced: Synced | None = None
        self._last_failure = ""
        self._http: httpx.AsyncClient | None = None
        self._ready: DeliveringNodes | None = None
        # How long without a byte before the stream is called dead (learned from keepalives).
        self._silence_s = READ_TIMEOUT_S
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        self._http = httpx.AsyncClient(transport=self._transport, timeout=timeout)
        self._ready = DeliveringNodes(self._http)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._runner = self._tasks.create_task(self.run(), name="watcher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tasks is not None and self._http is not None
        if self._runner is not None:
            self._runner.cancel()
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            await self._http.aclose()
            self._save()

    async def displays(self) -> AsyncIterator[Display]:
        """The alerts to show, in order, for as long as the watcher runs."""
        while True:
            yield await self._queue.get()

    async def wait_synced(self) -> Synced:
        """Wait until a node has replayed everything this device missed."""
        await self._synced.wait()
        assert self._last_synced is not None
        return self._last_synced

    async def run(self) -> None:
        """Follow the deployment until cancelled; reconnects with backoff across the URLs.

        Raises:
            RegistrationRefused: a node refused the registration, and retrying cannot help.
            NodeIncompatible: a node uses another cell resolution.
        """
        if self._http is None:
            raise RuntimeError("use `async with Watcher(...)` to run a watcher")
        while True:
            url = self.rotation.current
            moved_to: str | None = None
            try:
                await self._follow(url)
            except RegistrationRefused:
                raise
            except NodeStale as exc:
                self._note_failure(url, "stale")
                log.warning("node not delivering; moving", extra={
                    "url": url, "to": exc.target, "canary_age_s": exc.freshness.canary_age_s})
                self.stats.moves += 1
                moved_to = exc.target
            except DeviceUnknown:
                self._note_failure(url, "device-unknown")
                self._forget_registration()
            except NodeRefused as exc:
                self._note_failure(url, f"refused-{exc.status}")
            except (httpx.HTTPError, OSError) as exc:
                self._note_failure(url, type(exc).__name__)
            self._synced.clear()
            self.stats.disconnects += 1
            await self._sleep(self._backoff.next_delay())
            if moved_to is not None:
                self.rotation.move_to(moved_to)
            else:
                self.rotation.advance()

    async def _follow(self, url: str) -> None:
        """Register if needed, then stream from `url` until the stream ends or fails."""
        registration = await self._ensure_registered(url)
        if self.protocol == "ws":
            await self._stream_ws(url, registration)
        else:
            await self._stream(url, registration)
        self._note_failure(url, "closed")

    def _note_failure(self, url: str, kind: str) -> None:
        """Log the first failure and each change of kind, not every repeat."""
        if kind != self._last_failure:
            log.warning("stream lost", extra={"url": url, "kind": kind})
        self._last_failure = kind

    def _forget_registration(self) -> None:
        """The deployment no longer knows the device (e.g. a fresh one): start over."""
        self.state.registration = None
        # Event seqs belong to the deployment that issued them.
        self.state.last_seq = None
        self.state.cursor = None
        self._save()

    async def _ensure_registered(self, url: str) -> Registration:
        assert self._http is not None
        reg = self.state.registration
        languages, audience = self.subscription.languages, self.subscription.audience
        if reg is not None and reg.matches(self.cells, languages, audience.tests, audience.canary):
            return reg
        await self._read_key_set(url)
        reg = await register(
            self._http,
            url,
            cells=self.cells,
            languages=languages,
            tests=audience.tests,
            canary=audience.canary,
            issuer_token=self._issuer_token,
        )
        self.stats.registrations += 1
        self.state.registration = reg
        self._save()
        return reg

    def _trust_from(self, configured: Keys) -> None:
        """Start from the configured keys, unless statements already moved trust on from them.

        Raises:
            NoTrustedKeys: nothing to trust, and not told to trust on first use.
        """
        if configured and self.state.key_set_at is None:
            self.state.keys = configured
        if not self.state.keys and not self._trust_on_first_use:
            raise NoTrustedKeys(
                "no signing key to trust: give a key file (tocsin watch --keys, TOCSIN_KEYS), "
                "ship a key set, or allow trust on first use"
            )

    async def _read_key_set(self, url: str) -> None:
        """Apply the node's key-set statements; its bare keys count only on first use.

        A node's answer never adds trust by itself: a statement must be signed by a key
        already trusted (client/keys.py). A node that cannot say is not an error here.

        Raises:
            NodeIncompatible: the node uses another cell resolution.
        """
        assert self._http is not None
        self._keys_read_at = asyncio.get_running_loop().time()
        try:
            document = await fetch_key_set(self._http, url)
        except (NodeRefused, httpx.HTTPError) as exc:
            if not self.state.keys:
                raise
            log.warning("key set unavailable", extra={"url": url, "error": str(exc)[:200]})
            return
        if not self.state.keys and self._trust_on_first_use:
            self.state.keys = keys_by_kid(document.get("keys"))
            log.warning("signing keys trusted on first use", extra={"url": url, "kids": sorted(self.state.keys)})
        accepted = accept_statements(self.state.keys, self.state.key_set_at, document.get("statements"), self._now())
        if accepted.refused:
            if self.stats.statements_refused == 0:
                log.warning("key-set statement refused", extra={"url": url, "count": accepted.refused})
            self.stats.statements_refused += accepted.refused
        if accepted.since != self.state.key_set_at:
            log.info("key set changed", extra={"url": url, "added": accepted.added, "retired": accepted.retired})
            self.state.keys, self.state.key_set_at = accepted.keys, accepted.since
            self._save()

    async def _on_unknown_key(self, kid: str, url: str) -> None:
        """An alert signed by a key not trusted: maybe a rotation; read the statements again."""
        now = asyncio.get_running_loop().time()
        if self._keys_read_at is None or now - self._keys_read_at >= KEY_REFRESH_S:
            await self._read_key_set(url)

    async def _stream(self, url: str, reg: Registration) -> None:
        assert self._http is not None
        headers = {
            "Authorization": f"Bearer {reg.token}",
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        if self.resume_from is not None:
            headers["Last-Event-ID"] = self.resume_from
        async with self._http.stream("GET", url + STREAM_PATH, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise refusal(url, response)
            self._connected(url)
            async with asyncio.timeout(None) as silence:
                async for event in sse_events(self._until_silent(response.aiter_bytes(), silence)):
                    await self._on_event(event, url)

    async def _until_silent(self, chunks: AsyncIterable[bytes], silence: asyncio.Timeout) -> AsyncIterator[bytes]:
        """The chunks, with a deadline on each wait for the next (not while one is handled).

        Raises:
            TimeoutError: no byte for the silence limit (three keepalive intervals).
        """
        loop = asyncio.get_running_loop()
        iterator = aiter(chunks)
        while True:
            silence.reschedule(loop.time() + self._silence_s)
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            silence.reschedule(None)
            yield chunk

    async def _stream_ws(self, url: str, reg: Registration) -> None:
        opened = open_ws(url, reg.token, self.resume_from, open_timeout_s=CONNECT_TIMEOUT_S)
        async with opened as ws:
            self._connected(url)
            async for kind, payload in messages(ws, silence_s=lambda: self._silence_s):
                await self.on_message(kind, payload, url)

    @property
    def resume_from(self) -> str | None:
        """The Last-Event-ID to send: the last cursor, or the last seq (older state files)."""
        if self.state.cursor is not None:
            return self.state.cursor
        return None if self.state.last_seq is None else str(self.state.last_seq)

    def _connected(self, url: str) -> None:
        self._backoff.reset()
        self.stats.connects += 1
        if self._last_failure:
            log.info("stream connected", extra={"url": url, "last_seq": self.state.last_seq})
        self._last_failure = ""

    async def _on_event(self, event: SseEvent, url: str) -> None:
        try:
            payload = json.loads(event.data)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self.stats.invalid += 1
            return
        await self.on_message(event.event, payload, url)

    async def on_message(self, kind: str, payload: dict[str, Any], url: str) -> None:
        """Handle one stream message (`alert`, `synced`, `keepalive`), whatever the transport.

        Raises:
            NodeStale: the keepalive says the node stopped delivering and another is ready.
        """
        if kind == KEEPALIVE:
            await self._on_keepalive(Freshness.from_json(payload), url)
        elif kind == "synced":
            seq = payload.get("seq")
            node = str(payload.get("node", ""))
            self._last_synced = Synced(node=node, seq=seq if isinstance(seq, int) else None, url=url)
            self._synced.set()
        elif kind == "alert":
            await self._on_alert(payload, url)

    async def _on_keepalive(self, freshness: Freshness, url: str) -> None:
        self._silence_s = freshness.silence_limit_s(READ_TIMEOUT_S)
        if not freshness.is_stale or self._ready is None:
            return
        self.stats.stale += 1
        target = await move_target(freshness, url, self.rotation.urls, self._ready)
        if target is not None:
            raise NodeStale(url, target, freshness)

    async def _on_alert(self, payload: dict[str, Any], url: str) -> None:
        seq = payload.get("seq")
        cursor = payload.get("event_id")
        # An early copy (null seq and cursor): the alert ahead of its storage, during an
        # election. Shown like any alert (once: its stored copy follows and is a repeat by
        # identity), and the cursor stays where it was.
        early = seq is None and cursor is None
        if not early and (not isinstance(seq, int) or isinstance(seq, bool)):
            self.stats.invalid += 1
            return
        if not early:
            cursor = cursor if isinstance(cursor, str) else str(seq)
            if cursor == self.state.cursor:
                return
        # No skipping by seq: a stream that lost its tail reuses seqs for new alerts, and
        # the node then replays everything active; repeats are dropped by identity.
        self.stats.events += 1
        self.stats.early += early
        kid = payload.get("kid")
        if isinstance(kid, str) and kid not in self.state.keys:
            await self._on_unknown_key(kid, url)
        display = self._check(payload, seq, url)
        if not early:
            self.state.last_seq = seq
            self.state.cursor = cursor
        self.state.prune(self._now())
        # Saved before it is shown: a crash may lose a display, never repeat one.
        self._save()
        if display is not None:
            await self._emit(display)

    def _check(self, payload: dict[str, Any], seq: int | None, url: str) -> Display | None:
        """Verify, parse and decide; a Display when the alert is to be shown."""
        cap, kid, sig = payload.get("cap"), payload.get("kid"), payload.get("sig")
        if not (isinstance(cap, str) and isinstance(kid, str) and isinstance(sig, str)):
            self.stats.invalid += 1
            return None
        data = cap.encode("utf-8")
        if not verify_at(self.state.keys, self._now(), kid, data, sig):
            if self.stats.bad_signatures == 0:
                log.warning("signature rejected", extra={"url": url, "seq": seq, "kid": kid})
            self.stats.bad_signatures += 1
            return None
        try:
            alert = parse_xml(data)
        except CapInvalid as exc:
            self.stats.invalid += 1
            log.warning("alert unreadable", extra={"url": url, "seq": seq, "error": str(exc)})
            return None
        now = self._now()
        decision = decide(alert, self.subscription, self.state.shown, now)
        verdicts = self.stats.verdicts
        verdicts[str(decision.verdict)] = verdicts.get(str(decision.verdict), 0) + 1
        self._remember(alert, decision)
        if decision.verdict is not Verdict.SHOW:
            return None
        alert_id = str(payload.get("id", ""))
        # Which places it is for says something only to a device that follows several.
        places = decision.places if len(self.places) > 1 else ()
        return make_display(alert, decision.info, alert_id=alert_id, seq=seq, node=url, now=now,
                            kind=decision.kind, replaces=decision.replaces, places=places)

    def _remember(self, alert: Alert, decision: Decision) -> None:
        """Record what was shown, and what an Update or Cancel superseded (shown or not:
        an old node replaying a cancelled alert later finds it cancelled here)."""
        if decision.verdict not in (Verdict.SHOW, Verdict.UNRELATED, Verdict.OUT_OF_AREA):
            return
        expires = expires_at(alert)
        chain: tuple[Identity, ...] = ()
        if alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL):
            standing = Standing.CANCELLED if alert.msg_type is MsgType.CANCEL else Standing.REPLACED
            references = tuple((ref.sender, ref.identifier) for ref in alert.references)
            chain = self.state.supersede(references, standing, expires)
        if decision.verdict is Verdict.SHOW:
            standing = Standing.CANCELLED if alert.msg_type is MsgType.CANCEL else Standing.CURRENT
            self.state.shown[alert.identity] = Shown(expires=expires, standing=standing, replaces=chain,
                                                     fingerprint=decision.fingerprint, sent=alert.sent)

    async def _emit(self, display: Display) -> None:
        if self._on_display is not None:
            await self._on_display(display)
        else:
            await self._queue.put(display)

    def _save(self) -> None:
        save_state(self._state_path, self.state)
