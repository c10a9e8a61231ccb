"""What `meshd status` reads from the store: the persisted error log, and a read-only look at a stopped hub.

The error log (schema version 2) keeps the newest warnings and errors across restarts, so a technician can
see why a hub restarted, or why it keeps failing to start, even while the daemon is down. Times are
CLOCK_MONOTONIC readings tagged with the kernel boot id: within one boot they give true ages, across a
reboot they mean nothing (no RTC), and the wall clock is never used.

`read_offline()` opens the file read-only (no integrity check, no migration, no writes, no lock held for
longer than a few queries), so it is safe to run next to a starting daemon.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshd.errors import StoreError
from meshd.store.schema import SCHEMA_VERSION
from meshd.store.store import Database

ERROR_LOG_KEEP = 50  # rows kept in error_log; older ones are deleted as new ones arrive
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """The kernel's id of this boot ("" where unknown): monotonic times compare only within one boot."""
    try:
        return _BOOT_ID_FILE.read_text(encoding="ascii").strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class ErrorRow:
    key: str
    boot: str
    mono: float  # CLOCK_MONOTONIC of `boot` at the latest occurrence
    level: str
    logger: str
    message: str
    repeats: int = 1

    def age_s(self, *, boot: str, mono_now: float) -> float | None:
        """Seconds since the latest occurrence, or None when it happened in an earlier boot."""
        if not boot or boot != self.boot or mono_now < self.mono:
            return None
        return mono_now - self.mono


def _save(conn: sqlite3.Connection, rows: Sequence[ErrorRow], keep: int) -> None:
    conn.executemany(
        "INSERT INTO error_log (key, boot, mono, level, logger, message, repeats) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET mono = excluded.mono, message = excluded.message, repeats = excluded.repeats",
        [(r.key, r.boot, r.mono, r.level, r.logger, r.message, r.repeats) for r in rows],
    )
    conn.execute(
        "DELETE FROM error_log WHERE rowid NOT IN (SELECT rowid FROM error_log ORDER BY rowid DESC LIMIT ?)", (keep,)
    )


def _load(conn: sqlite3.Connection, limit: int) -> list[ErrorRow]:
    # Newest first by insertion; an entry updated by a repeat keeps its place (rowid) but not its time.
    rows = conn.execute(
        "SELECT key, boot, mono, level, logger, message, repeats FROM error_log ORDER BY rowid DESC LIMIT ?", (limit,)
    ).fetchall()
    return [ErrorRow(str(k), str(b), float(m), str(lv), str(lg), str(msg), int(n)) for k, b, m, lv, lg, msg, n in rows]


async def save_errors(db: Database, rows: Sequence[ErrorRow], *, keep: int = ERROR_LOG_KEEP) -> None:
    """Insert or update these entries and keep only the newest `keep` rows; durable when this returns."""
    if rows:
        await db.write(lambda conn: _save(conn, rows, keep))


async def load_errors(db: Database, *, limit: int = ERROR_LOG_KEEP) -> list[ErrorRow]:
    """The persisted entries, newest first."""
    return await db.read(lambda conn: _load(conn, limit))


@dataclass
class OfflineStatus:
    """What the store says about a hub that is not running."""

    path: Path
    schema_version: int
    queue_depth: dict[int, int] = field(default_factory=dict)  # priority -> reports waiting
    oldest_age_s: int | None = None  # as of the last "alive" mark: the time since then is unknown
    counters: dict[str, int] = field(default_factory=dict)
    reports_today: int = 0
    errors: list[ErrorRow] = field(default_factory=list)

    def to_json(self, *, boot: str, mono_now: float) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "queue_depth": {str(p): n for p, n in sorted(self.queue_depth.items(), reverse=True)},
            "oldest_age_s": self.oldest_age_s,
            "counters": dict(sorted(self.counters.items())),
            "reports_today": self.reports_today,
            "errors": [
                {
                    "level": e.level,
                    "logger": e.logger,
                    "message": e.message,
                    "repeats": e.repeats,
                    "age_s": None if (age := e.age_s(boot=boot, mono_now=mono_now)) is None else int(age),
                }
                for e in self.errors
            ],
        }


def read_offline(path: Path, *, errors_limit: int = 10) -> OfflineStatus:
    """Read queue depth, ages, counters and the error log without changing anything in the file."""
    try:
        path.stat()
    except FileNotFoundError:
        raise StoreError(f"there is no store at {path}: this hub has never run with this configuration") from None
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror} (try sudo)") from None
    # Never create a file next to the store: `sudo meshd status` would leave a root-owned -shm behind that
    # the service user cannot open. After a clean stop there is no -wal (all data is in the main file) and
    # `immutable=1` reads without any side file; after a crash -wal and -shm exist and a read-only
    # connection uses them as they are.
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    mode = "mode=ro" if wal.is_file() and shm.is_file() else "immutable=1"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=2.0)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read store {path}: {exc} (is it readable by this user? try sudo)") from None
    try:
        return _read(conn, path, errors_limit)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read store {path}: {exc}") from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, path: Path, errors_limit: int) -> OfflineStatus:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    status = OfflineStatus(path, version)
    if version == 0:
        return status  # created but never migrated: nothing in it
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {version}, newer than this meshd understands ({SCHEMA_VERSION})"
        )
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    session, alive = meta.get("session"), meta.get("alive_mono")
    alive_mono = float(alive) if alive is not None else None
    # The same settlement HubStore does at start: dwell counted up to the last alive mark of the last session.
    for priority, n_items in conn.execute(
        "SELECT priority, SUM(n_items) FROM outbox WHERE handed_to = 0 GROUP BY priority"
    ).fetchall():
        status.queue_depth[int(priority)] = int(n_items)
    row = conn.execute(
        "SELECT MAX(age_base + CASE WHEN session = ? AND ? IS NOT NULL THEN MAX(0, CAST(? - stored_mono AS INTEGER))"
        " ELSE 0 END) FROM outbox WHERE handed_to = 0",
        (session, alive_mono, alive_mono),
    ).fetchone()
    status.oldest_age_s = None if row is None or row[0] is None else int(row[0])
    status.counters = {str(n): int(v) for n, v in conn.execute("SELECT name, value FROM counters").fetchall()}
    today = dt.datetime.now(dt.UTC).date().isoformat()  # only labels "today"; a wrong clock mislabels it
    status.reports_today = int(
        conn.execute("SELECT COUNT(*) FROM inbound WHERE received_day = ?", (today,)).fetchone()[0]
    )
    if version >= 2:
        status.errors = _load(conn, errors_limit)
    return status
