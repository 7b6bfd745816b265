"""Run one asyncio coroutine from Trio with a bounded cancellation.

``trio_asyncio.aio_as_trio`` cancels the asyncio task when the Trio scope is cancelled and
then waits for it *without limit*: a Telethon coroutine that does not finish promptly when
cancelled (stuck in a shielded future, swallowing ``CancelledError``) holds the account,
the job past its deadline and the daemon's shutdown past ``shutdown_grace_s``; and a value
it returns late would still be reported as a success.

`run_aio` runs the coroutine as an asyncio task on the current trio-asyncio loop and waits
for it. On cancellation it cancels the task and waits at most `AIO_CANCEL_WAIT_S`; past that
the task is *abandoned*: its eventual outcome is read (never "... was never retrieved") and
dropped, the caller's ``on_abandoned`` is told (the client then rebuilds its connection),
and ``trio.Cancelled`` propagates. Whatever the task returns after the cancellation is never
a result. A `WireMonitor` fault wakes the wait too: the call fails at once with the
connection's `ProtocolViolation`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
import trio_asyncio

from ._wire import WireMonitor

__all__ = ["AIO_CANCEL_WAIT_S", "run_aio"]

#: Seconds a cancelled asyncio task may take to finish before it is abandoned.
AIO_CANCEL_WAIT_S: Final = 1.0


def _read_outcome(task: asyncio.Future[Any]) -> None:
    """Mark a finished task's exception as retrieved (its outcome is not wanted)."""
    if not task.cancelled():
        task.exception()


async def run_aio(
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    monitor: WireMonitor | None = None,
    cancel_wait_s: float = AIO_CANCEL_WAIT_S,
    on_abandoned: Callable[[], None] | None = None,
) -> Any:
    """``await fn(*args)`` on the trio-asyncio loop, from Trio.

    Args:
        fn: An asyncio coroutine function (called inside the asyncio task, so it runs in
            asyncio context and the current contextvars are copied to it).
        monitor: The connection's monitor; a fault it records ends the wait.
        cancel_wait_s: Seconds to wait for the task after cancelling it.
        on_abandoned: Called (synchronously) when the task did not finish within
            ``cancel_wait_s`` of its cancellation.

    Returns:
        What ``fn`` returned.

    Raises:
        trio.Cancelled: the Trio scope was cancelled (after at most ``cancel_wait_s``).
        ProtocolViolation: the monitor recorded a fault while the call was in flight (the
            task is cancelled, as above).
        ConnectionError: the task was cancelled by Telethon itself (its connection closed
            under the call).
        RuntimeError: outside ``trio_asyncio.open_loop()``.
        Exception: whatever ``fn`` raised.
    """
    loop = trio_asyncio.current_loop.get()
    if loop is None:
        raise RuntimeError("must be used inside trio_asyncio.open_loop()")

    async def body() -> Any:
        return await fn(*args)

    task: asyncio.Future[Any] = loop.create_task(body())
    woken = trio.Event()

    def on_done(_: Any) -> None:
        woken.set()

    task.add_done_callback(on_done)
    unsubscribe = monitor.subscribe(woken.set) if monitor is not None else None
    try:
        try:
            await woken.wait()
        except trio.Cancelled:
            await _settle(task, cancel_wait_s, on_abandoned)
            raise
        if not task.done():  # the monitor recorded a fault
            await _settle(task, cancel_wait_s, on_abandoned)
            assert monitor is not None and monitor.fault is not None
            raise monitor.fault
    finally:
        if unsubscribe is not None:
            unsubscribe()
    fault = monitor.fault if monitor is not None else None
    if task.cancelled():
        if fault is not None:
            raise fault
        raise ConnectionError("the connection closed while the call was in flight")
    exc = task.exception()
    if exc is not None:
        if fault is not None and fault is not exc:
            raise fault from exc
        raise exc
    return task.result()


async def _settle(
    task: asyncio.Future[Any],
    cancel_wait_s: float,
    on_abandoned: Callable[[], None] | None,
) -> None:
    task.cancel()
    if not task.done():
        finished = trio.Event()
        task.add_done_callback(lambda _: finished.set())
        with trio.CancelScope(shield=True), trio.move_on_after(cancel_wait_s):
            await finished.wait()
    if task.done():
        _read_outcome(task)
        return
    task.add_done_callback(_read_outcome)
    if on_abandoned is not None:
        on_abandoned()
