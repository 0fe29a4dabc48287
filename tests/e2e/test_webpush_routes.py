"""The Web Push app's two public reads on a running node: the VAPID key it subscribes
with, and the event a push pointer sends it to."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tocsin.app import Node
from tocsin.channels import webpush
from tocsin.cluster.nats_server import NatsServer
from tocsin.delivery.jws import b64url_decode
from tocsin.delivery.model import push_payload
from tocsin.signing import verify

from tests.e2e.conftest import ADMIN_TOKEN, node_settings, running_node
from tests.samples import alert_xml
from tests.waiting import until

XML = {"Content-Type": "application/cap+xml"}


async def test_the_vapid_key_is_made_at_first_start_and_served_for_subscribe(
    node: Node, http: httpx.AsyncClient
) -> None:
    path = node.settings.data_dir / "keys" / "vapid.pem"
    assert path.stat().st_mode & 0o777 == 0o600  # made at start, before any request
    response = await http.get("/api/v1/webpush/key")
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("public")
    body = response.json()
    point = b64url_decode(body["publicKey"])
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)  # on the curve
    assert len(point) == 65 and "=" not in body["publicKey"]
    assert body["publicKey"] == webpush.load_or_create_vapid_key(path).public_b64
    assert body["userVisibleOnly"] is True and body["register"]["channel"] == "webpush"


async def test_an_active_alert_is_served_as_its_sse_event_and_a_pointer_to_it_checks_out(
    node: Node, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    posted = await http.post("/api/v1/alerts", content=alert_xml(), headers={**admin, **XML})
    assert posted.status_code == 201
    alert_id = posted.json()["id"]
    index = node.services.pipeline.index
    await until(lambda: alert_id in index.by_id)
    response = await http.get(f"/api/v1/events/{alert_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    event = response.json()
    assert set(event) == {"seq", "event_id", "id", "kid", "sig", "cap"} and event["id"] == alert_id
    # Byte for byte the data of the SSE event every connected device got.
    sse = index.by_id[alert_id].event.sse
    assert f"data: {response.text}\n\n".encode() in sse
    # What an app woken by a pointer does: fetch, compare the digest, verify the signature.
    stored = index.by_id[alert_id].stored
    url = f"{node.url}/api/v1/events/{alert_id}"
    pointer = json.loads(push_payload(stored.envelope, stored.seq, pointer_url=url, budget=100))
    assert set(pointer) == {"seq", "id", "kid", "sig", "sha256", "url"}
    async with httpx.AsyncClient() as app:
        fetched = (await app.get(pointer["url"])).json()
        keys = {k["kid"]: k for k in (await app.get(f"{node.url}/.well-known/tocsin/keys")).json()["keys"]}
    cap = fetched["cap"].encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(cap).digest()).decode().rstrip("=")
    assert digest == pointer["sha256"] and fetched["sig"] == pointer["sig"]
    assert verify(keys, pointer["kid"], cap, pointer["sig"])


async def test_anything_but_an_active_alert_id_is_event_unknown(node: Node, http: httpx.AsyncClient) -> None:
    # A System alert is active here but, as on the stream, for canaries only.
    system = await http.post("/api/v1/alerts", content=alert_xml(status="System"),
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **XML})
    assert system.status_code == 201, system.text
    await until(lambda: system.json()["id"] in node.services.pipeline.index.by_id)
    for alert_id in (system.json()["id"], "0" * 32, "A" * 32, "g" * 32, "0" * 31, "0" * 33, "0" * 31 + "%00", "x"):
        response = await http.get(f"/api/v1/events/{alert_id}")
        assert response.status_code == 404, alert_id
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "event.unknown"


async def test_without_push_services_web_push_is_off_and_has_no_key(tmp_path: Path, nats_server: NatsServer) -> None:
    async with running_node(node_settings(tmp_path, nats_server, webpush_hosts="")) as node:
        async with httpx.AsyncClient(base_url=node.url) as http:
            response = await http.get("/api/v1/webpush/key")
    assert response.status_code == 422 and response.json()["code"] == "device.channel-unavailable"
    assert not (tmp_path / "keys" / "vapid.pem").exists()
