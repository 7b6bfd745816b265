"""The trio-asyncio loop mtpoold runs Telethon on, its callbacks run in batches.

trio-asyncio's `TrioEventLoop` runs asyncio callbacks in a Trio task, ``_main_loop``, that
calls ``_main_loop_one`` once per callback: each call enters ``trio.move_on_after`` (a cancel
scope and a deadline) and ``await``\\ s ``MemoryReceiveChannel.receive``, a checkpoint that
reschedules the task through Trio's run loop even when a callback is already queued. One
Telethon request makes about ten such callbacks (its send loop, its receive loop, the
transport's reader, the future's wake-ups), so a request pays ten trips through Trio's
scheduler where native asyncio pays one ``_run_once`` tick (``python -m bench --only bridge``
measures the cost; ``docs/TRIO_ASYNCIO.md`` is the write-up for upstream).

`open_aio_loop` opens the stock loop (``trio_asyncio.open_loop``) and replaces, on that one
loop instance, ``_main_loop_one`` with `_run_batch`: due timers and queued callbacks, `BATCH_MAX` at
most, run in one go, in the order trio-asyncio would run them (FIFO, timers by deadline), then
the task checkpoints once; it waits on the queue only when nothing is due or queued, and the
callback that wakes it is the first of the batch. What
changes is the number of Trio checkpoints per callback, not the order or the context a
callback runs in. The batch is bounded, so a callback that reschedules itself forever cannot
starve Trio's other tasks. With ``no_wait=True`` (the loop's drain at exit) it raises
``trio.WouldBlock`` when nothing ran, as the stock method does.

The replacement reads trio-asyncio internals (``_q_recv``, ``_timers``, ``_nursery``,
``AsyncHandle``); `install_batching` checks they are there and leaves the stock method in
place otherwise (a trio-asyncio whose internals moved still works, only slower), saying so at
DEBUG.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import sniffio
import trio
import trio_asyncio

__all__ = ["BATCH_MAX", "install_batching", "open_aio_loop"]

log = logging.getLogger("mtpoold.aioloop")

#: Callbacks run between two Trio checkpoints at most (asyncio's own loop runs every ready
#: callback per tick; the bound keeps Trio's tasks from waiting behind a callback storm).
BATCH_MAX: Final = 64

try:  # where trio-asyncio 0.15-0.16 keep it
    from trio_asyncio._handles import AsyncHandle as _AsyncHandle
except ImportError:  # pragma: no cover - a trio-asyncio that moved it: stock loop
    _AsyncHandle = None


def _run_handle(handle: asyncio.Handle) -> None:
    """Run one sync callback as trio-asyncio does: with sniffio saying "asyncio"."""
    prev, sniffio.thread_local.name = sniffio.thread_local.name, "asyncio"
    try:
        handle._run()
    finally:
        sniffio.thread_local.name = prev


async def _dispatch(loop: Any, obj: Any) -> bool:
    """Run or file one object from the loop's queue; True when a callback ran."""
    if isinstance(obj, asyncio.TimerHandle):
        heapq.heappush(loop._timers, obj)
        return False
    if _AsyncHandle is not None and isinstance(obj, _AsyncHandle):
        obj._context.run(loop._nursery.start_soon, obj._run, name=obj._callback)
        await obj._started.wait()
        return True
    if not obj._cancelled:
        _run_handle(obj)
    return True


async def _run_batch(loop: Any, no_wait: bool = False) -> None:
    """One turn of the loop's ``_main_loop`` (replaces ``_main_loop_one``; module docstring).

    When nothing is due or queued it first waits (a checkpoint) for a callback or the next
    timer; what woke it counts towards this batch, so at most `BATCH_MAX` callbacks run
    between two checkpoints of the loop's task.

    Raises:
        trio.WouldBlock: ``no_wait`` and nothing was due or queued.
        TrioAsyncioExit: from the callback ``loop.stop()`` queues (ends ``_main_loop``).
    """
    ran = 0
    timers = loop._timers
    if not no_wait and not _due_or_queued(loop):
        # loop.time() moved on since _due_or_queued read it: a timer due in between gives a
        # negative timeout, which move_on_after refuses (ValueError ended the loop's task)
        timeout = max(0.0, timers[0]._when - loop.time()) if timers else math.inf
        with trio.move_on_after(timeout):
            if await _dispatch(loop, await loop._q_recv.receive()):
                ran += 1
    if timers:
        now = loop.time()
        while timers and timers[0]._when <= now and ran < BATCH_MAX:
            timer = heapq.heappop(timers)
            if not timer._cancelled:
                _run_handle(timer)
            ran += 1
    receive_nowait = loop._q_recv.receive_nowait
    while ran < BATCH_MAX:
        try:
            obj = receive_nowait()
        except trio.WouldBlock:
            break
        if await _dispatch(loop, obj):
            ran += 1
    if ran:
        if not no_wait:
            await trio.lowlevel.checkpoint()  # Trio runs the tasks these callbacks woke
    elif no_wait:
        raise trio.WouldBlock


def _due_or_queued(loop: Any) -> bool:
    """Whether a timer of ``loop`` is due or an object waits in its queue."""
    timers = loop._timers
    if timers and timers[0]._when <= loop.time():
        return True
    return bool(loop._q_recv.statistics().current_buffer_used)


def install_batching(loop: object) -> bool:
    """Make ``loop`` (a running `trio_asyncio.TrioEventLoop`) run its callbacks in batches.

    Returns:
        True when installed; False (the stock loop runs on) when the trio-asyncio internals
        this relies on are not where trio-asyncio 0.15-0.16 keep them.
    """
    needed = ("_q_recv", "_timers", "_nursery", "_main_loop_one", "time")
    if _AsyncHandle is None or not all(hasattr(loop, name) for name in needed):
        log.debug("event=aio_batching_unavailable trio_asyncio=%s", trio_asyncio.__version__)
        return False

    async def main_loop_one(no_wait: bool = False) -> None:
        await _run_batch(loop, no_wait)

    loop._main_loop_one = main_loop_one  # type: ignore[attr-defined]
    return True


@asynccontextmanager
async def open_aio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """``trio_asyncio.open_loop()`` with `install_batching` applied: use it wherever mtpoold
    opens the loop its Telethon clients run on.

    Yields:
        The loop (a `trio_asyncio.TrioEventLoop`).
    """
    async with trio_asyncio.open_loop() as loop:
        install_batching(loop)
        yield loop
