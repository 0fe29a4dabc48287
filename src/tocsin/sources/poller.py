"""The source poller: every due source polled by one node, each in its own task under its
deadline, its status written for every node to read.

Which node polls: every node runs a poller over its mirror of the sources bucket; a due
source is polled by the node that creates its lease key (`lease.<name>`, in the status
bucket, with a TTL of the poll deadline, so a node that dies mid-poll frees it). The node
that holds it reads the status from the bucket again (not its mirror) and polls only if it
is still due, so a source is polled once per interval in the cluster, not once per node.
Should two polls ever overlap (a lease lost to a partition), nothing is taken twice: every
relayed alert goes through accept, which stores one alert per CAP identity
(sender + identifier) with create-if-absent, the second poll gets "known".

One poll: a conditional GET of the feed (the ETag and Last-Modified it last sent); a 304 is
a success with nothing to do. Each entry not taken yet (its key: id and updated, digested)
is relayed (relay.py), oldest first (feeds list the newest first; an Alert before its
Update), at most `source_max_new_per_poll` a poll. An entry is taken once relayed, known
or refused; one whose CAP could not be fetched, or not stored, is tried again next poll.
The status keeps only the keys of the feed's current entries: it never grows with history.
A failed poll (timeout, refused connection, an HTTP error, garbage, too large) counts
towards the backoff and the circuit breaker (breaker.py); it never delays another source.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tocsin.errors import StoreFull, StoreUnavailable
from tocsin.pipeline.accept import Accept
from tocsin.settings import Settings
from tocsin.sources.breaker import Backoff, failed, is_due, succeeded
from tocsin.sources.feed import Entry, FeedInvalid, read_feed
from tocsin.sources.fetch import CAP_ACCEPT, FEED_ACCEPT, FetchFailed, fetch, source_client
from tocsin.sources.model import Source, SourceBook
from tocsin.sources.relay import KNOWN, REFUSED, RELAYED, Relayed, relay
from tocsin.sources.xmlsig import document_bytes, signed_document
from tocsin.store.base import Records

log = logging.getLogger(__name__)

COUNTS = ("polls", "not_modified", "errors", RELAYED, KNOWN, REFUSED)


def status_key(name: str) -> str:
    return f"status.{name}"


def lease_key(name: str) -> str:
    return f"lease.{name}"


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat()


@dataclass(slots=True)
class _Poll:
    """What one poll did so far (kept when its deadline cuts it short)."""

    taken: list[str] = field(default_factory=list)
    # The feed was read: `taken` replaces the status's (a 304 or a failure keeps it).
    read: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    last_alert: dict[str, Any] | None = None
    last_refusal: dict[str, Any] | None = None

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


class SourcePoller:
    """Polls the due sources of the book, at most `source_concurrency` at a time."""

    def __init__(self, *, settings: Settings, book: SourceBook, status: MutableMapping[str, dict[str, Any]],
                 records: Records, accept: Accept, clock: Callable[[], float] = time.time,
                 jitter: Callable[[], float] = random.random, tick_s: float = 0.5) -> None:
        self.settings = settings
        self.book = book
        self.status = status  # the mirror of the status bucket
        self._records = records
        self._accept = accept
        self._clock = clock
        self._jitter = jitter
        self.tick_s = tick_s
        self._polling: set[str] = set()
        self._backoff = Backoff(base_s=settings.source_backoff_base_s, max_s=settings.source_backoff_max_s,
                                breaker_errors=settings.source_breaker_errors,
                                breaker_open_s=settings.source_breaker_open_s)

    async def run(self) -> None:
        """Forever: start a poll of each due source that no task of this node polls yet."""
        async with source_client() as client, asyncio.TaskGroup() as tasks:
            while True:
                now = self._clock()
                for source in self.book.sources():
                    if len(self._polling) >= self.settings.source_concurrency:
                        break
                    if (source.enabled and source.name not in self._polling
                            and is_due(self.status.get(status_key(source.name)), now)):
                        self._polling.add(source.name)
                        tasks.create_task(self._guarded(client, source), name=f"source-{source.name}")
                await asyncio.sleep(self.tick_s)

    async def _guarded(self, client: httpx.AsyncClient, source: Source) -> None:
        try:
            await self.poll_if_leased(client, source)
        except Exception as exc:  # one source's trouble never stops the poller
            log.error("source poll failed", extra={"source": source.name, "error": repr(exc)[:300]})
            # Backed off on this node all the same: a poll that fails this way must not
            # start again at the next tick.
            key, now = status_key(source.name), self._clock()
            self.status[key] = failed(self.status.get(key) or {}, now=now, at=_iso(now), interval_s=source.interval_s,
                                      backoff=self._backoff, jitter=self._jitter, reason="internal",
                                      detail=repr(exc)[:300])
        finally:
            self._polling.discard(source.name)

    async def poll_if_leased(self, client: httpx.AsyncClient, source: Source) -> bool:
        """Poll `source` if this node takes its lease and it is still due; whether it polled."""
        lease = lease_key(source.name)
        ttl_s = self.settings.source_poll_deadline_s + 5.0
        try:
            if not await self._records.create(lease, {"node": self.settings.node_name}, ttl_s=ttl_s):
                return False
        except (StoreUnavailable, StoreFull) as exc:  # no lease, no poll this time (NATS is read elsewhere)
            log.debug("source lease not taken", extra={"source": source.name, "error": repr(exc)[:200]})
            return False
        try:
            status = await self._records.get(status_key(source.name)) or {}
            if not is_due(status, self._clock()):
                return False  # another node polled it since this node's mirror last heard
            status = await self.poll(client, source, status)
            if self.book.source(source.name) is None:
                return True  # removed while it was polled: its status left with it
            self.status[status_key(source.name)] = status  # this node sees it at once; the mirror follows
            await self._records.put(status_key(source.name), status)
            return True
        finally:
            await self._records.delete(lease)

    async def poll(self, client: httpx.AsyncClient, source: Source, status: dict[str, Any]) -> dict[str, Any]:
        """One poll of `source`; the status it leaves (not written here)."""
        start = self._clock()
        done = _Poll()
        done.count("polls")
        outcome: tuple[str, str] | None = None
        try:
            async with asyncio.timeout(self.settings.source_poll_deadline_s):
                status = await self._read(client, source, status, done)
        except TimeoutError:
            outcome = ("timeout", f"the poll passed its deadline of {self.settings.source_poll_deadline_s:g} s")
        except FetchFailed as exc:
            outcome = (exc.reason, exc.detail)
        except FeedInvalid as exc:
            outcome = (exc.reason, exc.detail)
        now, at = self._clock(), _iso(self._clock())
        status = self._merge(status, done, node=self.settings.node_name, at=at, took_s=now - start)
        if outcome is None:
            return succeeded(status, now=now, at=at, interval_s=source.interval_s)
        status["counts"]["errors"] = status["counts"].get("errors", 0) + 1
        if int(status.get("consecutive_errors") or 0) == 0 or (status.get("last_error") or {}).get("reason") != outcome[0]:
            log.warning("source failing", extra={"source": source.name, "reason": outcome[0], "detail": outcome[1][:200]})
        return failed(status, now=now, at=at, interval_s=source.interval_s, backoff=self._backoff,
                      jitter=self._jitter, reason=outcome[0], detail=outcome[1])

    def _merge(self, status: dict[str, Any], done: _Poll, *, node: str, at: str, took_s: float) -> dict[str, Any]:
        counts = dict(status.get("counts") or {})
        for name, n in done.counts.items():
            counts[name] = int(counts.get(name, 0)) + n
        merged = {**status, "counts": counts, "last_poll": {"at": at, "node": node, "took_s": round(took_s, 3)}}
        if done.last_alert is not None:
            merged["last_alert"] = done.last_alert
        if done.last_refusal is not None:
            merged["last_refusal"] = done.last_refusal
        if done.read:
            merged["taken"] = done.taken
        return merged

    async def _read(self, client: httpx.AsyncClient, source: Source, status: dict[str, Any], done: _Poll) -> dict[str, Any]:
        s = self.settings
        got = await fetch(client, source.url, timeout_s=s.source_fetch_timeout_s, max_bytes=s.source_max_feed_bytes,
                          accept=FEED_ACCEPT, etag=str(status.get("etag") or ""),
                          last_modified=str(status.get("last_modified") or ""))
        if got.not_modified:
            done.count("not_modified")
            return status
        entries = read_feed(got.body, feed_url=source.url, max_bytes=s.source_max_feed_bytes,
                            max_entries=s.source_max_entries)
        taken = set(status.get("taken") or [])
        done.taken = [e.key for e in entries if e.key in taken]  # the feed's current entries only
        done.read = True
        fetched, left = 0, 0
        for entry in reversed(entries):
            if entry.key in taken:
                continue
            if fetched >= s.source_max_new_per_poll:
                left += 1  # waits for the next poll (each CAP read costs an accept)
                continue
            fetched += 1
            if await self._entry(client, source, entry, done):
                done.taken.append(entry.key)
            else:
                left += 1
        # Validators only once every entry is taken: a 304 must never hide an entry not read
        # (a CAP that could not be fetched is fetched again from an unconditional poll).
        if left:
            return {**status, "etag": "", "last_modified": ""}
        return {**status, "etag": got.etag, "last_modified": got.last_modified}

    async def _entry(self, client: httpx.AsyncClient, source: Source, entry: Entry, done: _Poll) -> bool:
        """Relay one entry's CAP; whether the entry is taken (not to be read again)."""
        s = self.settings
        try:
            if entry.embedded is not None:
                document = signed_document(entry.embedded)
                cap = document_bytes(document)
            elif entry.link is not None:
                cap = (await fetch(client, entry.link, timeout_s=s.source_fetch_timeout_s,
                                   max_bytes=s.max_cap_bytes, accept=CAP_ACCEPT)).body
                document = None
            else:
                self._record(done, entry, Relayed(outcome=REFUSED, code="source.no-cap",
                                                  detail="the entry neither embeds nor links a CAP on the feed's host"))
                return True
            result = await relay(self._accept, source, cap, max_cap_bytes=s.max_cap_bytes, document=document)
        except FetchFailed as exc:
            done.last_refusal = {"at": _iso(self._clock()), "entry": entry.id[:200], "code": f"fetch.{exc.reason}",
                                 "detail": exc.detail[:300]}
            return False
        except (StoreUnavailable, StoreFull) as exc:
            done.last_refusal = {"at": _iso(self._clock()), "entry": entry.id[:200], "code": "store.unavailable",
                                 "detail": str(exc)[:300]}
            return False
        self._record(done, entry, result)
        return True

    def _record(self, done: _Poll, entry: Entry, result: Relayed) -> None:
        done.count(result.outcome)
        at = _iso(self._clock())
        if result.outcome == RELAYED:
            done.last_alert = {"at": at, "alert_id": result.alert_id, "identifier": result.identifier[:200]}
            log.info("alert relayed", extra={"alert_id": result.alert_id, "entry": entry.id[:200]})
        elif result.outcome == REFUSED:
            done.last_refusal = {"at": at, "entry": entry.id[:200], "code": result.code, "detail": result.detail}
