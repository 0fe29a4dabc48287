"""The second copy: this node's append-only ledger of the alerts it accepted (SQLite WAL).

JetStream can still lose acknowledged writes when block files are corrupted, so each node
records each alert it accepts, durably, before answering the issuer; the reconciler
republishes from it what the stream lacks.

The row is written while the stream's publish is in flight (the two fsyncs overlap), so it
can exist before, or without, the stream's acknowledgement: the reconciler only looks at
rows older than the publish deadline, and an attempt the issuer was refused
(no acknowledgement in time, or another alert under the same identity) is `withdraw`n so
that it is never published behind the issuer's back.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tocsin.store.base import AlertId, Envelope

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    alert_id    TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    accepted_at TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    kid         TEXT NOT NULL,
    sig         TEXT NOT NULL,
    payload     BLOB NOT NULL,
    original    BLOB,
    node        TEXT
);
CREATE TRIGGER IF NOT EXISTS accepted_no_delete BEFORE DELETE ON accepted
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS accepted_no_update BEFORE UPDATE ON accepted
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS writable (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS withdrawn (alert_id TEXT PRIMARY KEY, at TEXT NOT NULL);
-- The node's own probes: written like an alert (same transaction, same fsync), but they are
-- no part of the record: only the last PROBES_KEPT stay.
CREATE TABLE IF NOT EXISTS probes (
    alert_id    TEXT PRIMARY KEY,
    accepted_at TEXT NOT NULL,
    payload     BLOB NOT NULL
);
"""

# Columns added after the first release; rows written before them hold NULL.
_ADDED = (
    ("expires_at", "TEXT"),
    # When the stream lets the alert go (epoch seconds): the reconciler's window.
    ("retain_until", "REAL"),
)
_INDEXES = """
CREATE INDEX IF NOT EXISTS accepted_retain_until ON accepted (retain_until);
CREATE INDEX IF NOT EXISTS accepted_accepted_at ON accepted (accepted_at) WHERE retain_until IS NULL;
"""

# Probe rows kept (a few hours of probes at one every 5 s).
PROBES_KEPT = 2048


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """A ledger row as the reconciler needs it: where it is, and until when it matters."""

    rowid: int
    alert_id: str
    accepted_at: datetime
    # Epoch seconds (for a row written before retention was recorded: accepted_at plus the
    # legacy lifetime the caller gave).
    retain_until: float


