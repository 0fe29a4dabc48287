"""Settings: one frozen value, loaded once from TOCSIN_<FIELD> variables and passed down."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from tocsin.audience import DEFAULT_LIFETIME_S


class SettingsError(ValueError):
    """A TOCSIN_* variable is malformed; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    # Where the embedded nats-server keeps its store, plus the node's ledger and keys.
    data_dir: Path = Path("tocsin-data")
    listen: str = "127.0.0.1:8080"
    # Empty: start and supervise an embedded nats-server child. Otherwise a comma
    # separated list of servers of an existing cluster.
    nats_url: str = ""
    # Monitoring endpoint(s) of the NATS server(s), read at startup to check sync_interval.
    nats_monitor_url: str = ""
    node_name: str = "tocsin-1"
    # The public base URL of this node, used in links; derived from `listen` when empty.
    public_url: str = ""
    stream: str = "TOCSIN_ALERTS"
    replicas: int = 1
    # The stream refuses new alerts (discard: new) rather than dropping old ones; what it
    # holds is bounded by retention (below), so this is headroom, not history.
    stream_max_bytes: int = 2 * 1024**3
    # /readyz turns red when the stream holds more than this share of stream_max_bytes, so
    # that an operator hears of it before an issuer meets `507 store.full`.
    stream_usage_red: float = 0.9
    # An alert leaves the stream this long after it expires (per-message TTL); the ledger
    # keeps it for good. Devices replay only what has not expired, so this is the window in
    # which an identity stays taken and the reconciler can restore a lost alert.
    retention_after_expiry_s: float = 7 * 86400.0
    # A probe leaves the stream this long after it was published: long enough to be read
    # by every canary (probe_deadline_s) and replayed while it lives (probe_expires_s).
    probe_retention_s: float = 300.0
    # Publish dedupe window: a retry with the same message id within it is not stored twice.
    duplicate_window_s: float = 120.0
    publish_timeout_s: float = 2.0
    # A stream leader election takes about 5 s (RELIABILITY.md); publishes are retried with
    # the same message id for this long before the issuer gets a 503 with Retry-After.
    publish_deadline_s: float = 10.0
    # An alert whose durable publish is unacknowledged this long (an election) is also sent
    # to every node's live devices ahead of storage, without a cursor (pipeline/early.py);
    # the issuer is still answered only once it is stored. 0 sends no early copies.
    early_after_s: float = 0.5
    # NATS credentials (docs/security.md, NATS). The embedded server makes its own (a
    # random password in DATA_DIR/keys/nats-password); for an existing cluster, the user
    # and a file holding the password (never the password itself in the environment).
    nats_user: str = ""
    nats_password_file: str = ""
    # A CA file for nats+tls:// (tls://) servers: TLS between hosts (docs/cluster.md).
    nats_tls_ca_file: str = ""
    # A node refuses NATS that lets anonymous clients in on a non-loopback address (anyone
    # reaching it could write an admin token); true allows it, for a closed network only.
    nats_allow_anonymous: bool = False
    # nats-py pings every 120 s by default; a frozen server would go unnoticed for minutes.
    nats_ping_interval_s: float = 2.0
    nats_max_outstanding_pings: int = 2
    admin_token: str = ""
    # The deployment's Ed25519 key; every node of a cluster must use the same file.
    # Empty: DATA_DIR/keys/signing-key.pem, created on first start.
    signing_key_file: str = ""
    # The key set the node serves at /.well-known/tocsin/keys: its keys with validity dates
    # and the statements `tocsin keys rotate` signs. Empty: key-set.json beside the key.
    key_set_file: str = ""
    # How often the reconciler compares this node's ledger with the stream.
    reconcile_interval_s: float = 5.0
    # CAP documents larger than this are refused before any parsing.
    max_cap_bytes: int = 1024 * 1024
    # An alert as it would be stored (signed CAP with resolved areas, its cover and headers)
    # must fit one NATS message that every follower can read: nats-server's max_payload is
    # 1 MiB unless configured, and the stream's max_msg_size is 2 x max_cap_bytes. Larger:
    # 413 alert.stored-too-large, nothing stored. (The largest real alert in the tests
    # stores about 900 KB.)
    max_stored_bytes: int = 1024 * 1024
    # What one alert may hold, checked before its cover is computed (docs/security.md); an
    # issuer account's `limits` replace these. Real alerts in tests/data/cap/valid reach
    # 1,352 areas (8 languages x 169), 32 polygons, 2 circles, 41,009 points (one outline)
    # and 3.4 million km² (a cyclone's bounding box); two 8,000 km circles are 360 million.
    max_alert_areas: int = 2_000
    max_alert_polygons: int = 1_000
    max_alert_circles: int = 100
    max_alert_points: int = 100_000
    max_alert_area_km2: float = 10_000_000.0
    # Each reference of an Update or Cancel is looked up in the stream at accept (it must
    # name an alert of the issuer's organisation): a follow-up names a few; more is refused.
    max_alert_references: int = 100
    # A cover is computed once, at accept, in a child process: one that takes longer is
    # refused (422 policy.cover-too-slow) and its process ended. The 41,009-point outline
    # takes about 1 s on a loaded 2-core machine.
    cover_deadline_s: float = 10.0
    # Many issuers at once (pipeline/gate.py): this many accepts store at a time, the rest
    # wait and enter by priority (Actual Extreme first); beyond accept_max_waiting waiting,
    # 503 accept.busy. An accept costs ~2.5 ms of CPU (docs/performance.md), so 4 in flight
    # keep a node busy; more lets early Minor alerts take the places an Extreme one needs
    # (bench/burst_bench.py: Extreme to the last device ~100 ms with 4, ~200-260 ms with 16).
    accept_slots: int = 4
    accept_max_waiting: int = 1_000
    # The same message from another issuer organisation within this window is flagged as a
    # duplicate in the answer (pipeline/duplicates.py); at most this many remembered.
    same_message_window_s: float = 600.0
    same_message_max_entries: int = 10_000
    # An alert sent further than this in the future is refused (clock skew bound).
    max_clock_skew_s: float = 300.0
    # An alert without <expires> is shown and replayed for this long after it was sent.
    default_lifetime_s: float = DEFAULT_LIFETIME_S
    # Every keepalive carries this node's freshness (the age of its last delivered probe):
    # devices leave a node that stopped delivering, or went silent for three intervals, so
    # this bounds how long a device waits on a bad node (RELIABILITY.md invariant 6). At
    # 10,000 devices, 2.5 s costs 4,000 writes of about 110 bytes a second.
    sse_keepalive_s: float = 2.5
    # A device this far behind is dropped rather than buffered; it resumes by event id.
    device_queue_depth: int = 64
    # Device records (docs/security.md, "Devices"). Registration needs no token, so it is
    # bounded: one source (an IPv4 address or an IPv6 /64) registers at most this many
    # devices a minute, this node at most registrations_per_min in all (0: no limit);
    # the rest get 429 + Retry-After. Canaries (issuer token) are not counted.
    registrations_per_source_per_min: int = 30
    registrations_per_min: int = 1200
    # An admin API body (an organisation with its territory is the largest) is refused past this.
    max_admin_body_bytes: int = 1024 * 1024
    # How many sources a rate limit remembers; past that the least recently seen is forgotten.
    rate_limit_max_sources: int = 100_000
    # Distinct cells per device after normalisation (a few saved places, each a few cells).
    max_device_cells: int = 64
    # The device bucket (every node mirrors all of it in memory, docs/operations.md "Memory").
    device_bucket: str = "TOCSIN_DEVICES"
    # Its byte limit on each replica: about 350-400 bytes a device (bench/audience_bench.py:
    # 354 with 1-8 places), so about 1.4 million devices; when full, registration is refused
    # (507 device.registry-full) until records expire. Each replica reserves it on disk.
    device_bucket_max_bytes: int = 512 * 1024**2
    # The audit log's byte limit on each replica (it keeps every entry: about 400 bytes an
    # action, so about 2.5 million actions); when full, actions that must be audited are
    # refused with 503 until an operator raises it (docs/operations.md "The audit log").
    audit_max_bytes: int = 1024**3
    audit_stream: str = "TOCSIN_AUDIT"
    # A declarative accounts file (TOML, accounts/file.py) applied at every start; each change
    # it makes is audited as coming from it. Empty: none.
    accounts_file: str = ""
    # Lifecycle (docs/lifecycle.md). Alerts waiting for approval per issuer organisation;
    # past it a submission is refused (409 approval.too-many-pending) until some are decided.
    max_pending_per_org: int = 100
    # Drafts kept for the console per organisation, and how long one is kept unsaved.
    max_drafts_per_org: int = 50
    draft_keep_s: float = 30 * 86400.0
    # A rejected or expired submission stays readable (its state) this long, then leaves.
    decided_keep_s: float = 86400.0
    # How often each node looks for submissions that expired while pending.
    pending_sweep_s: float = 5.0
    # A correction ("false alert, disregard") stays live this long: a device offline for a
    # day still receives it on reconnect (replay serves what has not expired), with a margin.
    correction_lifetime_s: float = 48 * 3600.0
    # Reach previews (POST /api/v1/alerts/preview) one organisation may ask of one node a
    # minute; each costs a cover and a pass over the devices, and none counts against the
    # organisation's alert rate. Past it, 429 preview.rate-limited. 0: no limit.
    previews_per_org_per_min: int = 30
    # Named areas (docs/areas.md): the gazetteers tocsin ships (INSEE-DEP, INSEE-REG) are
    # loaded at start unless this is false; imported ones live in the areas bucket.
    builtin_gazetteers: bool = True
    areas_bucket: str = "TOCSIN_AREAS"
    # The largest GeoJSON file `tocsin areas import` may send (deployment admins only; one
    # import at a time per node, parsed off the loop: about ten times its size in memory
    # while it is checked). The full France départements file with overseas is 3.7 MB.
    max_areas_import_bytes: int = 8 * 1024**2
    # How far an alert's area may bleed past its organisation's territory (the UK tolerates
    # about 1.5 km): the territory is widened by this many metres before it is compared.
    territory_margin_m: float = 1500.0
    # A record that no connect renewed for this long leaves the bucket and every mirror.
    device_ttl_s: float = 30 * 86400.0
    # A connect renews the record only once it is older than this share of device_ttl_s:
    # a reconnect storm of every device is then not a storm of bucket writes.
    device_renew_fraction: float = 0.5
    # Every this many seconds, the audience index is written to data_dir/device-index/ (if
    # it changed) so that a restart reads only what followed; also at a clean stop. 0: never.
    device_snapshot_s: float = 600.0
    # -- Gateway deliveries (docs/delivery.md; each channel's page lists its own) ----------
    # The work queue: one message per device and per CAP route of each alert.
    deliveries_stream: str = "TOCSIN_DELIVERIES"
    deliveries_max_bytes: int = 1024**3
    # A dispatcher that holds a delivery this long without a word is taken as dead and the
    # delivery goes to another (a send's timeouts are well inside it).
    delivery_ack_wait_s: float = 30.0
    # The planner holding an alert this long without a word is taken as dead and another node
    # plans it. Short: the cluster plans one alert at a time, so every push and CAP delivery of
    # every later alert waits behind a node that died mid-plan (it says "in progress" after
    # each batch, so a long plan is not taken from a live planner). A batch whose commit takes
    # longer (an election: up to 10 s) lets another node plan the same alert meanwhile: the
    # work queue's message ids keep each delivery once, and the alert is still the only one
    # in flight, so order holds.
    planner_ack_wait_s: float = 5.0
    # Sends in flight at once on this node (all channels); 0 turns the dispatchers off.
    dispatch_concurrency: int = 64
    # One request's deadline at a gateway; a send that takes longer is a retry.
    push_timeout_s: float = 10.0
    # Full-jitter backoff between attempts: uniform in [0, min(max, base * 2**attempt)],
    # never less than a gateway's Retry-After; no attempt after the alert expires.
    delivery_backoff_base_s: float = 1.0
    delivery_backoff_max_s: float = 300.0
    # A gateway host that failed this many sends in a row is not tried for breaker_open_s
    # (then one send tries it again).
    breaker_failures: int = 5
    breaker_open_s: float = 30.0
    # Extra CA certificates (PEM) trusted for gateways and CAP routes, beside the system's
    # (a private gateway; the tests' fakes on loopback).
    push_ca_file: str = ""
    # Web Push (docs/webpush.md). The VAPID key (P-256, PEM); empty: DATA_DIR/keys/vapid.pem,
    # made at first start. The contact push services may write to (mailto: or https:).
    webpush_vapid_key_file: str = ""
    webpush_subject: str = "mailto:operator@localhost"
    # Push services a subscription's endpoint may name (host names, comma separated; a
    # leading "." admits subdomains). Anything else is refused at registration: the node
    # never posts to a host a stranger chose.
    webpush_hosts: str = "fcm.googleapis.com,updates.push.services.mozilla.com,.push.apple.com,.notify.windows.com"
    # FCM HTTP v1 (docs/mobile-push.md): the service-account JSON file; empty: FCM is off.
    fcm_service_account_file: str = ""
    fcm_url: str = "https://fcm.googleapis.com"
    # A registration token the prober's FCM canary sends to (a test device); empty: none.
    fcm_canary_token: str = ""
    # APNs (docs/mobile-push.md): the token-signing key (.p8), its key id and team id, and
    # the app's bundle id (apns-topic); empty key file: APNs is off.
    apns_key_file: str = ""
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""
    apns_url: str = "https://api.push.apple.com"
    # The app holds Apple's critical-alert entitlement: Extreme alerts go out as critical.
    apns_critical_alerts: bool = False
    apns_canary_token: str = ""
    # Delivery progress (docs/health.md, "Delivery progress"): the bucket of per-alert,
    # per-node counts is bounded in bytes, and each record leaves it this long after its
    # alert expires (so does each node's memory of the alert's counts and receipts).
    progress_bucket: str = "TOCSIN_PROGRESS"
    progress_max_bytes: int = 64 * 2**20
    progress_keep_s: float = 3600.0
    # Receipts (POST /api/v1/receipts) one device may send a minute on a node.
    receipts_per_device_per_min: int = 60
    # CAP forwarding (docs/cap-forwarding.md): each route is tested this often (a System
    # message); a route whose last test failed is named in /status and /readyz.
    route_link_test_s: float = 300.0
    # The routes bucket (one record per route) and beside it `<name>_STATUS` (each route's
    # last deliveries and link test, and the link-test lease).
    routes_bucket: str = "TOCSIN_ROUTES"
    # SOURCES (docs/sources.md): other authorities' CAP feeds this deployment relays. The
    # sources bucket (one record per source) and beside it `<name>_STATUS` (each source's
    # status and its poll lease).
    sources_bucket: str = "TOCSIN_SOURCES"
    # One GET (a feed or a linked CAP), connection to last byte; a slower answer is cut off.
    source_fetch_timeout_s: float = 10.0
    # One whole poll of one source (the feed and the CAPs it links); also its lease's life.
    source_poll_deadline_s: float = 60.0
    # A feed larger than this is cut off unread (the NWS national index is about 300 KB).
    source_max_feed_bytes: int = 2 * 2**20
    # Entries read from one feed; a feed with more is refused as a whole (not truncated:
    # which entries a source drops would be a guess).
    source_max_entries: int = 500
    # New entries one poll reads (a CAP fetched or embedded: each costs an accept); the rest
    # wait for the next poll.
    source_max_new_per_poll: int = 50
    # After a failure a source waits base x 2^(errors-1), at most max, jittered by up to half.
    source_backoff_base_s: float = 30.0
    source_backoff_max_s: float = 3600.0
    # This many failures in a row open the source's circuit: no poll for breaker_open_s,
    # then one trial poll (half-open) that closes it again or opens it for another period.
    source_breaker_errors: int = 5
    source_breaker_open_s: float = 900.0
    # Sources one node polls at the same time (each in its own task, under its deadline).
    source_concurrency: int = 8
    # Restart back-off for the embedded nats-server child.
    nats_restart_delay_s: float = 0.5
    # In a cluster, a node red for this long closes its device streams so that they resume
    # on a node that can deliver (0: never). Off by default: when every node turns red at
    # once (F06/F12 runs), every node shed its devices and delivery stopped everywhere; it
    # needs a rule that another node is ready first (issue 3 note).
    shed_after_s: float = 0.0
    # How long a starting node waits for NATS to answer before giving up.
    startup_timeout_s: float = 60.0
    # The prober: a System alert through the public issuer API every interval, read back by
    # a canary device on this node (docs/health.md). 0 turns it off (and /readyz stays 503).
    # Every 2 s: a device leaves a node whose canary is two intervals late (4 s), learns it
    # within a keepalive (2.5 s) and moves, all within the 10 s of RELIABILITY.md invariant 6.
    # With retention, a node's probes hold about 150 messages of the stream at any time.
    probe_interval_s: float = 2.0
    # Probes expire soon: the follower prunes them, and a reconnecting canary replays few.
    probe_expires_s: float = 30.0
    # A probe not displayed this long after it was issued counts as lost.
    probe_deadline_s: float = 10.0
    # Readiness checks run in the background this often, each under its own deadline.
    readiness_interval_s: float = 1.0
    check_timeout_s: float = 2.0
    # A follower behind the stream, or a consumer at its max ack pending, this long is stalled.
    stall_s: float = 5.0
    # /readyz fails when the data directory has less free space than this.
    disk_min_free_mb: float = 256.0
    # Dead man's switch: comma separated URLs POSTed every heartbeat_interval_s while this
    # node's canary is fresh; a bare base URL gets /heartbeat/NODE_NAME appended.
    watchdog_urls: str = ""
    heartbeat_interval_s: float = 10.0
    log_level: str = "INFO"
    # A second listener (HOST:PORT) for issuers, with its own connection budget, so that no
    # flood of anonymous device connections crowds issuers out. Empty: issuers share `listen`.
    # Expose it only to issuers (firewall); it serves the same API.
    issuer_listen: str = ""
    # The edge (docs/security.md, "The edge"). Request line and headers together at most
    # this many bytes (431); httptools' cost grows with header size, so this is checked as
    # the bytes arrive, before they are parsed further.
    max_header_bytes: int = 16 * 1024
    max_headers: int = 64
    # A request's headers must arrive this long after it began (slowloris), its body this
    # long after its headers; otherwise 408 and the connection closes.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    # Open connections on the public listener (503 request.node-full beyond); capped at
    # the process's open-file limit less a reserve for NATS, the ledger and the disk.
    max_connections: int = 10_000
    # Open connections from one address (429 request.source-full beyond). Phones behind a
    # carrier-grade NAT share an address: raise it where they do. Trusted proxies are exempt.
    max_connections_per_source: int = 500
    # The issuer listener's own budget (when issuer_listen is set).
    max_issuer_connections: int = 256
    # Streams (SSE or WebSocket) one device token may hold open at once.
    max_streams_per_device: int = 4
    # Devices send nothing that matters over a WebSocket: a message larger than this closes
    # it (1009). Compression is never negotiated, so nothing is ever inflated.
    ws_max_message_bytes: int = 4096
    # Comma separated addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto
    # name the client; empty: the socket's peer is the client, and those headers are ignored.
    trusted_proxies: str = ""
    # Worker processes (docs/workers.md): `tocsin serve --workers N` runs N processes that
    # share the listening ports, each with its own follower and live devices; 0: one per core
    # available. 1: the node is one process.
    workers: int = 1
    # Set by the supervisor in each worker's environment, never by hand: the worker's number
    # (0 keeps the node's single tasks: the reconciler, the device snapshots, the heartbeat)
    # and how many workers the node runs. -1: not a worker.
    worker_index: int = -1
    worker_count: int = 0
    # "issuer": the worker that alone serves TOCSIN_ISSUER_LISTEN (when it is set), holding
    # no device and sending nothing to gateways, so that no fan-out delays an issuer.
    worker_role: str = ""
    # FEEDS: the CAP Atom feeds (docs/feeds.md). An alert stays in the feed this long after
    # it expired or an Update or Cancel superseded it (aggregators ask for 24-48 h); at most
    # TOCSIN_RETENTION_AFTER_EXPIRY_S, so that every linked CAP is still in the stream.
    feed_window_s: float = 24 * 3600.0
    # A feed's bytes at most (aggregators refuse about a megabyte): the oldest entries go.
    feed_max_bytes: int = 900_000
    # Entries the window holds at most (its memory); past it, the one due out first goes.
    feed_max_entries: int = 2_000
    # Cache-Control max-age of a feed: how stale a cache in between may serve it.
    feed_max_age_s: int = 30
    # The feeds' title (and author name); an area feed adds the area's name.
    feed_title: str = "Public alerts"

    # FPAS: the FOSS Public Alert Server client API (docs/fpas.md). The push servers
    # (UnifiedPush distributors, Web Push services) a subscription's endpoint may name:
    # host names, comma separated, a leading "." admitting subdomains; empty: the FPAS API
    # takes no subscription (it still lists alerts). A node posts to no host a stranger chose.
    fpas_push_hosts: str = ""
    # What /config/server_status names as the operator, its privacy notice and terms.
    fpas_operator: str = ""
    fpas_privacy_notice: str = ""
    fpas_terms_of_service: str = ""
    # The alert ids /alert/all and /alert/area answer at most (the newest first).
    fpas_max_listed: int = 500
    # FPAS subscriptions this deployment holds at most (as this node's mirror counts them);
    # past it a subscription is refused until unused ones expire.
    fpas_max_subscriptions: int = 100_000

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def signing_key_path(self) -> Path:
        return Path(self.signing_key_file) if self.signing_key_file else self.data_dir / "keys" / "signing-key.pem"

    @property
    def key_set_path(self) -> Path:
        return Path(self.key_set_file) if self.key_set_file else self.signing_key_path.with_name("key-set.json")

    @property
    def nats_password_path(self) -> Path:
        return Path(self.nats_password_file) if self.nats_password_file else self.data_dir / "keys" / "nats-password"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.listen}"

    @property
    def is_worker(self) -> bool:
        """One of the node's worker processes (not the whole node, nor its supervisor)."""
        return self.worker_index >= 0

    @property
    def worker_suffix(self) -> str:
        """What tells this worker's own files and counts apart ("" for a node of one process)."""
        return f"-w{self.worker_index}" if self.is_worker else ""

    @property
    def is_issuer_worker(self) -> bool:
        """The worker that serves only the issuer listener (docs/workers.md)."""
        return self.is_worker and self.worker_role == "issuer"

    @property
    def primary(self) -> bool:
        """This process runs the node's single tasks (a node of one process, or worker 0)."""
        return self.worker_index <= 0

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, config: Path | None = None, **overrides: Any
    ) -> Settings:
        """Defaults, then the TOML `config` file (or TOCSIN_CONFIG), then TOCSIN_<FIELD>
        variables, then `overrides` (CLI flags): each wins over the one before."""
        env = os.environ if environ is None else environ
        path = config or (Path(env["TOCSIN_CONFIG"]) if env.get("TOCSIN_CONFIG") else None)
        values: dict[str, Any] = _from_file(cls, path) if path else {}
        for f in fields(cls):
            name = f"TOCSIN_{f.name.upper()}"
            if name in env:
                values[f.name] = _convert(name, env[name], f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        _check(settings)
        return settings


def _from_file(cls: type[Settings], path: Path) -> dict[str, Any]:
    """Settings from a TOML file whose keys are the field names (`node_name = "a"`)."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    known = {f.name: f.default for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key not in known:
            raise SettingsError(f"config file {path}: unknown setting {key!r}")
        values[key] = _convert(f"{path}: {key}", str(value).lower() if isinstance(value, bool) else str(value), known[key])
    return values


def _convert(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {type(default).__name__}") from None


def _check(settings: Settings) -> None:
    for name, value in (("TOCSIN_LISTEN / --listen", settings.listen), ("TOCSIN_ISSUER_LISTEN", settings.issuer_listen)):
        host, sep, port = value.rpartition(":")
        if value and (not sep or not host or not port.isdigit()):
            raise SettingsError(f"{name} must be HOST:PORT, got {value!r}")
    if not settings.listen:
        raise SettingsError("TOCSIN_LISTEN / --listen must be HOST:PORT, got ''")
    if settings.nats_url and not settings.nats_monitor_url:
        raise SettingsError(
            "TOCSIN_NATS_URL is set but TOCSIN_NATS_MONITOR_URL is not: tocsin must read the server's "
            "/varz to check sync_interval: always before it serves"
        )
    if not 0 < settings.stream_usage_red <= 1:
        raise SettingsError(f"TOCSIN_STREAM_USAGE_RED must be in (0, 1], got {settings.stream_usage_red}")
    if settings.probe_retention_s < settings.probe_expires_s + settings.probe_deadline_s:
        raise SettingsError(
            "TOCSIN_PROBE_RETENTION_S must be at least TOCSIN_PROBE_EXPIRES_S + TOCSIN_PROBE_DEADLINE_S: "
            "a probe must stay in the stream while it can be read"
        )
    if not 0 < settings.device_renew_fraction < 1:
        raise SettingsError(f"TOCSIN_DEVICE_RENEW_FRACTION must be in (0, 1), got {settings.device_renew_fraction}")
    if settings.device_snapshot_s < 0:
        raise SettingsError(f"TOCSIN_DEVICE_SNAPSHOT_S must be 0 (never) or positive, got {settings.device_snapshot_s}")
    if settings.device_ttl_s <= 0 or settings.max_device_cells < 1:
        raise SettingsError("TOCSIN_DEVICE_TTL_S and TOCSIN_MAX_DEVICE_CELLS must be positive")
    if not 0 <= settings.territory_margin_m <= 100_000:
        raise SettingsError(f"TOCSIN_TERRITORY_MARGIN_M must be within 0..100000, got {settings.territory_margin_m}")
    if not 0 < settings.max_areas_import_bytes <= 256 * 1024**2:
        raise SettingsError(f"TOCSIN_MAX_AREAS_IMPORT_BYTES must be within 1..268435456, got {settings.max_areas_import_bytes}")
    if settings.delivery_ack_wait_s < 2 * settings.push_timeout_s:
        raise SettingsError("TOCSIN_DELIVERY_ACK_WAIT_S must be at least twice TOCSIN_PUSH_TIMEOUT_S: "
                            "a send in flight must not be handed to another dispatcher")
    if not 0 <= settings.early_after_s <= settings.publish_deadline_s:
        raise SettingsError(f"TOCSIN_EARLY_AFTER_S must be within 0..TOCSIN_PUBLISH_DEADLINE_S "
                            f"({settings.publish_deadline_s:g}), got {settings.early_after_s}")
    if not 1 <= settings.planner_ack_wait_s <= 3600:
        raise SettingsError(f"TOCSIN_PLANNER_ACK_WAIT_S must be within 1..3600, got {settings.planner_ack_wait_s}")
    if settings.dispatch_concurrency < 0 or settings.breaker_failures < 1:
        raise SettingsError("TOCSIN_DISPATCH_CONCURRENCY must be 0 or more, TOCSIN_BREAKER_FAILURES 1 or more")
    if settings.worker_role not in ("", "issuer") or (settings.worker_role and not settings.issuer_listen):
        raise SettingsError(f"TOCSIN_WORKER_ROLE must be empty or issuer (with TOCSIN_ISSUER_LISTEN), "
                            f"got {settings.worker_role!r}; the supervisor sets it")
    if not 0 <= settings.workers <= 256:
        raise SettingsError(f"TOCSIN_WORKERS / --workers must be within 0..256 (0: one per core), got {settings.workers}")
    if settings.worker_index >= 0 and not settings.worker_index < settings.worker_count:
        raise SettingsError(f"TOCSIN_WORKER_INDEX {settings.worker_index} outside 0..TOCSIN_WORKER_COUNT-1 "
                            f"({settings.worker_count}); the supervisor sets them")
    if settings.replicas not in (1, 3, 5):
        raise SettingsError(f"TOCSIN_REPLICAS must be 1, 3 or 5, got {settings.replicas}")
    _check_feeds(settings)


def _check_feeds(settings: Settings) -> None:
    """FEEDS: the feed settings (docs/feeds.md)."""
    if not 0 <= settings.feed_window_s <= settings.retention_after_expiry_s:
        raise SettingsError(f"TOCSIN_FEED_WINDOW_S must be within 0..TOCSIN_RETENTION_AFTER_EXPIRY_S "
                            f"({settings.retention_after_expiry_s:g}): a feed links CAP the stream still holds; "
                            f"got {settings.feed_window_s:g}")
    if not 10_000 <= settings.feed_max_bytes <= 16 * 1024**2:
        raise SettingsError(f"TOCSIN_FEED_MAX_BYTES must be within 10000..16777216, got {settings.feed_max_bytes}")
    if not 1 <= settings.feed_max_entries <= 100_000 or not 0 <= settings.feed_max_age_s <= 86_400:
        raise SettingsError("TOCSIN_FEED_MAX_ENTRIES must be within 1..100000, TOCSIN_FEED_MAX_AGE_S within 0..86400")
    if not settings.feed_title.strip() or len(settings.feed_title) > 200:
        raise SettingsError("TOCSIN_FEED_TITLE must be a text of 1 to 200 characters")
