"""The trio-asyncio loop mtpoold runs Telethon on, its callbacks run in batches.

trio-asyncio's `TrioEventLoop` runs asyncio callbacks in a Trio task, ``_main_loop``, that
calls ``_main_loop_one`` once per callback: each call enters ``trio.move_on_after`` (a cancel
scope and a deadline) and ``await``\\ s ``MemoryReceiveChannel.receive``, a checkpoint that
reschedules the task through Trio's run loop even when a callback is already queued. One
Telethon request makes about ten such callbacks (its send loop, its receive loop, the
transport's reader, the future's wake-ups), so a request pays ten trips through Trio's
scheduler where native asyncio pays one ``_run_once`` tick (``python -m bench --only bridge``
measures the cost; ``docs/TRIO_ASYNCIO.md`` is the write-up for upstream).

`open_aio_loop` opens the stock loop (``trio_asyncio.open_loop``) and replaces six methods on
that one loop instance (`install_batching`):

- ``_main_loop_one`` by `_run_batch`: due timers and queued callbacks, `BATCH_MAX` at most,
  run in one go, in the order trio-asyncio would run them (FIFO, timers by deadline). When
  the queue is then empty the task goes straight back to waiting on it (that wait is where
  Trio runs the tasks the batch woke: one step of the loop's task per batch, not two); only a
  batch that stopped at `BATCH_MAX` or left a timer due checkpoints first. The wait enters a
  ``trio.move_on_after`` only while a timer is pending, and cancelled timers leave the head
  of the heap at each turn, as in asyncio's loop. With ``no_wait=True`` (the loop's
  drain at exit) it raises ``trio.WouldBlock`` when nothing ran, as the stock method does.
- ``call_soon``, ``call_later`` and ``call_at`` by the same without ``_check_callback`` outside
  asyncio's debug mode, as asyncio's own loop does (trio-asyncio checks every callback with
  ``inspect``: about a third of what a ``call_soon`` cost).
- ``_queue_handle``: once a batch has found the channel empty, what its callbacks queue is
  collected in a deque the same batch runs next, instead of a ``send_nowait`` into the Trio
  channel and a ``receive_nowait`` out of it per callback. Collected objects are always
  older than anything in the channel (collection stops before any yield of the loop's task,
  and others can queue only then), so the order stays FIFO.
- ``_io_task`` (the Trio task trio-asyncio runs per watched file descriptor) by `_io_task`:
  after a reader or writer callback it does not ``synchronize()`` (one more callback queued
  and an Event waited for, a second step of that task per read); it waits for the descriptor
  at once and, once it is ready again, runs the callback only if the loop has emptied its
  queue since the last one, else synchronizes first as the stock task does. Either way the
  callbacks one read queued have all run before the next read.

What changes is the number of Trio checkpoints and steps per callback, not the order or the
context a callback runs in. The batch is bounded, so a callback that reschedules itself
forever cannot starve Trio's other tasks.

The replacements read trio-asyncio internals (``_q_recv``, ``_timers``, ``_nursery``,
``_queue_handle``, ``AsyncHandle``, ``ScopedHandle._scope``); `install_batching` checks they
are there and leaves the stock methods in place otherwise (a trio-asyncio whose internals
moved still works, only slower), saying so at DEBUG.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, final

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

#: What `_run_batch`'s wait got when its deadline (the next timer) came first.
_NOTHING: Final = object()


@final
class _Batching:
    """The batching state of one loop (``loop._mtpoold_batching``).

    Attributes:
        pending: Objects queued while a batch runs with the channel empty: the batch runs
            them next, without a trip through the channel. Always older than anything in
            the channel (they are only collected while it is empty and no other task runs).
        collecting: Whether `queue_handle` collects into `pending` now (only inside a batch,
            never across a yield of the loop's task).
        drained: How many times a batch has run everything queued (`_io_task` compares it
            across a wait).
    """

    __slots__ = ("collecting", "drained", "pending")

    def __init__(self) -> None:
        self.pending: collections.deque[Any] = collections.deque()
        self.collecting = False
        self.drained = 0


async def _dispatch(loop: Any, state: _Batching, obj: Any, library: str | None) -> bool:
    """Run or file one queued object; True when a callback ran.

    Called with sniffio's thread-local name set to "asyncio" (as trio-asyncio runs a
    callback); ``library`` is the name to show Trio while this waits for a Trio task to start.
    """
    if isinstance(obj, asyncio.TimerHandle):
        heapq.heappush(loop._timers, obj)
        return False
    if _AsyncHandle is not None and isinstance(obj, _AsyncHandle):
        state.collecting = False  # the wait yields: what others queue meanwhile is newer
        sniffio.thread_local.name = library
        try:
            obj._context.run(loop._nursery.start_soon, obj._run, name=obj._callback)
            await obj._started.wait()
        finally:
            sniffio.thread_local.name = "asyncio"
        return True
    if not obj._cancelled:
        obj._run()
    return True


async def _run_batch(loop: Any, state: _Batching, no_wait: bool = False) -> None:
    """One turn of the loop's ``_main_loop`` (replaces ``_main_loop_one``; module docstring).

    When nothing is due or queued it first waits for a callback or the next timer; what
    woke it counts towards this batch. Between two yields of the loop's task to Trio at
    most `BATCH_MAX` callbacks run: a batch that leaves nothing queued or due returns
    without a checkpoint, since the next turn waits on the empty queue (a yield) at once.
    Once the channel is empty, what the batch's callbacks queue is collected in
    ``state.pending`` and run from there, in order.

    Raises:
        trio.WouldBlock: ``no_wait`` and nothing was due or queued.
        TrioAsyncioExit: from the callback ``loop.stop()`` queues (ends ``_main_loop``).
    """
    ran = 0
    timers = loop._timers
    pending = state.pending
    receiver = loop._q_recv
    receive_nowait = receiver.receive_nowait
    while timers and timers[0]._cancelled:
        # as asyncio's own loop does: a cancelled timer (a wait_for that finished: Telethon's
        # connect timeout) would otherwise set the wait's deadline until its time came
        heapq.heappop(timers)
    if not no_wait and not pending and not (timers and timers[0]._when <= loop.time()):
        try:
            first = receive_nowait()
        except trio.WouldBlock:
            first = _NOTHING
            if timers:
                # loop.time() moved on since it was read: a timer due in between gives a
                # negative timeout, which move_on_after refuses (ValueError ended the task)
                with trio.move_on_after(max(0.0, timers[0]._when - loop.time())):
                    first = await receiver.receive()
            else:
                first = await receiver.receive()
    else:
        first = _NOTHING
    drained = False
    library = sniffio.thread_local.name
    sniffio.thread_local.name = "asyncio"  # for every callback of the batch, set once
    try:
        if first is not _NOTHING and await _dispatch(loop, state, first, library):
            ran += 1
        if timers:
            now = loop.time()
            while timers and timers[0]._when <= now and ran < BATCH_MAX:
                timer = heapq.heappop(timers)
                if not timer._cancelled:
                    timer._run()
                ran += 1
        while ran < BATCH_MAX:
            if pending:  # older than anything in the channel
                obj = pending.popleft()
            elif state.collecting:  # the channel was empty and nothing has yielded since
                drained = True
                break
            else:
                try:
                    obj = receive_nowait()
                except trio.WouldBlock:
                    state.collecting = True
                    continue
            if await _dispatch(loop, state, obj, library):
                ran += 1
    finally:
        sniffio.thread_local.name = library
        state.collecting = False  # never across a yield (nor once the batch raised)
    if drained:
        state.drained += 1
    if ran:
        if not no_wait and (not drained or (timers and timers[0]._when <= loop.time())):
            await trio.lowlevel.checkpoint()  # Trio runs its other tasks before the rest
    elif no_wait:
        raise trio.WouldBlock


async def _io_task(loop: Any, state: _Batching, fd: int, handle: Any, wait_ready: Any) -> None:
    """trio-asyncio's ``_io_task`` (one per watched descriptor) without a ``synchronize()``
    per callback when the loop has emptied its queue by the time the descriptor is ready
    again (module docstring). Errors and cancellation as in the stock task."""
    mark: int | None = None  # the loop's drain count after the last callback; None: none ran
    with handle._scope:
        try:
            while True:
                if handle._cancelled:
                    break
                try:
                    await wait_ready(fd)
                except OSError:
                    # maybe someone did h = add_reader(sock); h.cancel(); sock.close()
                    # without yielding to the event loop (as the stock task says)
                    if handle._cancelled:
                        break
                    raise
                if handle._cancelled:
                    break
                if mark is not None and state.drained == mark:
                    # what the last callback queued may not all have run yet
                    await loop.synchronize()
                    if handle._cancelled:
                        break
                handle._run()
                mark = state.drained
        except Exception as exc:
            handle._raise(exc)


def _fast_scheduling(loop: Any, state: _Batching) -> None:
    """Set ``_queue_handle``, ``call_soon``, ``call_later`` and ``call_at`` on ``loop``:
    trio-asyncio's, collecting into ``state.pending`` while a batch collects, and with
    ``_check_callback`` only in debug mode (as asyncio's ``BaseEventLoop`` does)."""
    handle_cls = asyncio.Handle
    timer_cls = asyncio.TimerHandle
    stock_queue_handle = loop._queue_handle
    check_closed = loop._check_closed
    pending = state.pending

    def queue_handle(handle: Any) -> Any:
        if state.collecting:
            check_closed()
            pending.append(handle)
            return handle
        return stock_queue_handle(handle)

    def call_soon(callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        if loop._debug:
            loop._check_callback(callback, "call_soon")
        handle = handle_cls(callback, args, loop, context)
        if state.collecting:
            check_closed()
            pending.append(handle)
            return handle
        return stock_queue_handle(handle)  # type: ignore[no-any-return]

    def call_later(
        delay: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        if loop._debug:
            loop._check_callback(callback, "call_later")
        assert delay >= 0, delay
        timer = timer_cls(delay + loop.time(), callback, args, loop, context)
        queue_handle(timer)
        return timer

    def call_at(when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        if loop._debug:
            loop._check_callback(callback, "call_at")
        return queue_handle(timer_cls(when, callback, args, loop, context))  # type: ignore[no-any-return]

    loop._queue_handle = queue_handle
    loop.call_soon = call_soon
    loop.call_later = call_later
    loop.call_at = call_at


def install_batching(loop: object) -> bool:
    """Make ``loop`` (a running `trio_asyncio.TrioEventLoop`) run its callbacks in batches,
    schedule them without ``inspect`` checks and watch descriptors without a
    ``synchronize()`` per callback (module docstring).

    Returns:
        True when installed; False (the stock loop runs on) when the trio-asyncio internals
        this relies on are not where trio-asyncio 0.15-0.16 keep them.
    """
    needed = (
        "_q_recv",
        "_timers",
        "_nursery",
        "_main_loop_one",
        "_queue_handle",
        "_check_closed",
        "_io_task",
        "_check_callback",
        "_debug",
        "synchronize",
        "time",
    )
    if _AsyncHandle is None or not all(hasattr(loop, name) for name in needed):
        log.debug("event=aio_batching_unavailable trio_asyncio=%s", trio_asyncio.__version__)
        return False

    state = _Batching()

    async def main_loop_one(no_wait: bool = False) -> None:
        await _run_batch(loop, state, no_wait)

    async def io_task(fd: int, handle: Any, wait_ready: Any) -> None:
        await _io_task(loop, state, fd, handle, wait_ready)

    loop._mtpoold_batching = state  # type: ignore[attr-defined]
    loop._main_loop_one = main_loop_one  # type: ignore[attr-defined]
    loop._io_task = io_task  # type: ignore[attr-defined]
    _fast_scheduling(loop, state)
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
