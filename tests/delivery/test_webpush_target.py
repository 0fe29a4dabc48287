"""A Web Push registration: a browser's subscription read strictly, its endpoint only at a
push service the deployment allows (never a host a stranger chose)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tocsin.channels import webpush
from tocsin.channels.webpush_crypto import public_bytes
from tocsin.delivery import channels
from tocsin.delivery.jws import b64url
from tocsin.errors import CHANNEL_UNAVAILABLE, PUSH_HOST_REFUSED, PUSH_TARGET_INVALID, Rejected
from tocsin.settings import Settings

SETTINGS = Settings()  # the default push services
P256DH = b64url(public_bytes(ec.generate_private_key(ec.SECP256R1()).public_key()))
AUTH = b64url(bytes(range(16)))


def _browser(endpoint: str = "https://fcm.googleapis.com/fcm/send/dGVzdA:APA91bH-x_y") -> dict[str, Any]:
    """What Chrome's PushSubscription.toJSON() gives."""
    return {"subscription": {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": P256DH, "auth": AUTH}}}


def _refused(document: dict[str, Any], *, settings: Settings = SETTINGS, canary: bool = False) -> Rejected:
    with pytest.raises(Rejected) as caught:
        webpush.check_target(document, settings, canary=canary)
    return caught.value


@pytest.mark.parametrize("endpoint", [
    "https://fcm.googleapis.com/fcm/send/abc:def",
    "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk",
    "https://web.push.apple.com/QGuQyavXutnMH",
    "https://wns2-par02p.notify.windows.com/w/?token=BQYAAA",
])
def test_the_main_push_services_subscriptions_are_taken(endpoint: str) -> None:
    push = channels.check_target("webpush", _browser(endpoint), SETTINGS, canary=False)
    assert push == {"endpoint": endpoint, "p256dh": P256DH, "auth": AUTH}


def test_an_expiration_time_and_padded_keys_are_taken() -> None:
    document = _browser()
    document["subscription"]["expirationTime"] = 1893456000000
    document["subscription"]["keys"]["auth"] = AUTH + "=="
    assert webpush.check_target(document, SETTINGS, canary=False)["auth"] == AUTH


@pytest.mark.parametrize(("endpoint", "host"), [
    ("https://evil.example/push", "evil.example"),
    ("https://fcm.googleapis.com.evil.example/x", "fcm.googleapis.com.evil.example"),
    ("https://push.apple.com/x", "push.apple.com"),  # ".push.apple.com": its subdomains only
    ("https://127.0.0.1/x", "127.0.0.1"),
    ("https://169.254.169.254/latest", "169.254.169.254"),
    ("https://localhost:8080/x", "localhost"),
])
def test_a_host_that_is_not_an_allowed_push_service_is_refused_by_name(endpoint: str, host: str) -> None:
    refused = _refused(_browser(endpoint))
    assert refused.problem is PUSH_HOST_REFUSED and repr(host) in refused.detail


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s.pop("endpoint"), "subscription.endpoint"),
    (lambda s: s.update(endpoint=7), "subscription.endpoint"),
    (lambda s: s.update(endpoint="http://fcm.googleapis.com/fcm/send/x"), "subscription.endpoint"),
    (lambda s: s.update(endpoint="https://fcm.googleapis.com/" + "x" * 1024), "subscription.endpoint"),
    (lambda s: s.update(endpoint="https://user:pw@fcm.googleapis.com/x"), "subscription.endpoint"),
    (lambda s: s.update(endpoint="https://fcm.googleapis.com:notaport/x"), "subscription.endpoint"),
    (lambda s: s.update(endpoint="https:///x"), "subscription.endpoint"),
    (lambda s: s.update(endpoint="https://fcm.googleapis.com/a b"), "subscription.endpoint"),
    (lambda s: s.update(endpoint="https://evil.example\\.notify.windows.com/x"), "subscription.endpoint"),
    (lambda s: s.update(endpoint="https://evil.example%2f.notify.windows.com/x"), "subscription.endpoint"),
    (lambda s: s.update(expirationTime="tomorrow"), "subscription.expirationTime"),
    (lambda s: s.update(expirationTime=True), "subscription.expirationTime"),
    (lambda s: s.update(other=1), "subscription.other"),
    (lambda s: s.pop("keys"), "subscription.keys"),
    (lambda s: s["keys"].update(extra="x"), "subscription.keys.extra"),
    (lambda s: s["keys"].pop("p256dh"), "subscription.keys.p256dh"),
    (lambda s: s["keys"].update(p256dh="not base64!"), "subscription.keys.p256dh"),
    (lambda s: s["keys"].update(p256dh=b64url(b"\x04" + bytes(64))), "subscription.keys.p256dh"),  # off the curve
    (lambda s: s["keys"].update(p256dh=b64url(b"\x02" + bytes(32))), "subscription.keys.p256dh"),  # compressed
    (lambda s: s["keys"].update(p256dh="A" * 300), "subscription.keys.p256dh"),
    (lambda s: s["keys"].update(auth=b64url(bytes(15))), "subscription.keys.auth"),
    (lambda s: s["keys"].update(auth=""), "subscription.keys.auth"),
    (lambda s: s["keys"].update(auth=16), "subscription.keys.auth"),
])
def test_each_bad_field_is_refused_by_name(change: Any, field: str) -> None:
    document = copy.deepcopy(_browser())
    change(document["subscription"])
    refused = _refused(document)
    assert refused.problem is PUSH_TARGET_INVALID and refused.detail.startswith(field + ":"), refused.detail


def test_no_subscription_object_is_refused() -> None:
    documents: list[dict[str, Any]] = [{}, {"subscription": "https://fcm.googleapis.com/x"}, {"subscription": []}]
    for document in documents:
        refused = _refused(document)
        assert refused.problem is PUSH_TARGET_INVALID and refused.detail.startswith("subscription:")


def test_a_canary_may_name_its_receiver_on_loopback_and_nothing_else_off_the_list() -> None:
    for endpoint in ("http://127.0.0.1:8123/push/x", "https://localhost:9/p", "http://[::1]:80/p"):
        assert webpush.check_target(_browser(endpoint), SETTINGS, canary=True)["endpoint"] == endpoint
        assert _refused(_browser(endpoint)).problem in (PUSH_HOST_REFUSED, PUSH_TARGET_INVALID)
    assert _refused(_browser("http://10.0.0.1/p"), canary=True).problem is PUSH_TARGET_INVALID
    assert _refused(_browser("https://evil.example/p"), canary=True).problem is PUSH_HOST_REFUSED


def test_hosts_are_configurable_and_none_turns_web_push_off() -> None:
    own = Settings(webpush_hosts="push.example.org, .push.example.net")
    for endpoint in ("https://push.example.org/x", "https://a.push.example.net/x", "https://PUSH.example.org./x"):
        webpush.check_target(_browser(endpoint), own, canary=False)
    assert _refused(_browser("https://push.example.net/x"), settings=own).problem is PUSH_HOST_REFUSED
    assert webpush.enabled(SETTINGS) and not webpush.enabled(Settings(webpush_hosts=" , "))
    with pytest.raises(Rejected) as caught:
        channels.check_target("webpush", _browser(), Settings(webpush_hosts=""), canary=False)
    assert caught.value.problem is CHANNEL_UNAVAILABLE
