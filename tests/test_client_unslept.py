"""Telethon never sleeps on our behalf after Telegram's internal errors.

Telethon's ``_call`` (telethon/client/users.py) sleeps 2 s after a 500-class error or
``TIMEOUT``, also after its last attempt (``request_retries=1``), holding the account through a
sleep nobody asked for. `mtpoold._client` raises the error at once. Observed, not timed: a spy
stands in for the ``asyncio`` module Telethon's ``_call`` sleeps through.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import telethon.client.users as telethon_users
import trio_asyncio

from mtpoold._client import telethon_client_factory
from mtpoold._errors import ProtocolViolation
from mtpoold.testing import open_dc
from mtpoold.testing.dc import rpc_error

from _e2e import fleet_config


class _SleepSpy:
    """``asyncio`` for telethon.client.users: records every ``sleep`` it is asked for."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, delay: float, result: Any = None) -> Any:
        self.sleeps.append(delay)
        return await asyncio.sleep(delay, result)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@pytest.mark.parametrize(
    ("code", "name"), [(500, "INTERNAL_SERVER_ERROR"), (500, "RPC_CALL_FAIL"), (-503, "Timeout")]
)
async def test_an_internal_error_is_raised_without_telethons_sleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, name: str
) -> None:
    spy = _SleepSpy()
    monkeypatch.setattr(telethon_users, "asyncio", spy)
    async with open_dc() as dc, trio_asyncio.open_loop():
        config = fleet_config(tmp_path, dc, proxies=[], accounts={"a": ("15550000001", None)})
        client = telethon_client_factory(config)(config.accounts[0])
        await client.connect()
        try:
            dc.faults.add(rpc_error(code, name), method="help.GetNearestDc", times=1)
            with pytest.raises(Exception) as raised:
                await client.call("help.GetNearestDc", {})
            assert not isinstance(raised.value, ProtocolViolation)
            assert type(raised.value).__name__ != "_Unslept"
            # the same error Telethon raises, only sooner; the account is usable at once
            assert (await client.call("help.GetNearestDc", {}))["_"] == "NearestDc"
        finally:
            await client.disconnect()
    assert spy.sleeps == []
