"""What the FCM and APNs fakes share: a clock tests can move (tokens age with it on both
sides), failures a test orders at run time, per device token or for all, N times or
until healed, including a hang that holds the request open; and the fake as a process for
the fault suite, with a control API:

  POST /control/fail  {"mode": KIND, "token": T|null, "times": N|null (null: until cleared),
                       "retry_after": S|null}
  POST /control/clear every failure off, hung requests let go
  GET  /control/state {"requests": N, "devices": {TOKEN: {"received": N,
                       "shown": {COLLAPSE: {"alert_id", "seq"}}}}}

and a state file of one JSON line per event, flushed at once: {"event": "ready", ...},
{"event": "message", "token": T, "collapse": C, "alert_id": ID|null, "seq": N|null, "at": UNIX}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.h2 import h2_server
from tests.fakes.tls import GatewayCa, gateway_ca
from tests.fakes.webpush import _alert_of as alert_of  # one reader of a tocsin payload's id and seq
from tests.fakes.webpush import shared_ca

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
    """A fake's serving and its run-time orders; `app` is the fake's ASGI app, which
    includes `control_routes()`; `shown` is what each device's user sees, by collapse key."""

    app: Any
    shown: Any
    kinds: frozenset[str]  # what `fail` may be told, "hang" included

    def __init__(self, clock: FakeClock | None) -> None:
        self.clock = clock or FakeClock()
        self.faults = Faults()
        self.url = ""
        self.requests = 0  # push requests, answered or not
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: None

    def control_routes(self) -> list[Route]:
        return [Route("/control/fail", self._control_fail, methods=["POST"]),
                Route("/control/clear", self._control_clear, methods=["POST"]),
                Route("/control/state", self._control_state, methods=["GET"])]

    def shown_to(self, token: str, collapse: str, payload: str) -> None:
        """Record what a device's user now sees for `collapse`, and say so in the state file."""
        self.shown[token][collapse] = payload
        self.on_event({"event": "message", "token": token, "collapse": collapse, **alert_of(payload.encode()),
                       "at": time.time()})

    def state(self) -> dict[str, Any]:
        return {"requests": self.requests, "devices": {
            token: {"received": len(self.received_by(token)),
                    "shown": {collapse: alert_of(payload.encode()) for collapse, payload in shown.items()}}
            for token, shown in self.shown.items()}}

    def received_by(self, token: str) -> list[Any]:
        raise NotImplementedError

    async def _control_fail(self, request: Request) -> Response:
        body = json.loads((await request.body())[:4096] or b"{}")
        if not isinstance(body, dict) or not isinstance(body.get("mode"), str):
            return JSONResponse({"message": "give a mode"}, status_code=400)
        times, later = body.get("times"), body.get("retry_after")
        try:
            self.fail(body["mode"], token=body.get("token") or None, times=int(times) if times is not None else None,
                      retry_after_s=int(later) if later is not None else None)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"message": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def _control_clear(self, request: Request) -> Response:
        await request.body()
        self.heal()
        return JSONResponse({"ok": True})

    async def _control_state(self, request: Request) -> Response:
        return JSONResponse(self.state())

    @asynccontextmanager
    async def serve(self, *, port: int = 0, ca: GatewayCa | None = None) -> AsyncIterator[str]:
        """Serve over HTTP/2 with TLS until the block ends; hung requests are let go then."""
        async with h2_server(self.app, port=port, ca=ca) as url:
            self.url = url
            try:
                yield url
            finally:
                self.faults.heal()

    def fail(self, kind: str, *, token: str | None = None, times: int | None = None,
             retry_after_s: int | None = None) -> None:
        """Answer `kind` instead, for `token` (None: every token), `times` times (None: until healed).

        Raises:
            ValueError: not a kind this fake answers.
        """
        if kind not in self.kinds:
            raise ValueError(f"{kind!r}: this fake answers {', '.join(sorted(self.kinds))}")
        self.faults.fail(kind, token=token, times=times, retry_after_s=retry_after_s)

    def heal(self, token: str | None = None) -> None:
        self.faults.heal(token)


async def _run(fake: FakeGateway, port: int, state: Path, ca: GatewayCa,
               settings: Callable[[], dict[str, Any]]) -> None:
    with state.open("a", encoding="utf-8") as out:
        def write(event: dict[str, Any]) -> None:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            out.flush()

        fake.on_event = write
        async with fake.serve(port=port, ca=ca) as url:
            ready = {"url": url, "ca_file": str(ca.ca_file), "settings": settings()}
            write({"event": "ready", **ready})
            print(json.dumps(ready), flush=True)
            await asyncio.Event().wait()  # until the process is stopped


def process_main(prog: str, doc: str, fake: FakeGateway, settings: Callable[[Path], dict[str, Any]],
                 argv: list[str] | None = None) -> None:
    """`python -m tests.fakes.fcm|apns --port P --state FILE --dir DIR [--ca-dir DIR]`: prints
    one JSON line once it listens, {"url", "ca_file", "settings"}: `settings` are the node's
    Settings fields (TOCSIN_<NAME>) that point it at this fake, with its key files in DIR."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where the key files are written")
    parser.add_argument("--ca-dir", type=Path, default=None, help="a CA shared with the run's other fakes")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    ca = shared_ca(args.ca_dir) if args.ca_dir else gateway_ca()
    try:
        asyncio.run(_run(fake, args.port, args.state, ca, lambda: settings(args.dir)))
    except KeyboardInterrupt:
        sys.exit(0)
