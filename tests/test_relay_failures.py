"""Reports that time out together (one lost custody notice covered them all) count as one failure of the
neighbour, not one each: counted each, a burst of retransmissions pushed a busy but working neighbour past
MAX_FAILURES at once, and reports detoured (and came back round loops) until its next beacon."""

from __future__ import annotations

from meshd.clock import Clock
from meshd.relay.routing import MAX_FAILURES
from meshd.wire.envelope import Kind
from tests.support.fakemesh import FakeMesh
from tests.support.hubs import make_hub, provision, running
from tests.test_relay_line import wait_for

NEXT = 2  # the neighbour's node number on the in-memory mesh (not linked: nothing reaches it)


async def test_a_burst_of_retransmissions_is_one_failure_of_the_neighbour(tmp_path) -> None:
    p = provision(tmp_path, [1])
    mesh = FakeMesh()
    clock = Clock(speedup=50.0)
    hub = make_hub(p, 1, mesh.radio(1), clock, duty_cycle_pct=100.0)
    async with running([hub]):
        relay, store = hub.relay, hub.store
        assert relay is not None
        assert store is not None
        relay.routes.heard_beacon(NEXT, 2, 1, clock.now())
        sent = [await relay.originate(Kind.ALERT, {"type": "fire", "urgency": "immediate"}) for _ in range(8)]

        async def all_sent_once() -> bool:
            entries = [await store.get(e.origin, e.seq) for e in sent]
            return all(e is not None and e.attempts >= 1 for e in entries)

        await wait_for(all_sent_once, limit_s=10)
        for env in sent:  # their custody timers all run out together
            await store.defer((env.origin, env.seq), 0.0)
        await relay._send_some()
        retried = [await store.get(e.origin, e.seq) for e in sent]
        assert all(e is not None and e.attempts >= 2 for e in retried)
        assert relay.routes.neighbours[NEXT].failures < MAX_FAILURES
        hop = relay.routes.next_hop(clock.now())
        assert hop is not None
        assert hop.node == NEXT
