"""Composition root: builds a node from Settings and runs its parts in one TaskGroup."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats.errors
import uvicorn
from nats.aio.client import Client

from pathlib import Path

from tocsin.accounts import grant
from tocsin.accounts.bootstrap import bootstrap_admin
from tocsin.accounts.file import apply_accounts_file
from tocsin.api.device_snapshots import SnapshotKeeper, mirror_with_snapshot
from tocsin.api.feeds import open_feeds
from tocsin.api.lifecycle import sweep_forever
from tocsin.api.listener import Edge, edge_protocols
from tocsin.api.routes import make_app
from tocsin.api.services import Services
from tocsin.api.streams import freshness
from tocsin.channels import webpush
from tocsin.channels.live import LiveRegistry
from tocsin.delivery.channels import enabled_channels
from tocsin.delivery.model import APNS, FCM, WEBPUSH
from tocsin.delivery.progress import Progress, ProgressRecords
from tocsin.delivery.route_worker import RouteWorker, route_checks
from tocsin.sources.poller import SourcePoller
from tocsin.delivery.channels import make_senders
from tocsin.delivery.dispatcher import Dispatcher, Parts
from tocsin.delivery.model import Sender
from tocsin.delivery.planner import Planner, RoutesFor
from tocsin.errors import Rejected, StoreMisconfigured, StoreUnavailable
from tocsin.health.readiness import Limits, Readiness
from tocsin.health.shed import shed_when_unready
from tocsin.health.workers import WorkerPeers, register
from tocsin.cluster.nats_server import NATS_USER, NatsServer, check_varz_sync_always, load_or_create_password
from tocsin.pipeline import build_pipeline
from tocsin.geo.covering import CoverWorker
from tocsin.geo.gazetteer import Gazetteer, builtin
from tocsin.geo.gazetteer_mirror import AreasMirror
from tocsin.pipeline.accept import Accept, Bounds, EarlyPolicy, Retention
from tocsin.pipeline.duplicates import Duplicates
from tocsin.pipeline.early import signed_by
from tocsin.pipeline.gate import Gate
from tocsin.pipeline.reconcile import Reconciler
from tocsin.policy import AlertLimits
from tocsin.prober.heartbeat import Heartbeat, heartbeat_urls
from tocsin.prober.probe import Prober, load_or_create_token, prober_account
from tocsin.prober.relay import CanarySentRelay
from tocsin.secret_file import private_dir
from tocsin.settings import Settings, SettingsError
from tocsin.signing import SigningKey
from tocsin.cap.model import Status
from tocsin.store.base import AlertId
from tocsin.store.jetstream import JetStreamStore, connect
from tocsin.store.ledger import Ledger

log = logging.getLogger(__name__)

T = TypeVar("T")

def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class Node:
    """A running node's parts, for the CLI, tests and benches."""

    settings: Settings
    services: Services
    nats: NatsServer | None
    admin_token: str | None  # set only when this start created the admin account
    server: uvicorn.Server
    ledger: Ledger
    reconciler: Reconciler
    prober_token: str | None = None  # the node's prober account (System alerts only)
    # CORE: gateway deliveries (docs/delivery.md); None where this node runs none.
    planner: Planner | None = None
    dispatcher: Dispatcher | None = None
    # WORKERS (health/workers.py): this worker's private loopback URL and its view of the others.
    private_url: str = ""
    peers: WorkerPeers | None = None

    @property
    def url(self) -> str:
        return self.settings.base_url


async def _check_monitor(url: str) -> None:
    import json
    import urllib.request

    def read() -> None:
        with urllib.request.urlopen(f"{url}/varz", timeout=5) as response:
            check_varz_sync_always(json.load(response), url)

    await asyncio.to_thread(read)


def _nats_login(settings: Settings) -> tuple[str, str]:
    """The user and password for an existing NATS, from TOCSIN_NATS_USER and its password file.

    Raises:
        StoreMisconfigured: a user is set but its password file cannot be read.
    """
    if not settings.nats_user:
        return "", ""
    path = settings.nats_password_path
    try:
        return settings.nats_user, path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StoreMisconfigured(f"TOCSIN_NATS_PASSWORD_FILE {path}: {exc.strerror or exc}") from None


