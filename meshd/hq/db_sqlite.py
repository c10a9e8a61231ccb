"""SQLite backend of the HQ store: one file in WAL mode, driven from asyncio through one dedicated thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from meshd.errors import StoreError
from meshd.hq.db import (
    BUMP_COUNTER,
    INSERT_BROADCAST,
    INSERT_REPORT,
    SCHEMA_VERSION,
    SQLITE_TYPES,
    HQStore,
    check_version,
    counter_rows,
    statements,
)
from meshd.hq.records import BroadcastRecord, InsertOutcome, ReportRecord


class SQLiteStore(HQStore):
    """One SQLite file in WAL mode, driven from asyncio through one dedicated thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _call(self, func: Any, *args: Any) -> Any:
        if self._executor is None:
            raise StoreError("HQ store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshd-hq-db")
        try:
            self._conn = await self._call(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open_sync(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open HQ database {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk before MQTT messages are acked
            conn.execute("PRAGMA busy_timeout=30000")  # several workers may share the file
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                check_version(version, str(self.path))
                if version < 1:
                    for statement in statements(SQLITE_TYPES):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot prepare HQ database {self.path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("HQ store is not open")
        return self._conn

    async def commit(
        self,
        reports: Sequence[ReportRecord],
        *,
        broadcasts: Sequence[BroadcastRecord] = (),
        counters: Mapping[str, int] | None = None,
        worker: str = "hq",
    ) -> InsertOutcome:
        rows = [self._report_row(r, worker) for r in sorted(reports, key=lambda r: r.id)]
        brows = [
            (b.id, b.seq, b.received_at.timestamp(), json.dumps(b.body, ensure_ascii=False), b.envelope)
            for b in broadcasts
        ]
        result: InsertOutcome = await self._call(self._commit_sync, rows, brows, worker, dict(counters or {}))
        return result

    def _commit_sync(
        self, rows: list[tuple[Any, ...]], brows: list[tuple[Any, ...]], worker: str, counters: dict[str, int]
    ) -> InsertOutcome:
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                inserted = conn.executemany(INSERT_REPORT.replace("%s", "?"), rows).rowcount if rows else 0
                if brows:
                    conn.executemany(INSERT_BROADCAST.replace("%s", "?"), brows)
                outcome = InsertOutcome(inserted, len(rows) - inserted)
                conn.executemany(BUMP_COUNTER.replace("%s", "?"), counter_rows(worker, counters, outcome))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"HQ database write failed: {exc}") from None
        return outcome

    @staticmethod
    def _report_row(r: ReportRecord, worker: str) -> tuple[Any, ...]:
        return (
            r.id,
            r.origin,
            r.seq,
            r.kind,
            r.camp,
            r.provenance,
            r.age_s,
            r.time_quality,
            r.received_at.timestamp(),
            r.observed_est.timestamp(),
            r.observed_at.timestamp() if r.observed_at is not None else None,
            json.dumps(r.body, ensure_ascii=False, sort_keys=True),
            r.envelope,
            r.batch_index,
            r.gateway,
            worker,
        )

    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            try:
                return self._db().execute(sql.replace("%s", "?"), tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"HQ database read failed: {exc}") from None

        rows: list[tuple[Any, ...]] = await self._call(run)
        return rows

    def _ts_param(self, moment: dt.datetime) -> Any:
        return moment.timestamp()

    def _from_ts(self, value: Any) -> dt.datetime:
        return dt.datetime.fromtimestamp(float(value), dt.UTC)

    def _from_json(self, value: Any) -> dict[str, Any]:
        obj = json.loads(value)
        return obj if isinstance(obj, dict) else {}
