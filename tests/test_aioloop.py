"""`mtpoold._aioloop`: trio-asyncio's loop with its callbacks run in batches.

The order of callbacks and timers is trio-asyncio's (and asyncio's); what changes is how often
the loop's task goes through Trio's scheduler, counted here with a Trio instrument (steps of
the loop's ``_main_loop`` task), never timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio_asyncio

from mtpoold._aioloop import BATCH_MAX, install_batching, open_aio_loop

Opener = Callable[[], AbstractAsyncContextManager[Any]]
OPENERS: dict[str, Opener] = {"stock": trio_asyncio.open_loop, "batching": open_aio_loop}


class _LoopSteps(trio.abc.Instrument):
    """Counts the steps Trio gives the trio-asyncio loop's ``_main_loop`` task."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_main_loop"):
            self.steps += 1


async def _steps_for(opener: Opener, work: Callable[[], Any]) -> int:
    steps = _LoopSteps()
    async with opener():
        await trio_asyncio.aio_as_trio(asyncio.sleep)(0)  # the loop is up and idle
        trio.lowlevel.add_instrument(steps)
        try:
            await trio_asyncio.aio_as_trio(work)()
        finally:
            trio.lowlevel.remove_instrument(steps)
    return steps.steps


async def test_batching_takes_fewer_trips_through_trios_scheduler() -> None:
    """A hundred asyncio yields (each one callback): stock trio-asyncio steps its loop task
    once per callback; mtpoold's once per batch."""

    async def yields() -> None:
        async def one() -> None:
            for _ in range(10):
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(10)))

    stock = await _steps_for(OPENERS["stock"], yields)
    batched = await _steps_for(OPENERS["batching"], yields)
    assert stock >= 100
    assert batched * 5 <= stock, (stock, batched)


@pytest.mark.parametrize("kind", OPENERS)
async def test_callbacks_and_timers_keep_their_order(kind: str) -> None:
    ran: list[str] = []
    async with OPENERS[kind]() as loop:
        done = trio.Event()

        def note(tag: str) -> None:
            ran.append(tag)
            if tag == "soon-3":
                loop.call_soon(note, "nested")  # queued behind what is already queued

        loop.call_later(0.02, note, "later-2")
        loop.call_later(0.01, note, "later-1")
        for i in range(1, 4):
            loop.call_soon(note, f"soon-{i}")
        loop.call_later(0.03, done.set)
        await done.wait()
    assert ran == ["soon-1", "soon-2", "soon-3", "nested", "later-1", "later-2"]


@pytest.mark.parametrize("kind", OPENERS)
async def test_a_callback_queued_by_a_callback_runs_after_those_queued_before(kind: str) -> None:
    """FIFO across where a callback is queued from: behind what was queued before it (the
    channel), and callbacks queued inside a batch (collected, not sent through the channel)
    in their own order, also across a Trio task started from asyncio in between."""
    ran: list[str] = []
    async with OPENERS[kind]() as loop:
        done = trio.Event()

        async def trio_side() -> None:
            ran.append("trio-task")

        def note(tag: str) -> None:
            ran.append(tag)
            if tag == "soon-1":
                loop.call_soon(note, "nested-1")
            if tag == "soon-3":
                loop.call_soon(note, "nested-3a")
                loop.run_trio_task(trio_side)
                loop.call_soon(note, "nested-3b")
            if tag == "nested-3b":
                loop.call_soon(done.set)

        for i in range(1, 4):
            loop.call_soon(note, f"soon-{i}")
        await done.wait()
    assert ran[:5] == ["soon-1", "soon-2", "soon-3", "nested-1", "nested-3a"]
    assert ran[5:] in (["trio-task", "nested-3b"], ["nested-3b", "trio-task"])
    # the Trio task is started in order; when it first runs is Trio's to say


@pytest.mark.parametrize("kind", OPENERS)
async def test_a_callback_storm_does_not_starve_trio(kind: str) -> None:
    """A callback that reschedules itself forever: Trio's tasks still run, and between two of
    their steps the loop runs at most two batches (Trio steps every runnable task once per
    scheduler round, in a shuffled order, so the loop's task may step just before and just
    after ours)."""
    count = 0
    async with OPENERS[kind]() as loop:
        await trio_asyncio.aio_as_trio(asyncio.sleep)(0)  # up and idle: trio-asyncio's own
        # _main_loop_one, waiting when open_aio_loop replaced it, has returned
        stop = False

        def storm() -> None:
            nonlocal count
            count += 1
            if not stop:
                loop.call_soon(storm)

        loop.call_soon(storm)
        seen = []
        for _ in range(20):
            await trio.lowlevel.checkpoint()
            seen.append(count)
        stop = True
    steps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert max(steps) <= 2 * BATCH_MAX, steps
    assert seen[-1] > seen[0]


async def test_exit_drains_what_was_queued() -> None:
    """``loop.stop()``'s drain calls ``_main_loop_one(no_wait=True)`` until WouldBlock: the
    callbacks queued before the exit run, and the exit returns."""
    ran: list[int] = []
    async with open_aio_loop() as loop:
        for i in range(BATCH_MAX * 3):
            loop.call_soon(ran.append, i)
    assert ran == list(range(BATCH_MAX * 3))


async def test_callback_errors_reach_the_exception_handler() -> None:
    seen: list[dict[str, Any]] = []
    async with open_aio_loop() as loop:
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        done = trio.Event()

        def boom() -> None:
            raise RuntimeError("callback failed")

        loop.call_soon(boom)
        loop.call_soon(done.set)
        await done.wait()
    assert [type(c.get("exception")) for c in seen] == [RuntimeError]


