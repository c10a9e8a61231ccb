"""A middle hub holds its custody notice for new reports (up to CUSTODY_HOLD_SHARE of the custody timeout)
until the next hop's answer says HQ has them: one notice then hands the reports over and tells the sender
"delivered", and no Delivered news (a frame and its answer) is sent for them on that hop.

Hub B runs for real (SQLite store, relay); the test plays the origin hub (which sends B the report) and C,
the neighbour with the uplink (see tests/test_relay_news.py)."""

from __future__ import annotations

import asyncio
import dataclasses

from meshd.relay import relay as relay_module
from tests.support.hubs import FAST_TIMING
from tests.test_relay_line import wait_for
from tests.test_relay_news import ORIGIN, SPEEDUP, B, C, world

# long enough that the hold (half of it) spans many real milliseconds even on a slow machine
TIMING = dataclasses.replace(FAST_TIMING, custody_timeout_s=60.0)
HOLD_S = getattr(relay_module, "CUSTODY_HOLD_SHARE", 0.5) * TIMING.custody_timeout_s


async def test_a_middle_hub_answers_delivered_when_the_next_hop_does_within_the_hold(tmp_path):
    async with world(tmp_path, TIMING) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: len(w.data_to_c()) >= 1, limit_s=20)
        # C answers later than B's plain notice would have gone (custody_ack_delay_s), within the hold
        await w.relay.clock.sleep(3 * TIMING.custody_ack_delay_s)
        assert w.frames_to(ORIGIN) == []
        w.deliver(w.links_c.custody_notice(B, [w.data_to_c()[-1]], delivered=True), C, 0x101)
        await wait_for(lambda: any(0x100 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=10)
        [(_, answer)] = w.frames_to(ORIGIN)
        assert answer.delivered
        w.links_origin.verify_custody_notice(answer)
        assert w.relay.counters["custody_held_delivered"] == 1
        # the origin knows from that notice: no news for it, now or later
        assert await w.store.untold_news() == {}
        await asyncio.sleep(3 * TIMING.notice_interval_s / SPEEDUP)
        assert w.news_notices() == []


async def test_a_held_notice_goes_plain_before_the_sender_would_retry(tmp_path):
    async with world(tmp_path, TIMING) as w:
        clock = w.relay.clock
        received_at = clock.now()
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: any(0x100 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=20)
        answered_at = clock.now()
        [(_, answer)] = w.frames_to(ORIGIN)
        assert not answer.delivered  # C never answered
        # held (not sent after custody_ack_delay_s), and still well before the origin's earliest retry
        assert HOLD_S * 0.8 <= answered_at - received_at < 0.9 * TIMING.custody_timeout_s
        # the news goes later as usual, once C says HQ has it
        w.deliver(w.links_c.custody_notice(B, [w.data_to_c()[-1]], delivered=True), C, 0x101)
        await wait_for(lambda: len(w.news_notices()) >= 1, limit_s=10)


async def test_a_sender_that_sends_again_during_the_hold_is_answered_at_once(tmp_path):
    async with world(tmp_path, TIMING) as w:
        clock = w.relay.clock
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: w.relay.counters["custody_held"] >= 1, limit_s=20)
        again_at = clock.now()
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x102)  # it did not wait for us
        await wait_for(lambda: any(0x102 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=10)
        await wait_for(lambda: any(0x100 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=10)
        assert clock.now() - again_at < HOLD_S / 2


async def test_an_uplink_side_delivered_answer_after_the_handover_still_counts(tmp_path):
    """C's plain answer handed report 1 over; C's later answer (to a retransmission that crossed it) says HQ has
    it: B takes the news from it, as C sends none after that."""
    async with world(tmp_path, TIMING) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: len(w.data_to_c()) >= 1, limit_s=20)
        pid = w.data_to_c()[-1]
        w.deliver(w.links_c.custody_notice(B, [pid]), C, 0x101)
        await wait_for(lambda: w.relay.counters["custody_handed_over"] >= 1, limit_s=10)
        assert not await w.store.is_delivered(ORIGIN, 1)
        w.deliver(w.links_c.custody_notice(B, [pid], delivered=True), C, 0x102)
        await wait_for(lambda: w.store.is_delivered(ORIGIN, 1), limit_s=10)
        assert w.relay.counters["custody_delivered_received"] == 1
