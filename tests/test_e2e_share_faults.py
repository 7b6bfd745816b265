"""Shared and merged read-only jobs under faults (real Telethon, loopback DC): a short job
joining a flight that waits out a flood, merged batches answering exactly their ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from mtpoold._errors import JobFailed
from mtpoold.testing import DC, open_dc
from mtpoold.testing.dc import rpc_error

from _e2e import PHONES, fleet_config, fleet_world, open_fleet

pytestmark = pytest.mark.trio
NEWS = "@mtpoold_news"
ON = {"share_identical": True, "merge_get_messages": True, "warmup_days": 0}


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


@pytest.mark.parametrize(
    "economy",
    [
        {"share_identical": False, "merge_get_messages": False},
        {"share_identical": True, "merge_get_messages": False},
        {"share_identical": False, "merge_get_messages": True},
    ],
    ids=["off", "identical", "merged"],
)
async def test_a_short_job_joining_a_waiting_flight_still_fails_at_once(
    tmp_path: Path, dc: DC, economy: dict[str, Any]
) -> None:
    config = fleet_config(
        tmp_path,
        dc,
        proxies=[],
        accounts={"a1": (PHONES[0], None)},
        policy={"job_deadline_s": 60.0},
        economy=economy,
        extra={"economy": {"warmup_days": 0}},
    )
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        await pool.get_messages(NEWS, [1], deadline_s=10)
        dc.faults.add(rpc_error(420, "FLOOD_WAIT_6"), user=PHONES[0], method="channels.GetMessages")
        with pytest.raises(JobFailed):
            await pool.get_messages(NEWS, [3], deadline_s=5)
        outcome: dict[str, Any] = {}

        async def long() -> None:
            got = await pool.get_messages(NEWS, [1], deadline_s=30)
            outcome["long"] = got.meta

        async def short(ids: list[int]) -> None:
            t0 = trio.current_time()
            try:
                await pool.get_messages(NEWS, ids, deadline_s=3)
                outcome["short"] = "OK"
            except JobFailed as exc:
                outcome["short"] = (
                    exc.error_class.value,
                    exc.retry_after_s,
                    round(trio.current_time() - t0, 1),
                )

        async with trio.open_nursery() as n:
            n.start_soon(long)
            await trio.sleep(0.2)
            n.start_soon(short, [1] if economy["share_identical"] else [2])
        print(outcome)
        cls, retry, waited = outcome["short"]
        assert cls == "NO_ACCOUNT_AVAILABLE" and waited < 1.0, outcome
        assert retry is not None and 3 < retry <= 6, outcome


async def test_merged_batches_answer_exactly_their_ids(tmp_path: Path, dc: DC) -> None:
    config = fleet_config(
        tmp_path,
        dc,
        proxies=[],
        accounts={"a1": (PHONES[0], None)},
        direct={"interval_s": 1.0},
        economy=ON,
    )
    asks = [
        [1],
        [1, 2],
        [2, 999],
        [5, 4, 3],
        [3],
        list(range(1, 60)),
        list(range(50, 101)),
        [100, 1],
        [7, 7, 7],
        [1, 2, 3, 4, 5],
    ]
    got: dict[int, Any] = {}
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        await pool.invoke("help.GetConfig", {})  # the gate's next slot is 1 s away

        async def job(n: int, ids: list[int]) -> None:
            try:
                r = await pool.get_messages(NEWS, ids, deadline_s=20)
                got[n] = (r.value, r.meta)
            except JobFailed as exc:
                got[n] = (exc.error_class.value, exc.message)

        async with trio.open_nursery() as nursery:
            for n, ids in enumerate(asks):
                nursery.start_soon(job, n, ids)
    for n, ids in enumerate(asks):
        value, meta = got[n]
        if isinstance(value, str):
            print(n, value, meta)
            continue
        assert list(value) == [str(i) for i in dict.fromkeys(ids)] or sorted(value) == sorted(
            {str(i) for i in ids}
        ), (n, ids, list(value))
        for i in ids:
            exists = 1 <= i <= 5
            assert value[str(i)]["exists"] is exists, (n, i, value[str(i)])
    print({n: (m.merged, m.shared) for n, (v, m) in got.items() if not isinstance(v, str)})
    print(dc.counters(PHONES[0])["channels.GetMessages"])
