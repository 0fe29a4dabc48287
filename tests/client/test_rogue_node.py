"""Against real nodes: a rogue node's key and alerts never get in; a signed rotation does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from click.testing import CliRunner

from tests.e2e.conftest import ISSUER_TOKEN, node_settings, start_node, stop_node
from tests.samples import IN_PARIS, alert_xml
from tocsin.cli.keys_cmd import keys as keys_command
from tocsin.client.display import Display
from tocsin.client.keys import valid_keys
from tocsin.client.state import Registration, WatchState, save_state
from tocsin.client.watch import Watcher
from tocsin.cluster.nats_server import NatsServer
from tocsin.geo.cells import cell_for_point
from tocsin.signing import SigningKey

ISSUE = {"Authorization": f"Bearer {ISSUER_TOKEN}", "Content-Type": "application/cap+xml"}


async def _issue(url: str, headline: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.post("/api/v1/alerts", content=alert_xml(headline=headline), headers=ISSUE)
    assert response.status_code == 201, response.text
    return str(response.json()["identifier"])


async def _next(displays: AsyncIterator[Display]) -> Display:
    async with asyncio.timeout(10):
        return await anext(displays)


def _trusted(key: SigningKey) -> dict[str, dict[str, object]]:
    return {key.kid: dict(key.public_jwk())}


async def test_a_rogue_node_gets_nothing_shown_and_no_key_trusted_even_after_a_401(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    good = await start_node(node_settings(tmp_path / "good", nats_server))
    rogue = await start_node(node_settings(tmp_path / "rogue", nats_server))
    good_key, rogue_key = good[0].services.signer, rogue[0].services.signer
    assert good_key.kid != rogue_key.kid
    state = tmp_path / "watch.json"
    # A device the rogue node does not know: its stream answers 401 device.unknown, the
    # watcher registers again there and reads the rogue's key set again.
    stale = Registration(device_id="dev_gone", token="dev_gone.nope", node=rogue[0].url,
                         cells=(cell_for_point(*IN_PARIS),), languages=("en",), tests=False)
    save_state(state, WatchState(registration=stale))
    try:
        async with Watcher([rogue[0].url], [IN_PARIS], state_path=state, keys=_trusted(good_key)) as watcher:
            await watcher.wait_synced()
            forged = await _issue(rogue[0].url, "EVACUATE NOW")
            async with asyncio.timeout(10):
                while watcher.stats.bad_signatures < 1:
                    await asyncio.sleep(0.02)
            assert watcher.stats.registrations == 1 and watcher.stats.disconnects >= 1
            assert set(watcher.state.keys) == {good_key.kid}
            assert watcher._queue.empty()
        # The same device, on the real deployment: its alert shows, the forged one never did.
        async with Watcher([good[0].url], [IN_PARIS], state_path=state, keys=_trusted(good_key)) as watcher:
            await watcher.wait_synced()
            real = await _issue(good[0].url, "Seine en crue")
            shown = await _next(watcher.displays())
        assert shown.identifier == real != forged
        assert set(watcher.state.keys) == {good_key.kid}
    finally:
        await stop_node(*rogue)
        await stop_node(*good)


async def test_tocsin_keys_rotate_is_served_accepted_and_its_key_verifies(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = node_settings(tmp_path / "node", nats_server)
    running = await start_node(settings)
    old = running[0].services.signer
    state = tmp_path / "watch.json"
    try:
        async with Watcher([running[0].url], [IN_PARIS], state_path=state, keys=_trusted(old)) as watcher:
            await watcher.wait_synced()
            before = await _issue(running[0].url, "signed by the old key")
            assert (await _next(watcher.displays())).identifier == before
        result = CliRunner().invoke(keys_command, ["rotate", "--data", str(settings.data_dir)],
                                    env={"TOCSIN_SIGNING_KEY_FILE": str(settings.signing_key_path)})
        assert result.exit_code == 0, result.output
        new = SigningKey.load(settings.signing_key_path)
        async with httpx.AsyncClient(base_url=running[0].url) as http:
            served = (await http.get("/.well-known/tocsin/keys")).json()
        assert {k["kid"] for k in served["keys"]} == {old.kid, new.kid}
        assert served["statements"][-1]["kid"] == old.kid
    finally:
        await stop_node(*running)
    # Restarted, the node signs with the new key; the device, trusting only the old one
    # from its configuration, follows the statement.
    running = await start_node(settings)
    try:
        assert running[0].services.signer.kid == new.kid
        async with Watcher([running[0].url], [IN_PARIS], state_path=state, keys=_trusted(old)) as watcher:
            await watcher.wait_synced()
            after = await _issue(running[0].url, "signed by the new key")
            shown = await _next(watcher.displays())
        assert shown.identifier == after
        assert set(valid_keys(watcher.state.keys, shown.displayed_at)) == {old.kid, new.kid}
        assert watcher.stats.bad_signatures == 0
    finally:
        await stop_node(*running)
