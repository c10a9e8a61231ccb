"""Delivered news goes back to the neighbour a report came from under the two hubs' link key: in the custody
notices we send it anyway, or, when none is due, in a short Delivered notice of its own that the neighbour
answers like a data frame (sent again until answered, NEWS_ROUNDS times at most). A signed broadcast was
~90 bytes and went to every neighbour, repeated three times at the edge (docs/BENCHMARKS.md, "Relay").

Hub B runs for real (SQLite store, relay); the test plays the origin hub (which B got the report from) and C,
the neighbour with the uplink, whose compact custody notice says HQ has the report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.keys import raw_public
from meshd.radio.api import BROADCAST, ReceivedPacket
from meshd.relay import relay as relay_module
from meshd.relay.relay import Relay, RelayTiming, fit_news
from meshd.store.hub import HubStore
from meshd.wire import bodies, codec, linkauth
from meshd.wire.envelope import Envelope, Kind, sign
from meshd.wire.registry import Camp, Registry
from tests.support.fakemesh import FakeMesh, FakeRadio
from tests.support.hubs import FAST_TIMING, make_hub, provision, running
from tests.test_relay_line import needs, wait_for

B, C, ORIGIN = 701, 702, 703
SPEEDUP = 50.0


@dataclass
class World:
    relay: Relay
    store: HubStore
    radio: FakeRadio
    links_c: linkauth.LinkKeys
    links_origin: linkauth.LinkKeys
    key_origin: Ed25519PrivateKey
    key_c: Ed25519PrivateKey

    def deliver(self, payload: bytes, sender: int, pid: int, to: int = B) -> None:
        self.radio.deliver(ReceivedPacket(from_node=sender, to_node=to, packet_id=pid, portnum=256, payload=payload))

    def beacon(self, camp: int, key: Ed25519PrivateKey, hops: int, pid: int) -> None:
        status = bodies.encode_status({"uplink_hops": hops, "uplink_up": hops == 1, "via": 0})
        self.deliver(sign(Envelope(camp, 0, Kind.STATUS, status), key).to_bytes(), camp, pid, to=BROADCAST)

    def report(self, seq: int) -> Envelope:
        return codec.build_envelope(Kind.NEEDS, needs(seq), origin=ORIGIN, seq=seq, key=self.key_origin)

    def frames_to(self, node: int) -> list[tuple[int, linkauth.CustodyNotice]]:
        """B's link frames to `node`: (packet id, notice)."""
        sent = zip(self.radio.sent, self.radio.sent_ids, strict=True)
        return [
            (pid, linkauth.decode_custody_notice(payload))
            for (to, payload, _), pid in sent
            if to == node and linkauth.is_link_frame(payload)
        ]

    def news_notices(self) -> list[tuple[int, linkauth.CustodyNotice]]:
        return [(pid, n) for pid, n in self.frames_to(ORIGIN) if not n.packet_ids]

    def data_to_c(self) -> list[int]:
        sent = zip(self.radio.sent, self.radio.sent_ids, strict=True)
        return [pid for (to, payload, _), pid in sent if to == C and not linkauth.is_link_frame(payload)]

    def signed_delivered_broadcasts(self) -> int:
        return sum(
            1
            for to, payload, _ in self.radio.sent
            if to == BROADCAST
            and not linkauth.is_link_frame(payload)
            and Envelope.from_bytes(payload).kind is Kind.DELIVERED
        )

    async def news_then_report_2(self) -> tuple[int, linkauth.CustodyNotice]:
        """Report 1 reaches HQ; once B has taken up the news for the origin, the origin sends report 2 (within
        the wait before a notice of its own). B's custody notice for report 2: (packet id, notice)."""
        self.deliver(self.report(1).to_bytes(), ORIGIN, 0x100)
        await self.hq_has_it_via_c(1, 0x101)
        await wait_for(lambda: bool(self.relay._news.get(ORIGIN)), limit_s=10)
        self.deliver(self.report(2).to_bytes(), ORIGIN, 0x200)
        await wait_for(lambda: any(0x200 in n.packet_ids for _, n in self.frames_to(ORIGIN)), limit_s=10)
        [answer] = [(pid, n) for pid, n in self.frames_to(ORIGIN) if 0x200 in n.packet_ids]
        return answer

    async def hq_has_it_via_c(self, seq: int, pid: int) -> None:
        """B sends the report on to C; C's custody notice says HQ has it (after B answered the origin: an
        answer after that would say "delivered" itself, and no news would be left to send)."""
        await wait_for(lambda: any(n.packet_ids for _, n in self.frames_to(ORIGIN)), limit_s=20)
        await wait_for(lambda: len(self.data_to_c()) >= 1, limit_s=20)
        frame = self.links_c.custody_notice(B, [self.data_to_c()[-1]], delivered=True)
        self.deliver(frame, C, pid)
        await wait_for(lambda: self.store.is_delivered(ORIGIN, seq), limit_s=10)


