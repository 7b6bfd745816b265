"""The asyncio loop's exception handler (`mtpoold._aiolog`): context in its lines, never raises."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio_asyncio

from mtpoold._aiolog import (
    aio_context_for,
    install_exception_handler,
)


async def test_install_exception_handler_logs_never_retrieved_as_warning(
    caplog: pytest.LogCaptureFixture, aio_leak_reports_expected: None
) -> None:
    async with trio_asyncio.open_loop() as loop:
        handler = install_exception_handler(loop)

        async def fail() -> None:
            raise ConnectionResetError("peer reset")

        async def spawn() -> None:
            asyncio.get_running_loop().create_task(fail())
            await asyncio.sleep(0.01)

        with caplog.at_level(logging.WARNING, logger="mtpoold.asyncio"):
            with aio_context_for("acc9", "deadbeefdeadbeef"):
                await trio_asyncio.aio_as_trio(spawn)()
            gc.collect()
            await trio.sleep(0.01)
        assert handler.count == 1
        assert handler.statistics().warnings == 1
        (record,) = [r for r in caplog.records if r.name == "mtpoold.asyncio"]
        assert record.levelno == logging.WARNING
        assert "account=acc9 proxy=deadbeefdeadbeef" in record.getMessage()
        assert "ConnectionResetError" in record.getMessage()


async def test_install_exception_handler_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    async with trio_asyncio.open_loop() as loop:
        handler = install_exception_handler(loop)
        with caplog.at_level(logging.ERROR, logger="mtpoold.asyncio"):
            loop.call_exception_handler({"message": "odd", "exception": ValueError("x" * 40)})
            loop.call_exception_handler({"message": "no exception at all"})
            loop.call_exception_handler({})  # malformed
        await trio.sleep(0.01)  # the loop is still alive
        assert handler.statistics().count == 3
        assert handler.statistics().errors == 3


async def test_exception_handler_finds_context_of_task_collected_in_a_cycle(
    caplog: pytest.LogCaptureFixture, aio_leak_reports_expected: None
) -> None:
    async with trio_asyncio.open_loop() as loop:
        handler = install_exception_handler(loop)

        async def fail() -> None:
            raise asyncio.IncompleteReadError(b"", 8)

        async def spawn() -> None:
            task = asyncio.get_running_loop().create_task(fail())
            holder: list[Any] = [task]
            holder.append(holder)  # a reference cycle: only the cyclic GC frees the task
            await asyncio.sleep(0.01)

        with aio_context_for("acc7", "0123456789abcdef"):
            await trio_asyncio.aio_as_trio(spawn)()
        with caplog.at_level(logging.WARNING, logger="mtpoold.asyncio"):
            gc.collect()
            await trio.sleep(0.01)
        assert handler.count == 1
        assert "account=acc7 proxy=0123456789abcdef" in caplog.text
