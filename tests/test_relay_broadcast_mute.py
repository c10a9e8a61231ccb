"""HQ broadcasts reach every camp when hub radios are CLIENT_MUTE (as firmware-config ships them): the radios
no longer repeat the uplink hub's flood, so each hub repeats a new broadcast once itself. Three real hubs
in a line on the simulator: camp 3 hears only camp 2, so it gets the broadcast only through camp 2's hub."""

from __future__ import annotations

import asyncio
import dataclasses

from meshd.clock import Clock
from meshd.config import HubConfig
from meshd.daemon.hub import Hub
from meshd.radio.sim import SimNetwork, line_topology
from meshd.wire import codec
from meshd.wire.envelope import Envelope, Kind
from tests.support.hubs import provision, running
from tests.test_relay_line import wait_for

SPEEDUP = 40.0


async def test_muted_hub_radios_still_carry_an_hq_broadcast_to_the_far_end(tmp_path):
    camps = [1, 2, 3]
    p = provision(tmp_path, camps)
    topology = line_topology(3, roles=["CLIENT_MUTE"] * 3, name="mute-line")
    async with SimNetwork(topology, speedup=SPEEDUP, seed=4, pty=False, record_air=True) as net:
        clock = Clock(SPEEDUP)

        def config_for(camp: int) -> HubConfig:
            base = p.config(camp, duty_cycle_pct=100.0)
            radio = dataclasses.replace(base.radio, device=f"tcp://127.0.0.1:{net.radios[camp - 1].tcp_port}")
            return dataclasses.replace(base, radio=radio, timing=dataclasses.replace(base.timing, speedup=SPEEDUP))

        hubs = [Hub(config_for(c), clock=clock, serve_status=False) for c in camps]
        shown: dict[int, list[Envelope]] = {c: [] for c in camps}
        async with running(hubs):
            for camp, hub in zip(camps, hubs, strict=True):
                assert hub.relay is not None

                async def record(env: Envelope, camp: int = camp) -> None:
                    shown[camp].append(env)

                hub.relay.on_broadcast = record
            body = {"text": "cholera vaccination at the school tomorrow", "severity": "moderate"}
            env = codec.build_envelope(Kind.BROADCAST, body, origin=0, seq=7, key=p.hq.sign)
            assert hubs[0].relay is not None
            await hubs[0].relay.inject_broadcast(env)
            await wait_for(lambda: all(len(shown[c]) == 1 for c in camps), limit_s=60)
            await asyncio.sleep(20 / SPEEDUP)  # repeats still in flight are heard as duplicates, not shown again
        assert all(shown[c] == [env] for c in camps), shown
        relays = [h.relay for h in hubs]
        assert all(r is not None for r in relays)
        assert relays[1] is not None
        assert relays[1].counters["broadcasts_repeated"] == 1
        # a hub repeats only broadcasts new to it: the injecting hub never repeats its own
        assert relays[0] is not None
        assert relays[0].counters["broadcasts_repeated"] == 0
        # nobody's radio repeated anything: every frame on the air came from a hub's own send
        assert net.on_air
        assert not any(record.relayed for record in net.on_air)
