"""The audit log: appended once per idempotency key, read by subject, never changed."""

from __future__ import annotations

import nats.js.errors
import pytest

from tests.conftest import unique_name
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import Settings
from tocsin.store.audit import Action, AuditEntry, AuditQuery
from tocsin.store.jetstream import JetStreamStore, connect


async def test_entries_are_read_back_by_subject_action_and_actor_in_pages(nats_server: NatsServer) -> None:
    settings = Settings(nats_url=nats_server.client_url, stream=unique_name("AUDS"), audit_stream=unique_name("AUDIT"),
                        audit_max_bytes=1 << 20)
    nc = await connect(settings, [nats_server.client_url], name="audit-test")
    try:
        store = JetStreamStore(nc, settings)
        await store.ensure()
        log = store.audit
        for n in range(5):
            await log.append(AuditEntry(action=Action.SUBMITTED, subject=f"alert-{n}", actor="user:alice", org="prefecture"))
        await log.append(AuditEntry(action=Action.APPROVED, subject="alert-3", actor="user:bob", org="prefecture"))
        first = await log.append(AuditEntry(action=Action.EXPIRED, subject="alert-3", actor="node:a"), once="expired:alert-3")
        again = await log.append(AuditEntry(action=Action.EXPIRED, subject="alert-3", actor="node:b"), once="expired:alert-3")
        assert again == first  # a second node noting the same expiry appends nothing

        trail = await log.page(AuditQuery(subject="alert-3"))
        assert [(e.action, e.actor) for e in trail.entries] == [
            (Action.SUBMITTED, "user:alice"), (Action.APPROVED, "user:bob"), (Action.EXPIRED, "node:a"),
        ]
        assert trail.next_after_seq is None
        by_bob = await log.page(AuditQuery(actor="user:bob"))
        assert [e.subject for e in by_bob.entries] == ["alert-3"]

        pages: list[list[str]] = []
        after = 0
        while True:
            page = await log.page(AuditQuery(actions=(Action.SUBMITTED,), limit=2, after_seq=after))
            pages.append([e.subject for e in page.entries])
            if page.next_after_seq is None:
                break
            after = page.next_after_seq
        assert [s for p in pages for s in p] == [f"alert-{n}" for n in range(5)]
        assert max(len(p) for p in pages) == 2

        js = nc.jetstream()
        with pytest.raises(nats.js.errors.Error):
            await js.delete_msg(settings.audit_stream, first)
        with pytest.raises(nats.js.errors.Error):
            await js.purge_stream(settings.audit_stream)
        assert (await log.page(AuditQuery(subject="alert-3"))).entries == trail.entries
    finally:
        await nc.close()
