"""Per-origin replay window (DESIGN.md section 5): a repeated or too-old seq is a `ReplayError`."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.errors import ReplayError, WireError
from meshd.wire.codec import BatchEntry, build_envelope, encode_body, make_batch_body, unbatch
from meshd.wire.envelope import Envelope, Kind, sign
from meshd.wire.replay import DEFAULT_WINDOW, ReplayGuard, ReplayWindow

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PROPERTY = settings(max_examples=200, deadline=None)


class ReferenceWindow:
    """The obvious, slow model: remember every accepted seq; refuse a repeat or one `size` below the highest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.accepted: set[int] = set()

    def acceptable(self, seq: int) -> bool:
        highest = max(self.accepted, default=-1)
        if seq > highest:
            return True
        return highest - seq < self.size and seq not in self.accepted


def test_replay_error_is_a_wire_error():
    assert issubclass(ReplayError, WireError)


def test_repeated_seq_is_rejected():
    window = ReplayWindow()
    window.accept(5)
    with pytest.raises(ReplayError, match="already seen"):
        window.accept(5)
    with pytest.raises(ReplayError):
        window.check(5)


def test_check_does_not_record():
    window = ReplayWindow()
    window.check(7)
    window.check(7)
    window.accept(7)
    assert window.seen(7)
    assert not window.seen(8)


def test_out_of_order_within_the_window_is_accepted_once():
    window = ReplayWindow()
    for seq in (10, 3, 7, 0, 9):
        window.accept(seq)
    for seq in (10, 3, 7, 0, 9):
        with pytest.raises(ReplayError):
            window.accept(seq)
    window.accept(8)


def test_too_old_seq_is_rejected():
    window = ReplayWindow()
    window.accept(5000)
    window.accept(5000 - DEFAULT_WINDOW + 1)  # the oldest still inside the window
    with pytest.raises(ReplayError, match="older than the replay window"):
        window.accept(5000 - DEFAULT_WINDOW)
    with pytest.raises(ReplayError, match="older"):
        window.accept(0)


def test_a_jump_beyond_the_window_forgets_the_old_bitmap():
    window = ReplayWindow(size=8)
    for seq in range(8):
        window.accept(seq)
    window.accept(1000)
    assert window.bitmap == 1
    window.accept(999)
    with pytest.raises(ReplayError):
        window.accept(1000)
    with pytest.raises(ReplayError):
        window.accept(992)  # 8 below the highest: outside


def test_guard_keeps_one_window_per_origin():
    guard = ReplayGuard()
    guard.accept(412, 1)
    guard.accept(413, 1)  # same seq, other camp: a different message
    with pytest.raises(ReplayError):
        guard.accept(412, 1)
    with pytest.raises(ReplayError):
        guard.check(413, 1)
    guard.check(414, 1)
    assert set(guard.windows) == {412, 413, 414}


def test_state_is_plain_integers_that_can_be_persisted_and_restored():
    window = ReplayWindow(size=64)
    for seq in (100, 90, 99, 40):
        window.accept(seq)
    restored = ReplayWindow(size=window.size, highest=window.highest, bitmap=window.bitmap)
    for seq in (100, 90, 99, 36, 0):
        with pytest.raises(ReplayError):
            restored.accept(seq)
    restored.accept(98)
    restored.accept(101)


def test_a_replayed_envelope_is_rejected_even_with_a_fresh_age():
    """A relay (or an attacker) resending the same signed envelope with another age_s is still a replay."""
    guard = ReplayGuard()
    envelope = build_envelope(Kind.STATUS, {"queue_depth": 1}, origin=412, seq=50, key=KEY)
    guard.accept(envelope.origin, envelope.seq)
    again = Envelope.from_bytes(envelope.with_added_age(600).to_bytes())
    with pytest.raises(ReplayError):
        guard.accept(again.origin, again.seq)


def test_each_report_of_a_batch_is_its_own_id_in_the_window():
    guard = ReplayGuard()
    single = build_envelope(Kind.NEEDS, {"severity": {"water": 3}}, origin=412, seq=21, key=KEY)
    for report in unbatch(single):
        guard.accept(report.origin, report.seq)
    item = encode_body(Kind.NEEDS, {"severity": {"food": 2}}, 412)
    batch = sign(Envelope(412, 20, Kind.BATCH, make_batch_body([BatchEntry(Kind.NEEDS, item)] * 3)), KEY)
    outcomes = []
    for report in unbatch(batch):
        try:
            guard.accept(report.origin, report.seq)
            outcomes.append("new")
        except ReplayError:
            outcomes.append("replay")
    assert outcomes == ["new", "replay", "new"]  # 412:21 already came on its own


@PROPERTY
@given(st.integers(1, 70), st.lists(st.integers(0, 300), max_size=80))
def test_window_behaves_like_the_reference_model(size, seqs):
    window = ReplayWindow(size=size)
    model = ReferenceWindow(size)
    for seq in seqs:
        expected = model.acceptable(seq)
        assert window.seen(seq) is not expected
        if expected:
            window.accept(seq)
            model.accepted.add(seq)
        else:
            with pytest.raises(ReplayError):
                window.accept(seq)
        assert window.highest == max(model.accepted, default=-1)
        assert window.bitmap < 1 << size


@PROPERTY
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 10_000)), max_size=60))
def test_guard_behaves_like_one_reference_model_per_origin(events):
    guard = ReplayGuard(size=DEFAULT_WINDOW)
    models: dict[int, ReferenceWindow] = {}
    for origin, seq in events:
        model = models.setdefault(origin, ReferenceWindow(DEFAULT_WINDOW))
        if model.acceptable(seq):
            guard.accept(origin, seq)
            model.accepted.add(seq)
        else:
            with pytest.raises(ReplayError):
                guard.accept(origin, seq)
