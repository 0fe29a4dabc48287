"""The push channels a deployment delivers through, and what each needs at registration.

Each channel module (channels/webpush.py, fcm.py, apns.py) provides:

- `enabled(settings) -> bool`: whether the deployment is configured for it;
- `check_target(document, settings, *, canary) -> dict`: the registration body's push part
  (`subscription` for webpush, `token` for fcm and apns) read strictly into the record's
  `push` field, or `Rejected` (device.push-target-invalid, device.push-host-refused);
- `make_sender(settings) -> Sender` (delivery/model.py).

FPAS (channels/fpas.py) is a channel of the same kind whose devices are the FPAS client
API's subscriptions (api/fpas.py): never registered through `check_target`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from tocsin.delivery.model import APNS, FCM, FPAS, WEBPUSH, Sender
from tocsin.errors import CHANNEL_UNAVAILABLE, Rejected
from tocsin.settings import Settings


def _module(channel: str) -> ModuleType:
    from tocsin.channels import apns, fcm, fpas, webpush

    return {WEBPUSH: webpush, FCM: fcm, APNS: apns, FPAS: fpas}[channel]


def enabled_channels(settings: Settings) -> tuple[str, ...]:
    # FPAS: subscriptions of the FPAS client API (api/fpas.py), not registered through check_target.
    return tuple(channel for channel in (WEBPUSH, FCM, APNS, FPAS) if _module(channel).enabled(settings))


def check_target(channel: str, document: dict[str, Any], settings: Settings, *, canary: bool,
                 senders: Mapping[str, Sender] | None = None) -> dict[str, Any]:
    """The `push` field of a registration through `channel`.

    `senders`: the senders the node was given instead of `make_senders` (tests, benches);
    a channel whose module is not enabled here but that one of them serves is read by that
    sender's own `check_target(document, canary=)` when it has one (the seam that lets a
    test deliver through a fake gateway without configuring a real channel).

    Raises:
        Rejected: 422 device.channel-unavailable (not a channel, or not configured here), or
            the channel's own refusal of the subscription or token.
    """
    injected = (senders or {}).get(channel) if channel in (WEBPUSH, FCM, APNS) else None
    own_check = getattr(injected, "check_target", None)
    if injected is not None and own_check is not None and not _module(channel).enabled(settings):
        checked: dict[str, Any] = own_check(document, canary=canary)
        return checked
    if channel not in (WEBPUSH, FCM, APNS) or not _module(channel).enabled(settings):
        raise Rejected(CHANNEL_UNAVAILABLE, f"channel {channel[:40]!r}: this deployment delivers through "
                                            f"{', '.join(('live',) + _registrable(settings))}")
    target: dict[str, Any] = _module(channel).check_target(document, settings, canary=canary)
    return target


def _registrable(settings: Settings) -> tuple[str, ...]:
    """The channels a device registers with through /api/v1/devices (not FPAS)."""
    return tuple(channel for channel in enabled_channels(settings) if channel != FPAS)


def make_senders(settings: Settings) -> dict[str, Sender]:
    return {channel: _module(channel).make_sender(settings) for channel in enabled_channels(settings)}
