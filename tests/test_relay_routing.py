"""The route table: a neighbour heard directly stays a direct neighbour when a hill relay's repeat of its
beacon arrives instead (the firmware hands the host whichever copy came first), until the short path has
gone unheard as long as a route stays fresh."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshd.relay.routing import RouteTable

STALE_S = 3600.0


def table() -> RouteTable:
    return RouteTable(my_camp=5, stale_after_s=STALE_S)


def test_a_relayed_copy_of_a_beacon_does_not_make_a_direct_neighbour_farther() -> None:
    routes = table()
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=0.0, radio_hops=0)
    assert routes.my_hops(uplink_up=False, now=0.0) == 3
    changed = routes.heard_beacon(7, camp=7, uplink_hops=2, now=900.0, radio_hops=1)  # the direct copy was lost
    assert not changed
    assert routes.neighbours[7].radio_hops == 0
    assert routes.my_hops(uplink_up=False, now=900.0) == 3
    assert routes.neighbours[7].heard_at == 900.0  # still heard: the route stays fresh


def test_the_short_path_is_forgotten_once_unheard_for_as_long_as_a_route_stays_fresh() -> None:
    routes = table()
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=0.0, radio_hops=0)
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=STALE_S / 2, radio_hops=1)
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=STALE_S + 1.0, radio_hops=1)
    assert routes.neighbours[7].radio_hops == 1
    assert routes.my_hops(uplink_up=False, now=STALE_S + 1.0) == 4


def test_hearing_the_short_path_again_keeps_it_fresh_and_a_shorter_one_wins_at_once() -> None:
    routes = table()
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=0.0, radio_hops=1)
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=10.0, radio_hops=0)
    assert routes.neighbours[7].radio_hops == 0
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=STALE_S - 5.0, radio_hops=0)
    routes.heard_beacon(7, camp=7, uplink_hops=2, now=STALE_S + 100.0, radio_hops=1)
    assert routes.neighbours[7].radio_hops == 0  # heard directly 105 s before


@given(
    st.lists(st.tuples(st.floats(min_value=0.0, max_value=2000.0), st.integers(min_value=0, max_value=2)), max_size=40)
)
def test_radio_hops_is_the_fewest_heard_within_the_fresh_window(hearings: list[tuple[float, int]]) -> None:
    routes = table()
    now = 0.0
    heard: list[tuple[float, int]] = []
    for gap, radio_hops in hearings:
        now += gap
        routes.heard_beacon(7, camp=7, uplink_hops=2, now=now, radio_hops=radio_hops)
        heard.append((now, radio_hops))
        kept = routes.neighbours[7].radio_hops
        # never farther than this copy came, and a path that was itself heard within the fresh window
        assert kept <= radio_hops
        assert any(h == kept and t >= now - STALE_S for t, h in heard)
