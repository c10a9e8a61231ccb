"""Custody notices riding in forwards: a hub that passes a report on within the short wait before its custody
notice sends the notice inside the same frame (a broadcast forward, linkauth type 0x08) instead of in a frame
of its own. The next hop takes the envelope, the hub behind takes the notice, every other hub ignores it.

Hub B runs for real (SQLite store, relay) on the in-memory mesh; the test plays the origin hub behind it and C,
the neighbour toward the uplink (see tests/test_relay_news.py for the harness)."""

from __future__ import annotations

import asyncio

from meshd.radio.api import BROADCAST
from meshd.wire import linkauth
from meshd.wire.envelope import Envelope, Kind
from tests.test_relay_line import needs, wait_for
from tests.test_relay_news import ORIGIN, SPEEDUP, B, C, World, world

OTHER = 799  # a hub that is neither B's next hop nor behind it


def forwards(w: World) -> list[tuple[int, linkauth.Forward]]:
    """B's forwards: (packet id, forward)."""
    sent = zip(w.radio.sent, w.radio.sent_ids, strict=True)
    return [(pid, linkauth.decode_forward(p)) for (to, p, _), pid in sent if linkauth.is_forward(p) and to == BROADCAST]


async def settle(ack_delays: float = 3.0) -> None:
    """Long enough for a custody notice of B's own to have gone, had one been due."""
    await asyncio.sleep(ack_delays * 1.0 / SPEEDUP + 0.05)


async def test_a_report_passed_on_at_once_carries_the_custody_notice_for_the_hub_behind(tmp_path):
    async with world(tmp_path) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: bool(forwards(w)), limit_s=10)
        [(pid, forward)] = forwards(w)
        assert forward.next_hop == C
        assert Envelope.from_bytes(forward.envelope).id == f"{ORIGIN}:1"
        assert forward.notice_to == ORIGIN
        notice = linkauth.decode_custody_notice(forward.notice)
        w.links_origin.verify_custody_notice(notice)
        assert notice.packet_ids == (0x100,)
        assert not notice.delivered
        await settle()
        # no notice of its own for that frame: the one in the forward was all the origin got
        assert not any(to == ORIGIN for to, _, _ in w.radio.sent)
        assert [(to, pid_) for to, _, pid_ in w.radio.messages() if to == ORIGIN] == [(ORIGIN, pid)]
        assert w.relay.counters["custody_acks_riding"] == 1
        # C answers the forward by its packet id, as any data frame: B hands the report over
        w.deliver(w.links_c.custody_notice(B, [pid]), C, 0x101)
        await wait_for(lambda: w.relay.counters["custody_handed_over"] >= 1, limit_s=10)


async def test_without_a_next_hop_the_custody_notice_goes_in_a_frame_of_its_own(tmp_path):
    async with world(tmp_path) as w:
        await wait_for(lambda: C in w.relay.routes.neighbours, limit_s=10)
        w.relay.routes.neighbours.pop(C)  # as if C's beacon had never come: nowhere to pass the report on
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: any(to == ORIGIN for to, _, _ in w.radio.sent), limit_s=10)
        [frame] = [frame for to, frame, _ in w.radio.sent if to == ORIGIN]
        assert linkauth.decode_custody_notice(frame).packet_ids == (0x100,)
        assert not forwards(w)
        assert w.relay.counters["custody_acks_riding"] == 0


async def test_a_notice_riding_in_a_neighbours_forward_hands_our_report_over(tmp_path):
    async with world(tmp_path) as w:
        env = await w.relay.originate(Kind.NEEDS, needs(1))
        await wait_for(lambda: bool(w.data_to_c()), limit_s=10)
        [pid] = w.data_to_c()
        # C passes it on (to a hub B does not know) with its custody notice for B riding along
        riding = linkauth.Forward(OTHER, B, w.links_c.custody_notice(B, [pid]), env.to_bytes())
        w.deliver(linkauth.encode_forward(riding), C, 0x300, to=BROADCAST)
        await wait_for(lambda: w.relay.counters["custody_handed_over"] >= 1, limit_s=10)
        assert w.relay.counters["custody_notices_heard_riding"] == 1
        assert (await w.store.get(env.origin, env.seq)).handed_to == C  # type: ignore[union-attr]
        assert w.relay.counters["accepted"] == 0  # the envelope was for the next hop, not for us


async def test_a_forged_notice_riding_in_a_forward_hands_nothing_over(tmp_path):
    async with world(tmp_path) as w:
        env = await w.relay.originate(Kind.NEEDS, needs(1))
        await wait_for(lambda: bool(w.data_to_c()), limit_s=10)
        [pid] = w.data_to_c()
        # the origin's key, not C's: a notice made by another hub under C's node number
        forged = linkauth.Forward(OTHER, B, w.links_origin.custody_notice(B, [pid]), env.to_bytes())
        w.deliver(linkauth.encode_forward(forged), C, 0x300, to=BROADCAST)
        await wait_for(lambda: w.relay.counters["rejected_wrong_sender"] >= 1, limit_s=10)
        assert w.relay.counters["custody_handed_over"] == 0
        assert (await w.store.get(env.origin, env.seq)).handed_to == 0  # type: ignore[union-attr]


async def test_a_forward_for_other_hubs_is_ignored_and_one_for_us_is_taken_and_answered(tmp_path):
    async with world(tmp_path) as w:
        report = w.report(5).to_bytes()
        notice = w.links_origin.custody_notice(C, [0x999])
        w.deliver(linkauth.encode_forward(linkauth.Forward(OTHER, C, notice, report)), ORIGIN, 0x400, to=BROADCAST)
        await settle()
        assert w.relay.counters["accepted"] == 0
        assert w.relay.counters["custody_notices_heard_riding"] == 0
        assert await w.store.get(ORIGIN, 5) is None
        # the same report with B as the next hop: stored, and answered by the forward's packet id
        w.deliver(linkauth.encode_forward(linkauth.Forward(B, C, notice, report)), ORIGIN, 0x401, to=BROADCAST)
        await wait_for(lambda: w.relay.counters["accepted"] == 1, limit_s=10)
        await wait_for(lambda: any(0x401 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=10)


async def test_a_malformed_forward_is_counted_and_dropped(tmp_path):
    async with world(tmp_path) as w:
        w.deliver(b"\x00\x08\x01\x02\x03", ORIGIN, 0x500, to=BROADCAST)
        await wait_for(lambda: w.relay.counters["rejected_malformed"] >= 1, limit_s=10)
