"""The second copy: this node's append-only ledger of the alerts it accepted (SQLite WAL).

JetStream can still lose acknowledged writes when block files are corrupted, so each node
records each alert it accepts, durably, before answering the issuer; the reconciler
republishes from it what the stream lacks.

The row is written while the stream's publish is in flight (the two fsyncs overlap), so it
can exist before, or without, the stream's acknowledgement: the reconciler only looks at
rows older than the publish deadline (`settled`), and an attempt the issuer was refused
(no acknowledgement in time, or another alert under the same identity) is `withdraw`n so
that it is never published behind the issuer's back.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
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
"""


class Ledger:
    """Append-only: each alert this node accepted (seq 0: written before the stream's ack)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Every commit reaches the disk before the issuer is answered.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        # The last write error, for readiness; cleared by the next successful write.
        self.last_error: str | None = None

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)
        self.last_error = None

    def failed(self, exc: BaseException) -> None:
        self.last_error = str(exc) or type(exc).__name__

    async def record(self, env: Envelope, original: bytes | None) -> bool:
        """Write an alert being published, durably; idempotent on its id.

        Returns whether this attempt owns the row: it wrote it, or took it back from an
        earlier attempt that was withdrawn. Only the owner may `withdraw` it.
        """
        return await asyncio.to_thread(self._record, env, original)

    def _record(self, env: Envelope, original: bytes | None) -> bool:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO accepted"
                    " (alert_id, seq, accepted_at, issuer, kid, sig, payload, original, node)"
                    " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?)",
                    (env.alert_id, env.accepted_at.isoformat(), env.issuer, env.kid, env.sig,
                     env.payload, original, env.node),
                ).rowcount
                # A retry of a withdrawn attempt (same bytes) takes the row back.
                taken_back = db.execute(
                    "DELETE FROM withdrawn WHERE alert_id = ?"
                    " AND EXISTS (SELECT 1 FROM accepted WHERE alert_id = ? AND payload = ?)",
                    (env.alert_id, env.alert_id, env.payload),
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self.last_error = None
        return bool(inserted or taken_back)

    async def withdraw(self, alert_id: AlertId, at: datetime) -> None:
        """The issuer was refused this alert: the reconciler must never publish this row."""
        await asyncio.to_thread(
            self._write, "INSERT OR REPLACE INTO withdrawn (alert_id, at) VALUES (?, ?)", (alert_id, at.isoformat())
        )

    def settled(self, before: datetime) -> list[str]:
        """The ids of the rows written before `before` and not withdrawn, oldest first.

        A younger row may belong to a publish still in flight, which the stream does not
        hold yet; the reconciler must not call it missing.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT alert_id, accepted_at FROM accepted"
                " WHERE alert_id NOT IN (SELECT alert_id FROM withdrawn) ORDER BY rowid"
            ).fetchall()
        return [str(alert_id) for alert_id, at in rows if datetime.fromisoformat(at) < before]

    def envelope(self, alert_id: str) -> Envelope | None:
        """The envelope recorded for this id, to publish again."""
        with self._lock:
            row = self._db.execute(
                "SELECT alert_id, accepted_at, issuer, kid, sig, payload, node FROM accepted WHERE alert_id = ?",
                (alert_id,),
            ).fetchone()
        if row is None:
            return None
        return Envelope(
            alert_id=AlertId(row[0]), accepted_at=datetime.fromisoformat(row[1]), issuer=row[2],
            kid=row[3], sig=row[4], payload=bytes(row[5]), node=row[6] or "",
        )

    def touch(self, at: str) -> None:
        """Write one row outside `accepted`, synchronously (readiness: can the ledger take writes?).

        Raises:
            sqlite3.Error: the ledger cannot take a write now (disk full, read-only, I/O error).
        """
        self._write("INSERT OR REPLACE INTO writable (id, at) VALUES (1, ?)", (at,))

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM accepted").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
