"""Schemathesis over the OpenAPI document, against a real node on loopback: no 500, and no
response that breaks the document. Bounded: a few examples per operation, ~1 minute."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_node, stop_node
from tests.health.conftest import GREEN_WITHIN_S, Readyz, fast_settings
from tocsin.cluster.nats_server import NatsServer

EXAMPLES = 50
DEADLINE_S = 110.0
# The endless stream and the WebSocket upgrade cannot be read to an end by a request/response
# fuzzer; tests/e2e and tests/edge drive them.
EXCLUDED = ("/api/v1/stream", "/api/v1/ws")
# Revoking or rotating `self` would leave the rest of the run with a dead token (every route
# then answers 401 and the fuzzer tests nothing): tests/accounts drives those two.
EXCLUDED_OPERATIONS = ("revokeToken", "rotateToken")

pytestmark = pytest.mark.slow


async def test_schemathesis_finds_no_500_and_no_response_outside_the_document(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary is not None, "schemathesis is in the [test] extra: pip install -e '.[test]'"
    # A node with its prober, green before the run: any 5xx it answers is then a finding.
    # An admin token of its own: the fuzzer may revoke or rotate `self` (the session's nodes
    # share one accounts bucket, and other tests need the shared admin token).
    token = f"tca_fuzz-{secrets.token_hex(8)}"
    running = await start_node(fast_settings(tmp_path, nats_server, admin_token=token))
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            await Readyz(running[0].url).until(http, ready=True, within_s=GREEN_WITHIN_S)
        text, returncode = await _run(binary, running[0].url, tmp_path, token)
    finally:
        await stop_node(*running)
    print(text[-4000:])
    assert returncode == 0, text[-6000:]


async def _run(binary: str, url: str, cwd: Path, token: str) -> tuple[str, int | None]:
    """The CLI in `cwd` (it keeps its Hypothesis database there), within the deadline."""
    command = [
        binary, "run", f"{url}/openapi.json", "--url", url,
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples", str(EXAMPLES), "--workers", "1", "--request-timeout", "5",
        "--phases", "examples,fuzzing", "-H", f"Authorization: Bearer {token}", "--no-color",
        *[arg for path in EXCLUDED for arg in ("--exclude-path", path)],
        *[arg for op in EXCLUDED_OPERATIONS for arg in ("--exclude-operation-id", op)],
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd
    )
    try:
        async with asyncio.timeout(DEADLINE_S):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return output.decode(errors="replace"), process.returncode
