"""Word of a canary's gateway delivery, from the node that sent it to the node that owns it.

Any node's dispatcher may send a probe to an FCM or APNs canary device (the work queue is
shared), but only the node that registered that canary counts it. Each dispatcher's
`on_sent` hook publishes, for a probe (a System alert: canaries are the only devices that
get one) sent through a gateway canary's channel, a small core NATS message naming the
channel, the device and the alert; every node's prober listens and counts what names its
own canary. Nothing is stored: a message lost with a node is a probe counted late, which
is what a lost node is.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from tocsin.delivery.model import APNS, FCM, Delivery, Push

log = logging.getLogger(__name__)

RELAYED = (FCM, APNS)
# Publishes waiting for the connection at most; past this a probe's word is dropped (counted).
MAX_IN_FLIGHT = 256
_TOKEN = re.compile(r"[-_A-Za-z0-9]{1,64}")
_ALERT_ID = re.compile(rb"[0-9a-f]{32}")

# (channel, device id, alert id)
Sent = Callable[[str, str, str], None]


class CanarySentRelay:
    """Publishes a canary's gateway deliveries; hands those it hears to `deliver`."""

    def __init__(self, nc: Client, prefix: str, deliver: Sent) -> None:
        self._nc = nc
        self._prefix = prefix
        self._deliver = deliver
        self._in_flight: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.listening = asyncio.Event()

    def on_sent(self, delivery: Delivery, push: Push) -> None:
        """The dispatchers' hook: a probe through a gateway canary's channel was accepted."""
        if push.status != "System" or delivery.channel not in RELAYED or not _TOKEN.fullmatch(delivery.destination):
            return
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self.dropped += 1
            return
        subject = f"{self._prefix}.{delivery.channel}.{delivery.destination}"
        task = asyncio.get_running_loop().create_task(self._publish(subject, delivery.alert_id.encode()))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _publish(self, subject: str, alert_id: bytes) -> None:
        try:
            await self._nc.publish(subject, alert_id)
        except nats.errors.Error as exc:
            self.dropped += 1
            log.info("canary delivery not relayed", extra={"error": repr(exc)[:200]})

    async def run(self) -> None:
        """Listen until cancelled."""
        subscription = await self._nc.subscribe(f"{self._prefix}.*.*", cb=self._heard)
        await self._nc.flush()  # the server has the subscription: what is published now is heard
        self.listening.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.listening.clear()
            try:
                await subscription.unsubscribe()
            except nats.errors.Error:
                pass

    async def _heard(self, msg: Msg) -> None:
        channel, _, device = msg.subject[len(self._prefix) + 1:].partition(".")
        if channel in RELAYED and _TOKEN.fullmatch(device) and _ALERT_ID.fullmatch(msg.data):
            self._deliver(channel, device, msg.data.decode())
