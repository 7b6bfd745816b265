"""The account worker's keepalive: pings of an idle connection take gate slots (MockClock)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel

from mtpoold._account import AccountWorker, Judged
from mtpoold._errors import ErrorClass, Failure, StartMissed
from mtpoold._lane import ProxyLane
from mtpoold._policy import Verdict
from mtpoold._startwindow import DEFAULT_S, StartWindow


@attrs.define
class PingingClient:
    """A connected client double that records its keepalive pings (trio times, s)."""

    pings: list[float] = attrs.field(factory=list)
    connected: bool = False
    fail_pings: bool = False

    async def connect(self) -> None:
        self.connected = True

    async def disconnect(self) -> None:
        self.connected = False

    def is_connected(self) -> bool:
        return self.connected

    async def keepalive_ping(self) -> None:
        self.pings.append(trio.current_time())
        if self.fail_pings:
            raise ConnectionResetError("peer reset")

    async def call(self, method: str, args: Any) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {"_": "Ok"}


def _judge(exc: BaseException) -> tuple[Any, Verdict]:
    raise AssertionError(f"unexpected failure: {exc!r}")


def _worker(nursery: trio.Nursery, client: PingingClient, lane: ProxyLane) -> AccountWorker:
    return AccountWorker(
        id="a1",
        lane=lane,
        client_factory=lambda: client,  # type: ignore[arg-type,return-value]
        nursery=nursery,
        idle_disconnect_s=300.0,
        keepalive_interval_s=60.0,
    )


async def test_idle_connection_is_pinged_through_the_gate_until_idle_disconnect(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    lane = ProxyLane(key="k", name="p1", type="socks5", interval_s=2.0, jitter_s=(0.0, 0.0))
    client = PingingClient()
    worker = _worker(nursery, client, lane)
    t0 = trio.current_time()
    await worker.run(lambda c: c.call("help.getConfig", {}), call_deadline_s=5, judge=_judge)
    starts_after_call = lane.calls  # the connect and the call
    await trio.sleep(400)
    # pings at ~60, 120, 180, 240 s after the call; the idle disconnect at 300 s ends them
    assert [round(t - t0) for t in client.pings] == [62, 122, 182, 242]
    assert lane.calls == starts_after_call + 4  # each ping took a slot from the lane
    assert not client.connected


async def test_failed_ping_drops_the_connection(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    lane = ProxyLane(key="k", name="p1", type="socks5", interval_s=0.5, jitter_s=(0.0, 0.0))
    client = PingingClient(fail_pings=True)
    worker = _worker(nursery, client, lane)
    await worker.run(lambda c: c.call("help.getConfig", {}), call_deadline_s=5, judge=_judge)
    await trio.sleep(100)
    assert len(client.pings) == 1
    assert not client.connected
    assert not worker.connected


@attrs.define
class _ExactSlots:
    """`SharedStart` whose every slot is 1 s after the reservation, exactly on time."""

    reservations: int = 0
    window: StartWindow = attrs.field(factory=StartWindow)

    async def reserve(
        self, account_id: str | None, *, connecting: bool, interval_s: float, window_s: float
    ) -> tuple[float, float]:
        await trio.lowlevel.checkpoint()
        self.reservations += 1
        start_at = trio.current_time() + 1.0
        return start_at, start_at

    def clock_spread_s(self) -> float:
        return 0.0

    def confirm(self, account_id: str | None) -> None:
        return None


@attrs.define
class SlowToTheSocketClient(PingingClient):
    """A client whose first connect reaches its socket 50 ms after the lane's start (a busy
    node): past its ``open_by``, so it raises StartMissed having sent nothing."""

    open_by: list[float | None] = attrs.field(factory=list)
    opened_at: list[float] = attrs.field(factory=list)
    _limit: float | None = None

    def set_open_by(self, at: float | None) -> None:
        self.open_by.append(at)
        self._limit = at

    async def connect(self) -> None:
        if len(self.open_by) == 1:  # the first connect only
            await trio.sleep(0.05)
        now = trio.current_time()
        if self._limit is not None and now > self._limit:
            raise StartMissed(now - self._limit)
        self.opened_at.append(now)
        self.connected = True


async def test_connect_reaching_its_socket_past_the_slot_takes_another_slot(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    slots = _ExactSlots()
    lane = ProxyLane(key="k", name="p1", type="socks5", interval_s=1.0, shared=slots)
    client = SlowToTheSocketClient()
    worker = _worker(nursery, client, lane)
    t0 = trio.current_time()
    await worker.run(lambda c: c.call("help.getConfig", {}), call_deadline_s=10, judge=_judge)
    # connect: slot 1 (at 1 s) missed at the socket 50 ms late (not judged: _judge would
    # fail the test); slot 2, reserved then (at 2.05 s), opened on time; then the call's slot
    assert lane.late_reservations == 1
    assert slots.reservations == 3
    assert client.opened_at == [pytest.approx(t0 + 2.05)]
    # each connect's limit is its slot + its window (the default: no wake-ups known yet),
    # cleared after it
    assert client.open_by == [
        pytest.approx(t0 + 1.0 + DEFAULT_S),
        None,
        pytest.approx(t0 + 2.05 + DEFAULT_S),
        None,
    ]


async def _connected_on_an_ungated_lane(nursery: trio.Nursery) -> tuple[ProxyLane, AccountWorker]:
    """A worker whose client is connected (one call made) on an ungated lane."""
    lane = ProxyLane(key="k", name="p1", type="socks5", interval_s=0.0, jitter_s=(0.0, 0.0))
    worker = _worker(nursery, PingingClient(), lane)
    await worker.run(lambda c: c.call("help.getConfig", {}), call_deadline_s=5, judge=_judge)
    return lane, worker


async def test_a_call_its_lane_starts_at_once_is_cut_at_its_call_deadline(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # `ProxyLane.starts_at_once`: the run's scope opens with the call deadline (one
    # deadline, not a second one set after the slot); it is cut there all the same
    lane, worker = await _connected_on_an_ungated_lane(nursery)
    t0 = trio.current_time()
    assert lane.starts_at_once(t0)

    async def slow(c: Any) -> dict[str, Any]:
        await trio.sleep(3)
        return {"_": "late"}

    causes: list[BaseException] = []

    def judge(exc: BaseException) -> tuple[Any, Verdict]:
        causes.append(exc)
        return Failure(ErrorClass.GENERIC, "cut"), Verdict()

    with pytest.raises(Judged):
        await worker.run(slow, call_deadline_s=2, judge=judge, deadline_at=t0 + 100)
    assert [type(c) for c in causes] == [trio.TooSlowError]
    assert trio.current_time() - t0 == pytest.approx(2)


async def test_a_reload_gating_the_lane_during_an_at_once_slot_waits_under_the_job_deadline(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # The lane is gated (a reload) during the slot's schedule point: the gate makes the call
    # wait after all (`NotAtOnce`); the wait is under the job deadline, not cut at the call
    # deadline the at-once start had set.
    lane, worker = await _connected_on_an_ungated_lane(nursery)

    limiter = lane._limiter
    take = limiter.acquire

    async def acquire_then_reload() -> None:  # the reload lands in the slot's schedule point
        await take()
        lane.reconfigure(capacity=1, interval_s=10.0)
        limiter.acquire = take  # type: ignore[method-assign]

    limiter.acquire = acquire_then_reload  # type: ignore[method-assign]
    t0 = trio.current_time()
    assert lane.starts_at_once(t0)
    value = await worker.run(
        lambda c: c.call("help.getConfig", {}),
        call_deadline_s=2,
        judge=_judge,
        deadline_at=t0 + 100,
    )
    assert value == {"_": "Ok"}
    # the gate's next slot, 10 s after the previous start: waited for, not cut at 2 s
    assert trio.current_time() - t0 == pytest.approx(10, abs=0.01)
    assert lane.in_flight == 0 and lane.capacity_waiting == 0  # the token went back, once
