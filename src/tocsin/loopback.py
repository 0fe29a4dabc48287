"""Whether an address stays on this machine: loopback hosts, where plain text is safe."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1; any other name or address may be reached from outside."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def url_is_loopback(url: str) -> bool:
    """Whether the URL's host is a loopback host (a URL without a host is not)."""
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:
        return False
    return host is not None and is_loopback(host)
