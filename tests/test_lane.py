"""`ProxyLane.slot`'s cooling checks on MockClock: a proxy cooldown that began while a
caller waited for its token or its start slot stops it (nothing sent), one over by the time
it got them does not, whenever it was set."""

from __future__ import annotations

import collections

import pytest
import trio
import trio.testing

from mtpoold._dispatch import Dispatcher
from mtpoold._lane import ProxyCoolingDown, ProxyLane


def _lane(*, interval_s: float = 0.0) -> ProxyLane:
    return ProxyLane(
        key="p1", name="p1", type="socks5", capacity=1, interval_s=interval_s, jitter_s=(0, 0)
    )


async def _hold_token(lane: ProxyLane, hold_s: float, nursery: trio.Nursery) -> None:
    async def holder(task_status: trio.TaskStatus[None]) -> None:
        async with lane.slot():
            task_status.started()
            await trio.sleep(hold_s)

    await nursery.start(holder)


async def test_ProxyLane_slot_goes_on_when_a_cooldown_ended_before_it_was_asked_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lane = _lane()
    dispatcher = Dispatcher({}, {"p1": lane}, {"p1": collections.OrderedDict()})
    dispatcher.cool_down_lane(lane, trio.current_time() + 5)
    await trio.sleep(6)
    async with lane.slot() as started_at:
        assert started_at == trio.current_time()
    assert lane.statistics().calls == 1


async def test_ProxyLane_slot_goes_on_when_a_cooldown_set_while_it_waited_is_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lane = _lane()
    dispatcher = Dispatcher({}, {"p1": lane}, {"p1": collections.OrderedDict()})
    async with trio.open_nursery() as nursery:
        await _hold_token(lane, 10, nursery)  # the token comes free at 10 s

        async def cool_at_5() -> None:
            await trio.sleep(5)
            dispatcher.cool_down_lane(lane, trio.current_time() + 3)  # over at 8 s

        nursery.start_soon(cool_at_5)
        async with lane.slot() as started_at:
            assert started_at == 10
    assert lane.statistics().calls == 2


async def test_ProxyLane_slot_stops_at_a_cooldown_set_while_it_waited_for_its_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lane = _lane()
    dispatcher = Dispatcher({}, {"p1": lane}, {"p1": collections.OrderedDict()})
    async with trio.open_nursery() as nursery:
        await _hold_token(lane, 10, nursery)

        async def cool_at_5() -> None:
            await trio.sleep(5)
            dispatcher.cool_down_lane(lane, trio.current_time() + 60)

        nursery.start_soon(cool_at_5)
        with pytest.raises(ProxyCoolingDown):
            async with lane.slot():
                pass  # pragma: no cover
    assert lane.statistics().calls == 1


async def test_ProxyLane_slot_stops_at_a_cooldown_set_while_it_waited_at_the_gate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lane = _lane(interval_s=10.0)
    dispatcher = Dispatcher({}, {"p1": lane}, {"p1": collections.OrderedDict()})
    async with lane.slot():  # the first start, at 0 s: the next slot is at 10 s
        pass
    async with trio.open_nursery() as nursery:

        async def cool_at_5() -> None:
            await trio.sleep(5)
            dispatcher.cool_down_lane(lane, trio.current_time() + 60)

        nursery.start_soon(cool_at_5)
        with pytest.raises(ProxyCoolingDown):  # its token at once, its slot after the cooling
            async with lane.slot():
                pass  # pragma: no cover
    assert lane.statistics().calls == 1
