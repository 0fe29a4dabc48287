"""The push channels a deployment delivers through, and what each needs at registration.

Each channel module (channels/webpush.py, fcm.py, apns.py) provides:

- `enabled(settings) -> bool`: whether the deployment is configured for it;
- `check_target(document, settings, *, canary) -> dict`: the registration body's push part
  (`subscription` for webpush, `token` for fcm and apns) read strictly into the record's
  `push` field, or `Rejected` (device.push-target-invalid, device.push-host-refused);
- `make_sender(settings) -> Sender` (delivery/model.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tocsin.delivery.model import APNS, FCM, WEBPUSH, Sender
from tocsin.errors import CHANNEL_UNAVAILABLE, Rejected
from tocsin.settings import Settings


def _module(channel: str) -> ModuleType:
    from tocsin.channels import apns, fcm, webpush

    return {WEBPUSH: webpush, FCM: fcm, APNS: apns}[channel]


def enabled_channels(settings: Settings) -> tuple[str, ...]:
    return tuple(channel for channel in (WEBPUSH, FCM, APNS) if _module(channel).enabled(settings))


def check_target(channel: str, document: dict[str, Any], settings: Settings, *, canary: bool) -> dict[str, Any]:
    """The `push` field of a registration through `channel`.

    Raises:
        Rejected: 422 device.channel-unavailable (not a channel, or not configured here), or
            the channel's own refusal of the subscription or token.
    """
    if channel not in (WEBPUSH, FCM, APNS) or not _module(channel).enabled(settings):
        raise Rejected(CHANNEL_UNAVAILABLE, f"channel {channel[:40]!r}: this deployment delivers through "
                                            f"{', '.join(('live',) + enabled_channels(settings))}")
    target: dict[str, Any] = _module(channel).check_target(document, settings, canary=canary)
    return target


def make_senders(settings: Settings) -> dict[str, Sender]:
    return {channel: _module(channel).make_sender(settings) for channel in enabled_channels(settings)}
