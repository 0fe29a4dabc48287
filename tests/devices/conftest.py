"""Nodes for the device tests: each with a device bucket of its own, clients from chosen sources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import unique_name
from tests.e2e.conftest import node_settings
from tocsin.cluster.nats_server import NatsServer
from tocsin.settings import Settings

# Linux routes all of 127.0.0.0/8 to loopback: a client bound to another address of it is
# another source for the node's rate limits, without leaving the machine.
OTHER_SOURCE = "127.0.0.2"


def device_settings(tmp_path: Path, nats_server: NatsServer, **changes: Any) -> Settings:
    """A test node whose device bucket no other test shares (its limits are the test's)."""
    changes.setdefault("device_bucket", unique_name("DEVICES_T"))
    return node_settings(tmp_path, nats_server, **changes)


def client_from(base_url: str, source: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client whose connections come from `source`."""
    return httpx.AsyncClient(base_url=base_url, timeout=10,
                             transport=httpx.AsyncHTTPTransport(local_address=source))


def rss_kib() -> int:
    """This process's resident memory (the node runs in it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))