@contextlib.asynccontextmanager
async def world(tmp_path, timing: RelayTiming = FAST_TIMING) -> AsyncIterator[World]:
    p = provision(tmp_path, [B, C, ORIGIN])
    mesh = FakeMesh(seed=7)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=SPEEDUP), timing, duty_cycle_pct=100.0)
    key_c = keyfiles.load(p.camps[C]).sign
    key_origin = keyfiles.load(p.camps[ORIGIN]).sign
    async with running([hub]):
        assert hub.relay is not None
        assert hub.store is not None
        w = World(
            hub.relay,
            hub.store,
            mesh.radios[B],
            linkauth.LinkKeys(C, key_c, p.registry),
            linkauth.LinkKeys(ORIGIN, key_origin, p.registry),
            key_origin,
            key_c,
        )
        w.beacon(C, key_c, 1, 1)
        w.beacon(ORIGIN, key_origin, 0, 2)  # tells B the origin's camp: B can use their link key
        yield w


async def test_news_with_no_custody_notice_due_goes_in_a_short_notice_sent_again_until_answered(tmp_path):
    async with world(tmp_path) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await w.hq_has_it_via_c(1, 0x101)
        # no more data from the origin: after a notice interval, a Delivered notice of its own
        await wait_for(lambda: len(w.news_notices()) >= 1, limit_s=10)
        _, notice = w.news_notices()[0]
        assert notice.reports == ((ORIGIN, 1),)
        w.links_origin.verify_custody_notice(notice)  # under the key B shares with the origin
        assert len(linkauth.encode_custody_notice(notice)) <= 24  # a signed Delivered notice: ~90 bytes
        # unanswered (lost): sent again at the next interval
        await wait_for(lambda: len(w.news_notices()) >= 2, limit_s=10)
        # still untold in the store while unanswered: a restart would send it again
        assert await w.store.untold_news() == {ORIGIN: [(ORIGIN, 1)]}
        # answered: never again
        again, _ = w.news_notices()[-1]
        w.deliver(w.links_origin.custody_notice(B, [again]), ORIGIN, 0x102)
        await wait_for(lambda: not w.relay._news.get(ORIGIN), limit_s=5)
        assert await w.store.untold_news() == {}
        count = len(w.news_notices())
        await asyncio.sleep(3 * FAST_TIMING.notice_interval_s / SPEEDUP)
        assert len(w.news_notices()) == count
        assert w.relay.counters["custody_stale"] == 0  # the answer to our notice is no stale custody notice
        assert w.signed_delivered_broadcasts() == 0


async def test_unanswered_news_is_given_up_after_notice_rounds(tmp_path):
    async with world(tmp_path) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await w.hq_has_it_via_c(1, 0x101)
        await wait_for(lambda: len(w.news_notices()) >= relay_module.NEWS_ROUNDS, limit_s=15)
        await asyncio.sleep(3 * FAST_TIMING.notice_interval_s / SPEEDUP)
        assert len(w.news_notices()) == relay_module.NEWS_ROUNDS


