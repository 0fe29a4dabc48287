"""Delivery progress: each node's counts in the replicated bucket, summed per alert and channel,
bounded in size and in time (a real nats-server; two `Progress` stand for two nodes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.conftest import unique_name
from tests.waiting import until_async
from tocsin.cluster.nats_server import NatsServer
from tocsin.delivery.model import Outcome
from tocsin.delivery.progress import MAX_REASONS, OTHER, Progress, node_token
from tocsin.settings import Settings
from tocsin.store.jetstream import JetStreamStore, KvRecords, connect

ALERT = "a" * 32
OTHER_ALERT = "b" * 32


@dataclass
class Bucket:
    store: JetStreamStore
    records: KvRecords


@pytest.fixture
async def bucket(nats_server: NatsServer) -> AsyncIterator[Bucket]:
    settings = Settings(nats_url=nats_server.client_url, nats_monitor_url=nats_server.monitor_url,
                        stream=unique_name("PROGA"), progress_bucket=unique_name("PROG"), progress_max_bytes=1024 * 1024,
                        stream_max_bytes=8 * 1024 * 1024)
    nc = await connect(settings, [nats_server.client_url], name="progress-test")
    try:
        store = JetStreamStore(nc, settings)
        await store.ensure()
        yield Bucket(store, store.progress)
    finally:
        await nc.close()


async def test_an_alerts_progress_is_summed_over_the_nodes_per_channel(bucket: Bucket) -> None:
    one, two = Progress("node-1", bucket.records), Progress("node-2", bucket.records)
    one.planned(ALERT, "webpush", 3)
    one.planned(ALERT, "fcm", 2)
    one.finished(ALERT, "webpush", Outcome.SENT)
    two.finished(ALERT, "webpush", Outcome.SENT)
    two.finished(ALERT, "webpush", Outcome.GONE, "http-410")
    two.finished(ALERT, "fcm", Outcome.PERMANENT, "INVALID_ARGUMENT")
    two.receipt(ALERT, "webpush", device="dev_1")
    two.planned(OTHER_ALERT, "apns", 1)  # another alert is not summed in
    assert await one.flush() == 1 and await two.flush() == 2
    expected = {
        "fcm": {"planned": 2, "queued": 1, "sent": 0, "failed": {"INVALID_ARGUMENT": 1}, "receipts": 0},
        "webpush": {"planned": 3, "queued": 0, "sent": 2, "failed": {"http-410": 1}, "receipts": 1},
    }
    assert await one.summary(ALERT) == expected
    # A third node that counted nothing reads the same from the bucket alone.
    assert await Progress("node-3", bucket.records).summary(ALERT) == expected
    # This node's latest counts stand in for its record before the next flush.
    one.finished(ALERT, "fcm", Outcome.SENT)
    summary = await one.summary(ALERT)
    assert summary["fcm"]["sent"] == 1 and summary["fcm"]["queued"] == 0
    assert (await two.summary(ALERT))["fcm"]["sent"] == 0  # node-1 has not flushed yet


async def test_only_what_changed_is_written_and_a_failed_write_is_written_again(bucket: Bucket) -> None:
    progress = Progress("node-1", bucket.records)
    progress.planned(ALERT, "webpush", 1)
    progress.planned(OTHER_ALERT, "webpush", 1)
    assert await progress.flush() == 2
    assert await progress.flush() == 0  # nothing changed: nothing written
    progress.finished(ALERT, "webpush", Outcome.SENT)
    assert await progress.flush() == 1

    class Failing:
        async def put_with_ttl(self, key: str, value: dict[str, object], *, ttl_s: float) -> None:
            raise OSError("the store is away")

        async def matching(self, pattern: str, *, limit: int, timeout_s: float) -> dict[str, dict[str, object]]:
            raise OSError("the store is away")

    away = Progress("node-9", Failing())
    away.planned(ALERT, "fcm", 4)
    assert await away.flush() == 0 and away.flush_failures == 1
    # The summary still shows this node's own counts.
    assert (await away.summary(ALERT))["fcm"]["planned"] == 4
    away._records = bucket.records
    assert await away.flush() == 1  # still changed: written once the store answers
    assert (await progress.summary(ALERT))["fcm"]["planned"] == 4


async def test_a_record_carries_a_ttl_until_its_alert_expires_and_leaves_with_it(bucket: Bucket) -> None:
    expires = time.time() + 3600
    progress = Progress("node-1", bucket.records, expires_of=lambda alert_id: expires, keep_s=600)
    progress.planned(ALERT, "webpush", 1)
    await progress.flush()
    raw = await bucket.store.jetstream.get_last_msg(f"KV_{bucket.records.name}", f"$KV.{bucket.records.name}.{ALERT}.node-1")
    ttl = int((raw.headers or {})["Nats-TTL"].rstrip("s"))
    assert 4190 <= ttl <= 4201  # an hour to its expiry, then ten minutes
    # A probe's counts are kept only as long as the probe (keep_of: its retention).
    probe = Progress("node-1", bucket.records, expires_of=lambda alert_id: expires, keep_s=600, keep_of=lambda a: 5.0)
    probe.planned(OTHER_ALERT, "webpush", 1)
    assert 3600 <= probe._alerts[OTHER_ALERT].ttl_s <= 3606
    # An alert about to expire, kept one second more: its record and counts leave soon after.
    short = Progress("node-2", bucket.records, expires_of=lambda alert_id: time.time(), keep_s=1.0)
    short.planned(OTHER_ALERT, "fcm", 2)
    short.receipt(OTHER_ALERT, "fcm", device="dev_1")
    await short.flush()
    assert "fcm" in await Progress("node-3", bucket.records).summary(OTHER_ALERT)

    async def gone() -> bool:
        return await Progress("node-3", bucket.records).summary(OTHER_ALERT) == {}

    await until_async(gone, timeout_s=10, every_s=0.2)
    await until_async(lambda: _forgot(short), timeout_s=5)
    assert len(short) == 0 and short._receipts_held == 0
    assert short.receipt(OTHER_ALERT, "fcm", device="dev_1")  # a new alert entry counts afresh


async def _forgot(progress: Progress) -> bool:
    return progress.forget_past() == 1 or len(progress) == 0


async def test_receipts_count_once_per_device_and_reasons_and_channels_stay_few(bucket: Bucket) -> None:
    progress = Progress("node-1", bucket.records)
    assert progress.receipt(ALERT, "live", device="dev_1")
    assert not progress.receipt(ALERT, "live", device="dev_1")
    assert progress.receipt(ALERT, "live", device="dev_2")
    assert progress.receipt(OTHER_ALERT, "live", device="dev_1")
    assert progress.receipts_by_channel["live"] == 3
    for n in range(MAX_REASONS + 10):
        progress.finished(ALERT, "fcm", Outcome.PERMANENT, f"reason-{n} with spaces and {'x' * 100}")
    await progress.flush()
    failed = (await progress.summary(ALERT))["fcm"]["failed"]
    assert len(failed) == MAX_REASONS and failed[OTHER] == 11
    assert all(len(reason) <= 64 and " " not in reason for reason in failed)
    for n in range(40):
        progress.planned(ALERT, f"channel-{n}", 1)
    assert len(progress.local(ALERT)) == 16 and OTHER in progress.local(ALERT)


async def test_hostile_or_odd_records_in_the_bucket_count_nothing(bucket: Bucket) -> None:
    await bucket.records.put_raw(f"{ALERT}.intruder", b"not json")
    await bucket.records.put(f"{ALERT}.odd", {"channels": {"webpush": {"planned": -5, "sent": "many", "receipts": True,
                                                                        "failed": {"x": 2.5}}}})
    await bucket.records.put(f"{ALERT}.fine", {"channels": {"webpush": {"planned": 2, "sent": 1}}})
    summary = await Progress("node-1", bucket.records).summary(ALERT)
    assert summary == {"webpush": {"planned": 2, "queued": 1, "sent": 1, "failed": {"x": 0}, "receipts": 0}}


def test_a_node_name_becomes_one_key_token() -> None:
    assert node_token("tocsin-1") == "tocsin-1"
    odd = node_token("node one.example")
    assert odd != "node one.example" and odd.isalnum() and odd == node_token("node one.example")


async def test_many_reads_of_an_alert_cost_one_bucket_read_a_second(bucket: Bucket) -> None:
    """GET /api/v1/alerts/{id} is public: a crowd asking about one alert reads the bucket once."""

    class Counted:
        reads = 0

        async def put_with_ttl(self, key: str, value: dict[str, object], *, ttl_s: float) -> None:
            await bucket.records.put_with_ttl(key, value, ttl_s=ttl_s)

        async def matching(self, pattern: str, *, limit: int, timeout_s: float) -> dict[str, dict[str, object]]:
            Counted.reads += 1
            return await bucket.records.matching(pattern, limit=limit, timeout_s=timeout_s)

    Progress("node-1", bucket.records).planned(ALERT, "webpush", 2)
    writer = Progress("node-1", bucket.records)
    writer.planned(ALERT, "webpush", 2)
    await writer.flush()
    now = [100.0]
    reader = Progress("node-2", Counted(), monotonic=lambda: now[0])
    answers = await asyncio.gather(*(reader.summary(ALERT) for _ in range(50)))
    assert Counted.reads == 1 and all(a["webpush"]["planned"] == 2 for a in answers)
    assert (await reader.summary(ALERT))["webpush"]["planned"] == 2 and Counted.reads == 1
    now[0] += 1.5  # a second later: read again
    await reader.summary(ALERT)
    assert Counted.reads == 2
