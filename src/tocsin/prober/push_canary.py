"""Canaries for the gateway channels: Web Push through a local browser, FCM and APNs through
a test device's token.

- **Web Push** (`WebPushCanary`): the canary is a browser inside the node process. It makes
  its own P-256 key pair and 16-byte auth secret, runs a push service on a loopback port
  (prober/push_receiver.py), and registers a canary device through the node's own API with
  that endpoint, so each probe goes the whole way a real browser's would: the planner, the
  work queue, a dispatcher, the Web Push sender with its VAPID token and encryption. Each
  push is decrypted (RFC 8291) and the alert's signature verified against the node's
  published keys before the probe counts as displayed on channel "webpush".
- **FCM, APNs** (`GatewayCanary`): with `TOCSIN_FCM_CANARY_TOKEN` / `TOCSIN_APNS_CANARY_TOKEN`
  set, a canary device is registered with that token, and a probe counts as delivered when
  a dispatcher reports that the gateway accepted it for that device (`on_sent`): the node
  cannot see a phone's screen, but it sees the gateway take the message.

A canary's registration is kept in DATA_DIR/keys/canary-<channel>.json; the next start (or
a new registration after probes were lost) deletes the previous device first, so canaries
do not pile up in the device bucket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tocsin.channels.webpush_crypto import DecryptError, decrypt, public_bytes
from tocsin.delivery.jws import b64url
from tocsin.geo.cells import cell_for_point
from tocsin.prober.canary import DEVICES_PATH, Seen
from tocsin.prober.push_receiver import PushReceiver
from tocsin.secret_file import write_secret
from tocsin.signing import keys_by_kid, verify

log = logging.getLogger(__name__)

KEYS_PATH = "/.well-known/tocsin/keys"
# A canary registers again (after lost probes) at most this often.
RENEW_EVERY_S = 30.0
# The node's keys are read again for an unknown kid at most this often.
KEYS_EVERY_S = 5.0
# A stopping canary waits this long at most for its device to be deleted.
FORGET_WITHIN_S = 2.0


class Registration:
    """A canary device registered through the node's API, kept in a file across restarts."""

    def __init__(self, http: httpx.AsyncClient, issuer_token: str, saved: Path | None, *,
                 retry_max_s: float = 2.0) -> None:
        self._http = http
        self._issuer_token = issuer_token
        self._saved = saved
        self._retry_max_s = retry_max_s
        self.device_id: str | None = None
        self.registered_at: float | None = None

    async def replace(self, body: dict[str, Any]) -> str:
        """Delete the previous canary device (this run's or a saved one), register a new one
        with `body`, retrying until the node answers; returns the new device id."""
        await self._delete_previous()
        self.device_id = None
        delay = 0.2
        while True:
            try:
                response = await self._http.post(DEVICES_PATH, json=body,
                                                 headers={"Authorization": f"Bearer {self._issuer_token}"})
                if response.status_code == 201:
                    break
                log.warning("push canary registration refused", extra={
                    "channel": body.get("channel"), "status": response.status_code, "body": response.text[:200]})
            except httpx.HTTPError as exc:
                log.warning("push canary registration failed", extra={"error": repr(exc)[:200]})
            await asyncio.sleep(delay)
            delay = min(2 * delay, self._retry_max_s)
        answer = response.json()
        self.device_id = str(answer["id"])
        self.registered_at = time.monotonic()
        self._save({"id": self.device_id, "token": str(answer["token"])})
        return self.device_id

    async def _delete_previous(self) -> None:
        saved = self._load()
        if saved is None:
            return
        try:
            async with asyncio.timeout(FORGET_WITHIN_S):
                response = await self._http.delete(f"{DEVICES_PATH}/{saved['id']}",
                                                   headers={"Authorization": f"Bearer {saved['token']}"})
        except (httpx.HTTPError, TimeoutError) as exc:  # it expires on its own; never wait on it
            log.info("previous canary device not deleted", extra={"error": repr(exc)[:200]})
            return
        if response.status_code in (204, 401):  # gone either way
            if self.device_id == saved["id"]:
                self.device_id = None
            if self._saved is not None:
                self._saved.unlink(missing_ok=True)

    async def forget(self) -> None:
        """The canary stops (the node stops): its device goes, so that no dispatcher keeps
        sending probes to a receiver that is no more (each would fail until the probe expires,
        and count against the loopback host's circuit breaker)."""
        await self._delete_previous()

    def _load(self) -> dict[str, str] | None:
        if self._saved is None or not self._saved.exists():
            return None
        try:
            found = json.loads(self._saved.read_text())
            return {"id": str(found["id"]), "token": str(found["token"])}
        except (ValueError, KeyError, OSError, TypeError):
            return None

    def _save(self, value: dict[str, str]) -> None:
        if self._saved is None:
            return
        try:
            self._saved.parent.mkdir(parents=True, exist_ok=True)
            write_secret(self._saved, json.dumps(value))
        except OSError as exc:  # a full disk must not stop the prober from measuring
            log.warning("canary registration not saved", extra={"error": str(exc)})