async def _connect_when_up(settings: Settings, servers: list[str], login: tuple[str, str]) -> Client:
    """Connect once NATS answers (a node may start before its server); check sync_always.

    Raises:
        NatsServerError: a server runs without `sync_interval: always` (never retried).
    """
    monitors = [m.strip() for m in settings.nats_monitor_url.split(",") if m.strip()]

    async def attempt() -> Client:
        for monitor in monitors:
            await _check_monitor(monitor)
        return await connect(settings, servers, name=settings.node_name, user=login[0], password=login[1])

    return await _until_up(attempt, (OSError, nats.errors.Error), settings.startup_timeout_s, "waiting for nats")


async def _until_up(
    attempt: Callable[[], Awaitable[T]], errors: tuple[type[BaseException], ...], timeout_s: float, phrase: str
) -> T:
    """Start-up: try every second until `attempt` succeeds; after `timeout_s`, its error."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await attempt()
        except errors as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning(phrase, extra={"error": repr(exc)[:200]})
            await asyncio.sleep(1.0)


async def _prepare_store(store: JetStreamStore, settings: Settings, gazetteer: Gazetteer) -> str | None:
    """Create streams and buckets and the bootstrap accounts, waiting for a quorum if needed.

    Raises:
        SettingsError: the accounts file is not valid (the message names the entry).
    """

    async def attempt() -> str | None:
        await store.ensure()
        token = await bootstrap_admin(store.accounts, settings.admin_token)
        if settings.accounts_file and not settings.is_worker:  # a worker's supervisor applied it
            try:
                # GAZ: a territory's codes must name areas the gazetteer or the areas bucket holds.
                known = AreasMirror(gazetteer)
                await apply_accounts_file(store, Path(settings.accounts_file),
                                          known=lambda scheme, code: known.holds(store.areas, scheme, code))
            except Rejected as exc:
                raise SettingsError(f"TOCSIN_ACCOUNTS_FILE: {exc.detail}") from None
        return token

    return await _until_up(attempt, (StoreUnavailable,), settings.startup_timeout_s, "waiting for the stream")


async def _start_areas_mirror(services: Services) -> asyncio.Task[None]:
    """The imported gazetteers in this node's gazetteer before it serves, so that a geocode
    of an imported scheme never meets a node that has not read it yet; the same mirror then
    keeps them current (geo/gazetteer_mirror.py), the bucket read once. A store too slow for
    the first pass delays the start no longer than the start-up timeout: the mirror catches up."""
    first_pass = asyncio.Event()
    task = asyncio.create_task(services.store.areas.mirror(services.areas, first_pass=first_pass), name="areas-mirror")
    try:
        async with asyncio.timeout(services.settings.startup_timeout_s):
            await first_pass.wait()
    except TimeoutError:
        log.warning("imported gazetteers not loaded at start; the mirror will read them")
    else:
        log.info("imported gazetteers loaded", extra={"schemes": len(services.accept.gazetteer.schemes())})
    return task


async def _bootstrap_prober(store: JetStreamStore, settings: Settings) -> str | None:
    """The node's prober account and its token (kept in DATA_DIR/keys); None when probing is off."""
    if settings.probe_interval_s <= 0:
        return None
    token = load_or_create_token(settings.data_dir / "keys" / "prober-token")
    await grant(store, token, prober_account(settings.node_name))
    return token


