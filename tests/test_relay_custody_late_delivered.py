"""A custody notice that says "delivered" may name a frame another notice already handed over (the answer to
a retransmission that crossed it): the hub that sent it tells us no news of those reports after it, so we
take the news from it. Hub B runs for real; the test plays C, the neighbour with the uplink (see
tests/test_relay_news.py)."""

from __future__ import annotations

from tests.test_relay_line import wait_for
from tests.test_relay_news import ORIGIN, B, C, world


async def test_a_delivered_answer_after_the_handover_still_tells_us(tmp_path):
    async with world(tmp_path) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: len(w.data_to_c()) >= 1, limit_s=20)
        pid = w.data_to_c()[-1]
        w.deliver(w.links_c.custody_notice(B, [pid]), C, 0x101)
        await wait_for(lambda: w.relay.counters["custody_handed_over"] >= 1, limit_s=10)
        assert not await w.store.is_delivered(ORIGIN, 1)
        w.deliver(w.links_c.custody_notice(B, [pid], delivered=True), C, 0x102)
        await wait_for(lambda: w.store.is_delivered(ORIGIN, 1), limit_s=10)
        assert w.relay.counters["custody_delivered_received"] == 1
