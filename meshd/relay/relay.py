"""The hub's relay: verify, dedup, store, and move reports hop by hop toward a live uplink.

Hop-by-hop custody (like DTN custody transfer): a hub sends an envelope to the neighbour closest to an
uplink as a one-hop direct packet; the neighbour stores it durably, then answers with a custody notice
naming the frames it answers (a short frame under the two hubs' link key, meshd.wire.linkauth; signed
while it does not know the sender's camp); only then does the sender drop its copy. A lost data frame or
a lost notice makes the sender retry after a timeout (backing off), and the receiver answers a duplicate
with another notice, so each report crosses each link about once and is never dropped while nobody holds
it. Uplink hubs publish to MQTT; a PUBACK is custody at HQ, after which the news that HQ has the reports
goes back along each report's path (in custody notices, or short Delivered notices, to the hub each report
came from) so origin hubs can tell field teams "delivered".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial

from meshd.aio import wait_event
from meshd.clock import Clock
from meshd.config import RadioSection, RelaySection, TimingSection
from meshd.errors import EncodeError, MeshdError, ReplayError, SignatureError, UnknownOriginError
from meshd.keys import KeyPairs
from meshd.radio import airtime
from meshd.radio.api import (
    BROADCAST,
    TEXT_PORT,
    LinkState,
    LinkStateChanged,
    Priority,
    Radio,
    ReceivedPacket,
    RoutingResult,
)
from meshd.relay.budget import AirtimeBudget
from meshd.relay.priority import Prio, priority_of, priority_of_body
from meshd.relay.routing import Neighbour, RouteTable
from meshd.store.hub import AcceptResult, HubStore, OutboxEntry
from meshd.wire import bodies, codec, linkauth
from meshd.wire.envelope import MAX_ENVELOPE_LEN, Envelope, Kind, sign
from meshd.wire.registry import Registry
from meshd.wire.replay import DEFAULT_WINDOW

log = logging.getLogger(__name__)

CARRIED_KINDS = (Kind.NEEDS, Kind.ALERT, Kind.SEALED, Kind.BATCH)
BATCHABLE = (Kind.NEEDS, Kind.ALERT, Kind.SEALED)
CONTROL_SEQ = 0  # custody/delivered/beacon notices are not reports: they carry no report id
MAX_ANSWERS = 16  # data frames named in one custody notice (about 2 s of frames from one neighbour)
RECEIVE_IN_FLIGHT = 64  # received envelopes handled at once (their store writes share commits)
EXPEDITE_AFTER_ATTEMPTS = 3  # reports sent this often without custody are in a long backoff
EXPEDITE_MAX = 4  # of them brought forward by one working handover
BROADCAST_REPEAT_SPREAD_S = 10.0  # a hub repeats a new HQ broadcast within this many seconds
DELIVERED_CHECKS = 5  # looks at the uplink's progress before a custody notice goes without "delivered"
SENT_FRAMES_KEPT_S = 600.0  # our data frames remembered this long: a late "delivered" notice may name them
NOTICE_ROUNDS = 3  # times a Delivered id is repeated to outer neighbours until one is heard passing it on
# A compact custody notice also names up to REPEAT_ANSWERS frames it answered in the last notices to the same
# hub (each at most REPEAT_ANSWERS_TIMES times, within 3 custody timeouts): one notice in five is lost, and
# its sender would otherwise send the whole data frame again. 4 bytes each; a data frame is 100-230 bytes.
REPEAT_ANSWERS = 4
REPEAT_ANSWERS_TIMES = 2
# Delivered news for a neighbour rides in the custody notices we send it; news no custody notice took within
# NEWS_WAIT_S (scenario s) goes in a short notice of its own. Either is answered like a data frame.
NEWS_WAIT_S = 60.0
# A notice of news goes again until answered (backing off from NEWS_WAIT_S to one notice interval at most):
# both it and the answer must arrive (0.64 at 20 % loss, less at a busy hub), so three rounds missed one hop in
# twenty (bench receipts 142/153); eight miss one in 3,500. (Six rounds doubling without a cap took half an
# hour: receipts still on their way when bench/sim_network.py stopped waiting, 145/146 in some runs.)
NEWS_ROUNDS = 8
NEWS_LIMIT = 1000  # untold ids looked at per notice interval
INTRODUCE_GAP_S = 300.0  # a beacon to introduce us to a neighbour that signs its notices to us: at most this often


@dataclass(slots=True)
class _Answer:
    """A data frame a compact custody notice of ours answered (named again in the next few, see REPEAT_*)."""

    when: float
    reports: list[tuple[int, int]]
    times: int = 0  # notices that named it
    delivered: bool = False  # one of them said HQ has its reports


@dataclass(slots=True)
class _News:
    """Delivered news for one report id, on its way back to the neighbour we got the report from."""

    since: float  # when we took it up
    sends: int = 0  # notices of its own that named it (unanswered so far)
    sent_at: float = -math.inf  # the last frame that named it (a notice of its own, or a custody notice)


@dataclass(frozen=True, slots=True)
class RelayTiming:
    """Scenario-time parameters (seconds); `from_config` reads them from the [timing] section."""

    custody_ack_delay_s: float = 2.0  # gather custody notices for this long before answering
    custody_timeout_s: float = 20.0  # beyond the airtime of frame + notice; retry after this, backing off
    # Like RFC 6206's Trickle timer (RPL's route beacons): after any change of our route, a beacon at once,
    # then the next periodic one after `beacon_interval_s`; while the route stays the same, the wait doubles
    # up to `beacon_interval_max_s`. Camp hubs are fixed infrastructure and a neighbour that could do better
    # through us is answered at once (`_on_beacon`), so the periodic beacon only refreshes routes (stale after
    # 3.5 x the longest interval) and catches up a neighbour that missed a change. Every 15 minutes, backing
    # off to hourly, beacons were still 12-14 % of the airtime in bench/sim_network.py (two periodic waves in
    # its first hour, each repeated by the hill relays); 30 minutes backing off to two hours: about 5 %.
    beacon_interval_s: float = 1800.0
    beacon_interval_max_s: float = 7200.0
    beacon_min_gap_s: float = 20.0
    notice_interval_s: float = 300.0
    batch_wait_s: float = 120.0  # let a burst of field reports gather into one batch (not for alerts)
    maintenance_s: float = 300.0
    # An origin hub that handed a report on and has heard of no delivery this long sends it again: the
    # end-to-end safety net behind hop-by-hop custody (a hub that loses its store, or a race the custody
    # notices' `answers` do not cover, could leave a report carried by nobody). HQ removes the copy.
    custody_recheck_s: float = 21600.0
    # A satellite uplink that drops for a few minutes is still the best way out for the reports around it:
    # while it has been down for less than this, the hub keeps advertising it and keeps the reports it has
    # (alerts too). Without it, every flap of a dish sent a wave of route beacons across
    # the mesh and turned reports around in mid-path (loops, duplicates).
    uplink_hold_s: float = 600.0

    @classmethod
    def from_config(cls, section: TimingSection) -> RelayTiming:
        return cls(
            custody_ack_delay_s=section.custody_ack_delay_s,
            custody_timeout_s=section.custody_timeout_s,
            beacon_interval_s=section.beacon_interval_s,
            beacon_interval_max_s=section.beacon_interval_max_s,
            beacon_min_gap_s=section.beacon_min_gap_s,
            notice_interval_s=section.notice_interval_s,
            batch_wait_s=section.batch_wait_s,
            maintenance_s=section.maintenance_s,
            custody_recheck_s=section.custody_recheck_s,
            uplink_hold_s=section.uplink_hold_s,
        )


class Relay:
    def __init__(
        self,
        *,
        camp_id: int,
        keys: KeyPairs,
        registry: Registry,
        store: HubStore,
        radio: Radio,
        relay_config: RelaySection,
        radio_config: RadioSection,
        clock: Clock,
        timing: RelayTiming | None = None,
        uplink_up: Callable[[], bool] = lambda: False,
        on_text: Callable[[ReceivedPacket], Awaitable[None]] | None = None,
        on_broadcast: Callable[[Envelope], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.camp_id = camp_id
        self.keys = keys
        self.registry = registry
        self.store = store
        self.radio = radio
        self.config = relay_config
        self.radio_config = radio_config
        self.clock = clock
        self.timing = timing or RelayTiming()
        self.uplink_up = uplink_up
        self.on_text = on_text
        self.on_broadcast = on_broadcast
        self.rng = rng or random.Random()
        self.link_keys = linkauth.LinkKeys(camp_id, keys.sign, registry)
        self.preset = airtime.preset(radio_config.preset)
        self._full_frame_cost = airtime.payload_airtime_s(MAX_ENVELOPE_LEN, self.preset, radio_config.portnum)
        self.budget = AirtimeBudget.from_duty_cycle(relay_config.duty_cycle_pct, relay_config.alert_reserve_pct)
        # a route is stale after three periodic beacons missed at the longest interval
        self.routes = RouteTable(
            camp_id, stale_after_s=3.5 * max(self.timing.beacon_interval_s, self.timing.beacon_interval_max_s)
        )
        self.counters: Counter[str] = Counter()
        self.airtime_used_s = 0.0
        self._wake = asyncio.Event()
        # per neighbour, the packet ids our next custody notice answers (-> their report ids), oldest first
        self._pending_answers: dict[int, dict[int, list[tuple[int, int]]]] = defaultdict(dict)
        # the sends of each carried envelope since we last took custody of it ourselves: (to whom, packet id).
        # Only a custody notice answering one of them hands the envelope over (see _hand_over).
        self._sends: dict[tuple[int, int], set[tuple[int, int]]] = defaultdict(set)
        # node number -> camp id, from signed frames heard from it: whose link key a custody notice to it uses
        self._node_camp: dict[int, int] = {}
        self._ack_hops: dict[int, int] = {}
        # per neighbour, the frames our compact notices answered lately (named again in the next few)
        self._answered: dict[int, dict[int, _Answer]] = defaultdict(dict)
        self._sent_at: dict[tuple[int, int], tuple[int, float]] = {}
        # the last send of each carried report that went direct (hop limit 0): to whom
        self._sent_direct: dict[tuple[int, int], int] = {}
        # per neighbour, [custody for a direct send, retry after a direct send]: is the direct link good for data?
        self._direct_record: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        self._srtt: dict[int, float] = {}
        self._pinned: set[tuple[int, int]] = set()
        # reports whose `store.receive` is in flight: a custody notice handled meanwhile must not hand them over
        # (the report may be coming back to us, which only the store write will tell)
        self._receiving: set[tuple[int, int]] = set()
        self._notice_rounds: dict[tuple[int, int], int] = {}
        # our data frames by (to whom, packet id) -> their reports: a notice saying "delivered" may come after
        # another notice handed them over (a retransmission crossed it)
        self._sent_frames: dict[tuple[int, int], tuple[float, list[tuple[int, int]]]] = {}
        # Delivered news per neighbour to tell under our link key, and our notices of news awaiting an answer
        self._news: dict[int, dict[tuple[int, int], _News]] = defaultdict(dict)
        self._news_sends: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (node, packet id) -> report ids
        self._upstream: dict[int, tuple[int, float]] = {}  # node that handed us reports -> (radio hops, when)
        self._ack_flush: dict[int, asyncio.TimerHandle] = {}
        self._highest: dict[int, int] = {}
        self._last_beacon = -math.inf
        self._beacon_period = self.timing.beacon_interval_s  # the current periodic interval (see RelayTiming)
        self._last_heard_broadcast = -math.inf  # our last broadcast that every neighbour hears (not a beacon)
        self._advertised_hops: int | None = None
        self._beacon_wanted = asyncio.Event()
        self._answer_beacon = False
        self._introduce = False  # a neighbour does not know our camp (it signs its notices to us): beacon soon
        self._lost_gap = 3 * self.timing.beacon_min_gap_s
        self._uplink_last_up = -math.inf
        self._long_backoff = True  # may some report be in a long backoff? (unknown after a restart)
        self._last_expedite = -math.inf
        self._unknown_tokens = float(relay_config.unknown_origin_per_hour)
        self._unknown_refill_at = clock.now()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until cancelled. All loops live in one TaskGroup."""
        self._highest = await self.store.highest_seen()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._event_loop(group), name="relay-events")
                group.create_task(self._send_loop(), name="relay-send")
                group.create_task(self._beacon_loop(), name="relay-beacon")
                group.create_task(self._notice_loop(), name="relay-notices")
                group.create_task(self._maintenance_loop(), name="relay-maintenance")
        finally:
            for handle in self._ack_flush.values():
                handle.cancel()
            self._ack_flush.clear()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, MeshdError):
                    await task

    def wake(self) -> None:
        """Something changed (new report, uplink state): reconsider what to send."""
        self._wake.set()
        self._beacon_wanted.set()

    def count_airtime(self, nbytes: int, portnum: int) -> None:
        """Count a frame another part of the hub sent (a reply to a handset, an HQ broadcast shown to them)
        against this hub's airtime budget: the radio's duty cycle counts every frame, not only ours. (A
        reply sent with want_ack may be retried by the firmware; only its first send is known here.)"""
        self.budget.charge(airtime.payload_airtime_s(nbytes, self.preset, portnum), self.clock.now())

    def _uplink_held(self) -> bool:
        """Our uplink is up, or down for less than `uplink_hold_s`: we still count as an uplink hub (the
        route we advertise, and reports stay here for it). Only `uplink_up()` itself says we can publish."""
        now = self.clock.now()
        if self.uplink_up():
            self._uplink_last_up = now
            return True
        return now - self._uplink_last_up < self.timing.uplink_hold_s

    # ------------------------------------------------------------------ originating

    async def originate(
        self,
        kind: Kind,
        body: dict[str, object],
        *,
        unverified: bool = False,
        inbound: tuple[int, str, bool] | None = None,
    ) -> Envelope:
        """Sign and durably queue a report from this hub; returns once it is on disk."""
        env = await originate_report(
            self.store,
            self.keys,
            registry=self.registry,
            camp_id=self.camp_id,
            kind=kind,
            body=body,
            unverified=unverified,
            inbound=inbound,
            expiry_s=int(self.config.expiry_h * 3600),
        )
        self.counters["originated"] += 1
        self.wake()
        return env

    # ------------------------------------------------------------------ receiving

    async def _event_loop(self, group: asyncio.TaskGroup) -> None:
        # Envelopes from other hubs are handled concurrently (up to RECEIVE_IN_FLIGHT): each waits for its
        # store write to be on disk before its custody notice, and the store's single writer commits the
        # waiting writes together, so a burst pays one fsync per group instead of one per envelope.
        slots = asyncio.Semaphore(RECEIVE_IN_FLIGHT)
        while True:
            event = await self.radio.next_event()
            if isinstance(event, ReceivedPacket) and event.portnum == self.radio_config.portnum:
                await slots.acquire()
                # in the relay's TaskGroup: a bug in handling still stops the hub loudly, as it did inline
                task = group.create_task(self._handle_envelope(event))
                task.add_done_callback(lambda _: slots.release())
                continue
            try:
                if isinstance(event, ReceivedPacket):
                    await self._on_packet(event)
                elif isinstance(event, RoutingResult):
                    self._on_routing(event)
                elif isinstance(event, LinkStateChanged) and event.state is LinkState.READY:
                    self._beacon_wanted.set()
                    self._wake.set()
            except MeshdError as exc:
                self.counters["errors"] += 1
                log.warning("relay: %s", exc)

    async def _handle_envelope(self, packet: ReceivedPacket) -> None:
        try:
            await self._on_packet(packet)
        except MeshdError as exc:
            self.counters["errors"] += 1
            log.warning("relay: %s", exc)

    async def _on_packet(self, packet: ReceivedPacket) -> None:
        if packet.portnum == TEXT_PORT:
            if self.on_text is not None:
                await self.on_text(packet)
            return
        if packet.portnum != self.radio_config.portnum:
            return
        self.routes.heard_from(packet.from_node, self.clock.now())
        if linkauth.is_link_frame(packet.payload):
            await self._on_link_frame(packet)
            return
        try:
            env = Envelope.from_bytes(packet.payload)
        except MeshdError as exc:
            self.counters["rejected_malformed"] += 1
            log.info("dropped malformed envelope from !%08x: %s", packet.from_node, exc)
            return
        try:
            self.registry.verify_envelope(env)
            known = True
        except UnknownOriginError:
            known = False
        except SignatureError:
            self.counters["rejected_bad_signature"] += 1
            log.warning("dropped envelope %s from !%08x: signature does not verify", env.id, packet.from_node)
            return
        if env.kind in (Kind.CUSTODY, Kind.DELIVERED, Kind.STATUS, Kind.BROADCAST) and not known:
            self.counters["rejected_unknown_control"] += 1
            return
        if env.kind in (Kind.CUSTODY, Kind.DELIVERED, Kind.STATUS) and env.origin != self.camp_id:
            self._node_camp[packet.from_node] = env.origin  # signed by that hub: its link key is the camp's
        if env.kind is Kind.CUSTODY:
            await self._on_custody(env, packet)
        elif env.kind is Kind.DELIVERED:
            await self._on_delivered(env, packet)
        elif env.kind is Kind.STATUS:
            self._on_beacon(env, packet)
        elif env.kind is Kind.BROADCAST:
            await self._on_hq_broadcast(env)
        elif env.kind in CARRIED_KINDS:
            await self._on_report(env, packet, known=known)
        else:
            self.counters["rejected_unknown_kind"] += 1

    async def _on_report(self, env: Envelope, packet: ReceivedPacket, *, known: bool) -> None:
        try:
            reports = codec.unbatch(env)
        except MeshdError:
            self.counters["rejected_malformed"] += 1
            return
        highest = self._highest.get(env.origin, -1)
        if env.seq + DEFAULT_WINDOW < highest:
            self.counters["rejected_replay"] += 1
            log.warning("dropped %s: %s", env.id, ReplayError("seq older than the replay window"))
            return
        if not known:
            if not self._take_unknown_token():
                self.counters["rejected_unknown_rate"] += 1
                return
            self.counters["unknown_origin"] += 1
        priority = priority_of(env) if known else Prio.UNKNOWN_ORIGIN
        n_items = len(reports)
        key = (env.origin, env.seq)
        self._receiving.add(key)
        try:
            result, node = await self.store.receive(
                env,
                n_items=n_items,
                priority=int(priority),
                expiry_s=int(self.config.expiry_h * 3600),
                from_node=packet.from_node,
            )
            if result == AcceptResult.TAKEN_BACK:
                # We handed it on and it comes back: a loop while routes change, or a retransmission whose
                # custody notice was lost after we passed it on. Either way carry it again: the custody
                # invariant (someone carries every report until HQ has it) matters more than the airtime of an
                # occasional duplicate, which HQ removes.
                self.counters["taken_back"] += 1
                # A late custody notice for one of our earlier sends (a second copy of the notice, or one from
                # the hub we had handed it to) must not hand it over again: that hub has passed it on or given
                # it back to us. Only a notice for our next send counts (at worst we send it once more).
                self._pinned.add(key)
                self._wake.set()
            elif result == AcceptResult.NEW:
                self.counters["accepted"] += 1
                self._highest[env.origin] = max(self._highest.get(env.origin, -1), env.seq + n_items - 1)
                self._wake.set()
            else:
                self.counters["duplicates"] += 1  # a retransmission (our custody notice was lost), or a loop
                if result == AcceptResult.DUPLICATE and packet.from_node != node:
                    # It came round a loop while we still carry it: the sender drops it on our notice, so a
                    # custody notice still on its way for an earlier send of ours must not make us drop it.
                    self._pinned.add(key)
            if result in (AcceptResult.TAKEN_BACK, AcceptResult.DUPLICATE):
                # We are about to acknowledge this copy, taking custody of it from its sender. A notice for any
                # send of ours before now proves only that the receiver had it then: it may have gone round a
                # loop since and be this very copy (even from the hub we first got it from, which cannot be
                # told apart from a retransmission). Only notices for sends from now on count.
                self._sends.pop(key, None)
        finally:
            self._receiving.discard(key)
        if packet.to_node != BROADCAST:
            self._upstream[packet.from_node] = (packet.hops_away, self.clock.now())
            # custody: we hold it durably now (or HQ does): the sender may drop its copy
            self._queue_custody_ack(
                packet.from_node, [(r.origin, r.seq) for r in reports], packet.hops_away, packet.packet_id
            )

    def _take_unknown_token(self) -> bool:
        now = self.clock.now()
        rate = self.config.unknown_origin_per_hour / 3600.0
        self._unknown_tokens = min(
            float(self.config.unknown_origin_per_hour), self._unknown_tokens + (now - self._unknown_refill_at) * rate
        )
        self._unknown_refill_at = now
        if self._unknown_tokens >= 1.0:
            self._unknown_tokens -= 1.0
            return True
        return False

    async def _on_custody(self, env: Envelope, packet: ReceivedPacket) -> None:
        """A signed custody notice (from a hub that does not know our camp yet, or an older hub)."""
        if packet.to_node not in (BROADCAST, self.radio.my_node):
            return
        if packet.to_node == self.radio.my_node and self.clock.now() - self._last_beacon >= INTRODUCE_GAP_S:
            # Its sender missed our beacons, so it cannot name our link key: it answers our frames in signed
            # notices (~85 bytes instead of ~16) and sends its Delivered news to us in signed broadcasts until it
            # hears our next beacon, which comes half an hour to two hours later. A beacon now introduces us.
            self._introduce = True
            self._beacon_wanted.set()
        ids = bodies.decode_delivered_ids(env.body)
        answers = bodies.decode_custody_answers(env.body)
        by_key = set(ids)
        entries = []
        for entry in await self._entries_covering(ids):
            sends = {(node, packet_id & bodies.ANSWER_MASK) for node, packet_id in self._sends.get(entry.key, ())}
            if answers and not any((packet.from_node, a) in sends for a in answers):
                # It answers a send from before we last took custody of the report ourselves (or from before a
                # restart): the receiver may have passed it on since, round a loop back to us.
                self.counters["custody_stale"] += 1
                continue
            if all(key in by_key for key in entry.report_keys()):
                entries.append(entry)
        await self._hand_over(entries, packet.from_node)

    async def _on_link_frame(self, packet: ReceivedPacket) -> None:
        """A compact custody notice: the frames it names by packet id, under the link key we share with its
        sender (see meshd.wire.linkauth)."""
        if packet.to_node != self.radio.my_node:
            return  # custody notices are for one hub
        try:
            notice = linkauth.decode_custody_notice(packet.payload)
        except MeshdError as exc:
            self.counters["rejected_malformed"] += 1
            log.info("dropped malformed link frame from !%08x: %s", packet.from_node, exc)
            return
        known = self._camp_of(packet.from_node)
        if known is not None and known != notice.camp:
            # A hub's genuine notice sent under another hub's node number: it must not hand over what we sent
            # to that other hub (the sender's node number is not authenticated, the tag is per camp).
            self.counters["rejected_wrong_sender"] += 1
            log.warning("dropped custody notice of camp %d from !%08x (camp %d)", notice.camp, packet.from_node, known)
            return
        try:
            self.link_keys.verify_custody_notice(notice)
        except UnknownOriginError:
            self.counters["rejected_unknown_control"] += 1
            return
        except SignatureError:
            self.counters["rejected_bad_signature"] += 1
            log.warning("dropped custody notice from !%08x: its tag does not verify", packet.from_node)
            return
        self._node_camp[packet.from_node] = notice.camp
        if notice.reports:
            # HQ has reports we handed that hub: on disk before we answer; the store queues them for the hub we
            # got them from in turn
            await self._learn_delivered(list(notice.reports))
            self.counters["news_received"] += 1
            # answered like a data frame (the sender names it again until it hears we have it)
            self._queue_custody_ack(packet.from_node, [], packet.hops_away, packet.packet_id)
        if not notice.packet_ids:
            return
        answered = {(packet.from_node, packet_id) for packet_id in notice.packet_ids}
        news_answered = [send for send in answered if send in self._news_sends]
        told = [key for send in news_answered for key in self._news_sends.pop(send)]
        if told:
            await self.store.mark_notified(told)  # (first: the notice loop must not take them up again)
            for key in told:
                self._news[packet.from_node].pop(key, None)
        keys = [key for key, sends in self._sends.items() if sends & answered]
        if not keys and not news_answered:
            # It answers no send we still wait for: a repeat of a notice already used, or a send from before we
            # last took custody of the report ourselves (voided: it may have come back round a loop since).
            self.counters["custody_stale"] += 1
        entries = [entry for key in keys if (entry := await self.store.get(*key)) is not None]
        await self._hand_over(entries, packet.from_node)
        if notice.delivered:
            # ...and HQ has them: what a Delivered notice from that hub would have told us. Also for frames
            # another notice handed over already (its answer to our retransmission crossed this one): the hub
            # sends no news of them after this.
            reports = {key for entry in entries for key in entry.report_keys()}
            for send in answered:
                reports.update(self._sent_frames.get(send, (0.0, []))[1])
            if reports:
                await self._learn_delivered(sorted(reports))
                self.counters["custody_delivered_received"] += 1

    async def _hand_over(self, entries: list[OutboxEntry], node: int) -> None:
        """`node` holds these entries durably now (its custody notice answers one of our sends of each)."""
        removed = 0
        for entry in entries:
            if entry.key in self._pinned or entry.key in self._receiving:
                continue  # a notice for a send made before the report came back round a loop
            if entry.handed_to == 0:
                removed += await self.store.hand_over([entry.key], node)
                self._sends.pop(entry.key, None)
                self._measure_rtt(entry.key, node)
                if self._sent_direct.pop(entry.key, None) == node:
                    self._direct_record[node][0] += 1
        self.counters["custody_handed_over"] += removed
        soon = 4 * self.timing.custody_timeout_s
        if removed and self._long_backoff and self.clock.now() - self._last_expedite >= soon:
            self._long_backoff = False
            self._last_expedite = self.clock.now()
            # Custody just worked: a few reports waiting out a long backoff (failures while a neighbour was away,
            # or a run of losses) are tried again soon instead of up to `retry_max_s` from now. Only a few, and
            # not more often than this: on a congested channel, bringing every backed-off report forward at
            # each success would undo the backoff that keeps retries from feeding the congestion.
            self.counters["expedited"] += await self.store.expedite(
                attempts=EXPEDITE_AFTER_ATTEMPTS, longer_than_s=soon, limit=EXPEDITE_MAX
            )
        self.routes.heard_from(node, self.clock.now())
        self.routes.succeeded(node)

    async def _entries_covering(self, ids: list[tuple[int, int]]) -> list[OutboxEntry]:
        entries = []
        seen: set[tuple[int, int]] = set()
        for origin, seq in ids:
            entry = await self.store.get(origin, seq)
            if entry is not None and entry.key not in seen:
                seen.add(entry.key)
                entries.append(entry)
        return entries

    async def _on_delivered(self, env: Envelope, packet: ReceivedPacket) -> None:
        ids = bodies.decode_delivered_ids(env.body)
        sender = self.routes.neighbours.get(packet.from_node)
        mine = self.routes.my_hops(uplink_up=self._uplink_held(), now=self.clock.now())
        if sender is not None and (sender.uplink_hops == 0 or sender.uplink_hops > mine):
            for key in ids:  # an outer neighbour passes them on: it has them (implicit acknowledgement)
                self._notice_rounds.pop(key, None)
        # The store queues the ids we carried by radio for our own notice, so the news travels back along each
        # report's path to its origin hub; hubs that never carried a report stay quiet about it.
        await self._learn_delivered(ids)

    async def _learn_delivered(self, ids: list[tuple[int, int]]) -> None:
        """HQ has these reports (news from a neighbour): on disk (the store queues the news for the hub each
        came from)."""
        self.counters["delivered_learnt"] += await self.store.mark_delivered(ids, published=False)

    def _neighbour_radio_hops(self, *, outer_only: bool = False) -> list[int]:
        """Relay radios between us and each neighbour heard within the freshness window (from its beacons or the
        reports it handed us); `outer_only`: only those farther from the uplinks than us (who may need our
        notices)."""
        now = self.clock.now()
        mine = self.routes.my_hops(uplink_up=self._uplink_held(), now=now) or 99
        hops = {
            n.node: n.radio_hops
            for n in self.routes.neighbours.values()
            if now - n.heard_at <= self.routes.stale_after_s
            and (not outer_only or n.uplink_hops == 0 or n.uplink_hops > mine)
        }
        # hubs that handed us reports are outward by definition, even if their beacon never reached us
        for node, (radio_hops, heard_at) in self._upstream.items():
            if now - heard_at <= self.routes.stale_after_s:
                hops[node] = max(hops.get(node, 0), radio_hops)
        return list(hops.values())

    def _on_beacon(self, env: Envelope, packet: ReceivedPacket) -> None:
        if packet.hops_away > self.config.neighbour_radio_hops or env.origin == self.camp_id:
            return
        status = bodies.decode_status(env.body)
        now = self.clock.now()
        theirs = int(status.get("uplink_hops", 0))
        changed = self.routes.heard_beacon(
            packet.from_node,
            env.origin,
            theirs,
            now,
            snr=packet.rx_snr,
            via=int(status.get("via", 0)),
            radio_hops=packet.hops_away,
        )
        mine = self.routes.my_hops(uplink_up=self._uplink_held(), now=now)
        if mine and (theirs == 0 or theirs > mine + 1):
            self._answer_beacon = True  # the neighbour could do better through us: tell it soon
        if changed or self._answer_beacon:
            self._beacon_wanted.set()
            self._wake.set()

    async def _on_hq_broadcast(self, env: Envelope) -> None:
        result = await self.store.accept(env, priority=int(Prio.ALERT), carry=False)
        if result != AcceptResult.NEW:
            self.counters["duplicates"] += 1
            return
        self.counters["broadcasts_received"] += 1
        # Hub radios are CLIENT_MUTE (firmware-config): only hill relays repeat the uplink hub's flood, so each
        # hub repeats a new HQ broadcast once to the hubs that hear it directly (after a random pause, so
        # neighbours that heard the same relay frame do not all answer at once). A few frames per broadcast.
        self._spawn(self._repeat_broadcast(env.to_bytes()))
        if self.on_broadcast is not None:
            await self.on_broadcast(env)

    async def _repeat_broadcast(self, raw: bytes) -> None:
        await self.clock.sleep(self.rng.uniform(0.0, BROADCAST_REPEAT_SPREAD_S))
        if await self._transmit(raw, to=BROADCAST, hop_limit=0, alert=True, wait_budget=True) is not None:
            self.counters["broadcasts_repeated"] += 1

    async def inject_broadcast(self, env: Envelope) -> None:
        """An HQ broadcast verified by the uplink: flood it to every hub at alert priority."""
        result = await self.store.accept(env, priority=int(Prio.ALERT), carry=False)
        if result != AcceptResult.NEW:
            return
        await self._transmit(env.to_bytes(), to=BROADCAST, hop_limit=7, alert=True, wait_budget=True)
        self.counters["broadcasts_injected"] += 1
        if self.on_broadcast is not None:
            await self.on_broadcast(env)

    def _on_routing(self, result: RoutingResult) -> None:
        if not result.ok:
            self.counters[f"radio_nak_{result.error.lower()}"] += 1
            log.warning("radio refused packet %08x: %s", result.packet_id, result.error)

    # ------------------------------------------------------------------ custody notices

    def _queue_custody_ack(self, node: int, ids: list[tuple[int, int]], radio_hops: int, packet_id: int) -> None:
        answers = self._pending_answers[node]
        answers.pop(packet_id, None)
        answers[packet_id] = ids  # most recent last
        # answer over as many relay radios as the data crossed (its beacon may not have reached us)
        self._ack_hops[node] = max(self._ack_hops.get(node, 0), radio_hops, self.routes.radio_hops_to(node))
        if node not in self._ack_flush:
            loop = asyncio.get_running_loop()
            # the coroutine is made when the timer fires, so a timer cancelled at shutdown leaves none unawaited
            self._ack_flush[node] = loop.call_later(
                self.clock.real(self.timing.custody_ack_delay_s), lambda: self._spawn(self._send_custody_ack(node))
            )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_custody_ack(self, node: int) -> None:
        self._ack_flush.pop(node, None)
        frames = self._pending_answers.pop(node, {})
        ids = sorted({key for keys in frames.values() for key in keys})
        pending = list(frames)
        hops = self._ack_hops.pop(node, 0)
        camp = self._camp_of(node)
        if camp is not None and pending and self._has_link_key(camp):
            # A compact notice under the key we share with that hub: ~16 bytes where a signed one is ~85. When HQ
            # has every report in those frames (we know it, or our uplink has them), it says so, and spares the
            # news we would otherwise send that hub about them (a retry of a lost one is answered the same way).
            delivered = bool(ids) and await self._delivered_soon(ids)
            pending = pending + await self._repeat_answers(node, pending, delivered=delivered)
            news = self._news_to_carry(node)
            now = self.clock.now()
            answered = self._answered[node]
            for packet_id in pending:
                answer = answered.pop(packet_id, None) or _Answer(now, frames.get(packet_id, []))
                answer.times += 1
                answer.delivered = answer.delivered or delivered
                answered[packet_id] = answer  # most recently answered last
            sent_any = False
            for start in range(0, len(pending), linkauth.MAX_IDS):
                answering = pending[start : start + linkauth.MAX_IDS]
                make = partial(self.link_keys.custody_notice, camp, answering, delivered=delivered)
                frame, news = fit_news(make, news, at_least_one=False)
                sent = await self._transmit(frame, to=node, hop_limit=hops, alert=True, wait_budget=True)
                sent_any = sent_any or sent is not None
                self.counters["custody_acks_sent"] += 1
                if sent is not None and news:
                    self._news_sent(node, news, sent, own_notice=False)
                    self.counters["news_in_custody_notices"] += 1
                    news = []
            if delivered and sent_any:
                self.counters["custody_delivered_sent"] += 1
                await self.store.mark_notified(ids)
                for key in ids:  # news for them we had taken up already: told
                    self._news.get(node, {}).pop(key, None)
            return
        # A hub whose camp we do not know yet (no signed frame of its own heard): a signed notice naming the
        # report ids, and the data frames it answers by the low bits of their packet ids (a few 3-byte numbers).
        answers = [packet_id & bodies.ANSWER_MASK for packet_id in pending[-MAX_ANSWERS:]]  # the most recent
        while ids:
            chunk, ids = self._fit_ids(Kind.CUSTODY, ids, answers)
            await self._transmit(chunk, to=node, hop_limit=hops, alert=True, wait_budget=True)
            self.counters["custody_acks_sent"] += 1

    async def _repeat_answers(self, node: int, pending: list[int], *, delivered: bool) -> list[int]:
        """Frames of `node` our last notices answered, to name again (their notice may have been lost: then
        this one spares a retransmission of the whole frame). A notice that says "delivered" names only frames
        whose reports HQ has too; a notice that does not never names a frame an earlier one said "delivered" of
        (the sender would take it over without the news, which we no longer send it)."""
        now = self.clock.now()
        answered = self._answered[node]
        window = 3 * self.timing.custody_timeout_s  # the sender retries after one timeout or more
        for packet_id in [p for p, answer in answered.items() if now - answer.when > window]:
            del answered[packet_id]
        room = min(REPEAT_ANSWERS, linkauth.MAX_IDS - len(pending))
        again = (
            [
                p
                for p, answer in answered.items()
                if p not in pending and answer.times < REPEAT_ANSWERS_TIMES and (delivered or not answer.delivered)
            ][-room:]
            if room > 0
            else []
        )
        if again and delivered:
            reports = [key for p in again for key in answered[p].reports]
            if not await self.store.all_delivered(reports):
                return []
        if again:
            self.counters["custody_answers_repeated"] += len(again)
        return again

    def _has_link_key(self, camp: int) -> bool:
        """Can we make compact notices for `camp`? (Not for ourselves, a camp outside the registry, or a
        registry key that makes no link key: those get a signed notice.)"""
        try:
            self.link_keys.key_for(camp)
        except MeshdError as exc:
            if camp in self.registry.camps and camp != self.camp_id:
                log.warning("custody notice to camp %d: %s", camp, exc)
            return False
        return True

    def _camp_of(self, node: int) -> int | None:
        """The camp of a node number, as its own signed frames (or verified notices) told us."""
        camp = self._node_camp.get(node)
        if camp is None:
            neighbour = self.routes.neighbours.get(node)
            camp = neighbour.camp if neighbour is not None else None
        return camp

    def _news_to_carry(self, node: int) -> list[tuple[int, int]]:
        """Delivered news for `node` that a custody notice to it carries too (a few bytes: all of it)."""
        return list(self._news.get(node, {}))[: linkauth.MAX_REPORTS]

    def _news_sent(self, node: int, keys: list[tuple[int, int]], packet_id: int, *, own_notice: bool) -> None:
        """A frame of ours named this news; `node` answers it like a data frame (see _on_link_frame)."""
        self._news_sends[(node, packet_id)] = keys
        now = self.clock.now()
        pending = self._news.get(node, {})
        for key in keys:
            if (news := pending.get(key)) is not None:
                news.sent_at = now
                news.sends += 1 if own_notice else 0  # (riding in a custody notice costs next to nothing)

    async def _delivered_soon(self, ids: list[tuple[int, int]]) -> bool:
        """Does HQ have all of these (we know it already, or our uplink has them now or within another
        `custody_ack_delay_s`)? A report that came in just before the notice is usually still being published;
        the sender waits far longer."""
        for attempt in range(DELIVERED_CHECKS):
            if attempt:
                await self.clock.sleep(self.timing.custody_ack_delay_s / (DELIVERED_CHECKS - 1))
            if await self.store.all_delivered(ids):
                return True
            if not self.uplink_up():
                return False
        return False

    def _fit_ids(
        self, kind: Kind, ids: list[tuple[int, int]], answers: list[int] | None = None
    ) -> tuple[bytes, list[tuple[int, int]]]:
        """Sign as many ids as fit one frame; return the frame and the rest."""
        count = len(ids)
        while True:
            env = Envelope(self.camp_id, CONTROL_SEQ, kind, bodies.encode_delivered_ids(ids[:count], answers or ()))
            signed = sign(env, self.keys.sign, max_len=10_000)
            raw = signed.to_bytes()
            if len(raw) <= MAX_ENVELOPE_LEN or count == 1:
                return raw, ids[count:]
            count = max(1, count * MAX_ENVELOPE_LEN // len(raw) - 1)

    async def _notice_loop(self) -> None:
        # Every `notice_interval_s`: Delivered news for a neighbour we know goes back to it under our link key,
        # in the custody notices we send it anyway if one is due within NEWS_WAIT_S, else in a short notice of
        # its own (looked at every NEWS_WAIT_S: retries need not wait a whole interval); news for hubs we
        # cannot name goes in a signed broadcast (see _broadcast_notices).
        wait = min(NEWS_WAIT_S, self.timing.notice_interval_s / 2)
        ticks_per_interval = max(1, round(self.timing.notice_interval_s / wait))
        tick = 0
        while True:
            # Jittered: with a fixed period, two hubs whose loops started within a second of each other sent
            # their news at the same moment every round, and where both reach a third hub (hidden from each
            # other) the notices collided there every time: news to that hub was given up after every round
            # failed (bench/sim_network.py --seed 4: camp 8's receipts, from camps 3 and 7).
            await self.clock.sleep(wait * self.rng.uniform(0.75, 1.25))
            tick += 1
            if tick % ticks_per_interval == 0:
                # News for a neighbour stays untold in the store until it answers (or we give up), so a restart
                # sends it again; what is already on its way is skipped here.
                news = await self.store.untold_news(limit=NEWS_LIMIT)
                broadcast = news.pop(0, [])
                now = self.clock.now()
                for node, keys in news.items():
                    camp = self._camp_of(node)
                    if camp is None or not self._has_link_key(camp):
                        broadcast.extend(keys)
                        continue
                    for key in keys:
                        self._news[node].setdefault(key, _News(since=now))
                await self.store.mark_notified(broadcast)  # the broadcast's rounds are kept in memory, as before
                await self._broadcast_notices(sorted(broadcast))
            await self._send_news(wait)

    async def _send_news(self, wait: float) -> None:
        """A short Delivered notice to each neighbour with news that no frame of ours named within `wait`. Like
        the custody notices that carry news, it is answered like a data frame, and the news goes again until
        answered (after `wait`, then twice as long each time up to a notice interval, NEWS_ROUNDS notices of its
        own at most)."""
        now = self.clock.now()
        for node in list(self._news):
            pending = self._news[node]
            # A neighbour we reach only through a hill relay gets twice the rounds: the relay hears half the
            # valley, and what collides there never arrives (one news notice in seven arrived, in a traced
            # bench run). The rounds still end while the hub is alive, and the origin's custody recheck brings
            # the receipt in the end.
            rounds = NEWS_ROUNDS * (2 if self._news_hops(node) else 1)
            given_up = [key for key, news in pending.items() if news.sends >= rounds]
            if given_up:
                self.counters["news_given_up"] += len(given_up)
                log.info(
                    "gave up telling camp %s (!%08x) that HQ has %d of its reports, after %d notices unanswered",
                    self._camp_of(node), node, len(given_up), rounds,
                )  # fmt: skip
                for key in given_up:
                    del pending[key]
                await self.store.mark_notified(given_up)
            camp = self._camp_of(node)
            if not pending or camp is None:
                del self._news[node]
                continue
            keys = [
                key
                for key, news in pending.items()
                if now - news.since >= wait
                and now - news.sent_at >= min(wait * 2 ** max(0, news.sends - 1), self.timing.notice_interval_s)
            ]
            hops = self._news_hops(node)
            while keys:
                frame, chunk = fit_news(partial(self.link_keys.delivered_notice, camp), keys, at_least_one=True)
                keys = keys[len(chunk) :]
                sent = await self._transmit(frame, to=node, hop_limit=hops, alert=False, wait_budget=True)
                self.counters["delivered_notices_sent"] += 1
                if sent is not None:
                    self._news_sent(node, chunk, sent, own_notice=True)
        # frames whose news is done (answered by another, or given up on) need no answer
        for send, keys in list(self._news_sends.items()):
            if not any(key in self._news.get(send[0], {}) for key in keys):
                del self._news_sends[send]

    def _news_hops(self, node: int) -> int:
        """Relay radios between us and `node` for its news: as far as its beacons or its reports came."""
        return max(self.routes.radio_hops_to(node), self._upstream.get(node, (0, 0.0))[0])

    async def _broadcast_notices(self, fresh: list[tuple[int, int]]) -> None:
        # Signed broadcasts gathered over `notice_interval_s` (one frame carries ~100 ids). Like the firmware's
        # implicit ACK, hearing an outer neighbour pass the ids on confirms they arrived; ids not confirmed are
        # repeated for up to NOTICE_ROUNDS rounds (an edge hub never passes them on, so the repeats end there),
        # so a 20 % lossy link misses a notice with probability 0.2 ** NOTICE_ROUNDS.
        if not self._neighbour_radio_hops(outer_only=True):
            self._notice_rounds.clear()
            return
        for key in fresh:
            self._notice_rounds[key] = NOTICE_ROUNDS
        ids = sorted(self._notice_rounds)[:400]
        for key in ids:
            self._notice_rounds[key] -= 1
            if self._notice_rounds[key] <= 0:
                del self._notice_rounds[key]
        # only as far as the farthest outer neighbour; nobody outside needs to hear it
        hops = max(self._neighbour_radio_hops(outer_only=True), default=self.config.neighbour_radio_hops)
        while ids:
            chunk, ids = self._fit_ids(Kind.DELIVERED, ids)
            sent = await self._transmit(chunk, to=BROADCAST, hop_limit=hops, alert=False, wait_budget=True)
            self.counters["delivered_notices_sent"] += 1
            if sent is not None and hops >= self.config.neighbour_radio_hops:
                self._last_heard_broadcast = self.clock.now()

    # ------------------------------------------------------------------ beacons

    async def _beacon_loop(self) -> None:
        await self.clock.sleep(self.rng.uniform(0.0, self.timing.beacon_min_gap_s))
        while True:
            hops = self.routes.my_hops(uplink_up=self._uplink_held(), now=self.clock.now())
            now = self.clock.now()
            # Any frame of ours a neighbour's host receives keeps our route fresh there (`heard_from`), so
            # while we send Delivered notices as far as a beacon goes, the periodic beacon says nothing new.
            periodic_due = now - max(self._last_beacon, self._last_heard_broadcast) >= self._beacon_period
            lost = hops == 0 and now - self._last_beacon >= self._lost_gap
            news = hops != self._advertised_hops or self._answer_beacon or lost
            wanted = news or periodic_due or self._introduce
            if (
                wanted
                and self.radio.state is LinkState.READY
                and now - self._last_beacon >= self.timing.beacon_min_gap_s
            ):
                # A beacon is often an answer to one just heard, and every neighbour that heard it answers:
                # neighbours that cannot hear each other (hidden from each other, on either side of the asker)
                # would transmit at the same moment and collide at the asker every time. A random pause first.
                await self.clock.sleep(self.rng.uniform(0.0, self.timing.beacon_min_gap_s / 2))
                hops = self.routes.my_hops(uplink_up=self._uplink_held(), now=self.clock.now())
                news = news or hops != self._advertised_hops
                why = (
                    "route_changed" if hops != self._advertised_hops
                    else "answer" if self._answer_beacon
                    else "introduce" if self._introduce
                    else "no_route" if lost
                    else "periodic"
                )  # fmt: skip
                if await self._send_beacon(hops, periodic=why == "periodic"):
                    self.counters[f"beacons_{why}"] += 1
                    # the same route again: wait twice as long next time; anything new: start again
                    self._beacon_period = (
                        self.timing.beacon_interval_s
                        if news
                        else min(2 * self._beacon_period, self.timing.beacon_interval_max_s)
                    )
            self._beacon_wanted.clear()
            await wait_event(self._beacon_wanted, self.clock.real(self.timing.beacon_min_gap_s))

    async def _send_beacon(self, hops: int, *, periodic: bool = False) -> bool:
        """Broadcast our distance to an uplink, as far as a neighbour can be (through relay radios). A periodic
        beacon, which only refreshes what the neighbours know, goes only as far as the neighbours we know are:
        where all of them hear us directly, a hill relay need not repeat it (a third of the beacon airtime in
        bench/sim_network.py was the relays' repeats)."""
        now = self.clock.now()
        hop = None if self._uplink_held() else self.routes.next_hop(now)
        body = bodies.encode_status(
            {"uplink_hops": hops, "uplink_up": self.uplink_up(), "via": hop.camp if hop is not None else 0}
        )
        env = sign(Envelope(self.camp_id, CONTROL_SEQ, Kind.STATUS, body), self.keys.sign)
        reach = self.config.neighbour_radio_hops
        if periodic:
            reach = min(reach, max(self._neighbour_radio_hops(), default=0))
        sent = await self._transmit(env.to_bytes(), to=BROADCAST, hop_limit=reach, alert=False, wait_budget=False)
        if sent is not None:
            self._answer_beacon = False
            self._introduce = False
            # without a route, ask again with growing gaps instead of chattering while an uplink is down
            self._lost_gap = (
                min(self._lost_gap * 2, self.timing.beacon_interval_s)
                if hops == 0
                else 3 * self.timing.beacon_min_gap_s
            )
            self._advertised_hops = hops
            self._last_beacon = self.clock.now()
            self.counters["beacons_sent"] += 1
        return sent is not None

    # ------------------------------------------------------------------ sending reports

    def _retry_after_for(self, node: int) -> Callable[[int], float]:
        # Like TCP's RTO: never retry sooner than 3x the custody round trips measured to this neighbour,
        # so a busy channel (queueing, contention) does not turn into a storm of premature retries.
        floor = max(self.timing.custody_timeout_s, 3.0 * self._srtt.get(node, 0.0))

        def retry_after(attempts: int) -> float:
            base: float = floor * 2.0 ** min(attempts - 1, 6)
            return min(base, max(self.config.retry_max_s, floor)) * self.rng.uniform(0.9, 1.1)

        return retry_after

    def _measure_rtt(self, key: tuple[int, int], node: int) -> None:
        sent = self._sent_at.pop(key, None)
        if sent is None or sent[0] != node:
            return
        rtt = self.clock.now() - sent[1]
        previous = self._srtt.get(node)
        self._srtt[node] = rtt if previous is None else 0.8 * previous + 0.2 * rtt

    async def _send_loop(self) -> None:
        while True:
            self._wake.clear()
            delay = await self._send_some()
            await wait_event(self._wake, self.clock.real(delay))

    async def _send_some(self) -> float:
        """Send what is due; returns how long to wait (scenario s) before looking again."""
        if self.radio.state is not LinkState.READY:
            return 5.0
        held = self._uplink_held()
        if self.uplink_up():
            return 30.0  # our own uplink flushes the outbox; nothing to hand over by radio
        now = self.clock.now()
        if held:
            # Our uplink dropped a moment ago and we still advertise it: keep everything for it, alerts too. A
            # neighbour that seems to have its own way out may route through a hub that routes through us (we
            # still look like the uplink), so a report sent on would come back round a loop for the whole hold.
            return max(1.0, min(30.0, self._uplink_last_up + self.timing.uplink_hold_s - now))
        if self.routes.next_hop(now) is None:
            # Nobody to hand reports to: skip the outbox scan (a burst of received reports wakes this loop
            # once per report). A beacon that gives us a route wakes the loop again.
            return 10.0
        entries = await self.store.due(limit=64)
        if not entries:
            return 10.0  # also notices reports queued by `meshd send` from another process
        next_look = 1.0
        batchable = {k.value for k in BATCHABLE}
        handled: set[tuple[int, int]] = set()
        # One failure per neighbour per pass: reports that timed out together (one custody notice for all of
        # them was lost) are one lost exchange, not several; counted each, they pushed a busy neighbour past
        # MAX_FAILURES at once and reports detoured (and came back round loops) until its next beacon.
        failed: set[int] = set()
        for candidate in entries:
            if candidate.key in handled:
                continue
            fresh = await self.store.get(*candidate.key)  # custody or a batch may have taken it meanwhile
            if fresh is None:
                continue
            entry = fresh
            exclude = frozenset({entry.from_node} if entry.from_node else ())  # split horizon
            hop = self.routes.next_hop(now, exclude=exclude) or self.routes.next_hop(now)
            if hop is None:
                return 30.0
            alert = entry.priority >= Prio.ALERT
            fresh_local = entry.local and entry.attempts == 0 and not entry.from_node  # never on the air yet
            if fresh_local and entry.kind in batchable and not alert:
                if entry.age_s < self.timing.batch_wait_s:
                    next_look = min(next_look, self.timing.batch_wait_s - entry.age_s)
                    continue
                entry = await self._maybe_batch(entry, entries)
                handled.update(entry.report_keys())
            elif (
                fresh_local
                and entry.kind in batchable
                and entry.n_items == 1
                and self.budget.can_send(self._full_frame_cost, self.clock.now(), alert=False)
            ):
                # An alert goes at once, and takes along the needs reports of ours waiting for their batch just
                # before it: they would otherwise go in a frame of their own (an alert in the middle of a burst
                # split it in two), and they arrive sooner. The report plans of bench/sim_network.py (seeds
                # 3-12): report frames leaving their origin 672 -> 569, and 546 with `batch_max` 8 instead of 5.
                # Only while the routine budget has room for a full frame: the reserve is for alerts, and a
                # needs batch riding on one spent it, so the next alert waited for the hour to come round.
                entry = await self._maybe_batch(entry, entries, before=True)
                handled.update(entry.report_keys())
            raw = replace(Envelope.from_bytes(entry.envelope), age_s=entry.age_s).to_bytes()
            cost = airtime.payload_airtime_s(len(raw), self.preset, self.radio_config.portnum)
            if not self.budget.can_send(cost, self.clock.now(), alert=alert):
                self.counters["budget_waits"] += 1
                if alert:
                    return max(self.budget.wait_s(cost, self.clock.now(), alert=True), 1.0)
                continue  # an alert further down may still fit the reserve
            hop_limit = self._data_hop_limit(entry, hop)
            packet_id = await self._transmit(raw, to=hop.node, hop_limit=hop_limit, alert=alert, wait_budget=False)
            if packet_id is None:
                return 5.0
            self._pinned.discard(entry.key)  # notices for this send may hand it over again
            self._sends[entry.key].add((hop.node, packet_id))
            self._sent_frames[(hop.node, packet_id)] = (self.clock.now(), entry.report_keys())
            if hop_limit == 0:
                self._sent_direct[entry.key] = hop.node
            else:
                self._sent_direct.pop(entry.key, None)
            await self.store.mark_attempt([entry.key], self._retry_after_for(hop.node))
            if entry.attempts == 0:  # Karn: time only first transmissions
                self._sent_at[entry.key] = (hop.node, self.clock.now())
            else:  # ... and never a handover that needed a retransmission (the notice may answer either send)
                self._sent_at.pop(entry.key, None)
            if entry.attempts + 1 >= EXPEDITE_AFTER_ATTEMPTS:
                self._long_backoff = True
            if entry.attempts > 0:
                if hop.node not in failed:
                    failed.add(hop.node)
                    self.routes.failed(hop.node)
                self.counters["retransmissions"] += 1
            self.counters["forwarded"] += 1
        return next_look

    def _data_hop_limit(self, entry: OutboxEntry, hop: Neighbour) -> int:
        """A first send goes as far as the neighbour's beacon came. A retry takes the long way (through relay
        radios), because a direct link that carried a beacon can be too weak for data, unless direct sends to
        this neighbour have mostly worked: then only the second retry does, since every radio that hears a
        frame with hops left repeats it, and on a link that is merely lossy the first retry usually gets
        through directly. (Always direct first cost a report two lost sends and a long backoff in
        `make demo`: camp 6 reaches camp 1 directly only now and then.)"""
        full = max(hop.radio_hops, self.config.neighbour_radio_hops)
        if entry.attempts == 0:
            return hop.radio_hops
        direct_to = self._sent_direct.pop(entry.key, None)
        if direct_to is not None:
            self._direct_record[direct_to][1] += 1  # no custody for a direct send
        if entry.attempts >= 2:
            return full
        worked, failed = self._direct_record[hop.node]
        # (A threshold of "at least half answered", which a 20 %-loss link meets, was tried: no gain measurable
        # in bench/sim_network.py, and the long way also sends the frame twice at different moments, which
        # helps when the first copy collides at a busy hub. Kept at two thirds.)
        return hop.radio_hops if worked >= 2 and worked >= 2 * failed else full

    async def _maybe_batch(
        self, first: OutboxEntry, entries: list[OutboxEntry], *, before: bool = False
    ) -> OutboxEntry:
        """Wrap consecutive unsent local reports into one signed batch (stored in place of them): `first` and
        the single needs reports after it, or (`before`: an alert) the ones waiting just before it."""
        run = [first]
        by_seq = {e.seq: e for e in entries if e.origin == first.origin}
        step = -1 if before else 1
        seq = first.seq + step
        while len(run) < self.config.batch_max:
            nxt = by_seq.get(seq)
            if nxt is None or not nxt.local or nxt.attempts or nxt.from_node:
                break
            if nxt.kind not in {k.value for k in BATCHABLE}:
                break
            if nxt.n_items != 1 or nxt.priority >= Prio.ALERT:
                break
            run.append(nxt)
            seq += step
        if before:
            run.reverse()  # in seq order, the alert last
        if len(run) < 2:
            return first
        while len(run) >= 2:
            items = []
            base_age = min(e.age_s for e in run)
            for e in run:
                inner = Envelope.from_bytes(e.envelope)
                items.append(codec.BatchEntry(inner.kind, inner.body, e.age_s - base_age))
            env = Envelope(first.origin, run[0].seq, Kind.BATCH, codec.make_batch_body(items), age_s=base_age)
            try:
                signed = sign(env, self.keys.sign)
            except MeshdError:
                run.pop(0 if before else -1)  # too long for one frame: one needs report fewer (never the alert)
                continue
            priority = max(e.priority for e in run)
            await self.store.replace_with_batch([e.key for e in run], signed, priority=priority)
            self.counters["batches_built"] += 1
            batched = await self.store.get(first.origin, run[0].seq)
            return batched if batched is not None else first
        return first

    async def _transmit(self, raw: bytes, *, to: int, hop_limit: int, alert: bool, wait_budget: bool) -> int | None:
        """Send one frame within the airtime budget; its packet id, or None when it was not sent."""
        cost = airtime.payload_airtime_s(len(raw), self.preset, self.radio_config.portnum)
        if wait_budget:
            # Checked again after every sleep: another task may have spent what had come free meanwhile.
            while (wait := self.budget.wait_s(cost, self.clock.now(), alert=True)) > 0:
                if math.isinf(wait):
                    self.counters["budget_refused"] += 1
                    return None
                await self.clock.sleep(wait)
        elif not self.budget.can_send(cost, self.clock.now(), alert=alert):
            self.counters["budget_waits"] += 1
            return None
        # Charged before the send is awaited, so a second task checking meanwhile sees this frame's airtime.
        charged_at = self.clock.now()
        self.budget.charge(cost, charged_at)
        priority = Priority.ALERT if alert else Priority.RELIABLE
        try:
            packet_id = await self.radio.send(
                raw,
                to=to,
                portnum=self.radio_config.portnum,
                hop_limit=hop_limit,
                want_ack=False,
                priority=priority,
                channel=self.radio_config.channel,
            )
        except MeshdError as exc:
            self.budget.refund(cost, charged_at)
            self.counters["send_errors"] += 1
            log.warning("radio send failed: %s", exc)
            return None
        self.airtime_used_s += cost
        self.counters["frames_sent"] += 1
        return packet_id

    # ------------------------------------------------------------------ housekeeping

    async def _maintenance_loop(self) -> None:
        while True:
            await self.clock.sleep(self.timing.maintenance_s)
            expired = await self.store.expire()
            if expired:
                log.warning("%d reports expired undelivered", expired)
            await self.store.prune_seen(DEFAULT_WINDOW * 2)
            old = self.clock.now() - SENT_FRAMES_KEPT_S
            for send in [send for send, (when, _) in self._sent_frames.items() if when < old]:
                del self._sent_frames[send]
            for key in list(self._sends):  # delivered or expired meanwhile: no notice will come for them
                if await self.store.get(*key) is None:
                    self._sends.pop(key, None)
            rechecked = await self.store.recheck_handed(self.timing.custody_recheck_s)
            if rechecked:
                self.counters["custody_rechecked"] += rechecked
                log.info("%d of our reports handed on long ago are not known delivered: sending them again", rechecked)
                self._wake.set()
            await self.store.mark_alive()


def fit_news(
    make: Callable[..., bytes], news: list[tuple[int, int]], *, at_least_one: bool
) -> tuple[bytes, list[tuple[int, int]]]:
    """The frame `make` builds with as much of `news` as fits one packet (reports from many origins take more
    room than MAX_REPORTS of one), and the news it carries: a custody notice goes without news if need be, a
    Delivered notice (`at_least_one`) carries one report at least."""
    count = min(len(news), linkauth.MAX_REPORTS)
    while True:
        try:
            return make(reports=news[:count]), news[:count]
        except EncodeError:
            if count <= (1 if at_least_one else 0):
                raise
            count //= 2


async def originate_report(
    store: HubStore,
    keys: KeyPairs,
    /,
    *,
    registry: Registry,
    camp_id: int,
    kind: Kind,
    body: dict[str, object],
    unverified: bool = False,
    inbound: tuple[int, str, bool] | None = None,
    expiry_s: int = 72 * 3600,
) -> Envelope:
    """Sign and durably queue a report (also used by `meshd send` with the daemon stopped)."""
    if kind not in BATCHABLE:
        raise MeshdError(f"cannot originate a {kind.value} report")
    seal_to = registry.hq_seal_public() if kind is Kind.SEALED else None
    raw_body = codec.encode_body(kind, body, camp_id, seal_to=seal_to)
    priority = Prio.SEALED if kind is Kind.SEALED else priority_of_body(kind, dict(body))

    def build(seq: int) -> Envelope:
        return sign(Envelope(camp_id, seq, kind, raw_body, unverified=unverified), keys.sign)

    return await store.originate(camp_id, build, priority=int(priority), inbound=inbound, expiry_s=expiry_s)
