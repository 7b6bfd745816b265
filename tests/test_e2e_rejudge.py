"""End to end: when the DC dies under a burst, waiting jobs are answered at once, not at their
deadline (queued jobs are re-judged when the accounts they wait for cool down).

Pool -> real TelethonClient -> a SOCKS5 relay (`mtpoold.testing.open_relay`) -> the loopback
DC. Every call is held 1 s at the DC (a `delay` fault), so with four accounts most of a 24-job
burst waits for an account; while the second round of calls is held, the DC drops every
connection and refuses new ones. The
four calls in flight end STREAM_CLOSED (the DC had answered: the accounts' blame, a 60 s
cooldown each); from then on no account can start before the jobs' 20 s deadline, so every
waiting job must be answered NO_ACCOUNT_AVAILABLE with ``retry_after_s`` and the cause — at
once, not 20 s later as DEADLINE_EXCEEDED. Real sockets, so the real clock; what is asserted
is classes, causes and that nobody waited for the deadline (well under it), not a timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold.testing import DC, open_dc, open_relay
from mtpoold.testing.dc import delay

from _e2e import PHONES, fleet_config, fleet_world, open_fleet, proxy_entry, wait_until

JOBS = 24
DEADLINE_S = 20.0


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


async def test_burst_waiting_when_the_dc_dies_is_answered_at_once(
    tmp_path: Path, dc: DC, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_relay() as relay:
        config = fleet_config(
            tmp_path,
            dc,
            proxies=[proxy_entry("p1", relay, capacity=4, interval_s=0.0)],
            accounts={f"a{i}": (PHONES[i], "p1") for i in range(4)},
            policy={"stream_closed_cooldown_s": 60.0, "max_attempts": 3},
            telegram={"connect_timeout_s": 2.0},
        )
        async with open_fleet(dc, config) as fleet:
            for i in range(4):  # connect every account first: the burst meets warm clients
                await fleet.pool.invoke("help.getNearestDc", {}, account=f"a{i}")
            dc.faults.add(delay(1000), method="help.GetNearestDc", times=None)
            answers: list[tuple[float, JobFailed | None]] = []
            t0 = trio.current_time()

            async def job() -> None:
                try:
                    await fleet.pool.invoke("help.getNearestDc", {}, deadline_s=DEADLINE_S)
                except JobFailed as exc:
                    answers.append((trio.current_time() - t0, exc))
                else:
                    answers.append((trio.current_time() - t0, None))

            async with trio.open_nursery() as nursery:
                for _ in range(JOBS):
                    nursery.start_soon(job)
                # the DC dies while the second round of calls is held there: after the first
                # four jobs were served and four more calls arrived (4 warm-ups before them)
                await wait_until(
                    lambda: (
                        sum(1 for _, exc in answers if exc is None) == 4
                        and sum(1 for c in dc.calls if c.method == "help.GetNearestDc") >= 12
                    ),
                    what="the second round of calls held at the DC",
                )
                dc.refuse_connections()
                dc.disconnect_all()

    assert len(answers) == JOBS  # every job answered exactly once
    served = [t for t, exc in answers if exc is None]
    failed = [(t, exc) for t, exc in answers if exc is not None]
    classes = sorted({exc.error_class.value for _, exc in failed})
    print(f"served {len(served)}, failed {len(failed)} {classes}, last answer at"
          f" {max(t for t, _ in answers):.2f} s")  # fmt: skip
    assert len(served) == 4  # the first second's calls, before the kill
    assert all(exc.error_class is not ErrorClass.DEADLINE_EXCEEDED for _, exc in failed)
    # answered when the accounts were taken away, not at the 20 s deadline
    assert max(t for t, _ in answers) < DEADLINE_S / 2
    waiting = [exc for _, exc in failed if exc.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE]
    assert waiting, classes
    for exc in waiting:
        assert exc.retry_after_s is not None and exc.retry_after_s > DEADLINE_S / 2
        assert "STREAM_CLOSED" in exc.message, exc.message  # the failure that caused it
    # Telethon's reconnects are off (the pool reconnects through the gate): its ERROR line
    # "Automatic reconnection failed 0 time(s)" for every dropped connection is not logged
    assert not [r for r in caplog.records if "Automatic reconnection" in r.getMessage()]
