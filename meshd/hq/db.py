"""HQ storage: one interface, two backends — SQLite (default, WAL) and PostgreSQL (psycopg 3, async).

Exactly-once at HQ rests on one statement: `INSERT ... ON CONFLICT (id) DO NOTHING` with the message id
("origin:seq") as primary key. Several workers and several hubs publishing the same report still give one
row; the losers count a duplicate. Nothing here assumes a single worker:

- every commit inserts its reports in id order, so two workers inserting overlapping batches on PostgreSQL
  take row locks in the same order and cannot deadlock (a deadlock or serialization failure is retried);
- counters are kept per worker (`counters(worker, name)`), so workers never wait on each other's counter
  rows; the `stats` view sums them;
- schema creation takes an advisory lock on PostgreSQL and `BEGIN IMMEDIATE` on SQLite, so workers
  starting together do not race.

`commit()` returns only after the transaction is durable (SQLite `synchronous=FULL`; PostgreSQL's default
`synchronous_commit=on`): the worker acknowledges MQTT messages only after that.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from meshd.errors import StoreError
from meshd.hq.records import BroadcastRecord, InsertOutcome, ReportRecord

SCHEMA_VERSION = 1
PG_SCHEMA_LOCK = 0x6D65736864_01  # advisory lock id for schema changes ("meshd" + 1)
RETRIES = 5

REPORT_COLUMNS = (
    "id",
    "origin",
    "seq",
    "kind",
    "camp",
    "provenance",
    "age_s",
    "time_quality",
    "received_at",
    "observed_est",
    "observed_at",
    "body",
    "envelope",
    "batch_index",
    "gateway",
)
COLS = ", ".join(REPORT_COLUMNS)

# {ts} {json} {blob} {int} are filled per dialect, so both backends share one schema text.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY,            -- message id "origin:seq": the dedup key
    origin {int} NOT NULL,
    seq {int} NOT NULL,
    kind TEXT NOT NULL,             -- needs | alert | sealed | status
    camp {int},                     -- the camp the report is about
    provenance TEXT NOT NULL,       -- verified | unverified | unknown_origin
    age_s {int} NOT NULL,           -- observation age carried hop by hop
    time_quality TEXT NOT NULL,     -- none | device | gps | ntp (of the origin hub's clock)
    received_at {ts} NOT NULL,      -- HQ clock when the first stored copy arrived
    observed_est {ts} NOT NULL,     -- received_at - age_s
    observed_at {ts},               -- origin hub's timestamp, only when it had real time
    body {json} NOT NULL,           -- decoded body (the JSON mapping of the MQTT contract)
    envelope {blob} NOT NULL,       -- the signed envelope, re-verifiable by anyone
    batch_index INTEGER,
    gateway {int},                  -- uplinking hub, when the payload names it (unauthenticated)
    worker TEXT NOT NULL            -- HQ worker that stored it
);
CREATE INDEX IF NOT EXISTS reports_kind_camp_observed ON reports (kind, camp, observed_est);
CREATE INDEX IF NOT EXISTS reports_observed ON reports (observed_est);
CREATE TABLE IF NOT EXISTS broadcasts (
    id TEXT PRIMARY KEY,
    seq {int} NOT NULL,
    received_at {ts} NOT NULL,
    body {json} NOT NULL,
    envelope {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    worker TEXT NOT NULL,
    name TEXT NOT NULL,
    value {int} NOT NULL,
    PRIMARY KEY (worker, name)
);
CREATE VIEW stats AS
    SELECT 'reports.' || kind AS name, COUNT(*) AS value FROM reports GROUP BY kind
    UNION ALL
    SELECT name, CAST(SUM(value) AS BIGINT) AS value FROM counters GROUP BY name;
CREATE VIEW latest_needs AS
    SELECT r.* FROM reports r
    WHERE r.kind = 'needs' AND NOT EXISTS (
        SELECT 1 FROM reports n
        WHERE n.kind = 'needs' AND n.camp = r.camp
          AND (n.observed_est > r.observed_est OR (n.observed_est = r.observed_est AND n.seq > r.seq))
    )
"""
SQLITE_TYPES = {"ts": "REAL", "json": "TEXT", "blob": "BLOB", "int": "INTEGER"}
PG_TYPES = {"ts": "TIMESTAMPTZ", "json": "JSONB", "blob": "BYTEA", "int": "BIGINT"}

INSERT_REPORT = (  # built from the constant column list above, no outside input
    f"INSERT INTO reports ({COLS}, worker) VALUES ({', '.join(['%s'] * (len(REPORT_COLUMNS) + 1))}) "  # noqa: S608
    "ON CONFLICT (id) DO NOTHING"
)
INSERT_BROADCAST = (
    "INSERT INTO broadcasts (id, seq, received_at, body, envelope) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (id) DO NOTHING"
)
BUMP_COUNTER = (
    "INSERT INTO counters (worker, name, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (worker, name) DO UPDATE SET value = counters.value + excluded.value"
)


