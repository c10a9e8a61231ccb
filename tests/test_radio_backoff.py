"""Reconnect policy: capped exponential backoff with full jitter, reset after a healthy connection."""

from __future__ import annotations

import random

import pytest

from meshd.errors import ConfigError
from meshd.radio.backoff import Backoff


def test_delays_grow_exponentially_under_a_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=2.0, rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceilings[-1]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0])


def test_full_jitter_spreads_over_the_whole_range() -> None:
    delays = []
    for seed in range(500):
        backoff = Backoff(initial_s=1.0, max_s=1.0, rng=random.Random(seed))
        delays.append(backoff.next_delay())
    assert min(delays) < 0.05
    assert max(delays) > 0.95
    assert 0.4 < sum(delays) / len(delays) < 0.6


def test_seeded_rng_replays_exactly() -> None:
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]


def test_healthy_connection_resets_the_sequence() -> None:
    backoff = Backoff(initial_s=0.1, max_s=2.0, healthy_after_s=30.0, rng=random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    backoff.connected(now=100.0)
    backoff.disconnected(now=131.0)
    assert backoff.attempt == 0
    assert backoff.ceiling() == pytest.approx(0.1)


def test_short_lived_connection_does_not_reset() -> None:
    backoff = Backoff(healthy_after_s=30.0, rng=random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    backoff.connected(now=100.0)
    backoff.disconnected(now=105.0)  # flapping: keep backing off
    assert backoff.attempt == 6


def test_huge_attempt_count_does_not_overflow() -> None:
    backoff = Backoff(rng=random.Random(1))
    backoff.attempt = 10_000
    assert backoff.next_delay() <= backoff.max_s


@pytest.mark.parametrize(
    "kwargs", [{"initial_s": 0}, {"initial_s": 3.0, "max_s": 2.0}, {"multiplier": 0.5}, {"healthy_after_s": -1}]
)
def test_invalid_settings_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**kwargs)  # type: ignore[arg-type]