async def test_trio_tasks_from_asyncio_still_start() -> None:
    """`AsyncHandle`s (``trio_as_aio``: Trio code called from asyncio) are started as before."""

    async def trio_side(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x + 1

    async with open_aio_loop():

        async def aio_side() -> int:
            return int(await trio_asyncio.trio_as_aio(trio_side)(41))

        assert await trio_asyncio.aio_as_trio(aio_side)() == 42


def test_a_loop_without_the_internals_keeps_the_stock_method() -> None:
    class Elsewhere:
        async def _main_loop_one(self, no_wait: bool = False) -> None:
            return None

    loop = Elsewhere()
    stock = loop._main_loop_one
    assert install_batching(loop) is False
    assert loop._main_loop_one == stock


async def test_a_batch_from_idle_is_one_step_of_the_loop_task() -> None:
    """Callbacks queued while the loop waits run in one step of its task: after the batch it
    goes straight back to waiting (where Trio runs what the batch woke), no checkpoint first."""
    async with open_aio_loop() as loop:
        await trio_asyncio.aio_as_trio(asyncio.sleep)(0)  # up and idle
        steps = _LoopSteps()
        done = trio.Event()
        ran: list[int] = []
        trio.lowlevel.add_instrument(steps)
        try:
            for i in range(3):
                loop.call_soon(ran.append, i)
            loop.call_soon(done.set)
            await done.wait()
            await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(steps)
    assert ran == [0, 1, 2]
    assert steps.steps == 1


async def test_callbacks_are_checked_in_debug_mode_only() -> None:
    """As asyncio's own loop: ``call_soon`` refuses a coroutine function in debug mode."""

    async def not_a_callback() -> None:  # pragma: no cover - never called
        return None

    async with open_aio_loop() as loop:
        loop.set_debug(True)
        for schedule in (
            lambda: loop.call_soon(not_a_callback),
            lambda: loop.call_later(1, not_a_callback),
            lambda: loop.call_at(loop.time() + 1, not_a_callback),
        ):
            with pytest.raises(TypeError):
                schedule()
        loop.set_debug(False)
        done = trio.Event()
        handle = loop.call_later(0, done.set)
        assert isinstance(handle, asyncio.TimerHandle)
        await done.wait()


@pytest.mark.parametrize("kind", OPENERS)
async def test_what_a_read_queued_runs_before_the_next_read(kind: str) -> None:
    """A reader's callback runs again only after the callbacks it queued have run (the stock
    ``_io_task`` synchronizes after each; mtpoold's only when the loop has not emptied its
    queue since), and a removed reader is not called again. The descriptor stays readable
    throughout, so each next read is due at once."""
    import socket

    events: list[str] = []
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        async with OPENERS[kind]() as loop:
            got = trio.Event()
            reads = 0

            def chain(depth: int) -> None:
                events.append(f"queued-{reads}-{depth}")
                if depth < 3:
                    loop.call_soon(chain, depth + 1)

            def on_readable() -> None:
                nonlocal reads
                data = a.recv(1)
                if not data:
                    return
                reads += 1
                events.append(f"read-{reads}")
                loop.call_soon(chain, 1)
                if reads == 5:
                    loop.remove_reader(a)
                    got.set()

            loop.add_reader(a, on_readable)
            b.send(b"x" * 8)  # readable again at once after every one-byte read
            await got.wait()
            for _ in range(5):
                await trio.lowlevel.checkpoint()
    finally:
        a.close()
        b.close()
    reads_seen = [e for e in events if e.startswith("read-")]
    assert reads_seen == [f"read-{n}" for n in range(1, 6)]  # none after remove_reader
    for n in range(1, 5):  # what read n queued itself has run before read n+1
        assert events.index(f"queued-{n}-1") < events.index(f"read-{n + 1}"), events


async def test_cancelled_timers_leave_the_head_of_the_heap() -> None:
    """A cancelled timer (a ``wait_for`` that finished) is dropped from the head of the heap
    at the next turn, as asyncio's loop does, instead of giving every wait a deadline."""
    async with open_aio_loop() as loop:
        live = loop.call_later(7200, lambda: None)
        stale = loop.call_later(3600, lambda: None)
        stale.cancel()
        for _ in range(2):  # filed into the heap, then the turn after
            done = trio.Event()
            loop.call_soon(done.set)
            await done.wait()
        assert stale not in loop._timers  # type: ignore[attr-defined]
        assert live in loop._timers  # type: ignore[attr-defined]
        live.cancel()


@pytest.mark.parametrize("kind", OPENERS)
async def test_sniffio_names_the_library_of_each_side(kind: str) -> None:
    """Callbacks and timers see "asyncio"; Trio tasks, also one started from a callback in
    the middle of a batch and Trio code after the batch, see "trio"."""
    import sniffio

    seen: list[tuple[str, str]] = []
    async with OPENERS[kind]() as loop:
        done = trio.Event()

        async def trio_side() -> None:
            seen.append(("trio task", sniffio.current_async_library()))

        def note(tag: str) -> None:
            seen.append((tag, sniffio.current_async_library()))
            if tag == "soon-1":
                loop.run_trio_task(trio_side)
            if tag == "timer":
                done.set()

        loop.call_soon(note, "soon-1")
        loop.call_soon(note, "soon-2")
        loop.call_later(0, note, "timer")
        await done.wait()
        seen.append(("trio caller", sniffio.current_async_library()))
    assert sorted(seen) == sorted(
        [
            ("soon-1", "asyncio"),
            ("soon-2", "asyncio"),
            ("timer", "asyncio"),
            ("trio task", "trio"),
            ("trio caller", "trio"),
        ]
    )
