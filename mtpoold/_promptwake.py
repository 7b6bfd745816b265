"""Waking on time for a start slot: sleep until a few ms before it, then spin to it.

A start slot is an instant on the trio clock (a lane's `mtpoold._gate.RateGate` slot, or a
cluster reservation mapped from Redis's clock, `mtpoold._lane.ProxyLane._shared_slot`). A
plain `trio.sleep_until` wakes late: the kernel's poll timeout is whole milliseconds, and a
virtual machine whose vCPU has gone idle takes longer again to wake. On the bench VM a process
with nothing else to do woke a median 2.5 ms and up to 3.9 ms late (40 wake-ups 0.5–3 s
apart); sleeping until 3 ms before and spinning the rest with checkpoints brought that to a
median 0.01 ms, at most 1.1 ms (the wake-ups already 3 ms late).

Lateness is lost capacity on a saturated proxy: a single node's gate counts the next slot from
the real start (`RateGate`), and a cluster node pays its lateness as the start window it asks
Redis for, plus a whole slot for every start later than that window
(`mtpoold._startwindow`). So `PromptWake` spends a little CPU to keep starts on time:

- it sleeps until `SPIN_S` before the instant, then yields with `trio.lowlevel.checkpoint`
  until the instant (other tasks run meanwhile: the spin only fills time the process would
  otherwise sleep through, and only when no other task is runnable does it poll the kernel
  with a zero timeout). Each turn also offers the core to other processes
  (`os.sched_yield`): on a busy host the spin takes no CPU another process wants (the
  other nodes of a cluster on one host, the Redis server), it only keeps an idle one awake;
- the spinning is bounded: a token bucket refilled at `SHARE` of wall time, at most `BURST_S`
  (s) in hand. A node with more starts per second than the budget covers sleeps plainly for
  the rest; its loop is busy then, and a busy loop wakes on time anyway. At the shipped 2 s
  interval and the default `SPIN_S`, the budget covers 10 starts a second, 20 proxies
  saturated;
- under `trio.testing.MockClock` (tests' virtual time) it never spins: the clock does not
  move while a task keeps running. A clock that does not advance otherwise ends the spin
  after its length in real time.

One `PromptWake` per pool (`mtpoold._pool.Pool`), shared by its lanes: the budget is the
node's.
"""

from __future__ import annotations

import os
import time
from typing import Final, final

import trio
from trio.testing import MockClock

__all__ = ["BURST_S", "SHARE", "SPIN_S", "PromptWake"]

#: Give the core to any other runnable process (Linux: `os.sched_yield`), where the OS has it.
_yield_cpu = getattr(os, "sched_yield", lambda: None)

#: Seconds before an instant a wake-up sleeps until; the rest is spun. Longer than the bench
#: VM's idle wake-up lateness (at most 3.9 ms, the module's docstring).
SPIN_S: Final = 0.005
#: The share of wall time the spinning may take (0.05: 50 ms a second, of one core).
SHARE: Final = 0.05
#: Seconds of spinning the budget holds at most (a burst of starts after a quiet spell).
BURST_S: Final = 0.1


@final
class PromptWake:
    """Sleep until an instant on the trio clock, waking on time (the module's docstring).

    Args:
        spin_s: Seconds spun before each instant (0 turns spinning off: plain sleeps).
        share: The share of wall time spinning may take, in [0, 1].
        burst_s: Seconds of spinning held in hand at most.

    Raises:
        ValueError: a negative ``spin_s`` or ``burst_s``, or ``share`` outside [0, 1].
    """

    __slots__ = ("_burst_s", "_credit_at", "_credit_s", "_share", "_spin_s", "skipped", "spins")

    def __init__(
        self, spin_s: float = SPIN_S, share: float = SHARE, burst_s: float = BURST_S
    ) -> None:
        if spin_s < 0 or burst_s < 0 or not 0 <= share <= 1:
            raise ValueError(
                f"spin_s and burst_s must be >= 0 and share in [0, 1], got "
                f"{spin_s!r}, {burst_s!r}, {share!r}"
            )
        self._spin_s = spin_s
        self._share = share
        self._burst_s = burst_s
        self._credit_s = burst_s
        self._credit_at: float | None = None
        #: Wake-ups that spun to their instant, and those the budget sent to a plain sleep.
        self.spins = 0
        self.skipped = 0

    def __repr__(self) -> str:
        return (
            f"<PromptWake spin={self._spin_s * 1e3:g} ms spins={self.spins} skipped={self.skipped}>"
        )

    async def sleep_until(self, at: float) -> None:
        """Return at ``at`` (trio clock, s) or as soon after as the loop allows; always a
        checkpoint. Cancellable like `trio.sleep_until` at every point."""
        spin_from = at - self._spin_s
        if self._spin_s <= 0 or isinstance(trio.lowlevel.current_clock(), MockClock):
            await trio.sleep_until(at)
            return
        now = trio.current_time()
        if now >= at:
            await trio.lowlevel.checkpoint()
            return
        if spin_from > now:
            await trio.sleep_until(spin_from)
            now = trio.current_time()
            if now >= at:
                return
        if not self._take(at - now, now):
            await trio.sleep_until(at)
            return
        self.spins += 1
        give_up = time.perf_counter() + 2 * self._spin_s  # a clock that does not advance
        while trio.current_time() < at:
            _yield_cpu()  # another process that wants the core runs first
            await trio.lowlevel.checkpoint()
            if time.perf_counter() > give_up:  # pragma: no cover - only a stopped clock
                await trio.sleep_until(at)
                return

    def _take(self, need_s: float, now: float) -> bool:
        """Spend ``need_s`` seconds of the budget at trio time ``now`` if it holds them."""
        if self._credit_at is not None:
            refill = (now - self._credit_at) * self._share
            self._credit_s = min(self._burst_s, self._credit_s + refill)
        self._credit_at = now
        if self._credit_s < need_s:
            self.skipped += 1
            return False
        self._credit_s -= need_s
        return True
