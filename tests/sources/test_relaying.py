"""A source's alerts reach this deployment's stream once, marked relayed and signed by it;
its Update and Cancel become an Update and Cancel here; re-polls take nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.e2e.conftest import running_node
from tests.samples import alert_xml
from tests.sources.conftest import add_source, source_settings, wait_status
from tests.sources.feeds import CAP, Publisher, embedded_atom, linked_atom, rss
from tests.sources.signer import authority
from tocsin.app import Node
from tocsin.cap.model import MsgType
from tocsin.cap.parse import parse_stored
from tocsin.cluster.nats_server import NatsServer
from tocsin.errors import AlertNotFound
from tocsin.signing import verify
from tocsin.sources.relay import relayed_from
from tocsin.store.base import alert_id_for

SENDER = "alerts@weather.test.example"
LYON_BOX = "45.70,4.75 45.70,4.95 45.82,4.95 45.82,4.75 45.70,4.75"
ATOM = "application/atom+xml"


def counted(name: str, n: int):  # type: ignore[no-untyped-def]
    return lambda s: (s.get("counts") or {}).get(name, 0) >= n


async def stored(node: Node, identifier: str, sender: str = SENDER):  # type: ignore[no-untyped-def]
    return await node.services.store.get(alert_id_for(sender, identifier))


async def is_stored(node: Node, identifier: str, sender: str = SENDER) -> bool:
    try:
        await stored(node, identifier, sender)
    except AlertNotFound:
        return False
    return True


async def test_a_linked_feed_is_relayed_once_marked_with_its_source(node: Node, http: httpx.AsyncClient,
                                                                     feeds: Publisher) -> None:
    sent = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    feeds.docs["/cap/w1.xml"] = (alert_xml(identifier="W-1", sender=SENDER, sent=sent), CAP)
    feeds.docs["/feed.atom"] = (linked_atom([("urn:w1", "/cap/w1.xml")]), ATOM)
    await add_source(http, "weather", f"{feeds.url}/feed.atom")

    status = await wait_status(http, "weather", counted("relayed", 1))
    assert status["state"] == "ok" and status["last_alert"]["identifier"] == "W-1"
    first = await stored(node, "W-1")
    alert = parse_stored(first.envelope.payload)
    assert relayed_from(alert) == "weather"  # inside the signed bytes
    assert first.envelope.issuer == "source:weather"
    signer = node.services.signer
    assert verify({signer.kid: signer.public_jwk()}, first.envelope.kid, first.envelope.payload, first.envelope.sig)

    # Re-polls: conditional (304), and the CAP is never fetched again.
    status = await wait_status(http, "weather", counted("not_modified", 2))
    assert feeds.hits["/cap/w1.xml"] == 1
    assert any(path == "/feed.atom" and etag for path, etag, _ in feeds.conditional)

    # The source updates, then cancels: both arrive, in order, as Update and Cancel here.
    ref = f"{SENDER},W-1,{sent.isoformat()}"
    feeds.docs["/cap/w2.xml"] = (alert_xml(identifier="W-2", sender=SENDER, msg_type="Update", references=ref,
                                           headline="Crue: la Seine monte encore"), CAP)
    feeds.docs["/cap/w3.xml"] = (alert_xml(identifier="W-3", sender=SENDER, msg_type="Cancel", references=ref), CAP)
    feeds.docs["/feed.atom"] = (linked_atom([("urn:w3", "/cap/w3.xml"), ("urn:w2", "/cap/w2.xml"),
                                             ("urn:w1", "/cap/w1.xml")]), ATOM)
    await wait_status(http, "weather", counted("relayed", 3))
    update, cancel = await stored(node, "W-2"), await stored(node, "W-3")
    assert update.seq < cancel.seq  # oldest entry first
    for one, kind in ((update, MsgType.UPDATE), (cancel, MsgType.CANCEL)):
        relayed = parse_stored(one.envelope.payload)
        assert relayed.msg_type is kind and relayed_from(relayed) == "weather"
        assert [(r.sender, r.identifier) for r in relayed.references] == [(SENDER, "W-1")]
    assert feeds.hits["/cap/w1.xml"] == 1 and feeds.hits["/cap/w2.xml"] == 1 and feeds.hits["/cap/w3.xml"] == 1


async def test_an_rss_index_and_an_embedded_atom_feed_are_relayed(node: Node, http: httpx.AsyncClient,
                                                                   feeds: Publisher) -> None:
    feeds.docs["/cap/ny-1.xml"] = (alert_xml(identifier="NY-1", sender=SENDER), CAP)
    feeds.docs["/index.rss"] = (rss([("NY-1", "/cap/ny-1.xml")]), "application/rss+xml")
    feeds.docs["/naad.atom"] = (embedded_atom([("urn:e1", alert_xml(identifier="E-1", sender=SENDER))]), ATOM)
    await add_source(http, "ny", f"{feeds.url}/index.rss")
    await add_source(http, "naad", f"{feeds.url}/naad.atom")
    await wait_status(http, "ny", counted("relayed", 1))
    await wait_status(http, "naad", counted("relayed", 1))
    assert relayed_from(parse_stored((await stored(node, "NY-1")).envelope.payload)) == "ny"
    assert relayed_from(parse_stored((await stored(node, "E-1")).envelope.payload)) == "naad"


async def test_the_same_alert_from_two_sources_is_stored_once(node: Node, http: httpx.AsyncClient,
                                                              feeds: Publisher) -> None:
    feeds.docs["/cap/d.xml"] = (alert_xml(identifier="D-1", sender=SENDER), CAP)
    feeds.docs["/a.atom"] = (linked_atom([("urn:d", "/cap/d.xml")]), ATOM)
    await add_source(http, "first", f"{feeds.url}/a.atom")
    await wait_status(http, "first", counted("relayed", 1))
    await add_source(http, "second", f"{feeds.url}/a.atom")
    # The second source relays the same CAP with its own mark: a conflict of identity, refused.
    status = await wait_status(http, "second", counted("refused", 1))
    assert status["last_refusal"]["code"] == "alert.identity-conflict"


async def test_under_require_signed_only_caps_signed_by_its_key_are_relayed(node: Node, http: httpx.AsyncClient,
                                                                           feeds: Publisher) -> None:
    weather, forger = authority(), authority()
    feeds.docs["/signed.atom"] = (embedded_atom([
        ("urn:s1", weather.sign(alert_xml(identifier="S-1", sender=SENDER))),
        ("urn:s2", alert_xml(identifier="S-2", sender=SENDER)),
        ("urn:s3", forger.sign(alert_xml(identifier="S-3", sender=SENDER))),
    ]), ATOM)
    feeds.docs["/cap/s4.xml"] = (weather.sign(alert_xml(identifier="S-4", sender=SENDER)), CAP)
    feeds.docs["/linked.atom"] = (linked_atom([("urn:s4", "/cap/s4.xml")]), ATOM)
    keys = {"signatures": "require-signed", "keys": [weather.cert_pem]}
    await add_source(http, "signed", f"{feeds.url}/signed.atom", **keys)
    await add_source(http, "linked", f"{feeds.url}/linked.atom", **keys)
    status = await wait_status(http, "signed", lambda s: sum((s.get("counts") or {}).get(k, 0)
                                                             for k in ("relayed", "refused")) >= 3)
    assert status["counts"]["relayed"] == 1 and status["counts"]["refused"] == 2
    await wait_status(http, "linked", counted("relayed", 1))
    relayed = parse_stored((await stored(node, "S-1")).envelope.payload)
    assert relayed.extensions == ()  # the source's signature checked here, not passed on
    assert parse_stored((await stored(node, "S-4")).envelope.payload).identifier == "S-4"
    assert not await is_stored(node, "S-2") and not await is_stored(node, "S-3")


async def test_a_source_relays_only_its_senders_and_statuses(node: Node, http: httpx.AsyncClient,
                                                             feeds: Publisher) -> None:
    feeds.docs["/cap/x.xml"] = (alert_xml(identifier="X-1", sender="someone@else.example"), CAP)
    feeds.docs["/cap/t.xml"] = (alert_xml(identifier="T-1", sender=SENDER, status="Test"), CAP)
    feeds.docs["/cap/p.xml"] = (alert_xml(identifier="P-1", sender=SENDER), CAP)  # over Paris
    feeds.docs["/cap/l.xml"] = (alert_xml(identifier="L-1", sender=SENDER, polygon=LYON_BOX), CAP)
    feeds.docs["/mixed.atom"] = (linked_atom([("urn:x", "/cap/x.xml"), ("urn:t", "/cap/t.xml"), ("urn:p", "/cap/p.xml"),
                                              ("urn:l", "/cap/l.xml")]), ATOM)
    await add_source(http, "narrow", f"{feeds.url}/mixed.atom", senders=[SENDER], statuses=["Actual"],
                     territory={"circles": ["45.76,4.84 30"]})  # around Lyon
    status = await wait_status(http, "narrow", lambda s: sum((s.get("counts") or {}).get(k, 0)
                                                             for k in ("relayed", "refused")) >= 4)
    assert status["counts"] == {**status["counts"], "relayed": 1, "refused": 3}
    assert (await stored(node, "L-1")).envelope.issuer == "source:narrow"
    # Oldest first: L-1 relayed, P-1 outside the territory, T-1 a Test, X-1 another sender (named last).
    assert status["last_refusal"]["code"] == "policy.sender-not-allowed"
    for identifier, sender in (("P-1", SENDER), ("T-1", SENDER), ("X-1", "someone@else.example")):
        assert not await is_stored(node, identifier, sender)


async def test_a_cap_that_could_not_be_fetched_is_fetched_again_though_the_feed_is_unchanged(
        node: Node, http: httpx.AsyncClient, feeds: Publisher) -> None:
    feeds.docs["/cap/late.xml"] = (alert_xml(identifier="LATE-1", sender=SENDER), CAP)
    feeds.modes["/cap/late.xml"] = "500"
    feeds.docs["/late.atom"] = (linked_atom([("urn:late", "/cap/late.xml")]), ATOM)
    await add_source(http, "late", f"{feeds.url}/late.atom")
    status = await wait_status(http, "late", lambda s: s["counts"].get("polls", 0) >= 2)
    assert status["state"] == "ok"  # the feed was read: the source is fine, one of its CAPs is not
    assert status["last_refusal"]["code"] == "fetch.http-500" and not status.get("etag")
    del feeds.modes["/cap/late.xml"]
    await wait_status(http, "late", counted("relayed", 1))
    assert (await stored(node, "LATE-1")).envelope.issuer == "source:late"
    await wait_status(http, "late", counted("not_modified", 1))  # once taken, polls are conditional again


async def test_a_poll_reads_at_most_its_bound_of_new_entries_and_the_next_polls_the_rest(
        tmp_path: Path, nats_server: NatsServer, feeds: Publisher) -> None:
    settings = source_settings(tmp_path, nats_server, source_max_new_per_poll=2)
    async with running_node(settings) as node, httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        entries = []
        for n in range(5):
            feeds.docs[f"/cap/b{n}.xml"] = (alert_xml(identifier=f"B-{n}", sender=SENDER), CAP)
            entries.insert(0, (f"urn:b{n}", f"/cap/b{n}.xml"))
        feeds.docs["/bulk.atom"] = (linked_atom(entries), ATOM)
        await add_source(http, "bulk", f"{feeds.url}/bulk.atom")
        first = await wait_status(http, "bulk", lambda s: s["counts"].get("polls", 0) >= 1)
        # Two a poll, oldest first; no validators kept while entries wait.
        assert first["counts"]["relayed"] == min(5, 2 * first["counts"]["polls"])
        assert first["counts"]["relayed"] == 5 or not first.get("etag")
        status = await wait_status(http, "bulk", lambda s: s["counts"].get("not_modified", 0) >= 1)
        assert status["counts"]["relayed"] == 5 and status["counts"]["polls"] >= 4
        assert all(feeds.hits[f"/cap/b{n}.xml"] == 1 for n in range(5))
        assert (await stored(node, "B-4")).envelope.issuer == "source:bulk"