class Ledger:
    """Append-only: each alert this node accepted (seq 0: written before the stream's ack)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Every commit reaches the disk before the issuer is answered.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(accepted)")}
        for name, kind in _ADDED:
            if name not in columns:
                self._db.execute(f"ALTER TABLE accepted ADD COLUMN {name} {kind}")
        self._db.executescript(_INDEXES)
        self._lock = threading.Lock()
        # Reads for the reconciler go through their own connection: in WAL mode they never
        # wait for, nor hold up, the accept path's writes.
        self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._read_lock = threading.Lock()
        self._probe_writes = 0
        # The last write error, for readiness; cleared by the next successful write.
        self.last_error: str | None = None

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)
        self.last_error = None

    def failed(self, exc: BaseException) -> None:
        self.last_error = str(exc) or type(exc).__name__

    async def record(self, env: Envelope, original: bytes | None, *, probe: bool = False) -> bool:
        """Write an alert being published, durably; idempotent on its id.

        Returns whether this attempt owns the row: it wrote it, or took it back from an
        earlier attempt that was withdrawn. Only the owner may `withdraw` it. A probe goes
        to the probe table, through the same kind of durable write.
        """
        if probe:
            return await asyncio.to_thread(self._record_probe, env)
        return await asyncio.to_thread(self._record, env, original)

    def _record_probe(self, env: Envelope) -> bool:
        with self._lock:
            db = self._db
            inserted = db.execute(
                "INSERT OR IGNORE INTO probes (alert_id, accepted_at, payload) VALUES (?, ?, ?)",
                (env.alert_id, env.accepted_at.isoformat(), env.payload),
            ).rowcount
            self._probe_writes += 1
            if self._probe_writes % 256 == 0:
                db.execute("DELETE FROM probes WHERE rowid <= (SELECT max(rowid) FROM probes) - ?", (PROBES_KEPT,))
        self.last_error = None
        return bool(inserted)

    def _record(self, env: Envelope, original: bytes | None) -> bool:
        with self._lock, _transaction(self._db, "BEGIN IMMEDIATE") as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO accepted (alert_id, seq, accepted_at, issuer, kid, sig,"
                " payload, original, node, expires_at, retain_until)"
                " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env.alert_id, env.accepted_at.isoformat(), env.issuer, env.kid, env.sig,
                 env.payload, original, env.node,
                 env.expires_at.isoformat() if env.expires_at else None,
                 env.retain_until.timestamp() if env.retain_until else None),
            ).rowcount
            # A retry of a withdrawn attempt (same bytes) takes the row back.
            taken_back = db.execute(
                "DELETE FROM withdrawn WHERE alert_id = ?"
                " AND EXISTS (SELECT 1 FROM accepted WHERE alert_id = ? AND payload = ?)",
                (env.alert_id, env.alert_id, env.payload),
            ).rowcount
        self.last_error = None
        return bool(inserted or taken_back)

    async def withdraw(self, alert_id: AlertId, at: datetime, *, probe: bool = False) -> None:
        """The issuer was refused this alert: the reconciler must never publish this row.

        A refused probe's row is simply dropped: probes are not reconciled.
        """
        if probe:
            await asyncio.to_thread(self._write, "DELETE FROM probes WHERE alert_id = ?", (alert_id,))
            return
        await asyncio.to_thread(
            self._write, "INSERT OR REPLACE INTO withdrawn (alert_id, at) VALUES (?, ?)", (alert_id, at.isoformat())
        )

    def window(self, now: datetime, legacy_lifetime_s: float) -> tuple[list[Row], int]:
        """The rows the stream should still hold at `now`, oldest first, and the last rowid.

        By index: the cost follows the retention window, not the ledger's history. A row
        from before retention was recorded counts as kept `legacy_lifetime_s` after it was
        accepted.
        """
        legacy_since = datetime.fromtimestamp(now.timestamp() - legacy_lifetime_s, now.tzinfo).isoformat()
        with self._read_lock, _transaction(self._reader) as db:
            rows = db.execute(
                "SELECT rowid, alert_id, accepted_at, retain_until FROM accepted WHERE retain_until > ?"
                " UNION ALL SELECT rowid, alert_id, accepted_at, retain_until FROM accepted"
                " WHERE retain_until IS NULL AND accepted_at > ? ORDER BY 1",
                (now.timestamp(), legacy_since),
            ).fetchall()
            last = db.execute("SELECT coalesce(max(rowid), 0) FROM accepted").fetchone()[0]
        return [_row(r, legacy_lifetime_s) for r in rows], int(last)

    def after(self, rowid: int, legacy_lifetime_s: float, limit: int = 10_000) -> list[Row]:
        """The rows written after `rowid`, oldest first, at most `limit` (a watermark read)."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT rowid, alert_id, accepted_at, retain_until FROM accepted WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (rowid, limit),
            ).fetchall()
        return [_row(r, legacy_lifetime_s) for r in rows]

    def withdrawn_among(self, alert_ids: list[str]) -> set[str]:
        """Which of these rows were withdrawn (their issuer was refused)."""
        found: set[str] = set()
        with self._read_lock:
            for start in range(0, len(alert_ids), 500):
                chunk = alert_ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(str(r[0]) for r in self._reader.execute(
                    f"SELECT alert_id FROM withdrawn WHERE alert_id IN ({marks})", chunk))
        return found

    def envelope(self, alert_id: str) -> Envelope | None:
        """The envelope recorded for this id, to publish again."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT alert_id, accepted_at, issuer, kid, sig, payload, node, expires_at, retain_until"
                " FROM accepted WHERE alert_id = ?",
                (alert_id,),
            ).fetchone()
        if row is None:
            return None
        accepted_at = datetime.fromisoformat(row[1])
        return Envelope(
            alert_id=AlertId(row[0]), accepted_at=accepted_at, issuer=row[2],
            kid=row[3], sig=row[4], payload=bytes(row[5]), node=row[6] or "",
            expires_at=datetime.fromisoformat(row[7]) if row[7] else None,
            retain_until=datetime.fromtimestamp(row[8], accepted_at.tzinfo) if row[8] is not None else None,
        )

    def touch(self, at: str) -> None:
        """Write one row outside `accepted`, synchronously (readiness: can the ledger take writes?).

        Raises:
            sqlite3.Error: the ledger cannot take a write now (disk full, read-only, I/O error).
        """
        self._write("INSERT OR REPLACE INTO writable (id, at) VALUES (1, ?)", (at,))

    def count(self) -> int:
        with self._read_lock:
            row = self._reader.execute("SELECT count(*) FROM accepted").fetchone()
        return int(row[0])

    def probe_count(self) -> int:
        with self._read_lock:
            row = self._reader.execute("SELECT count(*) FROM probes").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._db.close()


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    db.execute(begin)
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _row(raw: tuple[object, ...], legacy_lifetime_s: float) -> Row:
    rowid, alert_id, accepted, retain = raw
    accepted_at = datetime.fromisoformat(str(accepted))
    if retain is None:
        retain = accepted_at.timestamp() + legacy_lifetime_s
    return Row(rowid=int(str(rowid)), alert_id=str(alert_id), accepted_at=accepted_at, retain_until=float(str(retain)))
