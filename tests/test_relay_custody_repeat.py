"""A compact custody notice names again the frames the last notices to the same hub answered (a few, twice at
most, for three custody timeouts): one notice in five is lost on a 20 % link, and its sender would otherwise
send the whole data frame again. In bench/sim_network.py this took data retransmissions from 140 to 80-102
in one set of runs (docs/BENCHMARKS.md, "Relay").

Hub B runs for real (tests/test_relay_news.py's `world`); the test plays the origin hub that sends it reports."""

from __future__ import annotations

import asyncio

from meshd.relay import relay as relay_module
from tests.support.hubs import FAST_TIMING
from tests.test_relay_line import wait_for
from tests.test_relay_news import ORIGIN, World, world


def notices(w: World) -> list[tuple[int, ...]]:
    """The frames each of B's custody notices to the origin names, in order."""
    return [n.packet_ids for _, n in w.frames_to(ORIGIN) if n.packet_ids]


async def report_in(w: World, seq: int, pid: int) -> tuple[int, ...]:
    """The origin sends report `seq` in frame `pid`; B's next custody notice."""
    before = len(notices(w))
    w.deliver(w.report(seq).to_bytes(), ORIGIN, pid)
    await wait_for(lambda: len(notices(w)) > before, limit_s=10)
    [notice] = notices(w)[before:]
    return notice


async def test_a_notice_names_recent_answers_again_twice_at_most_and_not_after_the_window(tmp_path):
    async with world(tmp_path) as w:
        assert await report_in(w, 1, 0x1001) == (0x1001,)
        assert await report_in(w, 2, 0x1002) == (0x1002, 0x1001)
        # 0x1001 has been named twice: enough (both notices lost is one time in 25 at 20 % loss)
        assert await report_in(w, 3, 0x1003) == (0x1003, 0x1002)
        assert w.relay.counters["custody_answers_repeated"] == 2
        # three custody timeouts later the sender has retried anyway: nothing old is named
        await asyncio.sleep(w.relay.clock.real(3 * FAST_TIMING.custody_timeout_s) + 0.2)
        assert await report_in(w, 4, 0x1004) == (0x1004,)


async def test_at_most_a_few_answers_are_repeated(tmp_path):
    async with world(tmp_path) as w:
        # eight frames in one custody delay are answered by one notice...
        for seq in range(1, 9):
            w.deliver(w.report(seq).to_bytes(), ORIGIN, 0x2000 + seq)
        await wait_for(lambda: len(notices(w)) >= 1, limit_s=10)
        await asyncio.sleep(0.1)
        # ...and the next one names only the latest REPEAT_ANSWERS of them again
        assert await report_in(w, 9, 0x2009)
        first, second = notices(w)
        assert sorted(first) == [0x2000 + seq for seq in range(1, 9)]
        assert second[0] == 0x2009
        assert relay_module.REPEAT_ANSWERS == 4
        assert sorted(second[1:]) == [0x2005, 0x2006, 0x2007, 0x2008]