async def test_news_notices_are_not_sent_on_a_fixed_period(tmp_path):
    # Two hubs with the same fixed period and nearly the same phase collide at a common neighbour every round.
    async with world(tmp_path) as w:
        mesh = w.radio.mesh
        mesh.clock = w.relay.clock  # the mesh records when each frame went on the air
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await w.hq_has_it_via_c(1, 0x101)
        await wait_for(lambda: len(w.news_notices()) >= 7, limit_s=20)
        sent_at = [
            at
            for (sender, to, payload), at in zip(mesh.on_air, mesh.on_air_at, strict=True)
            if sender == B and to == ORIGIN and linkauth.is_link_frame(payload)
            and not linkauth.decode_custody_notice(payload).packet_ids
        ]
        tick = min(relay_module.NEWS_WAIT_S, FAST_TIMING.notice_interval_s / 2)
        # on a fixed period every gap would be a whole number of ticks
        off_tick = [abs(b - a - tick * round((b - a) / tick)) for a, b in itertools.pairwise(sent_at)]
        assert max(off_tick) > 0.05 * tick, (sent_at, off_tick)


async def test_a_neighbour_behind_a_hill_relay_gets_twice_the_rounds(tmp_path):
    # the report came through a relay radio (one hop away): news and answers both cross the busy relay
    async with world(tmp_path) as w:
        via_relay = ReceivedPacket(
            from_node=ORIGIN, to_node=B, packet_id=0x100, portnum=256, payload=w.report(1).to_bytes(), hop_start=1
        )
        w.radio.deliver(via_relay)
        await w.hq_has_it_via_c(1, 0x101)
        rounds = 2 * relay_module.NEWS_ROUNDS
        await wait_for(lambda: len(w.news_notices()) >= rounds, limit_s=20)
        await asyncio.sleep(3 * FAST_TIMING.notice_interval_s / SPEEDUP)
        assert len(w.news_notices()) == rounds
        assert w.relay.counters["news_given_up"] == 1


async def test_news_rides_in_the_custody_notice_for_the_next_report_instead(tmp_path):
    # a notice interval long enough that the next report surely comes within the wait for a custody notice
    async with world(tmp_path, dataclasses.replace(FAST_TIMING, notice_interval_s=150.0)) as w:
        pid, notice = await w.news_then_report_2()
        assert notice.reports == ((ORIGIN, 1),)
        w.links_origin.verify_custody_notice(notice)
        assert w.relay.counters["news_in_custody_notices"] == 1
        # the origin answers that notice as it would a data frame: no notice of its own follows, now or later
        w.deliver(w.links_origin.custody_notice(B, [pid]), ORIGIN, 0x201)
        await wait_for(lambda: not w.relay._news.get(ORIGIN), limit_s=5)
        await asyncio.sleep(2 * 150.0 / SPEEDUP)
        assert w.news_notices() == []
        assert w.signed_delivered_broadcasts() == 0


async def test_news_in_an_unanswered_custody_notice_goes_again_in_a_notice_of_its_own(tmp_path):
    """The custody notice may answer a frame the origin no longer waits for (a retransmission that crossed
    our first answer): its loss would go unnoticed, so the news waits for an answer of its own."""
    async with world(tmp_path, dataclasses.replace(FAST_TIMING, notice_interval_s=150.0)) as w:
        await w.news_then_report_2()  # (and that custody notice is lost)
        await wait_for(lambda: len(w.news_notices()) >= 1, limit_s=10)
        assert w.news_notices()[0][1].reports == ((ORIGIN, 1),)


async def test_a_hub_takes_news_to_disk_and_answers_it(tmp_path):
    async with world(tmp_path) as w:
        # B handed report 1 of the origin on to C earlier; now C tells B that HQ has it, in a notice of its own
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: len(w.data_to_c()) >= 1, limit_s=20)
        w.deliver(w.links_c.custody_notice(B, [w.data_to_c()[-1]]), C, 0x101)
        await wait_for(lambda: w.relay.counters["custody_handed_over"] >= 1, limit_s=10)
        news = w.links_c.delivered_notice(B, [(ORIGIN, 1)])
        w.deliver(news, C, 0x102)
        await wait_for(lambda: any(0x102 in n.packet_ids for _, n in w.frames_to(C)), limit_s=10)
        assert await w.store.is_delivered(ORIGIN, 1)
        assert w.relay.counters["news_received"] == 1


