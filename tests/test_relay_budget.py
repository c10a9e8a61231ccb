"""The airtime budget: no sliding hour ever holds more airtime than the budget, alerts keep their reserve,
and `wait_s` names the first moment a frame fits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.relay.budget import HOUR_S, AirtimeBudget


def test_a_burst_an_hour_apart_never_overlaps_within_one_hour() -> None:
    # The old one-minute buckets let a burst at 59 s and one at 3600 s (3541 s apart) both count as "the last
    # hour": here the second has to wait until the first is a full hour old.
    budget = AirtimeBudget(10.0, alert_reserve_fraction=0.0)
    budget.charge(10.0, 59.0)
    assert not budget.can_send(1.0, 3600.0)
    assert budget.wait_s(1.0, 3600.0) == pytest.approx(59.0, abs=0.01)
    assert budget.can_send(1.0, 3659.0 + 0.01)
    assert budget.used(3659.0 + 0.01) == 0.0


def test_alerts_keep_a_reserve_that_routine_traffic_cannot_spend() -> None:
    budget = AirtimeBudget.from_duty_cycle(1.0, alert_reserve_pct=20.0)  # 36 s, 7.2 s of it for alerts
    assert budget.limit(alert=False) == pytest.approx(28.8)
    budget.charge(28.0, 0.0)
    assert not budget.can_send(1.0, 1.0)
    assert budget.can_send(1.0, 1.0, alert=True)
    assert budget.wait_s(1.0, 1.0, alert=True) == 0.0
    assert budget.wait_s(1.0, 1.0) == pytest.approx(HOUR_S - 1.0, abs=0.01)


def test_a_frame_bigger_than_the_whole_budget_never_fits() -> None:
    assert math.isinf(AirtimeBudget(2.0).wait_s(3.0, 0.0, alert=True))


def test_a_refund_gives_back_only_that_frame() -> None:
    budget = AirtimeBudget(10.0)
    budget.charge(1.0, 5.0)
    budget.charge(2.0, 6.0)
    budget.refund(2.0, 6.0)
    assert budget.used(7.0) == pytest.approx(1.0)
    budget.refund(2.0, 6.0)  # nothing left to refund: no change
    assert budget.used(7.0) == pytest.approx(1.0)


sends = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=900.0),  # gap since the previous attempt, s
        st.floats(min_value=0.05, max_value=4.0),  # airtime of the frame, s
        st.booleans(),  # an alert?
        st.booleans(),  # a sender that waits (True) or one that gives up when it does not fit (False)
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(sends, st.floats(min_value=5.0, max_value=60.0))
def test_no_sliding_hour_ever_exceeds_the_budget(
    attempts: list[tuple[float, float, bool, bool]], per_hour: float
) -> None:
    budget = AirtimeBudget(per_hour, alert_reserve_fraction=0.2)
    now = 0.0
    sent: list[tuple[float, float, bool]] = []
    for gap, cost, alert, waits in attempts:
        now += gap
        if waits:
            wait = budget.wait_s(cost, now, alert=alert)
            assert not math.isinf(wait)
            if wait > 0:
                assert not budget.can_send(cost, now, alert=alert)
                # just before the answer it still does not fit; at the answer it does
                assert not budget.can_send(cost, now + wait - 0.01, alert=alert)
                now += wait
            assert budget.can_send(cost, now, alert=alert)
        elif not budget.can_send(cost, now, alert=alert):
            continue
        budget.charge(cost, now)
        sent.append((now, cost, alert))
    for start, _, _ in sent:
        window = sum(cost for at, cost, _ in sent if start <= at < start + HOUR_S)
        assert window <= per_hour + 1e-9
    # a routine frame never went out into the alert reserve: the hour up to it stays under the routine limit
    for i, (at, _, alert) in enumerate(sent):
        if not alert:
            hour_up_to_it = sum(cost for t, cost, _ in sent[: i + 1] if t > at - HOUR_S)
            assert hour_up_to_it <= per_hour * 0.8 + 1e-9