class NodeKeys:
    """The node's published signing keys, read over its own API, to verify pushed alerts."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._keys: dict[str, dict[str, Any]] = {}
        self._read_at: float | None = None

    async def verify(self, kid: str, payload: bytes, sig: str) -> bool:
        if kid not in self._keys and (self._read_at is None or time.monotonic() - self._read_at > KEYS_EVERY_S):
            self._read_at = time.monotonic()
            try:
                response = await self._http.get(KEYS_PATH)
                self._keys = keys_by_kid(response.json().get("keys"))
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                log.warning("node keys not read", extra={"error": repr(exc)[:200]})
        return verify(self._keys, kid, payload, sig)


class _Renewing:
    """What both push canaries share: a registration renewed (rate-bounded) when probes are lost."""

    channel: str

    def __init__(self, registration: Registration) -> None:
        self.registration = registration
        self._renew = asyncio.Event()

    def reconnect(self, issued: float) -> None:
        """Probes were lost: register again (a registration removed as gone comes back)."""
        at = self.registration.registered_at
        if at is None or time.monotonic() - at >= RENEW_EVERY_S:
            self._renew.set()

    async def _keep_registered(self, body: Callable[[], dict[str, Any]]) -> None:
        try:
            while True:
                await self.registration.replace(body())
                self._renew.clear()
                await self._renew.wait()
        finally:  # cancelled: the node stops, or the prober restarts
            await self.registration.forget()


def _probe_cell() -> str:
    from tocsin.prober.probe import PROBE_POINT  # probe.py builds the canaries

    return cell_for_point(*PROBE_POINT)


class WebPushCanary(_Renewing):
    """A browser on loopback: its own keys, a push service, a canary Web Push subscription."""

    channel = "webpush"

    def __init__(self, http: httpx.AsyncClient, registration: Registration, *, node: str = "",
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(registration)
        # Its receiver listens on this node's loopback: only this node's dispatcher can reach
        # it, so the registration names the node and its deliveries go to its lane.
        self.node = node
        self._keys = NodeKeys(http)
        self._private = ec.generate_private_key(ec.SECP256R1())
        self._auth = os.urandom(16)
        self._monotonic = monotonic
        self._seen: Seen | None = None
        self.receiver = PushReceiver(self._on_push)
        self.displayed = 0
        self.unreadable: dict[str, int] = {}
        self._checking: set[asyncio.Task[None]] = set()

    @property
    def is_connected(self) -> bool:
        return self.receiver.serving and self.registration.device_id is not None

    @property
    def problems(self) -> dict[str, int]:
        """Pushes refused by its push service or not shown by its browser, by reason (/status)."""
        return {**self.receiver.refused, **self.unreadable}

    def subscription(self) -> dict[str, Any]:
        return {"endpoint": self.receiver.endpoint, "keys": {
            "p256dh": b64url(public_bytes(self._private.public_key())), "auth": b64url(self._auth)}}

    def registration_body(self) -> dict[str, Any]:
        body = {"channel": self.channel, "subscription": self.subscription(), "cells": [_probe_cell()], "canary": True}
        return {**body, "node": self.node} if self.node else body

    async def run(self, seen: Seen) -> None:
        self._seen = seen
        await self.receiver.start()
        try:
            await self._keep_registered(self.registration_body)
        finally:
            await self.receiver.stop()
            for task in list(self._checking):
                task.cancel()

    def _on_push(self, body: bytes, headers: dict[str, str]) -> None:
        at = self._monotonic()
        try:
            event = json.loads(decrypt(body, self._private, self._auth))
        except (DecryptError, ValueError) as exc:
            self._unreadable("undecryptable" if isinstance(exc, DecryptError) else "not JSON")
            return
        if not isinstance(event, dict) or not all(isinstance(event.get(k), str) for k in ("id", "kid", "sig", "cap")):
            self._unreadable("not a signed alert")  # a pointer: probes are small, never pointers
            return
        task = asyncio.get_running_loop().create_task(self._verified(event, at))
        self._checking.add(task)
        task.add_done_callback(self._checking.discard)

    async def _verified(self, event: dict[str, Any], at: float) -> None:
        if not await self._keys.verify(event["kid"], event["cap"].encode("utf-8"), event["sig"]):
            self._unreadable("bad signature")
            return
        self.displayed += 1
        if self._seen is not None:
            self._seen(event["id"], at, True)

    def _unreadable(self, reason: str) -> None:
        self.unreadable[reason] = self.unreadable.get(reason, 0) + 1
        log.warning("web push canary got a push it cannot show", extra={"reason": reason})


class GatewayCanary(_Renewing):
    """An FCM or APNs canary: a test device's token; delivered when its gateway accepted it."""

    def __init__(self, channel: str, token: str, registration: Registration, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(registration)
        self.channel = channel
        self._token = token
        self._monotonic = monotonic
        self._seen: Seen | None = None

    @property
    def is_connected(self) -> bool:
        return self.registration.device_id is not None

    def registration_body(self) -> dict[str, Any]:
        return {"channel": self.channel, "token": self._token, "cells": [_probe_cell()], "canary": True}

    async def run(self, seen: Seen) -> None:
        self._seen = seen
        await self._keep_registered(self.registration_body)

    def sent(self, device_id: str, alert_id: str) -> None:
        """A gateway accepted a probe for a canary device (prober/relay.py): ours when it is
        this canary's device; then the probe counts as delivered on this channel."""
        if self._seen is not None and device_id == self.registration.device_id:
            self._seen(alert_id, self._monotonic(), True)
