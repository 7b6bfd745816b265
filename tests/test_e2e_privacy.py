"""Personal data (phone numbers) never reaches errors, status, logs or the state store (real
Telethon, loopback DC)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mtpoold._errors import JobFailed
from mtpoold._store import StateStore
from mtpoold.testing import DC, open_dc

from _e2e import PHONES, fleet_config, fleet_world, open_fleet

pytestmark = pytest.mark.trio


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


async def test_phone_numbers_never_reach_errors_status_logs_or_store(
    tmp_path: Path, dc: DC, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    phone = "+15550000003"  # carol, in the world
    stranger = "+19998887766"
    config = fleet_config(tmp_path, dc, proxies=[], accounts={"a1": (PHONES[0], None)})
    messages = []
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            for job in (
                lambda: fleet.pool.get_messages(phone, [1], deadline_s=10),
                lambda: fleet.pool.get_messages(stranger, [1], deadline_s=10),
                lambda: fleet.pool.resolve(stranger, deadline_s=10),
                lambda: fleet.pool.invoke("users.GetFullUser", {"id": stranger}, deadline_s=10),
                lambda: fleet.pool.invoke("messages.GetHistory", {"peer": stranger, "limit": 1}),
            ):
                try:
                    r = await job()
                    messages.append(f"OK {r.value!r}"[:80])
                except JobFailed as exc:
                    messages.append(exc.message)
            status = repr(fleet.pool.statistics())
    raw = (tmp_path / "state.sqlite3").read_bytes()
    for m in messages:
        print(m)
    leaks = []
    for digits in ("15550000003", "19998887766"):
        for where, text in (
            ("errors", "\n".join(messages)),
            ("status", status),
            ("logs", caplog.text),
        ):
            if digits in text:
                leaks.append(where)
        if digits.encode() in raw:
            leaks.append("store")
    print(leaks)
    assert not leaks
