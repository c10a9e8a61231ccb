"""The hub's durable store: one SQLite file in WAL mode, one writer thread, group commit.

Only this package writes SQL. Every write is a function run on the single database thread; the writer
task gathers whatever writes are waiting, runs each in its own SAVEPOINT (one failing write never takes
the others down) and commits them together with `synchronous=FULL`, so a burst of N reports costs one
fsync, and a write's future resolves only after its commit is on disk: callers may acknowledge then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from meshd.errors import StoreError
from meshd.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_GROUP = 512
Op = Callable[[sqlite3.Connection], Any]


def _integrity_ok(conn: sqlite3.Connection) -> str:
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    return "ok" if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:5])


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed), check integrity, set WAL and migrate. A corrupt file is set aside, never
    overwritten: it is renamed to `<name>.corrupt-<time>` and a clear error is raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from None
    try:
        verdict = _integrity_ok(conn)
    except sqlite3.OperationalError as exc:
        # busy or locked is not corruption: never move a healthy store aside for it
        conn.close()
        raise StoreError(f"cannot open store {path}: {exc} (is another meshd using it?)") from None
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict != "ok":
        conn.close()
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        path.rename(aside)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        raise StoreError(
            f"store {path} is corrupt ({verdict}); it was moved to {aside} and nothing was overwritten. "
            "Start again to create a fresh store; keep the old file for recovery."
        )
    try:
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk (DESIGN.md section 3)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot prepare store {path}: {exc}") from None
    return conn


def _enable_wal(conn: sqlite3.Connection, limit_s: float = 10.0) -> None:
    """Switch to WAL. SQLite does not run the busy handler for this switch, so a second process opening a
    new store at the same moment (`meshd send` beside a starting `meshd run`) gets "database is locked"
    at once; the mode is persistent, so wait until one of them has switched it."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
        else:
            if mode.lower() == "wal":
                return
            # the file system cannot do WAL (some network mounts): say so rather than run without it
            raise sqlite3.OperationalError(f"journal mode stays {mode!r}; meshd needs WAL (use a local disk)")
        time.sleep(0.02)  # opening happens once, before the store's writer thread starts


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store schema version {version} is newer than this meshd understands ({SCHEMA_VERSION}); "
            "upgrade meshd instead of downgrading"
        )


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in one transaction; returns the resulting version."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    _refuse_newer(version)
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process (`meshd send` beside `meshd run`) may have migrated while we waited for the
            # write lock: read the version again under it, or both would apply the same migration.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                conn.execute("COMMIT")
                break
            for statement in split_statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version += 1
        log.info("store migrated to schema version %d", version)
    _refuse_newer(version)  # a newer meshd may have migrated it while we waited
    return version


def split_statements(script: str) -> list[str]:
    """Split a migration script into statements (comments may contain semicolons)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


class Database:
    """An SQLite connection driven from asyncio: reads and grouped writes on one dedicated thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshd-store")
        self._conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[tuple[Op, asyncio.Future[Any]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, open_database, self.path)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="meshd-store-writer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            # drain: every write queued before close is committed
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._conn is not None:
            conn = self._conn
            self._conn = None
            loop = asyncio.get_running_loop()

            def _close() -> None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.close()

            await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, conn)
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a transaction; returns once it is committed to disk."""
        if self._writer is None:
            raise StoreError("store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((fn, future))
        return await future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run_group, [op for op, _ in group])
            except sqlite3.Error as exc:
                error = StoreError(f"store commit failed: {exc}")
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                    self._queue.task_done()
                continue
            for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                if not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
            for _ in group:
                self._queue.task_done()

    def _run_group(self, ops: list[Op]) -> list[tuple[bool, Any]]:
        conn = self.conn
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    value = op(conn)
                except Exception as exc:  # noqa: BLE001 - handed to that write's caller, the group goes on
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if isinstance(exc, sqlite3.Error):
                        exc = StoreError(f"store write failed: {exc}")
                    outcomes.append((False, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.writes += len(ops)
        return outcomes


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]
