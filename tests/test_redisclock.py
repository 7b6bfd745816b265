"""RedisClock's bounds on the trio-clock offset of Redis's clock, and a cluster lane that
starts at the mapped slot or not at all (MockClock; no Redis)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mtpoold._lane import ProxyLane
from mtpoold._redisclock import SAMPLE_MAX_AGE_S, RedisClock
from mtpoold._startwindow import DEFAULT_S, StartWindow


def test_the_fastest_round_trips_pin_the_offset_however_slow_the_latest() -> None:
    clock = RedisClock()
    with pytest.raises(ValueError):
        clock.local_span(5.0)
    # The true offset is 100.0 s: Redis ran each script somewhere inside the round trip.
    clock.observe(sent_at=200.0, received_at=200.0004, redis_now_s=100.0002)
    clock.observe(sent_at=201.0, received_at=201.0500, redis_now_s=101.0010)  # a 50 ms reply
    low, high = clock.bounds()
    assert 100.0 - 0.001 <= low <= 100.0 <= high <= 100.0 + 0.001
    earliest, latest = clock.local_span(105.0)
    assert earliest <= 205.0 <= latest and latest - earliest <= 0.0004 + 1e-9


def test_a_contradicting_round_trip_restarts_the_window_and_old_ones_age_out() -> None:
    clock = RedisClock()
    clock.observe(sent_at=10.0, received_at=10.001, redis_now_s=5.0)
    clock.observe(
        sent_at=11.0, received_at=11.001, redis_now_s=3.0
    )  # Redis's clock stepped back 2 s
    low, high = clock.bounds()
    assert 7.999 <= low <= high <= 8.001
    clock.observe(sent_at=12.0, received_at=12.2, redis_now_s=4.1)
    later = 12.2 + SAMPLE_MAX_AGE_S + 1
    clock.observe(sent_at=later - 0.1, received_at=later, redis_now_s=later - 8.05)
    low, high = clock.bounds()  # only the last round trip counts now
    assert low == pytest.approx(7.95) and high == pytest.approx(8.05)


class _Slots:
    """`SharedStart` whose first reservation says the slot may have been twice the window
    earlier than the start it asks for (a frozen or slow node), then exact ones."""

    def __init__(self) -> None:
        self.reservations = 0
        self.window = StartWindow()
        self.windows: list[float] = []

    async def reserve(
        self, account_id: str | None, *, connecting: bool, interval_s: float, window_s: float
    ) -> tuple[float, float]:
        await trio.lowlevel.checkpoint()
        self.reservations += 1
        self.windows.append(window_s)
        start_at = trio.current_time() + 0.5
        slack = 2 * window_s if self.reservations == 1 else 0.0
        return start_at, start_at - slack

    def clock_spread_s(self) -> float:
        return 0.0

    def confirm(self, account_id: str | None) -> None:
        return None


async def test_a_start_later_than_its_slot_allows_is_not_made_and_another_reserved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slots = _Slots()
    lane = ProxyLane(key="p1", name="p1", type="socks5", interval_s=1.0, shared=slots)
    asked_at = trio.current_time()
    async with lane.slot(account="a1") as started_at:
        pass
    assert slots.reservations == 2 and lane.late_reservations == 1
    assert slots.windows == [DEFAULT_S, DEFAULT_S]  # no wake-ups known yet: the default
    assert slots.window.missed == 1 and slots.window.samples == 2
    assert started_at == pytest.approx(asked_at + 1.0)  # the second slot, on time


class _UncertainSlots:
    """`SharedStart` on a clock whose bounds are ``spread_s`` wide (``inf``: no round trip
    yet): every slot may have been that much earlier than the start it asks for."""

    def __init__(self, spread_s: float) -> None:
        self.spread_s = spread_s
        self.window = StartWindow()
        self.windows: list[float] = []

    def clock_spread_s(self) -> float:
        return self.spread_s

    async def reserve(
        self, account_id: str | None, *, connecting: bool, interval_s: float, window_s: float
    ) -> tuple[float, float]:
        await trio.lowlevel.checkpoint()
        self.windows.append(window_s)
        start_at = trio.current_time() + 0.5
        spread_s = self.spread_s if self.spread_s < float("inf") else DEFAULT_S
        return start_at, start_at - spread_s

    def confirm(self, account_id: str | None) -> None:
        return None


@pytest.mark.parametrize("spread_s", [0.0004, 0.030, float("inf")])
async def test_the_window_covers_the_clocks_spread_and_learns_only_what_lies_past_it(
    autojump_clock: trio.testing.MockClock, spread_s: float
) -> None:
    slots = _UncertainSlots(spread_s)
    lane = ProxyLane(key="p1", name="p1", type="socks5", interval_s=2.0, shared=slots)
    for _ in range(3):
        async with lane.slot(account="a1") as started_at:
            pass
    # a start a whole spread after the slot's earliest instant is on time (a node just
    # started, or one whose Redis replies are all slow): nothing missed, and the window
    # asked of Redis was the spread plus the wake-up allowance (the default: few wake-ups)
    assert lane.late_reservations == 0 and slots.window.missed == 0
    known = spread_s if spread_s < float("inf") else DEFAULT_S
    assert slots.windows == [pytest.approx(known + DEFAULT_S)] * 3
    # the wake-ups, on virtual time exactly on their slots, were learned as 0 s late: the
    # spread is not counted as lateness of the process
    assert list(slots.window._late) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert started_at == pytest.approx(trio.current_time())