def _loopback_url(settings: Settings) -> str:
    """This node's own HTTP endpoint as a local client reaches it (the canary's way in)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(settings.host, settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _progress(services: Services, records: ProgressRecords) -> Progress:
    """PROGRESS: this node's delivery counts, written to the progress bucket; an alert's
    records leave with it (its expiry as this node's follower holds it)."""
    s, index = services.settings, services.pipeline.index

    def expires_of(alert_id: str) -> float | None:
        active = index.by_id.get(AlertId(alert_id))
        return None if active is None else active.expires_at.timestamp()

    def keep_of(alert_id: str) -> float | None:  # a probe's counts leave as soon as the probe
        active = index.by_id.get(AlertId(alert_id))
        return s.probe_retention_s if active is not None and active.alert.status is Status.SYSTEM else None

    # WORKERS: each worker writes its own record of an alert (`<alert>.<node>-w<i>`).
    return Progress(s.node_name + s.worker_suffix, records, expires_of=expires_of, keep_s=s.progress_keep_s, keep_of=keep_of,
                    default_lifetime_s=s.default_lifetime_s, read_timeout_s=s.check_timeout_s)


def _push_canaries(settings: Settings) -> dict[str, Any]:
    """PROGRESS: the prober's gateway canaries for the channels this deployment delivers
    through: Web Push always, FCM and APNs where a test device's token is set."""
    enabled = enabled_channels(settings)
    tokens = {FCM: settings.fcm_canary_token, APNS: settings.apns_canary_token}
    return {"webpush": WEBPUSH in enabled,
            "gateway_tokens": {channel: token for channel, token in tokens.items() if channel in enabled and token}}


@dataclass(slots=True, kw_only=True)
class _Health:
    prober: Prober | None
    readiness: Readiness
    heartbeat: Heartbeat
    # PROGRESS: word of the FCM/APNs canaries' deliveries from whichever node sent them.
    relay: CanarySentRelay | None = None


def _health(node: Node) -> _Health:
    """The prober, the readiness checks and the heartbeat, wired to the node's metrics."""
    s, services = node.settings, node.services
    prober = None
    if node.prober_token is not None:
        prober = Prober(
            # WORKERS: a worker's canary connects to the worker itself, through its private port.
            base_url=node.private_url or _loopback_url(s), token=node.prober_token, node=s.node_name,
            instance=s.worker_suffix,
            interval_s=s.probe_interval_s, expires_in_s=s.probe_expires_s, deadline_s=s.probe_deadline_s,
            read_timeout_s=max(3 * s.sse_keepalive_s, s.probe_deadline_s),
            canary_file=s.data_dir / "keys" / f"canary-sse{s.worker_suffix}.json",
            on_result=services.metrics.observe_probe, clock=services.clock,
            **_push_canaries(s),
        )
    limits = Limits(
        interval_s=s.readiness_interval_s, check_timeout_s=s.check_timeout_s, stall_s=s.stall_s,
        disk_min_free_bytes=int(s.disk_min_free_mb * 2**20), reconcile_interval_s=s.reconcile_interval_s,
        stream_usage_red=s.stream_usage_red,
    )
    readiness = Readiness(
        node=s.node_name, replicas=s.replicas, data_dir=s.data_dir, limits=limits, store=services.store,
        follower=services.pipeline.follower, ledger=node.ledger, prober=prober,
        reconciler=node.reconciler if s.primary else None,  # WORKERS: worker 0's alone
        devices=services.device_cache,
    )

    def healthy() -> dict[str, object] | None:
        if prober is None or not prober.is_healthy():
            return None
        return {"node": s.node_name, "canary": prober.as_json()["channels"]}

    heartbeat = Heartbeat(
        heartbeat_urls(s.watchdog_urls, s.node_name), period_s=s.heartbeat_interval_s, healthy=healthy,
        on_outcome=lambda outcome: services.metrics.heartbeats.labels(outcome).inc(),
    )
    services.prober, services.readiness = prober, readiness
    relay = None
    if prober is not None and isinstance(services.store, JetStreamStore):
        relay = CanarySentRelay(services.store.nats, f"tocsin.canary-sent.{s.stream}", prober.gateway_sent)
        if node.dispatcher is not None:  # the FCM/APNs canaries hear of what any node sent
            node.dispatcher.on_sent.append(relay.on_sent)
    # ROUTES: each route is named in /readyz, never making the node unready (docs/health.md).
    worker = services.route_worker
    if worker is not None:
        readiness.advisory = lambda: route_checks(worker.report())
    services.metrics.watch(services.live, readiness, prober, services.progress, services.pipeline.early)
    return _Health(prober=prober, readiness=readiness, heartbeat=heartbeat, relay=relay)


def bind(listen: str, *, shared: bool = False, backlog: int = 4096) -> socket.socket:
    """A listening socket; `shared`: SO_REUSEPORT, so that the node's workers each listen on
    the port and the kernel spreads the connections over them (backlog 0: bound, not listening,
    which holds the port for them and takes no connection)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it a response body can wait 40 ms for the client's delayed ACK (Nagle).
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    if backlog:
        sock.listen(backlog)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns Ctrl-C."""

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # newer uvicorn: a context manager
        yield


def alert_bounds(settings: Settings) -> Bounds:
    """What one alert may cost; the stream cannot store a message over its max_msg_size."""
    limits = AlertLimits(
        areas=settings.max_alert_areas, polygons=settings.max_alert_polygons, circles=settings.max_alert_circles,
        points=settings.max_alert_points, area_km2=settings.max_alert_area_km2,
    )
    return Bounds(
        limits=limits, max_stored_bytes=min(settings.max_stored_bytes, 2 * settings.max_cap_bytes),
        cover_deadline_s=settings.cover_deadline_s, max_references=settings.max_alert_references,
    )


@dataclass(slots=True, kw_only=True)
class Prepared:
    """What a node (or a supervisor of workers) has once its store and keys are ready."""

    nats: NatsServer | None  # the embedded nats-server, when this process started one
    login: tuple[str, str]
    nc: Client
    store: JetStreamStore
    gazetteer: Gazetteer
    admin_token: str | None
    prober_token: str | None
    signer: SigningKey


async def prepare(settings: Settings, stack: AsyncExitStack) -> Prepared:
    """The embedded nats-server (unless TOCSIN_NATS_URL names servers), a connection, the
    streams and buckets, the bootstrap accounts, the keys; what is started stops with `stack`."""
    private_dir(settings.data_dir)  # keys, tokens, the ledger and the stream's files: this user's only
    nats_server: NatsServer | None = None
    if settings.nats_url:
        servers = [u.strip() for u in settings.nats_url.split(",") if u.strip()]
        login = _nats_login(settings)
    else:
        # Loopback only (NatsServer's host), and still behind a password of its own.
        login = (NATS_USER, load_or_create_password(settings.nats_password_path))
        nats_server = NatsServer(
            store_dir=settings.data_dir / "nats", name=settings.node_name,
            restart_delay_s=settings.nats_restart_delay_s, user=login[0], password=login[1],
        )
        await nats_server.start()
        stack.push_async_callback(nats_server.stop)
        servers = [nats_server.client_url]
    nc = await _connect_when_up(settings, servers, login)
    stack.push_async_callback(nc.close)
    store = JetStreamStore(nc, settings)
    gazetteer = Gazetteer(builtin() if settings.builtin_gazetteers else ())
    admin_token = await _prepare_store(store, settings, gazetteer)
    # A restarted node's accounts bucket may be electing its leader still: retried as above.
    prober_token = await _until_up(lambda: _bootstrap_prober(store, settings), (StoreUnavailable,),
                                   settings.startup_timeout_s, "waiting for the stream")
    signer = SigningKey.load_or_create(settings.signing_key_path)
    if webpush.enabled(settings):  # WEBPUSH: the VAPID key, made at first start
        webpush.vapid_key(settings)
    return Prepared(nats=nats_server, login=login, nc=nc, store=store, gazetteer=gazetteer,
                    admin_token=admin_token, prober_token=prober_token, signer=signer)


@asynccontextmanager
async def open_node(
    settings: Settings, *, clock: Callable[[], datetime] = utc_now,
    senders: dict[str, Sender] | None = None, routes_for: RoutesFor | None = None,
) -> AsyncIterator[Node]:
    """Start every part of a node; stop them in order on exit.

    `senders`: the push senders by channel (default: the configured channels'); `routes_for`:
    the CAP routes an alert of a status goes to (delivery/routes.py); see `_deliveries`.
    """
    async with AsyncExitStack() as stack:
        prepared = await prepare(settings, stack)
        nats_server, nc, store, gazetteer = prepared.nats, prepared.nc, prepared.store, prepared.gazetteer
        admin_token, prober_token, signer = prepared.admin_token, prepared.prober_token, prepared.signer
        ledger = Ledger(settings.data_dir / "ledger.sqlite3")
        stack.callback(ledger.close)
        live = LiveRegistry()
        pipeline = build_pipeline(
            store, live, default_lifetime_s=settings.default_lifetime_s,
            position_file=settings.data_dir / f"follower-position{settings.worker_suffix}.json", clock=clock,
            duplicates=Duplicates(window_s=settings.same_message_window_s, max_entries=settings.same_message_max_entries),
            verify_early=signed_by(signer),
        )
        covers = CoverWorker()
        stack.callback(covers.close)
        accept = Accept(
            store=store, ledger=ledger, signer=signer, node=settings.node_name,
            max_cap_bytes=settings.max_cap_bytes, max_skew_s=settings.max_clock_skew_s, clock=clock,
            bounds=alert_bounds(settings), covers=covers,
            retention=Retention(
                default_lifetime_s=settings.default_lifetime_s, after_expiry_s=settings.retention_after_expiry_s,
                probe_s=settings.probe_retention_s,
            ),
            prepared=pipeline.handoff.prepare,
            gate=Gate(settings.accept_slots, max_waiting=settings.accept_max_waiting),
            duplicates=pipeline.duplicates,
            gazetteer=gazetteer, territory_margin_m=settings.territory_margin_m,
            timed=lambda phase, seconds: services.metrics.accept_phase_seconds.labels(phase).observe(seconds),
            early=EarlyPolicy(after_s=settings.early_after_s, announce=store.announce,
                              known=pipeline.index.by_id.__contains__) if settings.early_after_s > 0 else None,
        )
        services = Services(
            settings=settings, store=store, accept=accept, pipeline=pipeline, live=live, signer=signer, clock=clock
        )
        services.progress = _progress(services, store.progress)
        services.feeds = open_feeds(services)  # FEEDS: before the follower runs (docs/feeds.md)
        # ROUTES: CAP forwarding (delivery/route_worker.py), started with the other tasks.
        services.route_worker = RouteWorker(
            settings=settings, js=store.jetstream, store=store, book=services.routes, status_records=store.route_status,
            status=services.route_status, signer=signer, routes=store.routes,
            finished=services.progress.finished,
        )
        # SOURCES: relayed CAP feeds (sources/poller.py), started with the other tasks.
        services.source_poller = SourcePoller(
            settings=settings, book=services.sources, status=services.source_status, records=store.source_status,
            accept=accept,
        )
        areas_mirror = await _start_areas_mirror(services)
        stack.callback(areas_mirror.cancel)
        services.edge = Edge.from_settings(settings, lambda code: services.metrics.refused.labels(code).inc())
        http_protocol, ws_protocol = edge_protocols(services.edge)
        proxies = [a.strip() for a in settings.trusted_proxies.split(",") if a.strip()]
        config = uvicorn.Config(
            make_app(services), log_config=None, access_log=False, lifespan="off",
            loop="none", http=http_protocol, ws=ws_protocol, timeout_graceful_shutdown=2,
            # Devices send nothing that matters: small messages, never compressed (no inflating).
            ws_max_size=settings.ws_max_message_bytes, ws_per_message_deflate=False,
            # X-Forwarded-* only from the configured proxies (uvicorn trusts 127.0.0.1 by default).
            proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
        )
        server = _Server(config)
        reconciler = Reconciler(
            store, ledger, interval_s=settings.reconcile_interval_s,
            # A ledger row younger than this may be an accept still publishing.
            settle_s=settings.publish_deadline_s + 2 * settings.publish_timeout_s,
            legacy_lifetime_s=settings.default_lifetime_s + settings.retention_after_expiry_s,
            # Retention removes a row's alert at its retain_until by the server's clock: leave
            # rows that close to it alone, whatever the skew between this node and the server.
            forget_before_s=settings.max_clock_skew_s + 60.0,
            clock=clock, on_republish=services.metrics.republished.inc,
        )
        services.senders = make_senders(settings) if senders is None else senders
        for sender in services.senders.values():
            stack.push_async_callback(sender.aclose)
        planner, dispatcher = _deliveries(services, store, routes_for)
        yield Node(
            settings=settings, services=services, nats=nats_server, admin_token=admin_token,
            server=server, ledger=ledger, reconciler=reconciler, prober_token=prober_token,
            planner=planner, dispatcher=dispatcher,
        )


def _deliveries(services: Services, store: JetStreamStore,
                routes_for: RoutesFor | None) -> tuple[Planner | None, Dispatcher | None]:
    """CORE: the planner runs on every node (CAP routes may be added at any time: the routes
    mirror says where each alert goes, `routes_for` in tests); dispatchers where there are
    push senders and dispatch_concurrency > 0 (a node with 0 plans but leaves sending to the
    others)."""
    s = services.settings
    if s.is_issuer_worker:  # WORKERS: no fan-out of any kind where issuers are answered
        return None, None
    planner = Planner(nc=store.nats, js=store.jetstream, settings=s, index=services.pipeline.index,
                      devices=services.device_cache, channels=tuple(services.senders),
                      progress=services.progress, routes_for=routes_for or services.routes.names_for)
    dispatcher = None
    if services.senders and s.dispatch_concurrency > 0:
        metrics = services.metrics
        dispatcher = Dispatcher(
            js=store.jetstream, settings=s, senders=services.senders, progress=services.progress,
            parts=Parts(devices=store.devices, index=services.pipeline.index,
                        public_url=lambda: services.settings.base_url),
            on_attempt=lambda channel, outcome: metrics.push_attempts.labels(channel, outcome).inc(),
            on_removed=lambda channel: metrics.registrations_removed.labels(channel).inc(),
        )
    return planner, dispatcher


async def run_node(node: Node, ready: Callable[[Node], None] | None = None) -> None:
    """Serve until the server is told to exit; every task runs in one TaskGroup."""
    s = node.settings
    shared = s.is_worker
    # WORKERS: the issuer worker listens for issuers only; the others for everyone but them.
    public = None if s.is_issuer_worker else bind(s.listen, shared=shared)
    issuer = bind(s.issuer_listen, shared=shared) if s.issuer_listen else None
    sockets = [sock for sock in (public, issuer) if sock is not None]
    # Port 0 in a setting: the port the system chose, for links, the prober and tests.
    if public is not None:
        node.settings = node.settings.replace(listen=f"{s.host}:{public.getsockname()[1]}")
    if issuer is not None:
        host, port = issuer.getsockname()[:2]
        node.settings = node.settings.replace(issuer_listen=f"{host}:{port}")
    node.services.settings = node.settings
    edge = node.services.edge
    if edge is not None and issuer is not None:
        edge.issuer_port = issuer.getsockname()[1]
    if shared:
        sockets.append(_worker_peers(node))
    try:
        await _run_tasks(node, sockets, ready)
    finally:
        for sock in sockets:
            sock.close()


def _worker_peers(node: Node) -> socket.socket:
    """WORKERS: this worker's private loopback listener (its canary's way in, and where the
    other workers read its readiness and metrics), and its view of the others."""
    s = node.settings
    private = bind("127.0.0.1:0", backlog=1024)
    port = private.getsockname()[1]
    node.private_url = f"http://127.0.0.1:{port}"
    node.peers = WorkerPeers(data_dir=s.data_dir, index=s.worker_index, count=s.worker_count,
                             interval_s=s.readiness_interval_s, timeout_s=max(1.0, s.check_timeout_s),
                             private_port=port)
    node.services.peers = node.peers
    return private


async def _exit_with_parent(node: Node, parent: int) -> None:
    """WORKERS: a worker whose supervisor is gone stops (its devices reconnect elsewhere)."""
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    log.warning("the supervisor is gone; this worker stops", extra={"worker": node.settings.worker_index})
    node.server.should_exit = True


async def _run_tasks(node: Node, sockets: list[socket.socket], ready: Callable[[Node], None] | None) -> None:
    health = _health(node)
    async with asyncio.TaskGroup() as tasks:
        pipeline = node.services.pipeline
        follower = tasks.create_task(pipeline.follower.run(), name="follow")
        early = (tasks.create_task(node.services.store.listen_early(pipeline.early.take, pipeline.early.listening),
                                   name="early-copies") if pipeline.early is not None else None)
        checkpoint = (
            tasks.create_task(pipeline.checkpoint.run(pipeline.follower.caught_up), name="follow-position")
            if pipeline.checkpoint is not None else None
        )
        checks = tasks.create_task(health.readiness.run(), name="readiness")
        shedder = (
            tasks.create_task(shed_when_unready(health.readiness.is_ready, node.services.live,
                                                after_s=node.settings.shed_after_s), name="shed")
            if node.settings.replicas > 1 and node.settings.shed_after_s > 0 else None
        )
        primary = node.settings.primary  # WORKERS: the node's single tasks run in worker 0
        reconciler = tasks.create_task(node.reconciler.run(), name="reconciler") if primary else None
        supervisor = tasks.create_task(node.nats.supervise(), name="nats") if node.nats else None
        http = tasks.create_task(node.server.serve(sockets=sockets), name="http")
        keepalive = tasks.create_task(
            node.services.live.keep_alive(node.settings.sse_keepalive_s, lambda: freshness(node.services)),
            name="keepalive",
        )
        store = node.services.store
        # The audience index: from its local snapshot if usable, then the bucket's stream.
        index = node.services.device_cache
        devices = tasks.create_task(mirror_with_snapshot(store, index, node.settings), name="device-feed")
        keeper = SnapshotKeeper(index, node.settings)
        snapshots = tasks.create_task(keeper.run(), name="device-snapshots") if primary else None
        # The lifecycle: submissions and drafts mirrored, expiries marked and audited.
        pending = tasks.create_task(store.pending.mirror(node.services.pending_cache), name="pending-mirror")
        sweep = tasks.create_task(sweep_forever(node.services), name="lifecycle-sweep")
        accounts = tasks.create_task(store.accounts.mirror(node.services.accounts.mirror), name="accounts-mirror")
        progress = tasks.create_task(node.services.progress.run(), name="delivery-progress")
        feeds = node.services.feeds  # FEEDS: the feed window recorded as it changes
        feed_window = tasks.create_task(feeds.run(), name="feed-window") if feeds is not None else None
        relay = tasks.create_task(health.relay.run(), name="canary-relay") if health.relay else None
        # ROUTES: the routes and their status mirrored, and every route's worker on this node.
        route_tasks = _start_routes(tasks, node.services)
        # SOURCES: the sources and their status mirrored, and this node's poller.
        route_tasks += _start_sources(tasks, node.services)
        peers = tasks.create_task(node.peers.run(), name="worker-peers") if node.peers else None
        parent = (tasks.create_task(_exit_with_parent(node, os.getppid()), name="worker-parent")
                  if node.settings.is_worker else None)
        while not node.server.started and not http.done():
            await asyncio.sleep(0.01)
        if node.settings.is_worker and node.server.started:
            register(node.settings.data_dir, node.settings.worker_index, node.private_url)
        if ready is not None and node.server.started:
            ready(node)
        # The prober reads this node through its own HTTP endpoint, so it starts once serving.
        prober = tasks.create_task(health.prober.run(), name=f"prober:{node.settings.node_name}") if health.prober else None
        heartbeat = tasks.create_task(health.heartbeat.run(), name="heartbeat") if primary else None
        # CORE: gateway deliveries once the follower runs (the planner waits for it).
        planner = tasks.create_task(node.planner.run(), name="planner") if node.planner else None
        dispatcher = tasks.create_task(node.dispatcher.run(), name="dispatch") if node.dispatcher else None
        while not (http.done() or node.server.should_exit):
            await asyncio.wait([http], timeout=0.05)
        # Stop probing first: the canary's open stream would hold the graceful shutdown.
        for task in (checks, prober, heartbeat, shedder, relay, peers, parent):
            if task is not None:
                task.cancel()
        # Open device streams would hold the graceful shutdown: end them; devices resume.
        node.services.live.close_all()
        await http
        # CORE: plan no more, let sends in flight finish (briefly; those left unacked are
        # redelivered to another node after ack_wait), then stop pulling.
        if planner is not None:
            planner.cancel()
        if dispatcher is not None and node.dispatcher is not None:
            await node.dispatcher.drain(timeout_s=2.0)
            dispatcher.cancel()
        follower.cancel()
        for task in (checkpoint, reconciler, snapshots, early):
            if task is not None:
                task.cancel()
        keepalive.cancel()
        devices.cancel()
        if primary and node.settings.device_snapshot_s > 0:  # a clean stop: the next start reads only what follows
            try:
                await keeper.save()
            except Exception as exc:
                log.warning("device snapshot at stop failed", extra={"error": repr(exc)[:200]})
        pending.cancel()
        sweep.cancel()
        accounts.cancel()
        progress.cancel()
        if feed_window is not None and feeds is not None:
            feed_window.cancel()
            feeds.stop()
        await _last_flush(node.services.progress)
        if health.prober is not None:
            await _forget_push_canaries(node.services, health.prober)
        for task in route_tasks:
            task.cancel()
        if supervisor is not None:
            supervisor.cancel()


async def _forget_push_canaries(services: Services, prober: Prober) -> None:
    """PROGRESS: a stopping node's push canaries leave the device bucket (straight from the
    store: the HTTP server is closing), so that no dispatcher keeps sending probes to a
    receiver that is gone until they expire."""
    for device_id in prober.push_canary_devices():
        try:
            async with asyncio.timeout(2.0):
                await services.store.devices.delete(device_id)
        except Exception as exc:  # it expires on its own; the next start deletes it too
            log.info("push canary device not deleted at stop", extra={"error": repr(exc)[:200]})


async def _last_flush(progress: Progress) -> None:
    """A clean stop writes the counts of its last second (a bounded wait: the store may be gone)."""
    try:
        async with asyncio.timeout(2.0):
            await progress.flush()
    except Exception as exc:
        log.warning("last progress flush failed", extra={"error": repr(exc)[:200]})
def _start_routes(tasks: asyncio.TaskGroup, services: Services) -> list[asyncio.Task[None]]:
    """ROUTES: the routes bucket and its status bucket mirrored, and the route worker."""
    worker = services.route_worker
    if worker is None:
        return []
    store = services.store
    mirrors = [
        tasks.create_task(store.routes.mirror(services.routes, first_pass=worker.loaded), name="routes-mirror"),
        tasks.create_task(store.route_status.mirror(services.route_status), name="route-status-mirror"),
    ]
    if services.settings.is_issuer_worker:  # WORKERS: the routes are posted from the other workers
        return mirrors
    return [*mirrors, tasks.create_task(worker.run(), name="route-worker")]


def _start_sources(tasks: asyncio.TaskGroup, services: Services) -> list[asyncio.Task[None]]:
    """SOURCES: the sources bucket and its status bucket mirrored, and the poller (one a
    node; the issuer worker polls nothing: issuers keep its loop to themselves)."""
    poller = services.source_poller
    if poller is None:
        return []
    store = services.store
    mirrors = [
        tasks.create_task(store.sources.mirror(services.sources), name="sources-mirror"),
        tasks.create_task(store.source_status.mirror(services.source_status), name="source-status-mirror"),
    ]
    if services.settings.is_issuer_worker:
        return mirrors
    return [*mirrors, tasks.create_task(poller.run(), name="source-poller")]


def stop_on_signals(node: Node) -> None:
    """Ctrl-C or SIGTERM: stop serving, then the rest stops in order."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(node.server, "should_exit", True))


async def serve(settings: Settings, ready: Callable[[Node], None] | None = None) -> None:
    """A node of one process until SIGTERM or Ctrl-C (`serve_workers` for several)."""
    async with open_node(settings) as node:
        stop_on_signals(node)
        await run_node(node, ready)
