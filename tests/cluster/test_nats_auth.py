"""NATS is authenticated: the servers tocsin starts need a password, and a node refuses an
open NATS beyond loopback (against real nats-servers)."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import urlsplit

import nats
import pytest

from tests.e2e.conftest import node_settings, start_node, stop_node
from tocsin.app import open_node
from tocsin.cluster.local import LocalCluster
from tocsin.cluster.nats_server import NATS_USER, NatsServer
from tocsin.errors import StoreMisconfigured
from tocsin.store.jetstream import accepts_anonymous, connect


async def _anonymous_is_refused(url: str) -> bool:
    where = urlsplit(url)
    assert where.hostname is not None and where.port is not None
    return not await accepts_anonymous(where.hostname, where.port)


async def _logs_in(url: str, user: str, password: str) -> bool:
    nc = await nats.connect(servers=[url], user=user, password=password, allow_reconnect=False, connect_timeout=2)
    ok = nc.is_connected
    await nc.close()
    return ok


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_server_with_a_password_lets_in_only_who_has_it(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "nats", name="auth", user=NATS_USER, password="s3cret-pw")
    await server.start()
    try:
        assert await _anonymous_is_refused(server.client_url)
        assert await _logs_in(server.client_url, NATS_USER, "s3cret-pw")
        assert _mode(tmp_path / "nats" / "nats-server.conf") == 0o600  # it holds the password
    finally:
        await server.stop()


async def test_a_node_refuses_a_nats_open_to_anonymous_clients_beyond_loopback(tmp_path: Path) -> None:
    # Anonymous and listening on every interface: what docs/cluster.md used to set up.
    server = NatsServer(store_dir=tmp_path / "nats", name="open", host="0.0.0.0")
    await server.start()
    try:
        local = server.client_url.replace("0.0.0.0", "127.0.0.1")
        settings = node_settings(tmp_path / "node", server).replace(
            nats_url=local, nats_monitor_url=server.monitor_url.replace("0.0.0.0", "127.0.0.1"))
        with pytest.raises(StoreMisconfigured, match="accepts anonymous clients"):
            async with open_node(settings):
                pass
        # Told otherwise (a closed network), the same server is used.
        nc = await connect(settings.replace(nats_allow_anonymous=True), [local], name="allowed")
        assert nc.is_connected
        await nc.close()
    finally:
        await server.stop()


async def test_the_embedded_server_listens_on_loopback_behind_its_own_password(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = node_settings(tmp_path, nats_server).replace(nats_url="", nats_monitor_url="")
    running = await start_node(settings)
    try:
        embedded = running[0].nats
        assert embedded is not None and embedded.host == "127.0.0.1"
        assert _mode(settings.nats_password_path) == 0o600
        password = settings.nats_password_path.read_text().strip()
        assert len(password) >= 32
        assert await _anonymous_is_refused(embedded.client_url)
        assert await _logs_in(embedded.client_url, NATS_USER, password)
    finally:
        await stop_node(*running)
    # A restart reuses the password the file keeps.
    assert settings.nats_password_path.read_text().strip() == password


async def test_a_cluster_of_tocsin_cluster_up_is_closed_to_anonymous_clients(cluster: LocalCluster) -> None:
    assert _mode(cluster.nats_password_file) == 0o600
    for spec in cluster.specs:
        assert await _anonymous_is_refused(spec.nats_address)
        assert await _logs_in(spec.nats_url, NATS_USER, cluster.nats_login.partition(":")[2])
