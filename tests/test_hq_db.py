"""HQ storage, both backends: upsert dedup, counters, the stats and latest_needs views, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.errors import StoreError
from meshd.hq.db import HQStore, open_store
from meshd.hq.db_sqlite import SQLiteStore
from meshd.hq.records import BroadcastRecord
from tests.hq_support import NEEDS, pg_schema, record

T0 = dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hq.db'}"
    else:
        with pg_schema() as url:
            yield url


async def test_upsert_gives_one_row_per_id_and_counts_duplicates(db_url: str) -> None:
    async with open_store(db_url) as store:
        first = await store.commit([record("101:1"), record("101:2")], counters={"received": 2}, worker="w1")
        again = await store.commit([record("101:2"), record("101:3"), record("101:3")], worker="w2")
        assert (first.inserted, first.duplicates) == (2, 0)
        assert (again.inserted, again.duplicates) == (1, 2)
        assert await store.report_ids() == ["101:1", "101:2", "101:3"]
        stats = await store.stats()
        assert stats["reports.needs"] == 3
        assert stats["stored"] == 3
        assert stats["duplicate"] == 2
        assert stats["received"] == 2
        per_worker = await store.worker_counters()
        assert per_worker[("w1", "stored")] == 2
        assert per_worker[("w2", "duplicate")] == 2


async def test_round_trip_of_every_column(db_url: str) -> None:
    rec = record("102:9", age_s=7200, provenance="unverified", received=T0)
    async with open_store(db_url) as store:
        await store.commit([rec])
        (back,) = await store.reports()
    assert back == rec
    assert back.observed_est == T0 - dt.timedelta(hours=2)
    assert back.body["population"]["individuals"] == 12500


async def test_latest_needs_picks_the_newest_observation_per_camp(db_url: str) -> None:
    # 101:5 arrived later but was observed earlier (it sat in a hub's store for a day).
    recs = [
        record("101:4", received=T0, age_s=600),
        record("101:5", received=T0 + dt.timedelta(minutes=5), age_s=86400),
        record("102:1", received=T0, age_s=60, body={"camp": 102, "note": "only one"}),
        record("101:6", kind="alert", received=T0 + dt.timedelta(hours=1), body={"camp": 101, "type": "fire"}),
    ]
    async with open_store(db_url) as store:
        await store.commit(recs)
        latest = await store.latest_needs()
        since = await store.reports(kinds=("needs",), since=T0 - dt.timedelta(minutes=30))
    assert [r.id for r in latest] == ["101:4", "102:1"]
    assert [r.id for r in since] == ["101:4", "102:1"]


async def test_broadcasts_are_archived_once(db_url: str) -> None:
    b = BroadcastRecord("0:7", 7, T0, {"text": "water at gate 2", "severity": "minor", "urgency": "future"}, b"env")
    async with open_store(db_url) as store:
        await store.commit([], broadcasts=[b])
        await store.commit([], broadcasts=[b])
        assert await store.broadcasts() == [b]


async def test_two_connections_racing_on_overlapping_batches(db_url: str) -> None:
    """Several workers, one database: overlapping inserts in any order, no deadlock, one row each."""
    ids = [f"101:{i}" for i in range(200)]
    async with open_store(db_url) as a, open_store(db_url) as b:

        async def feed(store: HQStore, order: list[str], worker: str) -> None:
            for start in range(0, len(order), 20):
                await store.commit([record(i) for i in order[start : start + 20]], worker=worker)

        await asyncio.gather(feed(a, ids, "a"), feed(b, list(reversed(ids)), "b"))
        assert await a.report_ids() == sorted(ids)
        stats = await a.stats()
    assert stats["stored"] == 200
    assert stats["duplicate"] == 200


async def test_sqlite_is_wal_and_views_exist(tmp_path: Path) -> None:
    path = tmp_path / "hq.db"
    async with SQLiteStore(path) as store:
        await store.commit([record("101:1", body={"camp": 101, **NEEDS})])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM latest_needs").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    async with SQLiteStore(path) as store:  # reopening keeps the data
        assert await store.report_ids() == ["101:1"]


async def test_bad_urls_and_unreachable_databases_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match="cannot open"):
        async with open_store("postgresql://postgres:secret@127.0.0.1:1/none"):
            pass
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        async with open_store(f"sqlite:///{tmp_path / 'dir.db'}"):
            pass


def test_password_is_not_in_error_messages() -> None:
    async def attempt() -> str:
        try:
            async with open_store("postgresql://postgres:hunter2@127.0.0.1:1/none"):
                pass
        except StoreError as exc:
            return str(exc)
        return ""

    assert "hunter2" not in asyncio.run(attempt())
