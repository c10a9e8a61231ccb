"""A custody notice names the data frames it answers (their packet ids): a hub hands a report over only on a
notice answering one of its sends made since it last took custody of the report itself. A notice for a send
before a copy came back (the report may have gone round a loop since) counts for nothing; before, such a
notice could leave a report carried by no hub (a 20-camp bench run and `make demo` each lost one).

Every rule holds for both forms of the notice: the compact one under the two hubs' link key (what hubs send
once they know each other's camp, meshd.wire.linkauth) and the signed envelope (before that)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.errors import DecodeError
from meshd.radio.api import BROADCAST, ReceivedPacket
from meshd.relay.relay import Relay
from meshd.store.hub import HubStore
from meshd.wire import bodies, codec, linkauth
from meshd.wire.envelope import Envelope, Kind, sign
from tests.support.fakemesh import FakeMesh, FakeRadio
from tests.support.hubs import make_hub, provision, running
from tests.test_relay_line import needs, wait_for

B, C, ORIGIN = 501, 502, 503
REPORT = [(ORIGIN, 1)]


@dataclass
class HubB:
    """Hub B, running; the test plays its neighbour C (which has an uplink) and the origin hub."""

    relay: Relay
    store: HubStore
    radio: FakeRadio
    key_c: Ed25519PrivateKey
    report: Envelope
    links_c: linkauth.LinkKeys
    compact: bool = False

    def deliver(self, payload: bytes, sender: int, pid: int, to: int = B) -> None:
        self.radio.deliver(ReceivedPacket(from_node=sender, to_node=to, packet_id=pid, portnum=256, payload=payload))

    def notice_from_c(self, answers: list[int] | None, pid: int) -> None:
        if self.compact:
            assert answers, "a compact notice always names the frames it answers"
            self.deliver(self.links_c.custody_notice(B, answers), C, pid)
            return
        body = bodies.encode_delivered_ids(REPORT, answers or ())
        self.deliver(sign(Envelope(C, 0, Kind.CUSTODY, body), self.key_c).to_bytes(), C, pid)

    def data_sends_to_c(self) -> list[int]:
        """Packet ids of B's data frames to C, in order."""
        sent = zip(self.radio.sent, self.radio.sent_ids, strict=True)
        return [pid for (to, payload, _), pid in sent if to == C and linkauth.frame_kind(payload) is Kind.NEEDS]

    async def sends_to_c(self, at_least: int) -> list[int]:
        await wait_for(lambda: len(self.data_sends_to_c()) >= at_least, limit_s=20)
        return self.data_sends_to_c()

    async def counter(self, name: str, at_least: int = 1) -> None:
        await wait_for(lambda: self.relay.counters[name] >= at_least, limit_s=10)

    async def carries_the_report(self) -> bool:
        return [e.key for e in await self.store.pending()] == REPORT


@contextlib.asynccontextmanager
async def hub_b(
    tmp_path, *, route_to_c: bool = True, report_from_origin: bool = True, compact: bool = False
) -> AsyncIterator[HubB]:
    p = provision(tmp_path, [B, C, ORIGIN])
    mesh = FakeMesh(seed=5)
    hub = make_hub(p, B, mesh.radio(B), Clock(speedup=50), duty_cycle_pct=100.0)
    key_c = keyfiles.load(p.camps[C]).sign
    report = codec.build_envelope(Kind.NEEDS, needs(1), origin=ORIGIN, seq=1, key=keyfiles.load(p.camps[ORIGIN]).sign)
    async with running([hub]):
        assert hub.relay is not None
        assert hub.store is not None
        b = HubB(hub.relay, hub.store, mesh.radios[B], key_c, report, linkauth.LinkKeys(C, key_c, p.registry), compact)
        if route_to_c:
            status = bodies.encode_status({"uplink_hops": 1, "uplink_up": True, "via": 0})
            b.deliver(sign(Envelope(C, 0, Kind.STATUS, status), key_c).to_bytes(), C, 1, to=BROADCAST)
        if report_from_origin:
            b.deliver(report.to_bytes(), ORIGIN, 2)
        yield b


@pytest.mark.parametrize("compact", [False, True], ids=["signed", "compact"])
async def test_a_copy_back_from_our_upstream_voids_notices_for_earlier_sends(tmp_path, compact):
    """`make demo` lost a report this way: camp 1 sent it to camp 3, camp 3 passed it on to camp 2, camp 2 (from
    which camp 1 had it) sent it to camp 1 again, and camp 1, still waiting for camp 3's notice, took that copy
    as a retransmission, acknowledged it (so camp 2 let it go) and then handed it over on camp 3's notice."""
    async with hub_b(tmp_path, compact=compact) as b:
        [first] = (await b.sends_to_c(1))[:1]
        # the hub we got it from sends it again (round a loop, or its notice was lost: we cannot tell)
        b.deliver(b.report.to_bytes(), ORIGIN, 3)
        await b.counter("duplicates")
        # C's notice for our first send: C may have passed it on since, and this copy may be it
        b.notice_from_c([first], 10)
        await b.counter("custody_stale")
        assert await b.carries_the_report()
        assert b.relay.counters["custody_handed_over"] == 0
        # only a notice for a send made after that copy hands it over
        latest = (await b.sends_to_c(2))[-1]
        b.notice_from_c([latest], 11)
        await b.counter("custody_handed_over")
        assert await b.store.pending() == []


