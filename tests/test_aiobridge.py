"""`mtpoold._aiobridge.run_aio`: Telethon coroutines as asyncio tasks, waited for from Trio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio_asyncio

from mtpoold._aiobridge import AIO_CANCEL_WAIT_S, run_aio
from mtpoold._aiolog import install_exception_handler
from mtpoold._aioloop import open_aio_loop
from mtpoold._errors import ProtocolViolation
from mtpoold._wire import WireMonitor


@pytest.fixture(params=["stock", "batching"])
async def aio_loop(request: pytest.FixtureRequest) -> AsyncIterator[asyncio.AbstractEventLoop]:
    """trio-asyncio's loop as shipped, and mtpoold's (`mtpoold._aioloop`): the same rules."""
    opener = trio_asyncio.open_loop if request.param == "stock" else open_aio_loop
    async with opener() as loop:
        handler = install_exception_handler(loop)
        yield loop
        assert handler.count == 0, handler.statistics()


async def test_run_aio_returns_and_raises_like_the_coroutine(
    aio_loop: asyncio.AbstractEventLoop,
) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def fail() -> None:
        raise ValueError("no")

    assert await run_aio(double, 21) == 42
    with pytest.raises(ValueError, match="no"):
        await run_aio(fail)


async def test_run_aio_gives_up_on_a_task_that_ignores_its_cancellation(
    aio_loop: asyncio.AbstractEventLoop,
) -> None:
    """The asyncio side swallows CancelledError and returns a value 3 s later: the Trio side
    gets Cancelled after AIO_CANCEL_WAIT_S, never the late value."""
    tasks: list[asyncio.Task[Any]] = []
    abandoned: list[bool] = []

    async def stubborn() -> str:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3 * AIO_CANCEL_WAIT_S)
        return "late value"

    with trio.move_on_after(0.1) as scope:
        await run_aio(stubborn, on_abandoned=lambda: abandoned.append(True))
        pytest.fail("a value after the cancellation must never be a result")
    assert scope.cancelled_caught
    assert abandoned == [True]
    (task,) = tasks
    assert not task.done()  # we did not wait for it
    with trio.fail_after(10):
        while not task.done():  # noqa: ASYNC110 - an asyncio task left to finish unread, on purpose
            await trio.sleep(0.05)
    assert task.result() == "late value"  # read by nobody but this test: no report either


async def test_run_aio_late_value_within_the_wait_is_not_a_result(
    aio_loop: asyncio.AbstractEventLoop,
) -> None:
    async def returns_when_cancelled() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)
        return "late value"

    abandoned: list[bool] = []
    with trio.move_on_after(0.1) as scope:
        await run_aio(returns_when_cancelled, on_abandoned=lambda: abandoned.append(True))
        pytest.fail("unreachable")
    assert scope.cancelled_caught
    assert abandoned == []  # it finished within the wait


async def test_run_aio_fails_at_once_on_a_fault_of_the_connection(
    aio_loop: asyncio.AbstractEventLoop, nursery: trio.Nursery
) -> None:
    monitor = WireMonitor(proxy="p1")
    cancelled: list[bool] = []

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def fault_soon() -> None:
        await trio.sleep(0.05)
        monitor.report(ProtocolViolation("security error in a reply from the DC: msg_key"))

    nursery.start_soon(fault_soon)
    with trio.fail_after(5), pytest.raises(ProtocolViolation, match="msg_key"):
        await run_aio(hang, monitor=monitor)
    assert cancelled == [True]


async def test_run_aio_turns_a_cancellation_by_telethon_into_a_closed_stream(
    aio_loop: asyncio.AbstractEventLoop,
) -> None:
    async def cancelled_future() -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()  # what Telethon's sender does to pending requests on disconnect
        await fut

    with pytest.raises(ConnectionError, match="closed while the call was in flight"):
        await run_aio(cancelled_future)


async def test_run_aio_task_cancelled_by_another_before_it_ever_ran(
    aio_loop: asyncio.AbstractEventLoop,
) -> None:
    """Someone else cancels the asyncio task before its first step (here: a task factory),
    so the coroutine never runs: the call still ends, with ConnectionError, at once."""
    ran: list[bool] = []
    previous = aio_loop.get_task_factory()

    def cancelling_factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if previous is not None:
            task: asyncio.Task[Any] = previous(loop, coro, **kwargs)  # type: ignore[assignment]
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        task.cancel()
        return task

    async def never() -> None:  # pragma: no cover - cancelled before it starts
        ran.append(True)

    aio_loop.set_task_factory(cancelling_factory)
    try:
        with pytest.raises(ConnectionError):
            await run_aio(never)
    finally:
        aio_loop.set_task_factory(previous)
    assert ran == []
