"""HQ broadcasts from the broker into the mesh: only HQ-signed, fresh broadcasts pass; everything else is
counted by reason and never reaches `on_broadcast`. Against the shared Mosquitto, unique topic prefix."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshd.store.hub import HubStore
from meshd.wire import codec
from meshd.wire.envelope import Envelope, Kind, sign
from tests.uplink_support import (
    CAMP,
    World,
    assert_no_leftover_tasks,
    forget_session,
    make_bridge,
    make_world,
    unique_prefix,
    wait_until,
)

PORT = 1883


def broadcast(world: World, seq: int, *, key: Ed25519PrivateKey | None = None, origin: int = 0) -> Envelope:
    body = {"text": f"cholera vaccination at the school, day {seq}", "severity": "moderate"}
    return codec.build_envelope(Kind.BROADCAST, body, origin=origin, seq=seq, key=key or world.hq)


def as_json(env: Envelope) -> bytes:
    return json.dumps({"envelope": base64.b64encode(env.to_bytes()).decode()}).encode()


async def test_only_hq_signed_fresh_broadcasts_reach_the_mesh(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    world = make_world()
    prefix = unique_prefix()
    topic = f"{prefix}/v1/hq/broadcast"
    delivered: list[Envelope] = []

    async def on_broadcast(env: Envelope) -> None:
        delivered.append(env)

    stranger = Ed25519PrivateKey.generate()
    needs = codec.build_envelope(Kind.NEEDS, {"severity": {"water": 5}}, origin=0, seq=40, key=world.hq)
    camp_broadcast = broadcast(world, 41, key=world.camp_keys[CAMP], origin=CAMP)
    unsigned = Envelope(0, 42, Kind.BROADCAST, broadcast(world, 42).body)  # no signature at all
    tampered = broadcast(world, 43)
    tampered = Envelope(0, 43, Kind.BROADCAST, tampered.body + b"\x18\x01", signature=tampered.signature)
    bad_body = sign(Envelope(0, 44, Kind.BROADCAST, b"\xff\xff\xff"), world.hq)
    attacks = [
        (b"\xff\xfe\x00", "bad_json"),
        (b'{"text": "evacuate now"}', "bad_json"),
        (b"not even base64", "bad_json"),
        (b'{"envelope": "AAAA"', "bad_json"),
        (json.dumps({"envelope": base64.b64encode(b"\x01\x02garbage").decode()}).encode(), "bad_envelope"),
        (base64.b64encode(unsigned.to_bytes()), "bad_envelope"),
        (as_json(broadcast(world, 45, key=stranger)), "bad_signature"),
        (as_json(tampered), "bad_signature"),
        (as_json(needs), "wrong_kind"),
        (as_json(camp_broadcast), "wrong_origin"),
        (as_json(bad_body), "bad_body"),
    ]
    good = broadcast(world, 50)
    async with HubStore(tmp_path / "hub.db") as store:
        bridge = make_bridge(world, store, PORT, prefix, on_broadcast=on_broadcast, pinned=world.hq_public)
        async with bridge, aiomqtt.Client("127.0.0.1", PORT) as hq:
            await wait_until(lambda: bridge.connected)
            await asyncio.sleep(0.1)  # the SUBACK follows the CONNACK
            for payload, _ in attacks:
                await hq.publish(topic, payload, qos=1)
            await hq.publish(topic, as_json(good), qos=1)
            await wait_until(lambda: len(delivered) == 1)
            # The same broadcast again (as bare base64 this time), and an older one: replays.
            await hq.publish(topic, base64.b64encode(good.to_bytes()), qos=1)
            await hq.publish(topic, as_json(broadcast(world, 49)), qos=1)
            newer = broadcast(world, 51)
            await hq.publish(topic, base64.b64encode(newer.to_bytes()), qos=1)
            await wait_until(lambda: len(delivered) == 2 and sum(bridge.rejected_broadcasts.values()) == 13)
            # counted once the replay floor is on disk too (an fsync after on_broadcast: slow on a busy machine)
            await wait_until(lambda: bridge.counters["broadcasts_accepted"] == 2)
            await asyncio.sleep(0.2)
        expected: dict[str, int] = {}
        for _, reason in attacks:
            expected[reason] = expected.get(reason, 0) + 1
        expected["replay"] = 2
        assert dict(bridge.rejected_broadcasts) == expected
        assert [env.seq for env in delivered] == [50, 51]
        assert delivered[0] == good
        assert bridge.counters["broadcasts_accepted"] == 2
        # The replay floor is in the store: a restarted hub still refuses seq 51 and below.
        assert await store.is_seen(0, 51)

        replays: list[Envelope] = []

        async def record(env: Envelope) -> None:
            replays.append(env)

        again = make_bridge(world, store, PORT, prefix, on_broadcast=record, pinned=world.hq_public)
        async with again, aiomqtt.Client("127.0.0.1", PORT) as hq:
            await wait_until(lambda: again.connected)
            await asyncio.sleep(0.1)
            await hq.publish(topic, as_json(newer), qos=1)
            await hq.publish(topic, as_json(broadcast(world, 52)), qos=1)
            await wait_until(lambda: len(replays) == 1 and again.rejected_broadcasts["replay"] == 1)
        assert [env.seq for env in replays] == [52]
    await forget_session(bridge)
    await forget_session(again)
    await assert_no_leftover_tasks(before)


async def test_registry_hq_key_is_used_when_none_is_pinned(tmp_path: Path) -> None:
    world = make_world()
    prefix = unique_prefix()
    got: list[Envelope] = []

    async def on_broadcast(env: Envelope) -> None:
        got.append(env)

    async with HubStore(tmp_path / "hub.db") as store:
        bridge = make_bridge(world, store, PORT, prefix, on_broadcast=on_broadcast, pinned=None)
        async with bridge, aiomqtt.Client("127.0.0.1", PORT) as hq:
            await wait_until(lambda: bridge.connected)
            await asyncio.sleep(0.1)
            await hq.publish(f"{prefix}/v1/hq/broadcast", as_json(broadcast(world, 7)), qos=1)
            await wait_until(lambda: len(got) == 1)
    await forget_session(bridge)


async def test_broadcast_sent_while_the_hub_was_offline_arrives_on_reconnect(tmp_path: Path) -> None:
    """The persistent session keeps the subscription; the broker queues HQ's broadcast for the hub."""
    world = make_world()
    prefix = unique_prefix()
    got: list[Envelope] = []

    async def on_broadcast(env: Envelope) -> None:
        got.append(env)

    async with HubStore(tmp_path / "hub.db") as store:
        bridge = make_bridge(world, store, PORT, prefix, on_broadcast=on_broadcast, pinned=world.hq_public)
        async with bridge:
            await wait_until(lambda: bridge.connected)
            await asyncio.sleep(0.1)
        async with aiomqtt.Client("127.0.0.1", PORT) as hq:
            await hq.publish(f"{prefix}/v1/hq/broadcast", as_json(broadcast(world, 3)), qos=1)
        # Same client id: the broker resumes the session and delivers what it queued.
        client_id = bridge.target.client_id
        again = make_bridge(
            world, store, PORT, prefix, on_broadcast=on_broadcast, pinned=world.hq_public, client_id=client_id
        )
        async with again:
            await wait_until(lambda: len(got) == 1)
        assert got[0].seq == 3
    await forget_session(again)
