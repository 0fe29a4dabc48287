"""The second copy: this node's append-only ledger of the alerts it accepted (SQLite WAL).

JetStream can still lose acknowledged writes when block files are corrupted, so each node
records what the stream acknowledged, durably, before answering the issuer; the
reconciler republishes from it what the stream lacks.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from datetime import datetime

from tocsin.store.base import AlertId, Envelope, Stored

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
"""


class Ledger:
    """Append-only: each alert this node had acknowledged by the stream, with its seq."""

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

    async def record(self, stored: Stored, original: bytes | None) -> None:
        """Write an acknowledged alert with its seq (idempotent on its id)."""
        env = stored.envelope
        await asyncio.to_thread(
            self._write,
            "INSERT OR IGNORE INTO accepted"
            " (alert_id, seq, accepted_at, issuer, kid, sig, payload, original, node)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (env.alert_id, stored.seq, env.accepted_at.isoformat(), env.issuer, env.kid, env.sig,
             env.payload, original, env.node),
        )

    def ids(self) -> list[str]:
        """Every alert id this node acknowledged, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT alert_id FROM accepted ORDER BY rowid").fetchall()
        return [str(r[0]) for r in rows]

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