async def test_forged_news_is_refused_and_not_answered(tmp_path):
    async with world(tmp_path) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await wait_for(lambda: len(w.data_to_c()) >= 1, limit_s=20)
        genuine = bytearray(w.links_c.delivered_notice(B, [(ORIGIN, 1)]))
        genuine[-1] ^= 1  # the tag
        w.deliver(bytes(genuine), C, 0x102)
        # the origin's key is no use either: news for B from C is under the key of B and C
        w.deliver(w.links_origin.delivered_notice(B, [(ORIGIN, 1)]), C, 0x103)
        await wait_for(
            lambda: w.relay.counters["rejected_bad_signature"] + w.relay.counters["rejected_wrong_sender"] >= 2,
            limit_s=10,
        )
        assert not await w.store.is_delivered(ORIGIN, 1)
        assert not any({0x102, 0x103} & set(n.packet_ids) for _, n in w.frames_to(C))
        assert w.relay.counters["news_received"] == 0


async def test_a_hub_that_knows_hq_has_a_retransmitted_report_says_so_in_its_answer(tmp_path):
    """The origin missed our custody notice and sends the report again after HQ got it: our answer says
    "delivered" (any hub may, not only an uplink hub), and no separate news follows for it."""
    async with world(tmp_path) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await w.hq_has_it_via_c(1, 0x101)
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x102)  # the retransmission
        await wait_for(lambda: any(0x102 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=10)
        [answer] = [n for _, n in w.frames_to(ORIGIN) if 0x102 in n.packet_ids]
        assert answer.delivered
        await asyncio.sleep(3 * FAST_TIMING.notice_interval_s / SPEEDUP)
        assert w.news_notices() == []


async def test_a_plain_notice_never_names_again_a_frame_an_earlier_notice_said_delivered_of(tmp_path):
    """Had the "delivered" answer been lost, a plain repeat would hand the report over without the news, which
    we no longer send (the 5-hub simulator line lost the origin's receipt for a batch this way)."""
    async with world(tmp_path) as w:
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x100)
        await w.hq_has_it_via_c(1, 0x101)
        w.deliver(w.report(1).to_bytes(), ORIGIN, 0x102)  # answered "delivered"
        await wait_for(lambda: any(0x102 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=10)
        w.deliver(w.report(2).to_bytes(), ORIGIN, 0x200)  # not delivered yet: a plain answer
        await wait_for(lambda: any(0x200 in n.packet_ids for _, n in w.frames_to(ORIGIN)), limit_s=10)
        [plain] = [n for _, n in w.frames_to(ORIGIN) if 0x200 in n.packet_ids]
        assert not plain.delivered
        assert 0x102 not in plain.packet_ids
        assert set(plain.packet_ids) <= {0x200, 0x100}  # the plain answer to the first send may be repeated


def test_news_from_many_origins_is_split_into_frames_that_fit():
    pair = {camp: Ed25519PrivateKey.generate() for camp in (1, 2)}
    registry = Registry(
        bytes(32), bytes(32), {c: Camp(c, f"C{c}", raw_public(k.public_key())) for c, k in pair.items()}
    )
    links = linkauth.LinkKeys(2, pair[2], registry)
    news = [(2**31 + i * 977, 2**31 + i) for i in range(100)]  # every report from another origin: ~10 bytes each
    sent: list[tuple[int, int]] = []
    rest = news
    while rest:
        frame, chunk = fit_news(functools.partial(links.delivered_notice, 1), rest, at_least_one=True)
        assert len(frame) <= linkauth.MAX_FRAME_LEN
        assert chunk
        sent += chunk
        rest = rest[len(chunk) :]
    assert sent == news
    frame, carried = fit_news(
        functools.partial(links.custody_notice, 1, list(range(16)), delivered=False), news, at_least_one=False
    )
    assert len(frame) <= linkauth.MAX_FRAME_LEN
    assert 0 < len(carried) < len(news)
    assert linkauth.decode_custody_notice(frame).reports == tuple(carried)