@pytest.mark.parametrize("compact", [False, True], ids=["signed", "compact"])
async def test_a_notice_for_any_send_since_we_took_custody_hands_over(tmp_path, compact):
    """A retry crossed C's late notice for the first send: nothing came back in between, so C did take it."""
    async with hub_b(tmp_path, compact=compact) as b:
        first = (await b.sends_to_c(2))[0]
        b.notice_from_c([first], 10)
        await b.counter("custody_handed_over")
        assert await b.store.pending() == []
        assert b.relay.counters["custody_stale"] == 0


@pytest.mark.parametrize("compact", [False, True], ids=["signed", "compact"])
async def test_a_report_that_came_back_ignores_notices_for_sends_before_it(tmp_path, compact):
    async with hub_b(tmp_path, compact=compact) as b:
        [first] = (await b.sends_to_c(1))[:1]
        # C took it (notice lost), then sent it back to us; its notice for our first send comes after
        b.notice_from_c([first], 10)
        await asyncio.sleep(0)  # the notice is handled first...
        await b.counter("custody_handed_over")
        b.deliver(b.report.to_bytes(), C, 11)  # ...then the report comes back: carried again
        await b.counter("taken_back")
        b.notice_from_c([first], 12)  # a second copy of that notice
        await b.counter("custody_stale")
        assert await b.carries_the_report()


async def test_notices_from_hubs_that_name_no_frames_still_hand_over(tmp_path):
    async with hub_b(tmp_path) as b:
        await b.sends_to_c(1)
        b.notice_from_c(None, 10)
        await b.counter("custody_handed_over")
        assert await b.store.pending() == []


async def test_our_custody_notice_names_the_frames_it_answers(tmp_path):
    async with hub_b(tmp_path, route_to_c=False, report_from_origin=False) as b:
        b.deliver(b.report.to_bytes(), ORIGIN, 0x12345678)
        b.deliver(b.report.to_bytes(), ORIGIN, 0x0BCDEF01)  # a retransmission before our answer

        def notices() -> list[Envelope]:
            sent = (Envelope.from_bytes(payload) for to, payload, _ in b.radio.sent if to == ORIGIN)
            return [env for env in sent if env.kind is Kind.CUSTODY]

        await wait_for(lambda: bool(notices()), limit_s=10)
        [notice] = notices()
        assert bodies.decode_delivered_ids(notice.body) == REPORT
        assert bodies.decode_custody_answers(notice.body) == {0x5678, 0xEF01}


async def test_once_it_knows_the_camp_our_notice_is_compact_and_names_whole_packet_ids(tmp_path):
    """After a signed frame of the origin hub (its beacon), B answers it with a compact notice that only the
    origin's link key verifies, naming all 32 bits of each frame's packet id."""
    async with hub_b(tmp_path, route_to_c=False, report_from_origin=False) as b:
        p_origin = keyfiles.load(tmp_path / f"keys{ORIGIN}")
        status = bodies.encode_status({"uplink_hops": 0, "uplink_up": False, "via": 0})
        b.deliver(sign(Envelope(ORIGIN, 0, Kind.STATUS, status), p_origin.sign).to_bytes(), ORIGIN, 1, to=BROADCAST)
        b.deliver(b.report.to_bytes(), ORIGIN, 0x12345678)
        b.deliver(b.report.to_bytes(), ORIGIN, 0x0BCDEF01)

        def notices() -> list[bytes]:
            return [payload for to, payload, _ in b.radio.sent if to == ORIGIN and linkauth.is_link_frame(payload)]

        await wait_for(lambda: bool(notices()), limit_s=10)
        [frame] = notices()
        assert len(frame) < 40  # a signed notice was ~85 bytes
        notice = linkauth.decode_custody_notice(frame)
        assert notice.camp == B
        assert set(notice.packet_ids) == {0x12345678, 0x0BCDEF01}
        linkauth.LinkKeys(ORIGIN, p_origin.sign, b.links_c.registry).verify_custody_notice(notice)
        with pytest.raises(Exception, match="does not verify"):  # C cannot take it for its own
            b.links_c.verify_custody_notice(notice)


async def test_a_genuine_notice_of_another_hub_under_the_receivers_node_number_is_refused(tmp_path):
    """The origin hub's own notice, made for B, naming a frame B sent to C, sent as if from C: the node number
    is not authenticated, so the notice's camp must be the one B knows for that node."""
    async with hub_b(tmp_path, compact=True) as b:
        [first] = (await b.sends_to_c(1))[:1]
        links_origin = linkauth.LinkKeys(ORIGIN, keyfiles.load(tmp_path / f"keys{ORIGIN}").sign, b.links_c.registry)
        b.deliver(links_origin.custody_notice(B, [first]), C, 30)
        await b.counter("rejected_wrong_sender")
        assert await b.carries_the_report()


async def test_a_forged_or_misdirected_compact_notice_hands_nothing_over(tmp_path):
    async with hub_b(tmp_path, compact=True) as b:
        [first] = (await b.sends_to_c(1))[:1]
        good = b.links_c.custody_notice(B, [first])
        forged = good[:-1] + bytes([good[-1] ^ 1])  # one bit of the tag
        b.deliver(forged, C, 20)
        await b.counter("rejected_bad_signature")
        # a notice C made for another hub (the origin) does not count for B
        b.deliver(b.links_c.custody_notice(ORIGIN, [first]), C, 21)
        await b.counter("rejected_bad_signature", 2)
        b.deliver(good[:5], C, 22)  # cut short
        await b.counter("rejected_malformed")
        assert await b.carries_the_report()
        assert b.relay.counters["custody_handed_over"] == 0
        # the genuine one still works, and a replay of it later changes nothing
        b.deliver(good, C, 23)
        await b.counter("custody_handed_over")
        assert await b.store.pending() == []
        with pytest.raises(DecodeError):
            linkauth.decode_custody_notice(good[:5])
