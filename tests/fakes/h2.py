"""An ASGI app served over TLS with HTTP/2 (ALPN h2, HTTP/1.1 as well) on a loopback port,
in the test's own event loop, as the fakes of the push gateways run."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tests.fakes.tls import GatewayCa, gateway_ca


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def h2_server(app: Any, *, tls: bool = True, port: int = 0, ca: GatewayCa | None = None) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL (https://127.0.0.1:PORT); on
    `port`, or a free one; with the certificate of `ca`, or of this process's test CA."""
    config = Config()
    port = port or _free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    if tls:
        ca = ca or gateway_ca()
        config.certfile, config.keyfile = str(ca.cert_file), str(ca.key_file)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # until it accepts connections
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if task.done() or asyncio.get_running_loop().time() > deadline:
                    task.result()
                    raise
                await asyncio.sleep(0.02)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
