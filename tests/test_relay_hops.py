"""How far a data frame goes: direct first; a retry through relay radios unless direct sends to that
neighbour have mostly worked (a merely lossy link), and always from the second retry on."""

from __future__ import annotations

from pathlib import Path

from meshd import keys as keyfiles
from meshd.clock import Clock
from meshd.config import RadioSection, RelaySection
from meshd.relay.relay import Relay
from meshd.relay.routing import Neighbour
from meshd.store.hub import HubStore, OutboxEntry
from meshd.wire.registry import Camp, Registry
from tests.support.fakemesh import FakeMesh

NEAR, FAR = 0x0A0A0001, 0x0A0A0002


def relay(tmp_path: Path) -> Relay:
    hq = keyfiles.generate(tmp_path / "hq")
    hub = keyfiles.generate(tmp_path / "hub", 1)
    registry = Registry(hq.sign_public, hq.seal_public).with_camp(Camp(1, "hub", hub.sign_public)).signed(hq.sign)
    return Relay(
        camp_id=1,
        keys=hub,
        registry=registry,
        store=HubStore(tmp_path / "s.db"),
        radio=FakeMesh().radio(1),
        relay_config=RelaySection(neighbour_radio_hops=1),
        radio_config=RadioSection(),
        clock=Clock(),
    )


def entry(seq: int, attempts: int) -> OutboxEntry:
    return OutboxEntry(7, seq, 1, "needs", 20, b"", 0, attempts, False, False)


def test_first_send_direct_and_retries_the_long_way_until_direct_sends_prove_good(tmp_path: Path) -> None:
    r = relay(tmp_path)
    near = Neighbour(NEAR, 2, 1, 0.0, radio_hops=0)
    assert r._data_hop_limit(entry(1, 0), near) == 0
    assert r._data_hop_limit(entry(1, 1), near) == 1  # nothing known about the direct link yet
    r._direct_record[NEAR] = [5, 1]  # custody came for most direct sends: lossy, not marginal
    assert r._data_hop_limit(entry(2, 1), near) == 0
    assert r._data_hop_limit(entry(2, 2), near) == 1  # the second retry always takes the long way
    r._direct_record[NEAR] = [2, 3]  # marginal: direct sends mostly went unanswered
    assert r._data_hop_limit(entry(3, 1), near) == 1
    far = Neighbour(FAR, 3, 1, 0.0, radio_hops=1)
    assert r._data_hop_limit(entry(4, 0), far) == 1  # behind a relay radio from the start


def test_a_retry_after_a_direct_send_counts_against_the_direct_link(tmp_path: Path) -> None:
    r = relay(tmp_path)
    near = Neighbour(NEAR, 2, 1, 0.0, radio_hops=0)
    r._sent_direct[(7, 1)] = NEAR
    r._data_hop_limit(entry(1, 1), near)
    assert r._direct_record[NEAR] == [0, 1]
    assert (7, 1) not in r._sent_direct
