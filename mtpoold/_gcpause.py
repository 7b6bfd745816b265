"""Python's cyclic garbage collector paused while a large, long-lived structure is built, and
a large built fleet moved out of its sight.

Building the config and the pool of 100,000 accounts allocates millions of objects that all
live on (entries, workers, locks, lanes). With the collector on, every 700 allocations start a
young collection and the growing old generation is walked again and again: at 100,000
accounts on 10,000 proxies the collector was about two thirds of `mtpoold._pool.Pool`'s
start-up (9.8 s with it, 3.3 s without, ``bench/scale.py`` fleet probe). Nothing built there
is garbage, so pausing the collector loses nothing; reference counting still frees what dies.

Paused, the objects still pile up in the youngest generation: the first collection after the
pause walks all of them (about 0.5 s at 100,000 accounts), the next ones again as they age,
and every full collection after that walks the whole fleet (0.7–1.6 s, a stall of the event
loop each time). `FrozenFleet` puts a large fleet into the collector's permanent generation
once it is built (``gc.freeze()``): no collection walks it until it is thawed. Frozen objects
are still freed by reference counting; only cycles among them wait for the thaw, so a
reload thaws, collects once and freezes again, and closing the pool thaws.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["FREEZE_AT_ACCOUNTS", "FrozenFleet", "freeze_start_up", "gc_paused"]

#: Pools of at least this many accounts freeze their fleet (`FrozenFleet`). Below it a full
#: collection walks little (some 0.07 s at 10,000 accounts), and ``gc.freeze()`` freezing
#: everything else alive in the process (an embedding program's objects, a test's) is not
#: worth it.
FREEZE_AT_ACCOUNTS = 20_000

#: Whether `freeze_start_up` froze this process's heap (``mtpoold run``): then every reload
#: thaws, collects and freezes again whatever the fleet's size (`FrozenFleet.refreeze`).
_start_up_frozen = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block (or a decorated call), then restore it.

    Usable as a decorator (``@gc_paused()``): each call pauses on its own. Nested uses are
    fine: only the outermost one that found the collector on turns it back on. Raises
    nothing of its own; an exception in the block propagates after the collector is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class FrozenFleet:
    """Whether one pool's fleet sits in the collector's permanent generation.

    ``gc.freeze()`` and ``gc.unfreeze()`` act on the whole process: whatever is alive at a
    freeze is frozen with the fleet (acyclic garbage is still freed as it dies), and a thaw
    by one pool thaws every frozen object (correct, only slower for the others). Nothing here
    raises.
    """

    def __init__(self) -> None:
        self.frozen = False

    def freeze(self, accounts: int) -> None:
        """Freeze everything alive when the fleet is large (``accounts`` >=
        `FREEZE_AT_ACCOUNTS`), once it is built: later collections skip it."""
        if accounts >= FREEZE_AT_ACCOUNTS:
            gc.freeze()
            self.frozen = True

    def refreeze(self, accounts: int) -> None:
        """After a reload: thaw, collect the cycles that died while frozen (one full
        collection, a pause once per reload, which otherwise the next full collection would
        take), then freeze again if the fleet is still large, or everything if the
        process's start-up heap was frozen (`freeze_start_up`: the old config's accounts
        died frozen, whatever the fleet's size). What the reload removes and is still
        draining is collected by the next reload or the thaw at close."""
        if self.frozen or _start_up_frozen:
            gc.unfreeze()
            self.frozen = False
            gc.collect()
            if _start_up_frozen:
                gc.freeze()
        self.freeze(accounts)

    def thaw(self) -> None:
        """Give the frozen objects back to the collector (the pool closed)."""
        if self.frozen:
            gc.unfreeze()
            self.frozen = False


def freeze_start_up() -> None:
    """The daemon process, once ready: one full collection, then everything alive (the
    imports, the config, the pool) into the collector's permanent generation
    (``gc.freeze()``), so a later full collection walks only what came after.

    With Telethon, trio-asyncio and redis imported, a full collection of that heap pauses
    the process some 18 ms (about 90,000 objects, on the 2-core bench machine; none after
    the freeze): a wake-up held that long makes a cluster start miss its window
    (`mtpoold._startwindow`) and loses its slot. Process-wide, so only ``mtpoold run``
    asks for it (`mtpoold._daemon.run_daemon`'s ``freeze_heap``), never a program that
    embeds the pool. Each reload then thaws, collects and freezes again
    (`FrozenFleet.refreeze`). Raises nothing.
    """
    global _start_up_frozen
    gc.collect()
    gc.freeze()
    _start_up_frozen = True
