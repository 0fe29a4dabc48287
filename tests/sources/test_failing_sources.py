"""Sources that time out, answer 500 or 404, send garbage or too much, or vanish: each is
marked with its reason, retried with backoff until its circuit opens, and a good source
keeps flowing beside them all the while."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import running_node
from tests.samples import alert_xml
from tests.sources.conftest import add_source, source_settings, status_of, wait_status
from tests.sources.feeds import CAP, Publisher, linked_atom
from tocsin.app import Node
from tocsin.cluster.nats_server import NatsServer

ATOM = "application/atom+xml"
SENDER = "alerts@good.test.example"


def _nothing_listening() -> str:
    """A loopback URL where no server is (it vanished): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed.atom"


def opened(s: dict) -> bool:  # type: ignore[type-arg]
    return s.get("state") == "open"


async def test_bad_sources_are_marked_backed_off_and_never_block_a_good_one(node: Node, http: httpx.AsyncClient,
                                                                            feeds: Publisher) -> None:
    feeds.docs["/cap/g1.xml"] = (alert_xml(identifier="G-1", sender=SENDER), CAP)
    feeds.docs["/good.atom"] = (linked_atom([("urn:g1", "/cap/g1.xml")]), ATOM)
    feeds.modes.update({"/500.atom": "500", "/garbage.atom": "garbage", "/hang.atom": "hang", "/huge.atom": "huge"})
    bad = {"broken": ("/500.atom", "http-500"), "junk": ("/garbage.atom", "not-xml"),
           "slow": ("/hang.atom", "timeout"), "huge": ("/huge.atom", "too-large"),
           "gone": ("/missing.atom", "http-404")}
    for name, (path, _) in bad.items():
        await add_source(http, name, f"{feeds.url}{path}")
    await add_source(http, "vanished", _nothing_listening())
    await add_source(http, "good", f"{feeds.url}/good.atom")

    for name, (path, reason) in [*bad.items(), ("vanished", ("", "unreachable"))]:
        status = await wait_status(http, name, opened, timeout_s=20)
        assert status["consecutive_errors"] == 3 and status["last_error"]["reason"] == reason, (name, status)
        assert status["next_poll_at"] - time.time() > 500  # the circuit stays open its whole period
        assert status["counts"]["errors"] == 3 and not status.get("last_success")
        if path:
            assert feeds.hits[path] == 3, name  # one request per poll: retried, not hammered
    good = await wait_status(http, "good", lambda s: (s.get("counts") or {}).get("relayed") == 1)
    assert good["state"] == "ok" and good["consecutive_errors"] == 0

    # While every bad circuit is open, the good source goes on: a new alert is relayed, the
    # bad ones are not asked again.
    hits = {path: feeds.hits[path] for path, _ in bad.values()}
    polls = good["counts"]["polls"]
    feeds.docs["/cap/g2.xml"] = (alert_xml(identifier="G-2", sender=SENDER), CAP)
    feeds.docs["/good.atom"] = (linked_atom([("urn:g2", "/cap/g2.xml"), ("urn:g1", "/cap/g1.xml")]), ATOM)
    await wait_status(http, "good", lambda s: s["counts"].get("relayed") == 2 and s["counts"]["polls"] >= polls + 3)
    assert {path: feeds.hits[path] for path, _ in bad.values()} == hits


async def test_backoff_grows_between_failures(node: Node, http: httpx.AsyncClient, feeds: Publisher) -> None:
    feeds.modes["/down.atom"] = "500"
    await add_source(http, "down", f"{feeds.url}/down.atom", interval_s=1)
    waits = []
    for errors in (1, 2):
        status = await wait_status(http, "down", lambda s, n=errors: s.get("consecutive_errors") == n)
        waits.append(status["next_poll_at"] - _at(status["last_poll"]["at"]))
    # Interval 1 s (over the base): 0.5-1 s after the first failure, 1-2 s after the second.
    assert 0.49 <= waits[0] <= 1.01 and 0.99 <= waits[1] <= 2.01, waits


def _at(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso).timestamp()


async def test_a_source_that_recovers_closes_its_circuit(tmp_path: Path, nats_server: NatsServer,
                                                         feeds: Publisher) -> None:
    settings = source_settings(tmp_path, nats_server, source_breaker_open_s=1.0)
    async with running_node(settings) as node, httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        feeds.modes["/flaky.atom"] = "500"
        await add_source(http, "flaky", f"{feeds.url}/flaky.atom")
        await wait_status(http, "flaky", opened)
        feeds.docs["/cap/f1.xml"] = (alert_xml(identifier="F-1", sender=SENDER), CAP)
        feeds.docs["/flaky.atom"] = (linked_atom([("urn:f1", "/cap/f1.xml")]), ATOM)
        del feeds.modes["/flaky.atom"]
        status = await wait_status(http, "flaky", lambda s: s.get("state") == "ok")
        assert status["consecutive_errors"] == 0 and status["counts"]["errors"] >= 3
        assert status["last_error"]["reason"] == "http-500"  # kept: when it last failed, and why
        await wait_status(http, "flaky", lambda s: s["counts"].get("relayed") == 1)


async def test_the_fixture_feeds_are_read_and_their_stale_caps_refused(node: Node, http: httpx.AsyncClient,
                                                                       feeds: Publisher) -> None:
    from tests.datafiles import CAP_DATA
    served = {
        "naad": ("ca-naad-atom-embedded-eccc-signed.atom", "cap.expired"),  # 2013: long expired
        "amber": ("us-dc-amber-atom-embedded-cap11.atom", "cap.wrong-namespace"),  # CAP 1.1
        "nws": ("us-nws-weather-index.atom", "source.no-cap"),  # links to weather.gov, not this host
        "ny": ("us-ny-state-cap-index.rss", "source.no-cap"),
        "empty": ("us-nws-empty-index.atom", None),
    }
    for name, (file, _) in served.items():
        feeds.docs[f"/{file}"] = ((CAP_DATA / "feeds" / file).read_bytes(), ATOM)
        await add_source(http, name, f"{feeds.url}/{file}")
    for name, (_, code) in served.items():
        status = await wait_status(http, name, lambda s: s.get("state") == "ok")
        assert status["counts"].get("relayed", 0) == 0
        if code is None:
            assert status["counts"].get("refused", 0) == 0
        else:
            assert status["last_refusal"]["code"] == code, (name, status["last_refusal"])
    # A re-poll reads no entry again (the taken entries, and a 304 for the unchanged feed).
    status = await wait_status(http, "nws", lambda s: s["counts"].get("not_modified", 0) >= 1)
    assert status["counts"]["refused"] == 2


async def test_a_removed_source_is_polled_no_more(node: Node, http: httpx.AsyncClient, feeds: Publisher) -> None:
    feeds.docs["/r.atom"] = (linked_atom([]), ATOM)
    feeds.docs["/other.atom"] = (linked_atom([]), ATOM)
    await add_source(http, "removed", f"{feeds.url}/r.atom")
    await add_source(http, "kept", f"{feeds.url}/other.atom")
    await wait_status(http, "removed", lambda s: s.get("state") == "ok")
    response = await http.delete("/api/v1/admin/sources/removed", headers={"Authorization": "Bearer tca_test-admin-token"})
    assert response.status_code == 200
    hits = feeds.hits["/r.atom"]
    polls = (await status_of(http, "kept"))["counts"]["polls"]
    await wait_status(http, "kept", lambda s: s["counts"]["polls"] >= polls + 2)
    assert feeds.hits["/r.atom"] <= hits + 1  # at most the poll that was in flight
