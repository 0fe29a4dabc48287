"""What the FCM and APNs fakes share: a clock tests can move (tokens age with it on both
sides), and failures a test orders at run time, per device token or for all, N times or
until healed, including a hang that holds the request open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes.h2 import h2_server

# A hung request is let go after this long at most, so a fake never outlives its test.
MAX_HANG_S = 60.0


class FakeClock:
    """Wall time plus an offset: the sender under test and the fake read the same one."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


@dataclass(slots=True)
class Fault:
    kind: str
    remaining: int | None  # None: until healed
    retry_after_s: int | None = None


class Faults:
    """The failures a fake answers with instead of its normal answer."""

    def __init__(self) -> None:
        self._planned: dict[str | None, Fault] = {}  # key None: every token
        self._release = asyncio.Event()

    def fail(self, kind: str, *, token: str | None = None, times: int | None = None,
             retry_after_s: int | None = None) -> None:
        self._planned[token] = Fault(kind=kind, remaining=times, retry_after_s=retry_after_s)

    def heal(self, token: str | None = None) -> None:
        """Stop failing for `token` (None: for all tokens, and let hung requests go)."""
        if token is None:
            self._planned.clear()
            self._release.set()
            self._release = asyncio.Event()
        else:
            self._planned.pop(token, None)

    def take(self, token: str) -> Fault | None:
        """The failure this request meets, if any (one of its N times is used)."""
        key: str | None = token if token in self._planned else None
        fault = self._planned.get(key)
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._planned[key]
        return fault

    async def hang(self) -> None:
        """Hold the request until healed (or MAX_HANG_S)."""
        release = self._release
        try:
            await asyncio.wait_for(release.wait(), MAX_HANG_S)
        except TimeoutError:
            pass


class FakeGateway:
    """A fake's serving and its run-time orders; `app` is the fake's ASGI app."""

    app: Any

    def __init__(self, clock: FakeClock | None) -> None:
        self.clock = clock or FakeClock()
        self.faults = Faults()
        self.url = ""
        self.requests = 0  # push requests, answered or not

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve over HTTP/2 with TLS until the block ends; hung requests are let go then."""
        async with h2_server(self.app) as url:
            self.url = url
            try:
                yield url
            finally:
                self.faults.heal()

    def fail(self, kind: str, *, token: str | None = None, times: int | None = None,
             retry_after_s: int | None = None) -> None:
        """Answer `kind` instead, for `token` (None: every token), `times` times (None: until healed)."""
        self.faults.fail(kind, token=token, times=times, retry_after_s=retry_after_s)

    def heal(self, token: str | None = None) -> None:
        self.faults.heal(token)
