"""apns: placeholder until its helper lands (delivery/channels.py names what it provides)."""

from __future__ import annotations

from typing import Any

from tocsin.delivery.model import Sender
from tocsin.settings import Settings


def enabled(settings: Settings) -> bool:
    return False


def check_target(document: dict[str, Any], settings: Settings, *, canary: bool) -> dict[str, Any]:
    raise NotImplementedError


def make_sender(settings: Settings) -> Sender:
    raise NotImplementedError
