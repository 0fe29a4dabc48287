"""Three nodes, one source: it is polled once per interval in the cluster (the lease), not
once per node, and each CAP is fetched and stored once."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import unique_name
from tests.e2e.conftest import start_node, stop_node
from tests.samples import alert_xml
from tests.sources.conftest import add_source, source_settings, wait_status
from tests.sources.feeds import CAP, Publisher, linked_atom
from tests.waiting import until
from tocsin.cluster.nats_server import NatsServer
from tocsin.store.base import alert_id_for

SENDER = "alerts@cluster.test.example"


async def test_three_nodes_poll_a_source_once_per_interval(tmp_path: Path, nats_server: NatsServer,
                                                           feeds: Publisher) -> None:
    first = source_settings(tmp_path / "a", nats_server)
    running = [await start_node(first)]
    try:
        for name in ("b", "c"):
            running.append(await start_node(first.replace(data_dir=tmp_path / name, node_name=unique_name("snode"))))
        feeds.docs["/cap/c1.xml"] = (alert_xml(identifier="C-1", sender=SENDER), CAP)
        feeds.docs["/feed.atom"] = (linked_atom([("urn:c1", "/cap/c1.xml")]), "application/atom+xml")
        async with httpx.AsyncClient(base_url=running[0][0].url, timeout=10) as http:
            await add_source(http, "shared", f"{feeds.url}/feed.atom", interval_s=1)
            for node, _, _ in running:  # every node's poller has the source
                book = node.services.sources
                await until(lambda: book.source("shared") is not None)
            status = await wait_status(http, "shared", lambda s: (s.get("counts") or {}).get("polls", 0) >= 6)
        # One GET per poll in the whole cluster (one more may be in flight as the status is read).
        assert status["counts"]["polls"] <= feeds.hits["/feed.atom"] <= status["counts"]["polls"] + 1
        assert feeds.hits["/cap/c1.xml"] == 1 and status["counts"]["relayed"] == 1
        stored = await running[0][0].services.store.get(alert_id_for(SENDER, "C-1"))
        assert stored.envelope.issuer == "source:shared"
    finally:
        for one in running:
            await stop_node(*one)
