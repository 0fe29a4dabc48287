"""A submission is replicated: submitted on one node, that node killed, approved on another."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest

from tocsin.cluster.local import LocalCluster

from tests.lifecycle.conftest import as_, token_of
from tests.samples import alert_xml


def people_file(path: Path) -> Path:
    """Alice (author) and Bob (approver) of one organisation, approval by default."""
    members = "".join(
        f'\n[[issuers.users]]\nname = "{name}"\nroles = ["{role}"]\n'
        f'token_sha256 = "{hashlib.sha256(token_of(name).encode()).hexdigest()}"\n'
        for name, role in (("alice", "author"), ("bob", "approver"))
    )
    path.write_text('[[issuers]]\nname = "prefecture-75"\nsenders = ["*"]\nstatuses = ["Actual"]\n'
                    'severities = ["Extreme", "Severe", "Moderate", "Minor", "Unknown"]\n' + members)
    return path


async def _until_answered(http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str],
                          **kwargs: object) -> httpx.Response:
    """As an approver's console does: a 503 while the cluster elects leaders is retried."""
    async with asyncio.timeout(30):
        while True:
            response = await http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
            if response.status_code != 503:
                return response
            await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_a_submission_outlives_the_node_it_was_submitted_on(tmp_path: Path) -> None:
    accounts = people_file(tmp_path / "people.toml")
    local = LocalCluster(tmp_path / "cluster", nodes=3, extra_env={"TOCSIN_ACCOUNTS_FILE": str(accounts)})
    try:
        await local.start()
        first, second, third = local.specs
        async with httpx.AsyncClient(timeout=20) as http:
            submitted = await _until_answered(http, "POST", f"{first.url}/api/v1/alerts", as_("alice"),
                                              content=alert_xml(identifier="survives"))
            assert submitted.status_code == 202, submitted.text
            alert_id = submitted.json()["id"]
            await local.kill(first.name)  # kill -9 of its nats-server and tocsin
            approved = await _until_answered(http, "POST", f"{second.url}/api/v1/alerts/{alert_id}/approve",
                                             as_("bob"))
            assert approved.status_code == 201, approved.text
            published = await _until_answered(http, "GET", f"{third.url}/api/v1/alerts/{alert_id}", {})
            assert published.status_code == 200 and published.json()["seq"] == approved.json()["seq"]
            again = await _until_answered(http, "POST", f"{third.url}/api/v1/alerts/{alert_id}/approve", as_("bob"))
            assert again.status_code == 409 and again.json()["code"] == "approval.not-pending"
    finally:
        await local.stop()