def check_version(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"HQ database {where} has schema {version}, newer than this meshd ({SCHEMA_VERSION})")


def statements(types: Mapping[str, str]) -> list[str]:
    return [s.strip() for s in _SCHEMA.format(**types).split(";") if s.strip()]


class HQStore(abc.ABC):
    """The storage interface the worker, the exports and `hq latest` use."""

    url: str

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def commit(
        self,
        reports: Sequence[ReportRecord],
        *,
        broadcasts: Sequence[BroadcastRecord] = (),
        counters: Mapping[str, int] | None = None,
        worker: str = "hq",
    ) -> InsertOutcome:
        """Upsert reports and broadcasts and add counters in one durable transaction.

        Adds the counters `stored` and `duplicate` itself, in the same transaction."""

    @abc.abstractmethod
    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    def _ts_param(self, moment: dt.datetime) -> Any: ...

    async def reports(self, *, kinds: Sequence[str] = (), since: dt.datetime | None = None) -> list[ReportRecord]:
        """Stored reports, oldest observation first; optionally only some kinds / observed since a time."""
        where: list[str] = []
        params: list[Any] = []
        if kinds:
            where.append(f"kind IN ({', '.join(['%s'] * len(kinds))})")
            params.extend(kinds)
        if since is not None:
            where.append("observed_est >= %s")
            params.append(self._ts_param(since))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._select(f"SELECT {COLS} FROM reports{clause} ORDER BY observed_est, id", params)  # noqa: S608
        return [self._report_from(r) for r in rows]

    async def latest_needs(self) -> list[ReportRecord]:
        """The most recent needs report of every camp (by estimated observation time, then seq)."""
        rows = await self._select(f"SELECT {COLS} FROM latest_needs ORDER BY camp")  # noqa: S608
        return [self._report_from(r) for r in rows]

    async def report_ids(self) -> list[str]:
        return [str(r[0]) for r in await self._select("SELECT id FROM reports ORDER BY id")]

    async def stats(self) -> dict[str, int]:
        """Report counts per kind (`reports.needs`, ...) and counters summed over workers."""
        return {str(name): int(value) for name, value in await self._select("SELECT name, value FROM stats")}

    async def worker_counters(self) -> dict[tuple[str, str], int]:
        rows = await self._select("SELECT worker, name, value FROM counters")
        return {(str(w), str(n)): int(v) for w, n, v in rows}

    async def broadcasts(self) -> list[BroadcastRecord]:
        rows = await self._select("SELECT id, seq, received_at, body, envelope FROM broadcasts ORDER BY seq")
        return [
            BroadcastRecord(str(i), int(s), self._from_ts(t), self._from_json(b), bytes(e)) for i, s, t, b, e in rows
        ]

    @abc.abstractmethod
    def _from_ts(self, value: Any) -> dt.datetime: ...

    @abc.abstractmethod
    def _from_json(self, value: Any) -> dict[str, Any]: ...

    def _report_from(self, row: Sequence[Any]) -> ReportRecord:
        (rid, origin, seq, kind, camp, prov, age, tq, recv, obs, obs_at, body, env, index, gateway) = row
        return ReportRecord(
            id=str(rid),
            origin=int(origin),
            seq=int(seq),
            kind=str(kind),
            camp=int(camp) if camp is not None else None,
            provenance=str(prov),
            age_s=int(age),
            time_quality=str(tq),
            received_at=self._from_ts(recv),
            observed_est=self._from_ts(obs),
            observed_at=self._from_ts(obs_at) if obs_at is not None else None,
            body=self._from_json(body),
            envelope=bytes(env),
            batch_index=int(index) if index is not None else None,
            gateway=int(gateway) if gateway is not None else None,
        )


def counter_rows(worker: str, counters: Mapping[str, int], outcome: InsertOutcome) -> list[tuple[str, str, int]]:
    merged = dict(counters)
    merged["stored"] = merged.get("stored", 0) + outcome.inserted
    merged["duplicate"] = merged.get("duplicate", 0) + outcome.duplicates
    return [(worker, name, value) for name, value in sorted(merged.items()) if value]


def redact(url: str) -> str:
    """The URL without a password, for error messages and logs."""
    head, sep, tail = url.partition("://")
    creds, at, host = tail.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{head}{sep}{creds.split(':', 1)[0]}:***@{host}"


def open_store(url: str) -> HQStore:
    """A store for `sqlite:///path` (absolute path: sqlite:////var/lib/...) or `postgresql://...`."""
    # Backends are imported here, not at the top: they import this module, and an SQLite-only HQ
    # need not load psycopg.
    from meshd.hq.db_postgres import PostgresStore  # noqa: PLC0415
    from meshd.hq.db_sqlite import SQLiteStore  # noqa: PLC0415

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise StoreError("sqlite URL needs a path: sqlite:///relative.db or sqlite:////abs/path.db")
        return SQLiteStore(Path(path))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise StoreError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")
