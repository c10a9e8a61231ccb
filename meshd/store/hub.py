"""The hub's tables as operations: originate, accept, schedule, custody, field inbound, counters.

Ages: an outbox row keeps `age_base` (seconds) settled at `stored_mono` of the process `session` that
stored it. The current age is age_base + (monotonic now - stored_mono). At start, rows of the previous
session are settled up to that session's last "alive" mark; the time the hub was powered off is unknown
(no RTC) and is not counted, which is why reports carry time_quality=none.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from meshd.store.store import Database, new_session_id
from meshd.wire import codec
from meshd.wire.envelope import Envelope

ALIVE_EVERY_S = 300.0  # how often the alive mark is written: bounds lost age after a power cut, costs SD writes


# Read-only by convention, not frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__ (6x slower here), and the uplink's flush builds one per report it publishes.
@dataclass(slots=True)
class OutboxEntry:
    origin: int
    seq: int
    n_items: int
    kind: str
    priority: int
    envelope: bytes
    age_s: int
    attempts: int
    local: bool
    published: bool
    handed_to: int = 0
    from_node: int = 0
    uplink_bodies: str | None = None  # codec.uplink_bodies(envelope), rendered when stored

    @property
    def key(self) -> tuple[int, int]:
        return (self.origin, self.seq)

    def report_keys(self) -> list[tuple[int, int]]:
        return [(self.origin, self.seq + i) for i in range(self.n_items)]


class AcceptResult:
    NEW = "new"
    DUPLICATE = "duplicate"
    DELIVERED = "delivered"  # new to us, but HQ already has it: nothing to carry
    TAKEN_BACK = "taken_back"  # we had handed it on and it came back: carried again


class HubStore:
    """Async operations on the hub store. Open with `async with HubStore(path) as store:`."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic, passive: bool = False) -> None:
        """`passive`: a short-lived second process (`meshd send`) that must not re-settle the running
        daemon's rows; it joins the daemon's clock session instead."""
        self.db = Database(path)
        self.clock = clock
        self.session = new_session_id()
        self.passive = passive
        # called after a commit that recorded new delivered ids, whoever learnt them (our uplink's PUBACK or
        # a neighbour's notice): the field desk sends its "delivered to HQ" receipts then
        self.on_delivered: Callable[[], None] | None = None

    async def __aenter__(self) -> Self:
        await self.db.__aenter__()
        try:
            if self.passive:
                row = await self.db.read(
                    lambda conn: conn.execute("SELECT value FROM meta WHERE key = 'session'").fetchone()
                )
                if row is not None:
                    self.session = str(row[0])
            else:
                await self.db.write(self._settle_sessions)
        except BaseException:
            await self.db.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.passive:
            await self.mark_alive()
        await self.db.close()

    # ------------------------------------------------------------ sessions and ages

    def _settle_sessions(self, conn: sqlite3.Connection) -> None:
        now = self.clock()
        row = conn.execute("SELECT value FROM meta WHERE key = 'session'").fetchone()
        alive = conn.execute("SELECT value FROM meta WHERE key = 'alive_mono'").fetchone()
        if row is not None and alive is not None:
            conn.execute(
                "UPDATE outbox SET age_base = age_base + MAX(0, CAST(? - stored_mono AS INTEGER)) WHERE session = ?",
                (float(alive[0]), row[0]),
            )
        # due at once; for rows handed on, next_attempt is when that happened (see recheck_handed): restart it
        conn.execute(
            "UPDATE outbox SET stored_mono = ?1, session = ?2,"
            " next_attempt = CASE WHEN handed_to = 0 THEN 0 ELSE ?1 END",
            (now, self.session),
        )
        self._set_meta(conn, "session", self.session)
        self._set_meta(conn, "alive_mono", repr(now))

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def mark_alive(self) -> None:
        now = self.clock()
        await self.db.write(lambda conn: self._set_meta(conn, "alive_mono", repr(now)))

    def _age_now(self, age_base: int, stored_mono: float) -> int:
        return age_base + max(0, int(self.clock() - stored_mono))

    # ------------------------------------------------------------ originate and accept

    async def originate(
        self,
        origin: int,
        build: Callable[[int], Envelope],
        *,
        priority: int,
        n_items: int = 1,
        expiry_s: int = 72 * 3600,
        inbound: tuple[int, str, bool] | None = None,
    ) -> Envelope:
        """Allocate seq(s), build and sign the envelope, store it in the outbox; durable when this returns.

        `build(seq)` runs inside the transaction, so a seq is never handed out twice, even across crashes.
        `inbound` = (from_node, language, verified) records a field report for receipts.
        """
        now = self.clock()

        def op(conn: sqlite3.Connection) -> Envelope:
            row = conn.execute("SELECT next_seq FROM seq_counter WHERE origin = ?", (origin,)).fetchone()
            seq = row[0] if row else 1
            conn.execute(
                "INSERT INTO seq_counter (origin, next_seq) VALUES (?, ?) "
                "ON CONFLICT(origin) DO UPDATE SET next_seq = excluded.next_seq",
                (origin, seq + n_items),
            )
            env = build(seq)
            self._insert_outbox(conn, env, n_items, priority, now, local=True, expiry_s=expiry_s)
            conn.executemany(
                "INSERT OR IGNORE INTO seen (origin, seq) VALUES (?, ?)", [(origin, seq + i) for i in range(n_items)]
            )
            if inbound is not None:
                from_node, language, verified = inbound
                conn.execute(
                    "INSERT INTO inbound (origin, seq, from_node, language, kind, verified, received_day) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (origin, seq, from_node, language, env.kind.value, int(verified), _today()),
                )
            self._bump(conn, "originated", n_items)
            return env

        return await self.db.write(op)

    def _insert_outbox(
        self,
        conn: sqlite3.Connection,
        env: Envelope,
        n_items: int,
        priority: int,
        now: float,
        *,
        local: bool,
        expiry_s: int,
        from_node: int = 0,
    ) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO outbox (origin, seq, n_items, kind, priority, envelope, age_base, stored_mono,"
            " session, local, expires_at_age, from_node, uplink_bodies) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                env.origin,
                env.seq,
                n_items,
                env.kind.value,
                priority,
                env.to_bytes(),
                env.age_s,
                now,
                self.session,
                int(local),
                env.age_s + expiry_s,
                from_node,
                codec.uplink_bodies(env),
            ),
        )

    async def accept(
        self,
        env: Envelope,
        *,
        n_items: int = 1,
        priority: int,
        expiry_s: int = 72 * 3600,
        carry: bool = True,
        from_node: int = 0,
    ) -> str:
        """Store an envelope unless every report in it was seen before (the relay uses `receive`)."""
        now = self.clock()
        keys = [(env.origin, env.seq + i) for i in range(n_items)]

        def op(conn: sqlite3.Connection) -> str:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO seen (origin, seq) VALUES (?, ?)", keys)
            if conn.total_changes == before:
                self._bump(conn, "duplicates", 1)
                return AcceptResult.DUPLICATE
            delivered = conn.execute(
                "SELECT COUNT(*) FROM delivered WHERE origin = ? AND seq BETWEEN ? AND ?",
                (env.origin, env.seq, env.seq + n_items - 1),
            ).fetchone()[0]
            if delivered == n_items:
                return AcceptResult.DELIVERED
            if carry:
                self._insert_outbox(
                    conn, env, n_items, priority, now, local=False, expiry_s=expiry_s, from_node=from_node
                )
            self._bump(conn, "accepted", 1)
            return AcceptResult.NEW

        return await self.db.write(op)

    async def receive(
        self,
        env: Envelope,
        *,
        n_items: int,
        priority: int,
        expiry_s: int,
        from_node: int,
    ) -> tuple[str, int]:
        """Everything the relay decides about an envelope from another hub, in one write (so two copies
        arriving at once cannot both be taken as new). Returns (result, node):

        - TAKEN_BACK: we had handed it on (to `node`) and it came back (a loop while routes change, or a
          retransmission whose custody notice was lost): we carry it again, retried at once.
        - DUPLICATE: we still carry it; `node` is the hub we got it from (0: our own report).
        - DELIVERED: HQ already has every report in it; nothing to carry. The sender evidently missed the
          Delivered notice, so the ids go into our next one again.
        - NEW: stored and carried; also when it was seen before but we neither hold it nor know it delivered
          (handed on, then handed back by a hub whose routes changed).
        """
        now = self.clock()
        keys = [(env.origin, env.seq + i) for i in range(n_items)]

        def op(conn: sqlite3.Connection) -> tuple[str, int]:
            held = conn.execute(
                "SELECT handed_to, from_node FROM outbox WHERE origin = ? AND seq = ?", (env.origin, env.seq)
            ).fetchone()
            if held is not None and held[0] != 0:
                # One of our own reports coming back records the hub it came from: it has been on the air under
                # its id, so it must never be wrapped into a batch again (a batch takes its first report's id,
                # and a hub still holding the single report would take the batch for a duplicate and answer
                # for all of it); and split horizon keeps it from going straight back.
                conn.execute(
                    "UPDATE outbox SET handed_to = 0, attempts = 0, next_attempt = 0,"
                    " from_node = CASE WHEN local = 1 THEN ? ELSE from_node END WHERE origin = ? AND seq = ?",
                    (from_node, env.origin, env.seq),
                )
                return AcceptResult.TAKEN_BACK, int(held[0])
            if held is not None:
                self._bump(conn, "duplicates", 1)
                return AcceptResult.DUPLICATE, int(held[1])
            conn.executemany("INSERT OR IGNORE INTO seen (origin, seq) VALUES (?, ?)", keys)
            delivered = conn.execute(
                "SELECT COUNT(*) FROM delivered WHERE origin = ? AND seq BETWEEN ? AND ?",
                (env.origin, env.seq, env.seq + n_items - 1),
            ).fetchone()[0]
            if delivered == n_items:
                conn.execute(
                    "UPDATE delivered SET notified = 0, tell_node = ? WHERE origin = ? AND seq BETWEEN ? AND ?",
                    (from_node, env.origin, env.seq, env.seq + n_items - 1),
                )
                return AcceptResult.DELIVERED, 0
            # seen before but neither held nor delivered: handed on and then handed back to us by a hub whose
            # routes changed; carrying it again keeps the rule that someone carries every report until HQ has it
            self._insert_outbox(conn, env, n_items, priority, now, local=False, expiry_s=expiry_s, from_node=from_node)
            self._bump(conn, "accepted", 1)
            return AcceptResult.NEW, from_node

        return await self.db.write(op)

    async def replace_with_batch(self, keys: list[tuple[int, int]], batch: Envelope, *, priority: int) -> None:
        """Put one signed batch envelope in place of the unsent single reports it carries."""
        now = self.clock()

        def op(conn: sqlite3.Connection) -> None:
            rows = [
                conn.execute(
                    "SELECT age_base, stored_mono, expires_at_age FROM outbox WHERE origin = ? AND seq = ?", key
                ).fetchone()
                for key in keys
            ]
            if any(r is None for r in rows):
                return  # one of them was handed over meanwhile: keep the singles
            expiry = min(int(r[2]) - int(r[0]) for r in rows if r is not None)
            conn.executemany("DELETE FROM outbox WHERE origin = ? AND seq = ?", keys)
            self._insert_outbox(conn, batch, len(keys), priority, now, local=True, expiry_s=expiry)

        await self.db.write(op)

    async def is_seen(self, origin: int, seq: int) -> bool:
        return await self.db.read(
            lambda conn: (
                conn.execute("SELECT 1 FROM seen WHERE origin = ? AND seq = ?", (origin, seq)).fetchone() is not None
            )
        )

    async def highest_seen(self) -> dict[int, int]:
        rows = await self.db.read(
            lambda conn: conn.execute("SELECT origin, MAX(seq) FROM seen GROUP BY origin").fetchall()
        )
        return {int(o): int(s) for o, s in rows}

    # ------------------------------------------------------------ scheduling

    def _entry(
        self, row: tuple[int, int, int, str, int, bytes, int, float, int, int, int, int, int, str | None]
    ) -> OutboxEntry:
        origin, seq, n_items, kind, priority, envelope, age_base, stored_mono, attempts, local, published = row[:11]
        handed, from_node, uplink_bodies = row[11], row[12], row[13]
        return OutboxEntry(
            origin,
            seq,
            n_items,
            kind,
            priority,
            envelope,
            self._age_now(age_base, stored_mono),
            attempts,
            bool(local),
            bool(published),
            handed,
            from_node,
            uplink_bodies,
        )

    _COLUMNS = (
        "origin, seq, n_items, kind, priority, envelope, age_base, stored_mono, attempts, local, published, handed_to,"
        " from_node, uplink_bodies"
    )

    async def due(self, limit: int = 32, *, unpublished_only: bool = False) -> list[OutboxEntry]:
        """Outbox entries whose next attempt is due, highest priority first, oldest seq first."""
        now = self.clock()
        extra = " AND published = 0" if unpublished_only else ""
        sql = (
            f"SELECT {self._COLUMNS} FROM outbox WHERE handed_to = 0 AND next_attempt <= ?{extra} "  # noqa: S608
            "ORDER BY priority DESC, seq LIMIT ?"
        )
        rows = await self.db.read(lambda conn: conn.execute(sql, (now, limit)).fetchall())
        return [self._entry(r) for r in rows]

    async def pending(
        self, *, unpublished_only: bool = False, limit: int = 1000, after: tuple[int, int] | None = None
    ) -> list[OutboxEntry]:
        """Everything in the outbox (regardless of retry timers), priority order: what an uplink flushes.

        `after=(priority, seq)`: only entries from there on in that order (the next page while this one is
        still being published; entries of other origins with the same priority and seq come again).
        """
        extra = " AND published = 0" if unpublished_only else ""
        params: tuple[int, ...] = (limit,)
        if after is not None:
            extra += " AND (priority < ? OR (priority = ? AND seq >= ?))"
            params = (after[0], after[0], after[1], limit)
        sql = f"SELECT {self._COLUMNS} FROM outbox WHERE handed_to = 0{extra} ORDER BY priority DESC, seq LIMIT ?"  # noqa: S608 - constant column list
        rows = await self.db.read(lambda conn: conn.execute(sql, params).fetchall())
        return [self._entry(r) for r in rows]

    async def get(self, origin: int, seq: int) -> OutboxEntry | None:
        sql = f"SELECT {self._COLUMNS} FROM outbox WHERE origin = ? AND seq = ?"  # noqa: S608 - constant column list
        row = await self.db.read(lambda conn: conn.execute(sql, (origin, seq)).fetchone())
        return self._entry(row) if row else None

    async def mark_attempt(self, keys: Iterable[tuple[int, int]], retry_after_s: Callable[[int], float]) -> None:
        """Record a transmission of each entry; the next attempt waits `retry_after_s(attempts)`."""
        now = self.clock()
        keys = list(keys)

        def op(conn: sqlite3.Connection) -> None:
            for origin, seq in keys:
                row = conn.execute("SELECT attempts FROM outbox WHERE origin = ? AND seq = ?", (origin, seq)).fetchone()
                if row is None:
                    continue
                attempts = row[0] + 1
                conn.execute(
                    "UPDATE outbox SET attempts = ?, next_attempt = ? WHERE origin = ? AND seq = ?",
                    (attempts, now + retry_after_s(attempts), origin, seq),
                )

        await self.db.write(op)

    async def defer(self, key: tuple[int, int], seconds: float) -> None:
        now = self.clock()
        await self.db.write(
            lambda conn: conn.execute(
                "UPDATE outbox SET next_attempt = ? WHERE origin = ? AND seq = ?", (now + seconds, *key)
            )
        )

    async def expedite(self, *, attempts: int, longer_than_s: float, limit: int) -> int:
        """Up to `limit` entries tried at least `attempts` times whose next attempt is more than `longer_than_s`
        away (highest priority first): due in `longer_than_s` instead (a handover just worked, so their long
        backoff may no longer be needed)."""
        now = self.clock()
        return await self.db.write(
            lambda conn: (
                conn.execute(
                    "UPDATE outbox SET next_attempt = ? WHERE rowid IN (SELECT rowid FROM outbox WHERE handed_to = 0"
                    " AND attempts >= ? AND next_attempt > ? ORDER BY priority DESC, next_attempt LIMIT ?)",
                    (now + longer_than_s, attempts, now + longer_than_s, limit),
                ).rowcount
            )
        )

    async def hand_over(self, keys: Iterable[tuple[int, int]], node: int) -> int:
        """Another hub took custody: stop carrying these, but remember them to recognise retransmissions."""
        keys = list(keys)

        now = self.clock()

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "UPDATE outbox SET handed_to = ?, next_attempt = ? WHERE origin = ? AND seq = ? AND handed_to = 0",
                [(node, now, o, s) for o, s in keys],
            )
            return conn.total_changes - before

        return await self.db.write(op)

    async def recheck_handed(self, after_s: float) -> int:
        """Our own reports handed on more than `after_s` ago and still not known delivered: carry them again
        (the origin's end-to-end check). Returns how many."""
        now = self.clock()

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            # (`from_node` records where it went: it has been on the air, so it is never batched again; see
            # `receive`)
            conn.execute(
                "UPDATE outbox SET handed_to = 0, attempts = 0, next_attempt = 0,"
                " from_node = CASE WHEN from_node = 0 THEN handed_to ELSE from_node END"
                " WHERE local = 1 AND handed_to != 0 AND next_attempt <= ?",
                (now - after_s,),
            )
            changed = conn.total_changes - before
            if changed:
                self._bump(conn, "custody_rechecked", changed)
            return changed

        return await self.db.write(op)

    async def remove(self, keys: Iterable[tuple[int, int]]) -> int:
        keys = list(keys)

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany("DELETE FROM outbox WHERE origin = ? AND seq = ?", keys)
            return conn.total_changes - before

        return await self.db.write(op)

    async def expire(self) -> int:
        """Drop entries older than their expiry; returns how many."""
        now = self.clock()

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.execute("DELETE FROM outbox WHERE age_base + MAX(0, ? - stored_mono) > expires_at_age", (now,))
            dropped = conn.total_changes - before
            if dropped:
                self._bump(conn, "expired", dropped)
            return dropped

        return await self.db.write(op)

    # ------------------------------------------------------------ custody

    async def _record_delivered(self, op: Callable[[sqlite3.Connection], int]) -> int:
        """Commit `op` (which returns how many ids are new to the delivered table) and tell `on_delivered`."""
        new = await self.db.write(op)
        if new and self.on_delivered is not None:
            self.on_delivered()
        return new

    async def mark_envelopes_published(self, envelopes: list[tuple[int, int, int]]) -> int:
        """Our uplink got a PUBACK for every report of these whole envelopes, given as (origin, seq, n_items):
        the same as `mark_delivered(their ids, published=True)` in a few set-wise statements (the uplink's
        flush calls this for thousands of envelopes; the id-by-id lookups of `mark_delivered` would hold the
        interpreter lock the publishing loop needs). Returns the number of ids new to the delivered table."""
        ids = [(o, s + i) for o, s, n in envelopes for i in range(n)]
        keys = [(o, s) for o, s, _ in envelopes]

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO delivered (origin, seq, notified) VALUES (?, ?, 1)", ids)
            new = conn.total_changes - before
            conn.executemany("INSERT OR IGNORE INTO seen (origin, seq) VALUES (?, ?)", ids)
            # the same rule as mark_delivered: tell the mesh about what we carried by radio
            conn.executemany(
                "UPDATE delivered SET notified = 0 WHERE origin = ?1 AND seq BETWEEN ?2 AND ?2 + ("
                " SELECT n_items - 1 FROM outbox WHERE origin = ?1 AND seq = ?2"
                " AND (from_node != 0 OR (handed_to = 0 AND attempts > 0)))",
                keys,
            )
            conn.executemany("DELETE FROM outbox WHERE origin = ? AND seq = ?", keys)
            self._bump(conn, "published", new)
            return new

        return await self._record_delivered(op)

    async def mark_delivered(
        self, ids: Iterable[tuple[int, int]], *, published: bool = False, notify: bool = True
    ) -> int:
        """Record report ids HQ has; drop outbox envelopes whose every report is delivered. Returns new ids.

        `published=True` means this hub's own uplink got the PUBACK. With `notify`, the ids this hub carried
        by radio (got from another hub, or sent to one) are queued for its next Delivered notice: only the
        hubs on a report's path can still hold it, so only they pass the news on.
        """
        ids = list(ids)

        def op(conn: sqlite3.Connection) -> int:
            covering: dict[tuple[int, int], tuple[int, int, int, int, int]] = {}
            for origin, seq in set(ids):
                # the envelope covering this id starts at the nearest seq at or below it (index on origin, seq)
                row = conn.execute(
                    "SELECT seq, n_items, from_node, handed_to, attempts FROM outbox WHERE origin = ? AND seq <= ?"
                    " ORDER BY seq DESC LIMIT 1",
                    (origin, seq),
                ).fetchone()
                if row is not None and row[0] + row[1] > seq:
                    covering[(origin, seq)] = row
            # Got from another hub: the news goes back to it. Our own reports only if we sent one by radio and
            # no custody notice came (the neighbour may carry it): a hub that took custody is nearer the uplink
            # and hears of the delivery from its own side, and our other neighbours never carried it.
            tell = {
                key: int(row[2])  # the news goes back to the hub we got it from (0: we do not know which)
                for key, row in covering.items()
                if notify and (row[2] != 0 or (row[3] == 0 and row[4] > 0))
            }
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO delivered (origin, seq, notified, tell_node) VALUES (?, ?, ?, ?)",
                [(o, s, 0 if (o, s) in tell else 1, tell.get((o, s), 0)) for o, s in ids],
            )
            new = conn.total_changes - before
            conn.executemany("INSERT OR IGNORE INTO seen (origin, seq) VALUES (?, ?)", ids)
            for (origin, _), (start, n_items, *_) in covering.items():
                done = conn.execute(
                    "SELECT COUNT(*) FROM delivered WHERE origin = ? AND seq BETWEEN ? AND ?",
                    (origin, start, start + n_items - 1),
                ).fetchone()[0]
                if done == n_items:
                    conn.execute("DELETE FROM outbox WHERE origin = ? AND seq = ?", (origin, start))
            if published:
                self._bump(conn, "published", new)
            return new

        return await self._record_delivered(op)

    async def mark_published(self, key: tuple[int, int]) -> None:
        await self.db.write(
            lambda conn: conn.execute("UPDATE outbox SET published = 1 WHERE origin = ? AND seq = ?", key)
        )

    async def untold_news(self, limit: int = 64) -> dict[int, list[tuple[int, int]]]:
        """Delivered ids the mesh has not been told about yet, by the node to tell (0: unknown, tell every
        neighbour). They stay untold until `mark_notified` (after a hub answered the news, say), so news
        still on its way when the power goes is sent again after the restart."""

        def op(conn: sqlite3.Connection) -> dict[int, list[tuple[int, int]]]:
            rows = conn.execute(
                "SELECT origin, seq, tell_node FROM delivered WHERE notified = 0 ORDER BY origin, seq LIMIT ?",
                (limit,),
            ).fetchall()
            news: dict[int, list[tuple[int, int]]] = {}
            for origin, seq, node in rows:
                news.setdefault(int(node), []).append((int(origin), int(seq)))
            return news

        return await self.db.read(op)

    async def news_state(self, origin: int, seq: int) -> tuple[int, bool] | None:
        """For a delivered id: the node its news goes to (0: every neighbour) and whether it was told (or given
        up on); None if this hub does not know HQ has it. (Where news stopped, for diagnostics.)"""

        def op(conn: sqlite3.Connection) -> tuple[int, bool] | None:
            row = conn.execute(
                "SELECT tell_node, notified FROM delivered WHERE origin = ? AND seq = ?", (origin, seq)
            ).fetchone()
            return (int(row[0] or 0), bool(row[1])) if row else None

        return await self.db.read(op)

    async def mark_notified(self, ids: list[tuple[int, int]]) -> None:
        """The mesh has been told of these delivered ids (a hub answered our news, or a custody notice said so)."""
        if not ids:
            return
        await self.db.write(
            lambda conn: conn.executemany("UPDATE delivered SET notified = 1 WHERE origin = ? AND seq = ?", ids)
        )

    async def all_delivered(self, ids: list[tuple[int, int]]) -> bool:
        """Does HQ have every one of these report ids? (One read, however many ids.)"""

        def op(conn: sqlite3.Connection) -> bool:
            for origin, seq in set(ids):
                if (
                    conn.execute("SELECT 1 FROM delivered WHERE origin = ? AND seq = ?", (origin, seq)).fetchone()
                    is None
                ):
                    return False
            return True

        return await self.db.read(op)

    async def is_delivered(self, origin: int, seq: int) -> bool:
        return await self.db.read(
            lambda conn: (
                conn.execute("SELECT 1 FROM delivered WHERE origin = ? AND seq = ?", (origin, seq)).fetchone()
                is not None
            )
        )

    # ------------------------------------------------------------ field inbound

    async def inbound_to_notify(self) -> list[tuple[int, int, int, str]]:
        """Field reports now delivered to HQ whose sender has not been told: (origin, seq, node, language)."""
        return await self.db.read(
            lambda conn: [
                (int(a), int(b), int(c), str(d))
                for a, b, c, d in conn.execute(
                    "SELECT i.origin, i.seq, i.from_node, i.language FROM inbound i JOIN delivered d "
                    "ON d.origin = i.origin AND d.seq = i.seq WHERE i.delivered_notified = 0"
                ).fetchall()
            ]
        )

    async def mark_inbound_notified(self, origin: int, seq: int) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "UPDATE inbound SET delivered_notified = 1 WHERE origin = ? AND seq = ?", (origin, seq)
            )
        )

    async def inbound_ids(self) -> list[str]:
        """Ids of every field report this hub stored (and acknowledged to the handset)."""
        rows = await self.db.read(lambda conn: conn.execute("SELECT origin, seq FROM inbound").fetchall())
        return [f"{o}:{s}" for o, s in rows]

    async def reports_today(self) -> int:
        return await self.db.read(
            lambda conn: int(
                conn.execute("SELECT COUNT(*) FROM inbound WHERE received_day = ?", (_today(),)).fetchone()[0]
            )
        )

    # ------------------------------------------------------------ status and counters

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, by, by),
        )

    async def bump(self, name: str, by: int = 1) -> None:
        await self.db.write(lambda conn: self._bump(conn, name, by))

    async def counters(self) -> dict[str, int]:
        rows = await self.db.read(lambda conn: conn.execute("SELECT name, value FROM counters").fetchall())
        return {str(n): int(v) for n, v in rows}

    async def queue_depth(self) -> dict[int, int]:
        rows = await self.db.read(
            lambda conn: conn.execute(
                "SELECT priority, SUM(n_items) FROM outbox WHERE handed_to = 0 GROUP BY priority"
            ).fetchall()
        )
        return {int(p): int(n) for p, n in rows}

    async def oldest_age(self) -> int | None:
        row = await self.db.read(
            lambda conn: conn.execute(
                "SELECT age_base, stored_mono FROM outbox WHERE handed_to = 0 "
                "ORDER BY age_base + (? - stored_mono) DESC LIMIT 1",
                (self.clock(),),
            ).fetchone()
        )
        return self._age_now(int(row[0]), float(row[1])) if row else None

    async def prune_seen(self, window: int) -> int:
        """Forget seen ids far below each origin's highest (the replay window rejects those anyway)."""

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.execute(
                "DELETE FROM seen WHERE seq < (SELECT MAX(s2.seq) FROM seen s2 WHERE s2.origin = seen.origin) - ?",
                (window,),
            )
            conn.execute(
                "DELETE FROM delivered WHERE notified = 1 AND seq < "
                "(SELECT MAX(s2.seq) FROM seen s2 WHERE s2.origin = delivered.origin) - ?",
                (window,),
            )
            return conn.total_changes - before

        return await self.db.write(op)


def _today() -> str:
    # Only for "reports today" on the status line; a wrong clock merely mislabels the day.
    return dt.datetime.now(dt.UTC).date().isoformat()
