"""The account worker's keepalive: pings of an idle connection take gate slots (MockClock)."""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.lowlevel

from mtpoold._account import AccountWorker
from mtpoold._lane import ProxyLane
from mtpoold._policy import Verdict


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
