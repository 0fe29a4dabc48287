"""A start creates the stream, and updates it only when tocsin's settings for it changed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import unique_name
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import Settings
from tocsin.store.jetstream import JetStreamStore, connect


async def test_a_start_updates_the_stream_only_when_its_settings_changed(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(nats_url=nats_server.client_url, nats_monitor_url=nats_server.monitor_url,
                        stream=unique_name("ENSURE"))
    nc = await connect(settings, [nats_server.client_url], name="ensure-test")
    try:
        await JetStreamStore(nc, settings).ensure()
        updates: list[Any] = []
        js = nc.jetstream()
        real_update = type(js).update_stream

        async def counted(self: Any, config: Any = None, **params: Any) -> Any:
            updates.append(config)
            return await real_update(self, config, **params)

        monkeypatch.setattr(type(js), "update_stream", counted)
        await JetStreamStore(nc, settings).ensure()  # a restart, same settings
        assert updates == []
        bigger = settings.replace(stream_max_bytes=settings.stream_max_bytes * 2)
        await JetStreamStore(nc, bigger).ensure()
        assert len(updates) == 1
        info = await js.stream_info(settings.stream)
        assert info.config.max_bytes == bigger.stream_max_bytes and info.config.allow_msg_ttl
    finally:
        await nc.close()
