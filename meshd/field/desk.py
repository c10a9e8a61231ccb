"""The hub's field desk: text direct messages from field handsets in, signed reports and receipts out.

A team sends shorthand (`N W4 F3`, `필요 물4`, `P! ...`) as a direct message to the hub's radio. The desk
parses it (`meshd.wire.text`), hands a valid report to the relay, which signs it (sealing protection
reports to the HQ key first) and commits it to the store, and only then answers `received #<id>` /
`접수 #<id>`: a receipt always means "on disk" (DESIGN.md §6). When HQ later takes custody, the sender
gets `delivered #<id>` / `전달 #<id>`. Every reply is in the sender's language and fits one text message.

Trust (DESIGN.md §5): a PKI direct message whose sender key matches the roster is `verified`; everything
else is accepted as `unverified`, and that provenance travels in the signed envelope to HQ.

Replies go through a queue served by `run()`, so a slow or reconnecting radio never holds up the relay
loop that hands us packets. The clear text of a sealed report is never logged and never stored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from meshd.aio import wait_event
from meshd.errors import ConfigError, MeshdError, ShorthandError, TooLargeError
from meshd.field.roster import Roster, format_node
from meshd.radio.api import TEXT_PORT, Radio, ReceivedPacket
from meshd.store.hub import HubStore
from meshd.wire.envelope import Envelope, Kind, message_id
from meshd.wire.text import (
    EN,
    KO,
    MAX_REPLY_BYTES,
    AlertEntry,
    HelpRequest,
    NeedsEntry,
    SealedEntry,
    StatusRequest,
    delivered_reply,
    fit_reply,
    help_text,
    parse_shorthand,
    received_reply,
    status_reply,
)

log = logging.getLogger(__name__)

REPLY_QUEUE_MAX: Final = 256  # replies waiting for the radio; beyond this they are dropped and counted
LIMIT_REPLY_EVERY_S: Final = 600.0  # at most one "too many messages" reply per sender per 10 minutes
RECENT_PACKETS: Final = 512  # (sender, packet id) remembered to recognise a packet delivered twice
BUCKETS_MAX: Final = 4096  # idle (full) buckets are forgotten beyond this many senders

# Replies the shorthand module does not cover: about the hub, not about what was typed.
_UNREADABLE: Final = "Message not readable (not UTF-8 text). Send ? for help / 읽을 수 없는 메시지. 도움 보내기"
_NOT_STORED: Final = {
    EN: "Hub error: report NOT stored. Send it again in a few minutes.",
    KO: "허브 오류: 보고 저장 안 됨. 몇 분 후 다시 보내기.",
}
_TOO_LARGE: Final = {
    EN: "Too long for one radio frame: NOT stored. Send fewer items or a shorter note, in two reports.",
    KO: "한 번에 보내기엔 너무 김: 저장 안 됨. 항목을 줄이거나 두 번에 나눠 보내기.",
}
_TOO_MANY: Final = {
    EN: "Too many messages from this radio: last one NOT stored. Send again in {minutes} min.",
    KO: "메시지가 너무 많음: 마지막 메시지 저장 안 됨. {minutes}분 후 다시 보내기.",
}


class Originator(Protocol):
    """What the desk needs of the relay (`meshd.relay.relay.Relay` fits)."""

    async def originate(
        self,
        kind: Kind,
        body: dict[str, object],
        *,
        unverified: bool = False,
        inbound: tuple[int, str, bool] | None = None,
    ) -> Envelope: ...


def _looks_korean(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" or "\u3130" <= ch <= "\u318f" or "\u1100" <= ch <= "\u11ff" for ch in text)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    last_refusal_reply: float = -math.inf


class SenderLimiter:
    """A token bucket per sender: bursts of up to `per_hour` messages, refilled at `per_hour` per hour.

    Over the limit a sender gets one polite reply (at most one per `reply_every_s`), then silence, so a
    stuck or hostile handset costs a bounded share of the airtime budget.
    """

    def __init__(
        self, per_hour: int, clock: Callable[[], float], *, reply_every_s: float = LIMIT_REPLY_EVERY_S
    ) -> None:
        if per_hour < 1:
            raise ConfigError(f"field.per_sender_per_hour must be at least 1, got {per_hour}")
        self.capacity = float(per_hour)
        self.rate = per_hour / 3600.0
        self.clock = clock
        self.reply_every_s = reply_every_s
        self._buckets: dict[int, _Bucket] = {}

    def _bucket(self, node: int, now: float) -> _Bucket:
        bucket = self._buckets.get(node)
        if bucket is None:
            if len(self._buckets) >= BUCKETS_MAX:
                self._forget_idle(now)
            bucket = self._buckets[node] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def take(self, node: int) -> tuple[bool, bool]:
        """(allowed, reply_with_refusal)."""
        now = self.clock()
        bucket = self._bucket(node, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True, False
        if now - bucket.last_refusal_reply >= self.reply_every_s:
            bucket.last_refusal_reply = now
            return False, True
        return False, False

    def wait_s(self, node: int) -> float:
        """Seconds until `node` may send again."""
        bucket = self._buckets.get(node)
        if bucket is None:
            return 0.0
        return max(0.0, (1.0 - bucket.tokens) / self.rate)

    def _forget_idle(self, now: float) -> None:
        for node, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.at) * self.rate >= self.capacity and now - bucket.last_refusal_reply > (
                self.reply_every_s
            ):
                del self._buckets[node]


class FieldDesk:
    """Turns field text messages into stored reports and answers the sender.

    Wire-up: give the relay `desk.handle_text` as its text handler, call `desk.delivered_soon()` from the
    store's `on_delivered`, and run `desk.run()` in the hub's task group (it sends the replies and the
    delivered receipts).
    """

    def __init__(
        self,
        hub_camp: int,
        relay: Originator,
        store: HubStore,
        radio: Radio,
        roster: Roster,
        *,
        per_sender_per_hour: int,
        last_uplink: Callable[[], float | None],
        clock: Callable[[], float] = time.monotonic,
        count_airtime: Callable[[int, int], None] | None = None,
    ) -> None:
        """`last_uplink()` returns the `clock()` time of the last uplink success (None: never);
        `count_airtime(nbytes, portnum)` is told of every reply sent (the hub's airtime budget)."""
        self.hub_camp = hub_camp
        self.relay = relay
        self.store = store
        self.radio = radio
        self.roster = roster
        self.last_uplink = last_uplink
        self.clock = clock
        self.count_airtime = count_airtime
        self.limiter = SenderLimiter(per_sender_per_hour, clock)
        self.counters: Counter[str] = Counter()
        self._replies: asyncio.Queue[tuple[int, str, str | None]] = asyncio.Queue(maxsize=REPLY_QUEUE_MAX)
        self._recent: OrderedDict[tuple[int, int], str | None] = OrderedDict()
        self._delivered_wanted = asyncio.Event()
        self._notify_lock = asyncio.Lock()
        # Held from originate until the receipt is queued, and while looking for delivered reports, so that a
        # "delivered" never overtakes its own "received": ids whose receipt is still queued wait a round.
        self._accept_lock = asyncio.Lock()
        self._unsent_receipts: set[str] = set()
        self._receipts_deferred = False

    # ------------------------------------------------------------------ receiving

    async def handle_text(self, packet: ReceivedPacket) -> None:
        """Handle one TEXT_MESSAGE_APP packet. Raises nothing for bad input: it is answered and counted."""
        my_node = self.radio.my_node
        if packet.portnum != TEXT_PORT or my_node is None or packet.to_node != my_node:
            self.counters["ignored_not_for_us"] += 1  # channel chatter, or before the radio is configured
            return
        node = packet.from_node
        self.counters["messages"] += 1
        allowed, tell = self.limiter.take(node)
        if not allowed:
            self.counters["rate_limited"] += 1
            if tell:
                language = KO if _looks_korean(packet.payload.decode("utf-8", errors="replace")) else EN
                minutes = max(1, math.ceil(self.limiter.wait_s(node) / 60))
                self._reply(node, _TOO_MANY[language].format(minutes=minutes))
                self.counters["rate_limit_replies"] += 1
                log.warning("field: %s is over %d messages/hour; refusing", format_node(node), self.limiter.capacity)
            return
        if self._seen_before(node, packet.packet_id):
            return
        try:
            text = packet.payload.decode("utf-8")
        except UnicodeDecodeError:
            self.counters["unreadable"] += 1
            self._answer(node, packet.packet_id, _UNREADABLE)
            return
        try:
            parsed = parse_shorthand(text)
        except ShorthandError as exc:
            self.counters["shorthand_errors"] += 1
            self._answer(node, packet.packet_id, str(exc))  # already in the sender's language
            return
        del text  # may be a sealed report's clear text: keep it no longer than needed
        if isinstance(parsed, HelpRequest):
            self.counters["help"] += 1
            self._answer(node, packet.packet_id, help_text(parsed.language))
        elif isinstance(parsed, StatusRequest):
            self.counters["status"] += 1
            self._answer(node, packet.packet_id, await self.status_text(parsed.language))
        elif isinstance(parsed, NeedsEntry):
            await self._accept(packet, Kind.NEEDS, {"camp": self.hub_camp, **parsed.body}, parsed.language)
        elif isinstance(parsed, AlertEntry):
            await self._accept(packet, Kind.ALERT, {"camp": self.hub_camp, **parsed.body}, parsed.language)
        elif isinstance(parsed, SealedEntry):
            body: dict[str, object] = {"kind": parsed.kind, "text": parsed.text, "reporter_node": node}
            await self._accept(packet, Kind.SEALED, body, parsed.language)

    def _verified(self, packet: ReceivedPacket) -> bool:
        self.roster.refresh()
        if not packet.pki_encrypted:
            return False
        if self.roster.verify(packet.from_node, packet.public_key):
            return True
        if packet.from_node in self.roster:
            # A known node number with another key: a re-flashed handset, or someone posing as it.
            self.counters["roster_key_mismatch"] += 1
            log.warning("field: %s sent with a key that is not its roster key", format_node(packet.from_node))
        return False

    async def _accept(self, packet: ReceivedPacket, kind: Kind, body: dict[str, object], language: str) -> None:
        async with self._accept_lock:
            await self._accept_locked(packet, kind, body, language)

    async def _accept_locked(self, packet: ReceivedPacket, kind: Kind, body: dict[str, object], language: str) -> None:
        node = packet.from_node
        verified = self._verified(packet)
        if kind is Kind.SEALED and not packet.pki_encrypted:
            # It crossed the first hop under the channel key only: anyone with the PSK could read it.
            self.counters["sealed_not_pki"] += 1
            log.warning(
                "field: sealed report from %s arrived without PKI: it was readable on the channel", format_node(node)
            )
        try:
            env = await self.relay.originate(kind, body, unverified=not verified, inbound=(node, language, verified))
        except TooLargeError:
            self.counters["rejected_too_large"] += 1
            self._answer(node, packet.packet_id, _TOO_LARGE[language if language == KO else EN])
            return
        except MeshdError as exc:
            self.counters["not_stored"] += 1
            # The message of an error raised while sealing could in principle quote the body: name the type only.
            detail = type(exc).__name__ if kind is Kind.SEALED else str(exc)
            log.error("field: %s report from %s NOT stored: %s", kind.value, format_node(node), detail)  # noqa: TRY400 - expected failure, no traceback
            self._answer(node, packet.packet_id, _NOT_STORED[language if language == KO else EN])
            return
        # The report is committed (synchronous=FULL) when originate returns: now the receipt may go out.
        self.counters[f"accepted_{kind.value}"] += 1
        self.counters["verified" if verified else "unverified"] += 1
        handset = self.roster.get(node) if verified else None
        who = f"{format_node(node)} ({handset.team})" if handset else format_node(node)
        size = f" ({len(env.body)} bytes sealed)" if kind is Kind.SEALED else ""
        log.info(
            "field: %s%s from %s stored as %s, %s",
            kind.value, size, who, env.id, "verified" if verified else "unverified",
        )  # fmt: skip
        self._answer(node, packet.packet_id, received_reply(env.id, language), receipt_for=env.id)

    def _seen_before(self, node: int, packet_id: int) -> bool:
        """A packet the radio delivered twice (e.g. replayed after a reconnect) makes one report, not two."""
        if packet_id == 0:
            return False
        key = (node, packet_id)
        if key in self._recent:
            self.counters["duplicates"] += 1
            reply = self._recent[key]
            if reply is not None:
                self._reply(node, reply)  # the first receipt may have been lost: say it again
            return True
        self._recent[key] = None
        while len(self._recent) > RECENT_PACKETS:
            self._recent.popitem(last=False)
        return False

    def _answer(self, node: int, packet_id: int, text: str, *, receipt_for: str | None = None) -> None:
        text = fit_reply(text, MAX_REPLY_BYTES)
        if packet_id and (node, packet_id) in self._recent:
            self._recent[(node, packet_id)] = text
        self._reply(node, text, receipt_for=receipt_for)

    def _reply(self, node: int, text: str, *, receipt_for: str | None = None) -> None:
        try:
            self._replies.put_nowait((node, fit_reply(text, MAX_REPLY_BYTES), receipt_for))
        except asyncio.QueueFull:
            self.counters["replies_dropped"] += 1
            return
        if receipt_for is not None:
            self._unsent_receipts.add(receipt_for)

    async def status_text(self, language: str) -> str:
        depth = sum((await self.store.queue_depth()).values())
        last = self.last_uplink()
        age = None if last is None else int(self.clock() - last)
        return status_reply(language, depth, age, await self.store.reports_today())

    # ------------------------------------------------------------------ sending

    async def run(self, *, delivered_every_s: float = 30.0) -> None:
        """Send replies and delivered receipts until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reply_loop(), name="field-replies")
            group.create_task(self._delivered_loop(delivered_every_s), name="field-delivered")

    def delivered_soon(self) -> None:
        """Custody news arrived (the store's `on_delivered`): look for receipts to send now."""
        self._delivered_wanted.set()

    async def _reply_loop(self) -> None:
        while True:
            node, text, receipt_for = await self._replies.get()
            await self._send(node, text)
            if receipt_for is not None:
                self._unsent_receipts.discard(receipt_for)
                if self._receipts_deferred and not self._unsent_receipts:
                    self._receipts_deferred = False
                    self.delivered_soon()

    async def _delivered_loop(self, every_s: float) -> None:
        while True:
            try:
                await self.notify_delivered()
            except MeshdError as exc:
                log.warning("field: delivered receipts: %s", exc)
            await wait_event(self._delivered_wanted, every_s)
            self._delivered_wanted.clear()

    async def _send(self, node: int, text: str) -> bool:
        try:
            await self.radio.send_text(text, to=node)
        except MeshdError as exc:
            self.counters["send_errors"] += 1
            log.warning("field: reply to %s not sent: %s", format_node(node), exc)
            return False
        if self.count_airtime is not None:
            self.count_airtime(len(text.encode("utf-8")), TEXT_PORT)
        self.counters["replies_sent"] += 1
        return True

    async def notify_delivered(self) -> int:
        """Tell senders which of their reports HQ now holds; returns how many reports were announced.

        Several ids for one sender share one message (`delivered #412:7 #412:8`). A report is marked
        notified only after its message went to the radio, so a radio outage delays receipts, never loses them.
        """
        async with self._notify_lock:
            async with self._accept_lock:
                pending = await self.store.inbound_to_notify()
            by_sender: dict[tuple[int, str], list[tuple[int, int]]] = {}
            for origin, seq, node, language in sorted(pending):
                if message_id(origin, seq) in self._unsent_receipts:
                    self._receipts_deferred = True  # its "received" is still queued: next round
                    continue
                by_sender.setdefault((node, language), []).append((origin, seq))
            announced = 0
            for (node, language), keys in by_sender.items():
                done = 0
                while done < len(keys):
                    text, count = _delivered_message(keys[done:], language)
                    if not await self._send(node, text):
                        return announced  # the radio is not taking packets: try again next round
                    for origin, seq in keys[done : done + count]:
                        await self.store.mark_inbound_notified(origin, seq)
                    done += count
                    announced += count
                    self.counters["delivered_receipts"] += count
            return announced


def _delivered_message(keys: list[tuple[int, int]], language: str) -> tuple[str, int]:
    """`delivered #a #b ...` with as many of `keys` as fit one text message; returns (text, ids used)."""
    text = delivered_reply(message_id(*keys[0]), language)
    count = 1
    for origin, seq in keys[1:]:
        longer = f"{text} #{message_id(origin, seq)}"
        if len(longer.encode("utf-8")) > MAX_REPLY_BYTES:
            break
        text, count = longer, count + 1
    return text, count
