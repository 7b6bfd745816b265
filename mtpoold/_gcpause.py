"""Python's cyclic garbage collector paused while a large, long-lived structure is built.

Building the config and the pool of 100,000 accounts allocates millions of objects that all
live on (entries, workers, locks, lanes). With the collector on, every 700 allocations start a
young collection and the growing old generation is walked again and again: at 100,000
accounts on 10,000 proxies the collector was about two thirds of `mtpoold._pool.Pool`'s
start-up (9.8 s with it, 3.3 s without, ``bench/scale.py`` fleet probe). Nothing built there
is garbage, so pausing the collector loses nothing; reference counting still frees what dies.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


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
