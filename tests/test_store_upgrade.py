"""Upgrades keep the store: a store written by schema version 1 opens and migrates with today's code.

The version-1 schema is frozen here as it shipped (not taken from MIGRATIONS[0]): the point is to catch an
edit to a shipped migration, which existing stores would never see. Also: a store from a newer meshd is
refused (not downgraded), and a corrupt file is set aside untouched.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshd.errors import StoreError
from meshd.store.health import ErrorRow, load_errors, read_offline, save_errors
from meshd.store.hub import HubStore
from meshd.store.schema import MIGRATIONS, SCHEMA_VERSION
from meshd.store.store import open_database, split_statements
from meshd.wire.envelope import Envelope, Kind

# Migration 1 exactly as meshd 0.1 shipped it.
V1_SCHEMA = """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- Envelopes waiting to travel toward an uplink. One row per envelope; a batch covers seq..seq+n_items-1.
    CREATE TABLE outbox (
        origin INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        n_items INTEGER NOT NULL DEFAULT 1,
        kind TEXT NOT NULL,
        priority INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        age_base INTEGER NOT NULL,      -- age in seconds when stored, plus dwell accounted so far
        stored_mono REAL NOT NULL,      -- monotonic clock of `session` when age_base was last settled
        session TEXT NOT NULL,
        local INTEGER NOT NULL DEFAULT 0,  -- originated at this hub (not relayed)
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,  -- monotonic time of `session`
        expires_at_age INTEGER NOT NULL,        -- drop when the envelope is older than this
        published INTEGER NOT NULL DEFAULT 0,   -- handed to this hub's uplink with a PUBACK
        handed_to INTEGER NOT NULL DEFAULT 0,   -- node that took custody (kept to recognise retransmissions)
        PRIMARY KEY (origin, seq)
    );
    CREATE INDEX outbox_order ON outbox (handed_to, priority DESC, seq);
    -- Every report id ever accepted (dedup across restarts); pruned below the replay window.
    CREATE TABLE seen (origin INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID;
    -- Report ids known to have reached HQ (custody), and whether we have told the mesh.
    CREATE TABLE delivered (
        origin INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        notified INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    -- Reports from field teams (never the clear text of a sealed report).
    CREATE TABLE inbound (
        origin INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        from_node INTEGER NOT NULL,
        language TEXT NOT NULL,
        kind TEXT NOT NULL,
        verified INTEGER NOT NULL,
        received_day TEXT NOT NULL,
        delivered_notified INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (origin, seq)
    );
    -- Next sequence number per origin this hub signs for; allocated in the same transaction as the outbox row.
    CREATE TABLE seq_counter (origin INTEGER PRIMARY KEY, next_seq INTEGER NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

ENVELOPE = Envelope(412, 7, Kind.NEEDS, b"\x08\x01", age_s=30).to_bytes()

# One row in every table of schema version 1, as a hub running meshd 0.1 would have left them.
V1_ROWS: dict[str, list[tuple[object, ...]]] = {
    "meta": [("session", "oldsession01"), ("alive_mono", "5000.0")],
    "outbox": [
        # origin, seq, n_items, kind, priority, envelope, age_base, stored_mono, session, local, attempts,
        # next_attempt, expires_at_age, published, handed_to (the column order of V1_SCHEMA)
        (412, 7, 1, "needs", 20, ENVELOPE, 30, 4000.0, "oldsession01", 1, 2, 4100.0, 259230, 0, 0),
        (413, 1, 3, "batch", 50, b"\x01\x02", 10, 4900.0, "oldsession01", 0, 0, 0.0, 259210, 1, 0),
    ],
    "seen": [(412, 7), (413, 1), (413, 2), (413, 3)],
    "delivered": [(413, 2, 1)],
    "inbound": [(412, 7, 0xA1B2C3D4, "ko", "needs", 1, "2025-01-01", 0)],
    "seq_counter": [(412, 8)],
    "counters": [("originated", 7), ("accepted", 3)],
}


def make_v1_store(path: Path) -> None:
    """A store at schema version 1 as meshd 0.1 left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        for statement in split_statements(V1_SCHEMA):
            conn.execute(statement)
        for table, rows in V1_ROWS.items():
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608 - fixed table names
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
    finally:
        conn.close()


def dump(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    """The table's rows, restricted to the columns version 1 had (later migrations may add columns)."""
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")][: len(V1_ROWS[table][0])]
    return sorted(conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall())  # noqa: S608 - fixed names


def test_shipped_migration_1_is_never_edited() -> None:
    # A store already at version 1 never runs migration 1 again: changes go into a new migration.
    assert split_statements(MIGRATIONS[0]) == split_statements(V1_SCHEMA)


def test_version_1_store_is_migrated_and_keeps_every_row(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 2, "this test needs a real migration after version 1"
    path = tmp_path / "meshd.db"
    make_v1_store(path)
    conn = open_database(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for table, rows in V1_ROWS.items():
            assert dump(conn, table) == sorted(rows), table
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT COUNT(*) FROM error_log").fetchone()[0] == 0  # migration 2
        assert conn.execute("SELECT from_node FROM outbox").fetchall() == [(0,), (0,)]  # migration 3
    finally:
        conn.close()
    # opening again is a no-op: migrations never run twice
    conn = open_database(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


async def test_migrated_store_works_for_the_hub(tmp_path: Path) -> None:
    """Beyond the rows surviving: the hub's own operations read them as before the upgrade."""
    path = tmp_path / "meshd.db"
    make_v1_store(path)
    clock = iter(float(t) for t in range(100, 10_000, 10))
    async with HubStore(path, clock=lambda: next(clock)) as store:
        # ages were settled across the restart up to the old session's last alive mark (5000)
        entry = await store.get(412, 7)
        assert entry is not None
        assert (entry.envelope, entry.attempts) == (ENVELOPE, 2)
        assert entry.age_s >= 30 + (5000 - 4000)
        assert await store.queue_depth() == {20: 1, 50: 3}
        assert await store.is_seen(413, 3)
        assert await store.is_delivered(413, 2)
        assert (await store.counters())["originated"] == 7
        # the sequence counter survived: a restart after an upgrade never reuses a seq
        env = await store.originate(412, lambda seq: Envelope(412, seq, Kind.NEEDS, b"\x08\x02"), priority=20)
        assert env.seq == 8
        await save_errors(store.db, [ErrorRow("k1", "boot", 1.0, "ERROR", "meshd", "after upgrade")])
        assert [e.message for e in await load_errors(store.db)] == ["after upgrade"]
    assert read_offline(path).schema_version == SCHEMA_VERSION


def test_store_from_a_newer_meshd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "meshd.db"
    make_v1_store(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1} is newer.*upgrade meshd"):
        open_database(path)
    assert path.read_bytes() == before  # nothing migrated, rewritten or moved
    with pytest.raises(StoreError, match="newer than this meshd"):
        read_offline(path)


def test_hub_refuses_a_newer_store_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "meshd.db"
    make_v1_store(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()

    async def start() -> None:
        async with HubStore(path):
            pass

    with pytest.raises(StoreError, match="version 99 is newer"):
        asyncio.run(start())


def test_corrupt_store_is_moved_aside_with_its_bytes_intact(tmp_path: Path) -> None:
    path = tmp_path / "meshd.db"
    garbage = bytes(range(256)) * 64  # not an SQLite file at all
    path.write_bytes(garbage)
    with pytest.raises(
        StoreError, match=r"is corrupt .* moved to .*meshd\.db\.corrupt-\d+ and nothing was overwritten"
    ):
        open_database(path)
    [aside] = tmp_path.glob("meshd.db.corrupt-*")
    assert aside.read_bytes() == garbage
    assert not path.exists()
    # starting again creates a fresh store; the set-aside file is left alone
    open_database(path).close()
    assert aside.read_bytes() == garbage


def test_damaged_pages_are_detected_and_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "meshd.db"
    make_v1_store(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")  # fold the WAL into the main file before damaging it
    conn.executemany("INSERT INTO seen VALUES (?, ?)", [(999, i) for i in range(5000)])
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, 3 * page):  # scribble over some b-tree pages
        data[offset + 8 : offset + 64] = b"\xff" * 56
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is corrupt"):
        open_database(path)
    [aside] = tmp_path.glob("meshd.db.corrupt-*")
    assert aside.read_bytes() == bytes(data)


def test_processes_creating_the_same_store_at_once_both_succeed(tmp_path: Path) -> None:
    """`meshd send` beside a starting `meshd run`: both may find a new file at version 0. The one that waits
    for the write lock must see the other's migration, not apply it again ("table meta already exists")."""
    script = (
        "import sys, time; from pathlib import Path; from meshd.store.store import open_database\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: pass\n"
        "open_database(Path(sys.argv[1])).close()\n"
    )
    for attempt in range(6):
        path = tmp_path / f"camp{attempt}.db"
        start = f"{time.time() + 1.0}"
        procs = [
            subprocess.Popen([sys.executable, "-c", script, str(path), start], stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=60)[1].decode() for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()
