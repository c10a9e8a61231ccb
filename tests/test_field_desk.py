"""The hub's field desk with a real relay and SQLite store, and a fake radio that records replies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.config import RadioSection, RelaySection
from meshd.errors import RadioError, SignatureError, StoreError
from meshd.field.desk import FieldDesk
from meshd.field.roster import Handset, Roster
from meshd.radio.api import BROADCAST, PRIVATE_PORT, TEXT_PORT, ReceivedPacket
from meshd.relay.priority import Prio
from meshd.relay.relay import Relay
from meshd.store.hub import HubStore
from meshd.wire import codec
from meshd.wire.envelope import Envelope, Kind
from meshd.wire.text import EN, KO, help_text
from tests.support.fakemesh import FakeMesh, FakeRadio
from tests.support.hubs import Provisioned, provision

CAMP = 412
HUB_NODE = 0x0000_0412
ALICE = 0xA1B2_C3D4  # rostered handset
BOB = 0x0B0B_0B0B  # not in the roster
ALICE_KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(101, 133))


class RecordingRadio(FakeRadio):
    """Records text replies; at each send, reads the database through its own connection, i.e. only what is
    committed, to show what was durable at the moment the reply left."""

    def __init__(self, mesh: FakeMesh, node: int, db_path: Path) -> None:
        super().__init__(mesh, node)
        self.db_path = db_path
        self.texts: list[tuple[int, str]] = []
        self.committed_at_send: list[tuple[int, int]] = []  # (inbound rows, outbox rows)
        self.fail_sends = False
        self.sent_event = asyncio.Event()

    async def send_text(self, text: str, *, to: int, want_ack: bool = True, channel: int = 0) -> int:
        if self.fail_sends:
            raise RadioError("radio link is not open")
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            inbound = conn.execute("SELECT COUNT(*) FROM inbound").fetchone()[0]
            outbox = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        finally:
            conn.close()
        self.committed_at_send.append((inbound, outbox))
        self.texts.append((to, text))
        self.sent_event.set()
        return await super().send_text(text, to=to, want_ack=want_ack, channel=channel)


class ManualClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Setup:
    p: Provisioned
    desk: FieldDesk
    radio: RecordingRadio
    store: HubStore
    relay: Relay
    db_path: Path
    roster: Roster
    clock: ManualClock
    uplink_at: list[float | None] = field(default_factory=lambda: [None])
    _packet_ids: int = 0

    async def dm(
        self,
        text: str | bytes,
        *,
        sender: int = ALICE,
        pki: bool = False,
        key: bytes = b"",
        to: int | None = None,
        packet_id: int | None = None,
    ) -> None:
        self._packet_ids += 1
        payload = text.encode("utf-8") if isinstance(text, str) else text
        packet = ReceivedPacket(
            from_node=sender,
            to_node=HUB_NODE if to is None else to,
            packet_id=self._packet_ids if packet_id is None else packet_id,
            portnum=TEXT_PORT,
            payload=payload,
            pki_encrypted=pki,
            public_key=key,
        )
        await self.desk.handle_text(packet)

    async def replies(self, count: int) -> list[tuple[int, str]]:
        """Wait until `count` replies went to the radio, then give them all."""
        async with asyncio.timeout(5.0):
            while len(self.radio.texts) < count:
                self.radio.sent_event.clear()
                await self.radio.sent_event.wait()
        await asyncio.sleep(0.02)  # and catch any reply beyond the expected ones
        return list(self.radio.texts)

    async def envelope(self, seq: int) -> Envelope:
        entry = await self.store.get(CAMP, seq)
        assert entry is not None
        return Envelope.from_bytes(entry.envelope)

    async def inbound(self) -> list[tuple[int, int, int, str, str, int]]:
        return await self.store.db.read(
            lambda conn: conn.execute(
                "SELECT origin, seq, from_node, language, kind, verified FROM inbound ORDER BY seq"
            ).fetchall()
        )


@contextlib.asynccontextmanager
async def field_desk(tmp_path: Path, *, per_hour: int = 30) -> AsyncIterator[Setup]:
    p = provision(tmp_path, [CAMP])
    db_path = tmp_path / "hub.db"
    radio = RecordingRadio(FakeMesh(), HUB_NODE, db_path)
    roster_path = tmp_path / "roster.json"
    Roster([Handset(ALICE, "Water team 2", ALICE_KEY)], path=roster_path).save()
    roster = Roster.load(roster_path)
    clock = ManualClock()
    async with HubStore(db_path) as store:
        relay = Relay(
            camp_id=CAMP,
            keys=keyfiles.load(p.camps[CAMP]),
            registry=p.registry,
            store=store,
            radio=radio,
            relay_config=RelaySection(),
            radio_config=RadioSection(),
            clock=Clock(),
        )
        uplink_at: list[float | None] = [None]
        desk = FieldDesk(
            CAMP,
            relay,
            store,
            radio,
            roster,
            per_sender_per_hour=per_hour,
            last_uplink=lambda: uplink_at[0],
            clock=clock,
        )
        setup = Setup(p, desk, radio, store, relay, db_path, roster, clock, uplink_at)
        task = asyncio.create_task(desk.run(delivered_every_s=3600))
        try:
            yield setup
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def s(tmp_path: Path) -> AsyncIterator[Setup]:
    async with field_desk(tmp_path) as setup:
        yield setup


# ------------------------------------------------------------------ reports and receipts


async def test_needs_report_is_committed_before_received_reply(s: Setup) -> None:
    await s.dm("N W4 F3 P12500")
    assert await s.replies(1) == [(ALICE, f"received #{CAMP}:1")]
    # At the moment the reply was handed to the radio, a separate connection already saw the committed rows.
    assert s.radio.committed_at_send == [(1, 1)]
    env = await s.envelope(1)
    assert env.kind is Kind.NEEDS
    assert env.origin == CAMP
    body = codec.decode_body(env.kind, env.body, env.origin)
    assert body["camp"] == CAMP
    assert body["severity"] == {"water": 4, "food": 3}
    assert body["population"] == {"individuals": 12500}
    assert await s.inbound() == [(CAMP, 1, ALICE, EN, "needs", 0)]


async def test_korean_report_gets_korean_receipt(s: Setup) -> None:
    await s.dm("필요 물4 식량3 천막2 옷3 의료4 위생3 인원12500 아이14", sender=BOB)
    assert await s.replies(1) == [(BOB, f"접수 #{CAMP}:1")]
    env = await s.envelope(1)
    body = codec.decode_body(env.kind, env.body, env.origin)
    assert body["unaccompanied_children"] == 14
    assert (await s.inbound())[0][3] == KO


async def test_alerts_are_stored_ahead_of_needs(s: Setup) -> None:
    await s.dm("A FIRE")
    await s.dm("A CHOLERA 3 block C")
    assert await s.replies(2) == [(ALICE, f"received #{CAMP}:1"), (ALICE, f"received #{CAMP}:2")]
    fire, cholera = await s.store.get(CAMP, 1), await s.store.get(CAMP, 2)
    assert fire is not None
    assert fire.kind == "alert"
    assert fire.priority == Prio.ALERT
    assert cholera is not None
    assert cholera.priority > Prio.NEEDS
    body = codec.decode_body(Kind.ALERT, Envelope.from_bytes(cholera.envelope).body, CAMP)
    assert body["type"] == "disease_outbreak"
    assert body["count"] == 3
    assert body["camp"] == CAMP


async def test_mistake_is_answered_in_the_senders_language_and_nothing_is_stored(s: Setup) -> None:
    await s.dm("N W9")
    await s.dm("필요 물9", sender=BOB)
    assert await s.replies(2) == [
        (ALICE, "W9? severity is 0–5. Example: N W4 F3"),
        (BOB, "물9? 심각도는 0–5. 예: 필요 물4 식량3"),
    ]
    assert await s.store.pending() == []
    assert s.desk.counters["shorthand_errors"] == 2


async def test_help_in_both_languages(s: Setup) -> None:
    await s.dm("?")
    await s.dm("도움", sender=BOB)
    assert await s.replies(2) == [(ALICE, help_text(EN)), (BOB, help_text(KO))]
    assert all(len(text.encode()) <= 200 for _, text in s.radio.texts)


async def test_status_reports_queue_uplink_age_and_reports_today(s: Setup) -> None:
    await s.dm("N W4")
    await s.dm("A FIRE")
    await s.dm("STATUS")
    await s.replies(3)
    assert s.radio.texts[2] == (ALICE, "status: queue 2, last uplink never, reports today 2")
    s.uplink_at[0] = s.clock() - 300
    await s.dm("상태", sender=BOB)
    await s.replies(4)
    assert s.radio.texts[3] == (BOB, "상태: 대기 2, 본부 전송 5분 전, 오늘 보고 2")


async def test_unreadable_bytes_get_a_bilingual_reply(s: Setup) -> None:
    await s.dm(b"N W4 \xff\xfe")
    (to, text), *_ = await s.replies(1)
    assert to == ALICE
    assert "UTF-8" in text
    assert "읽을 수 없는" in text
    assert await s.store.pending() == []


async def test_channel_chatter_and_other_ports_are_ignored(s: Setup) -> None:
    await s.dm("N W4", to=BROADCAST)
    await s.dm("N W4", to=0x1234_5678)  # a DM to some other node, overheard
    await s.desk.handle_text(
        ReceivedPacket(from_node=ALICE, to_node=HUB_NODE, packet_id=99, portnum=PRIVATE_PORT, payload=b"N W4")
    )
    await asyncio.sleep(0.05)
    assert s.radio.texts == []
    assert await s.store.pending() == []
    assert s.desk.counters["ignored_not_for_us"] == 3


async def test_a_packet_delivered_twice_makes_one_report(s: Setup) -> None:
    await s.dm("N W4", packet_id=777)
    await s.dm("N W4", packet_id=777)
    replies = await s.replies(2)
    assert replies == [(ALICE, f"received #{CAMP}:1")] * 2  # the receipt is repeated, the report is not
    assert len(await s.store.pending()) == 1


async def test_store_failure_is_never_acknowledged(s: Setup) -> None:
    async def failing(*args: object, **kwargs: object) -> Envelope:
        raise StoreError("store commit failed: disk I/O error")

    s.desk.relay = type("Broken", (), {"originate": staticmethod(failing)})()
    await s.dm("N W4")
    await s.dm("필요 물4", sender=BOB)
    replies = await s.replies(2)
    assert [to for to, _ in replies] == [ALICE, BOB]
    assert "NOT stored" in replies[0][1]
    assert "저장 안 됨" in replies[1][1]
    assert not any("received" in text or "접수" in text for _, text in replies)
    assert s.desk.counters["not_stored"] == 2


# ------------------------------------------------------------------ provenance


async def test_roster_key_match_on_pki_dm_is_verified_anything_else_unverified(s: Setup) -> None:
    await s.dm("N W1", pki=True, key=ALICE_KEY)  # rostered node, its key, PKI: verified
    await s.dm("N W2", pki=True, key=OTHER_KEY)  # rostered node number, wrong key: someone posing as it
    await s.dm("N W3", pki=False, key=ALICE_KEY)  # right key but not PKI-encrypted: the key proves nothing
    await s.dm("N W4", sender=BOB, pki=True, key=OTHER_KEY)  # not in the roster
    await s.replies(4)
    flags = [(await s.envelope(seq)).unverified for seq in (1, 2, 3, 4)]
    assert flags == [False, True, True, True]
    assert [row[5] for row in await s.inbound()] == [1, 0, 0, 0]
    assert s.desk.counters["verified"] == 1
    assert s.desk.counters["unverified"] == 3
    assert s.desk.counters["roster_key_mismatch"] == 1
    # the flag is under the hub's signature, so it reaches HQ as signed: flipping it breaks the signature
    env = await s.envelope(2)
    s.p.registry.verify_envelope(env)
    with pytest.raises(SignatureError):
        s.p.registry.verify_envelope(dataclasses.replace(env, unverified=False))


async def test_roster_edits_are_picked_up_without_restart(s: Setup) -> None:
    await s.dm("N W1", sender=BOB, pki=True, key=OTHER_KEY)
    assert s.roster.path is not None
    on_disk = Roster.load(s.roster.path)
    on_disk.add(Handset(BOB, "Medical team", OTHER_KEY))
    on_disk.save()
    os.utime(s.roster.path, ns=(0, 1))  # a distinct stamp even on coarse-timestamp filesystems
    await s.dm("N W2", sender=BOB, pki=True, key=OTHER_KEY)
    await s.replies(2)
    assert [(await s.envelope(seq)).unverified for seq in (1, 2)] == [True, False]


# ------------------------------------------------------------------ sealed reports


async def test_sealed_text_never_reaches_the_database_or_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clear = "2번문 천막 남자가 밤마다 위협 xq7-witness"
    needles = [part.encode("utf-8") for part in ("2번문 천막", "위협", "xq7-witness")]

    def assert_not_in_files(db_path: Path) -> None:
        for path in (db_path, db_path.with_name("hub.db-wal"), db_path.with_name("hub.db-shm")):
            if path.exists():
                raw = path.read_bytes()
                assert not any(n in raw for n in needles), path

    async with field_desk(tmp_path) as s:
        await s.dm(f"보호! {clear}", sender=BOB, pki=True)
        assert await s.replies(1) == [(BOB, f"접수 #{CAMP}:1")]
        env = await s.envelope(1)
        assert env.kind is Kind.SEALED
        # only HQ's protection key opens it, and it carries the reporter's node
        opened = codec.decode_body(Kind.SEALED, env.body, CAMP, open_key=s.p.hq.seal)
        assert opened == {"kind": "protection", "text": clear, "reporter_node": BOB}
        assert (await s.inbound())[0][4] == "sealed"
        assert_not_in_files(s.db_path)  # while running: main file and WAL
    assert_not_in_files(tmp_path / "hub.db")  # after the closing checkpoint
    assert not any(n.decode() in caplog.text for n in needles)
    assert "sealed" in caplog.text  # it was logged, by size only


# ------------------------------------------------------------------ delivered receipts


async def test_delivered_receipts_after_hq_custody(s: Setup) -> None:
    await s.dm("N W4")
    await s.dm("A FIRE")
    await s.dm("필요 물4", sender=BOB)
    await s.replies(3)
    assert await s.desk.notify_delivered() == 0  # nothing reached HQ yet
    await s.store.mark_delivered([(CAMP, 1), (CAMP, 2), (CAMP, 3)], published=True)
    s.desk.delivered_soon()  # the run() loop picks it up at once
    replies = await s.replies(5)
    assert sorted(replies[3:]) == sorted([(ALICE, f"delivered #{CAMP}:1 #{CAMP}:2"), (BOB, f"전달 #{CAMP}:3")])
    assert await s.desk.notify_delivered() == 0  # each sender is told once
    assert s.desk.counters["delivered_receipts"] == 3


async def test_delivered_receipt_waits_for_the_radio(s: Setup) -> None:
    await s.dm("N W4")
    await s.replies(1)
    await s.store.mark_delivered([(CAMP, 1)], published=True)
    s.radio.fail_sends = True
    assert await s.desk.notify_delivered() == 0
    s.radio.fail_sends = False
    assert await s.desk.notify_delivered() == 1
    assert s.radio.texts[-1] == (ALICE, f"delivered #{CAMP}:1")


async def test_many_delivered_ids_are_split_into_messages_of_at_most_200_bytes(s: Setup) -> None:
    s.desk.limiter.capacity = s.desk.limiter.rate = 1e9
    for i in range(40):
        await s.dm(f"N W{i % 6}", packet_id=1000 + i)
    await s.replies(40)
    await s.store.mark_delivered([(CAMP, seq) for seq in range(1, 41)], published=True)
    assert await s.desk.notify_delivered() == 40
    receipts = [text for _, text in s.radio.texts[40:]]
    assert len(receipts) > 1
    assert all(len(t.encode()) <= 200 for t in receipts)
    ids = [part for t in receipts for part in t.removeprefix("delivered ").split()]
    assert ids == [f"#{CAMP}:{seq}" for seq in range(1, 41)]


# ------------------------------------------------------------------ rate limiting


async def test_rate_limit_one_polite_reply_then_silence(tmp_path: Path) -> None:
    async with field_desk(tmp_path, per_hour=3) as s:
        for i in range(6):
            await s.dm(f"N W{i}")
        await s.dm("N W1", sender=BOB)  # other senders are not affected
        replies = await s.replies(5)
        assert [text for _, text in replies[:3]] == [f"received #{CAMP}:{i}" for i in (1, 2, 3)]
        assert replies[3] == (ALICE, "Too many messages from this radio: last one NOT stored. Send again in 20 min.")
        assert replies[4] == (BOB, f"received #{CAMP}:4")
        assert len(replies) == 5
        assert s.desk.counters["rate_limited"] == 3
        assert s.desk.counters["rate_limit_replies"] == 1
        assert len(await s.store.pending()) == 4

        s.clock.t += 20 * 60  # one token back (3 per hour)
        await s.dm("필요 물2")
        await s.dm("필요 물3")  # over again: a Korean polite reply, the 10-minute reply window has passed
        replies = await s.replies(7)
        assert replies[5] == (ALICE, f"접수 #{CAMP}:5")
        assert replies[6] == (ALICE, "메시지가 너무 많음: 마지막 메시지 저장 안 됨. 20분 후 다시 보내기.")


async def test_delivered_never_overtakes_its_received(s: Setup) -> None:
    gate = asyncio.Event()
    original = s.radio.send_text

    async def slow_send_text(text: str, *, to: int, want_ack: bool = True, channel: int = 0) -> int:
        await gate.wait()  # the radio is busy: the receipt stays queued
        return await original(text, to=to, want_ack=want_ack, channel=channel)

    s.radio.send_text = slow_send_text  # type: ignore[method-assign]
    await s.dm("N W4")
    await s.store.mark_delivered([(CAMP, 1)], published=True)  # HQ got it before the handset got "received"
    assert await s.desk.notify_delivered() == 0
    gate.set()
    assert await s.replies(2) == [(ALICE, f"received #{CAMP}:1"), (ALICE, f"delivered #{CAMP}:1")]


async def test_sealed_report_without_pki_is_flagged(s: Setup) -> None:
    await s.dm("P! gate 2 at night", pki=False)
    assert await s.replies(1) == [(ALICE, f"received #{CAMP}:1")]
    assert s.desk.counters["sealed_not_pki"] == 1
    assert (await s.envelope(1)).kind is Kind.SEALED
