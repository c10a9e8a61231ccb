"""HubStore.receive (the relay's one-write decision about an envelope from another hub) and which delivered
ids a hub passes on in its Delivered notices (only the ones it carried by radio)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from meshd.store.hub import AcceptResult, HubStore
from meshd.wire.envelope import Envelope, Kind

NEIGHBOUR = 0x0A0A0001
OTHER = 0x0A0A0002


def env(origin: int, seq: int) -> Envelope:
    return Envelope(origin, seq, Kind.NEEDS, b"\x08\x02")


async def take_news(store: HubStore) -> dict[int, list[tuple[int, int]]]:
    """What the relay does with the store's news once told: read it, then mark it told."""
    news = await store.untold_news()
    await store.mark_notified([key for keys in news.values() for key in keys])
    return news


async def take_unnotified(store: HubStore) -> list[tuple[int, int]]:
    return sorted(key for keys in (await take_news(store)).values() for key in keys)


async def receive(store: HubStore, e: Envelope, from_node: int = NEIGHBOUR) -> tuple[str, int]:
    return await store.receive(e, n_items=1, priority=20, expiry_s=3600, from_node=from_node)


async def test_copies_arriving_at_once_are_stored_once(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        results = await asyncio.gather(*(receive(store, env(7, 1), NEIGHBOUR + i) for i in range(8)))
        assert sorted(r for r, _ in results).count(AcceptResult.NEW) == 1
        assert [r for r, _ in results].count(AcceptResult.DUPLICATE) == 7
        assert len(await store.pending()) == 1


async def test_duplicate_says_whom_we_got_it_from(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        assert await receive(store, env(7, 1), NEIGHBOUR) == (AcceptResult.NEW, NEIGHBOUR)
        assert await receive(store, env(7, 1), OTHER) == (AcceptResult.DUPLICATE, NEIGHBOUR)


async def test_a_report_handed_on_that_comes_back_is_carried_again(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        await receive(store, env(7, 1))
        await store.mark_attempt([(7, 1)], lambda _: 999.0)
        assert await store.hand_over([(7, 1)], OTHER) == 1
        assert await store.pending() == []
        result, _ = await receive(store, env(7, 1), OTHER)
        assert result == AcceptResult.TAKEN_BACK
        (entry,) = await store.due()
        assert (entry.key, entry.handed_to, entry.attempts) == ((7, 1), 0, 0)


async def test_a_delivered_report_is_not_carried_again(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        await store.mark_delivered([(7, 1)])
        assert (await receive(store, env(7, 1)))[0] == AcceptResult.DELIVERED
        assert await store.pending() == []


async def test_only_ids_received_by_radio_go_into_delivered_notices(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        await receive(store, env(7, 1))  # relayed for another hub: the hubs before us may hold it
        own = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq  # ours, never sent by radio
        handed = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq  # ours, handed on
        await store.hand_over([(3, handed)], NEIGHBOUR)
        # (9, 1) we never held: some other path carried it
        ids = [(7, 1), (3, own), (3, handed), (9, 1)]
        assert await store.mark_delivered(ids) == 4
        # Our own reports handed on are no news for our outer neighbours: they never carried them (the hub we
        # handed one to is nearer the uplink and hears of the delivery from its own side).
        assert await take_unnotified(store) == [(7, 1)]
        assert await take_unnotified(store) == []
        assert all([await store.is_delivered(*key) for key in ids])
        assert await store.pending() == []


async def test_delivered_without_notify_tells_nobody(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        await receive(store, env(7, 1))
        await store.mark_delivered([(7, 1)], notify=False)
        assert await take_unnotified(store) == []
        assert await store.is_delivered(7, 1)


async def test_a_retransmission_of_a_delivered_report_puts_it_in_the_next_notice_again(tmp_path: Path) -> None:
    """The sender evidently missed our Delivered notice (it still carries the report): tell it again."""
    async with HubStore(tmp_path / "s.db") as store:
        await receive(store, env(7, 1))
        await store.mark_delivered([(7, 1)])
        assert await take_unnotified(store) == [(7, 1)]
        assert (await receive(store, env(7, 1)))[0] == AcceptResult.DELIVERED
        assert await take_unnotified(store) == [(7, 1)]


async def test_our_report_sent_once_without_custody_is_in_the_notice(tmp_path: Path) -> None:
    """We sent it and the custody notice was lost: the neighbour may carry it, so it must hear of delivery."""
    async with HubStore(tmp_path / "s.db") as store:
        seq = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        await store.mark_attempt([(3, seq)], lambda _: 999.0)
        await store.mark_delivered([(3, seq)], published=True)
        assert await take_unnotified(store) == [(3, seq)]


async def test_taken_back_names_the_hub_we_had_handed_it_to(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        await receive(store, env(7, 1), NEIGHBOUR)
        await store.hand_over([(7, 1)], OTHER)
        assert await receive(store, env(7, 1), NEIGHBOUR) == (AcceptResult.TAKEN_BACK, OTHER)


async def test_marking_whole_envelopes_published_matches_marking_their_ids(tmp_path: Path) -> None:
    """The uplink's set-wise mark and the id-by-id mark leave the same delivered rows, notices and outbox."""
    outcomes = []
    for name in ("ids", "envelopes"):
        async with HubStore(tmp_path / f"{name}.db") as store:
            await receive(store, env(7, 1))  # carried for another hub: goes into the notice
            own = await store.originate(3, lambda seq: env(3, seq), priority=20, n_items=3)  # a batch, never sent
            sent = await store.originate(3, lambda seq: env(3, seq), priority=20)  # sent once, custody lost
            await store.mark_attempt([(3, sent.seq)], lambda _: 999.0)
            envelopes = [(7, 1, 1), (3, own.seq, 3), (3, sent.seq, 1)]
            if name == "ids":
                ids = [(o, s + i) for o, s, n in envelopes for i in range(n)]
                new = await store.mark_delivered(ids, published=True)
            else:
                new = await store.mark_envelopes_published(envelopes)
            outcomes.append(
                (
                    new,
                    sorted(await take_unnotified(store)),
                    await store.pending(),
                    (await store.counters())["published"],
                )
            )
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == 5
    assert outcomes[0][1] == [(3, 4), (7, 1)]


async def test_origin_sends_again_what_it_handed_on_long_ago_without_news_of_delivery(tmp_path: Path) -> None:
    """The end-to-end safety net: whatever happened along the path, the origin's copy comes back to life."""
    now = [100.0]
    async with HubStore(tmp_path / "s.db", clock=lambda: now[0]) as store:
        ours = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        delivered = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        await receive(store, env(7, 1))  # relayed for another hub: its origin does the checking
        await store.hand_over([(3, ours), (3, delivered), (7, 1)], NEIGHBOUR)
        await store.mark_delivered([(3, delivered)])
        now[0] += 3599
        assert await store.recheck_handed(3600) == 0
        now[0] += 2
        assert await store.recheck_handed(3600) == 1
        assert [(e.key, e.handed_to, e.attempts) for e in await store.due()] == [((3, ours), 0, 0)]


async def test_a_restart_restarts_the_recheck_clock(tmp_path: Path) -> None:
    now = [100.0]
    async with HubStore(tmp_path / "s.db", clock=lambda: now[0]) as store:
        seq = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        await store.hand_over([(3, seq)], NEIGHBOUR)
    now[0] = 5.0  # a new boot: the monotonic clock starts again
    async with HubStore(tmp_path / "s.db", clock=lambda: now[0]) as store:
        assert await store.due() == []  # still handed on, not due
        assert await store.recheck_handed(3600) == 0
        now[0] += 3601
        assert await store.recheck_handed(3600) == 1


async def test_every_stored_envelope_keeps_its_uplink_bodies_rendered(tmp_path: Path) -> None:
    """The flush publishes what the store rendered at insert time (schema migration 4): each way into the
    outbox keeps codec.uplink_bodies of the envelope, and envelopes without published reports keep none."""
    from meshd.wire import codec

    async with HubStore(tmp_path / "s.db") as store:
        await receive(store, env(7, 1))
        await store.originate(3, lambda seq: env(3, seq), priority=20)
        await store.originate(3, lambda seq: env(3, seq), priority=20)
        batch = Envelope(3, 1, Kind.BATCH, codec.make_batch_body([codec.BatchEntry(Kind.NEEDS, b"\x08\x02")] * 2))
        await store.replace_with_batch([(3, 1), (3, 2)], batch, priority=20)
        notice = Envelope(9, 5, Kind.CUSTODY, codec.encode_body(Kind.CUSTODY, {"ids": ["7:1"]}, 9))
        await store.accept(notice, priority=20)
        stored = {e.key: e.uplink_bodies for e in await store.pending()}
    assert stored == {
        (7, 1): '{"camp":7,"population":{"individuals":2}}',
        (3, 1): '{"camp":3,"population":{"individuals":2}}\n{"camp":3,"population":{"individuals":2}}',
        (9, 5): None,
    }


async def test_an_own_report_that_was_on_the_air_is_marked_so_it_is_never_batched_again(tmp_path: Path) -> None:
    """Taken back or rechecked, an own report keeps where it went in `from_node` (0 = never on the air): the
    relay batches only reports with 0 there, since a batch takes its first report's id."""
    now = [100.0]
    async with HubStore(tmp_path / "s.db", clock=lambda: now[0]) as store:
        back = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        rechecked = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        fresh = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        await store.hand_over([(3, back), (3, rechecked)], NEIGHBOUR)
        assert (await receive(store, env(3, back), OTHER))[0] == AcceptResult.TAKEN_BACK
        now[0] += 3601
        assert await store.recheck_handed(3600) == 1
        marks = {e.seq: (e.local, e.from_node) for e in await store.due()}
        assert marks == {back: (True, OTHER), rechecked: (True, NEIGHBOUR), fresh: (True, 0)}
        # a relayed report taken back keeps the hub it first came from
        await receive(store, env(7, 1), NEIGHBOUR)
        await store.hand_over([(7, 1)], OTHER)
        await receive(store, env(7, 1), OTHER)
        assert (await store.get(7, 1)).from_node == NEIGHBOUR  # type: ignore[union-attr]


async def test_all_delivered_needs_every_id(tmp_path: Path) -> None:
    async with HubStore(tmp_path / "s.db") as store:
        await store.mark_delivered([(7, 1), (7, 2)])
        assert await store.all_delivered([(7, 1), (7, 2), (7, 1)])
        assert not await store.all_delivered([(7, 1), (7, 3)])
        assert await store.all_delivered([])


async def test_news_is_for_the_hub_each_report_came_from(tmp_path: Path) -> None:
    """Delivered news goes back to the node a report came from, under the two hubs' link key; news whose
    neighbour we cannot name (our own report sent without a custody notice back) is for every neighbour (0)."""
    async with HubStore(tmp_path / "s.db") as store:
        await receive(store, env(7, 1), NEIGHBOUR)
        await receive(store, env(8, 1), OTHER)
        seq = (await store.originate(3, lambda seq: env(3, seq), priority=20)).seq
        await store.mark_attempt([(3, seq)], lambda _: 999.0)
        await store.mark_delivered([(7, 1), (8, 1), (3, seq)])
        assert await take_news(store) == {NEIGHBOUR: [(7, 1)], OTHER: [(8, 1)], 0: [(3, seq)]}
        assert await take_news(store) == {}
        # a hub sends (8, 1) again after HQ has it (it missed the news): the news is for that hub now
        assert (await receive(store, env(8, 1), NEIGHBOUR))[0] == AcceptResult.DELIVERED
        assert await take_news(store) == {NEIGHBOUR: [(8, 1)]}


async def test_news_stays_untold_until_marked_so_a_restart_sends_it_again(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with HubStore(path) as store:
        await receive(store, env(7, 1), NEIGHBOUR)
        await store.mark_delivered([(7, 1)])
        assert await store.untold_news() == {NEIGHBOUR: [(7, 1)]}
        assert await store.untold_news() == {NEIGHBOUR: [(7, 1)]}  # on its way, not told yet
    async with HubStore(path) as store:  # the power went: still untold
        assert await store.untold_news() == {NEIGHBOUR: [(7, 1)]}
        assert await store.news_state(7, 1) == (NEIGHBOUR, False)
        await store.mark_notified([(7, 1)])  # the neighbour answered
        assert await store.untold_news() == {}
        assert await store.news_state(7, 1) == (NEIGHBOUR, True)
        assert await store.news_state(7, 2) is None  # not known delivered here
