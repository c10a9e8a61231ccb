"""PostgreSQL backend of the HQ store: psycopg 3, one async connection per worker process."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from meshd.errors import StoreError
from meshd.hq.db import (
    BUMP_COUNTER,
    INSERT_BROADCAST,
    INSERT_REPORT,
    PG_SCHEMA_LOCK,
    PG_TYPES,
    RETRIES,
    SCHEMA_VERSION,
    HQStore,
    check_version,
    counter_rows,
    redact,
    statements,
)
from meshd.hq.records import BroadcastRecord, InsertOutcome, ReportRecord

log = logging.getLogger(__name__)


class PostgresStore(HQStore):
    """PostgreSQL through one psycopg 3 async connection per worker process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    async def open(self) -> None:
        try:
            self._conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=10)
            async with self._conn.transaction():
                await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_SCHEMA_LOCK,))
                await self._conn.execute("CREATE TABLE IF NOT EXISTS hq_schema (version INTEGER NOT NULL)")
                cur = await self._conn.execute("SELECT max(version) FROM hq_schema")
                row = await cur.fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
                check_version(version, redact(self.url))
                if version < 1:
                    for statement in statements(PG_TYPES):
                        await self._conn.execute(statement.encode())
                    await self._conn.execute("INSERT INTO hq_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        except psycopg.Error as exc:
            await self.close()
            raise StoreError(f"cannot open HQ database {redact(self.url)}: {exc}") from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def _db(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            raise StoreError("HQ database connection is closed")
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
        brows = [(b.id, b.seq, b.received_at, Jsonb(b.body), b.envelope) for b in broadcasts]
        for attempt in range(1, RETRIES + 1):
            conn = self._db()
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    inserted = 0
                    if rows:
                        await cur.executemany(INSERT_REPORT.encode(), rows)
                        inserted = cur.rowcount
                    if brows:
                        await cur.executemany(INSERT_BROADCAST.encode(), brows)
                    outcome = InsertOutcome(inserted, len(rows) - inserted)
                    bumps = counter_rows(worker, dict(counters or {}), outcome)
                    if bumps:
                        await cur.executemany(BUMP_COUNTER.encode(), bumps)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == RETRIES:
                    raise StoreError(f"HQ database write kept conflicting: {exc}") from None
                log.info("HQ database write conflicted (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.01 * attempt)
            except psycopg.Error as exc:
                raise StoreError(f"HQ database write failed: {exc}") from None
            else:
                return outcome
        raise StoreError("unreachable")  # pragma: no cover

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
            r.received_at,
            r.observed_est,
            r.observed_at,
            Jsonb(r.body),
            r.envelope,
            r.batch_index,
            r.gateway,
            worker,
        )

    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._db()
        try:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(sql.encode(), tuple(params))
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"HQ database read failed: {exc}") from None

    def _ts_param(self, moment: dt.datetime) -> Any:
        return moment

    def _from_ts(self, value: Any) -> dt.datetime:
        if not isinstance(value, dt.datetime):
            raise StoreError(f"expected a timestamp, got {value!r}")
        return value.astimezone(dt.UTC)

    def _from_json(self, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = json.loads(value)
        return value if isinstance(value, dict) else {}
