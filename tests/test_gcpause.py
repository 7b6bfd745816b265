"""mtpoold._gcpause: the collector paused while a fleet is built, a large fleet frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from mtpoold import _gcpause
from mtpoold._compose import open_pool
from mtpoold._gcpause import FREEZE_AT_ACCOUNTS, FrozenFleet, gc_paused

from _fakeclient import World, make_config


@pytest.fixture
def refrozen() -> Iterator[None]:
    """The suite's own freeze (tests/conftest.py) back after a test that thaws everything."""
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_gc_paused_restores_the_collector_and_nests() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the outermost pause turns it back on
    assert gc.isenabled()


def test_a_small_fleet_is_not_frozen() -> None:
    fleet = FrozenFleet()
    before = gc.get_freeze_count()
    fleet.freeze(FREEZE_AT_ACCOUNTS - 1)
    assert not fleet.frozen
    assert gc.get_freeze_count() == before
    fleet.thaw()  # nothing to give back
    assert gc.get_freeze_count() == before


def test_a_cycle_that_died_frozen_is_collected_by_the_reload_refreeze(refrozen: None) -> None:
    cycle = _Cycle()
    dead = weakref.ref(cycle)
    fleet = FrozenFleet()
    fleet.freeze(FREEZE_AT_ACCOUNTS)
    assert fleet.frozen
    del cycle
    gc.collect()
    assert dead() is not None  # frozen: no collection looks at it
    fleet.refreeze(FREEZE_AT_ACCOUNTS)
    assert dead() is None  # the reload thawed, collected, froze again
    assert fleet.frozen
    fleet.thaw()
    assert not fleet.frozen
    assert gc.get_freeze_count() == 0


def test_a_reload_that_leaves_a_small_fleet_thaws_it(refrozen: None) -> None:
    fleet = FrozenFleet()
    fleet.freeze(FREEZE_AT_ACCOUNTS)
    fleet.refreeze(FREEZE_AT_ACCOUNTS - 1)
    assert not fleet.frozen
    assert gc.get_freeze_count() == 0


async def test_pool_freezes_a_large_fleet_while_open_and_thaws_at_close(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    refrozen: None,
) -> None:
    monkeypatch.setattr(_gcpause, "FREEZE_AT_ACCOUNTS", 2)
    world = World()
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p1"})
    smaller = make_config(tmp_path, accounts={"a1": "p1"})
    gc.collect()
    gc.unfreeze()  # start from nothing frozen: the pool's freeze is what is counted
    async with open_pool(config, client_factory=world.factory()) as pool:
        frozen: Any = pool._frozen
        assert frozen.frozen and gc.get_freeze_count() > 0
        await pool.invoke("help.GetConfig", {})
        await pool.reload(config)
        assert frozen.frozen
        await pool.reload(smaller)  # a2 retires once idle: still counted until then
        await trio.sleep(1)
        await pool.reload(smaller)  # one account left: below the mark
        assert not frozen.frozen and gc.get_freeze_count() == 0
        await pool.reload(config)
        assert frozen.frozen
    assert not frozen.frozen
    assert gc.get_freeze_count() == 0


def test_freeze_start_up_moves_the_heap_alive_out_of_later_collections(
    monkeypatch: pytest.MonkeyPatch, refrozen: None
) -> None:
    """`mtpoold run` once ready (`run_daemon(freeze_heap=True)`): what is alive then is in
    the permanent generation, so no full collection walks it again."""
    monkeypatch.setattr(_gcpause, "_start_up_frozen", False)  # back after the test
    before = gc.get_freeze_count()
    alive = [[i] for i in range(1000)]  # tracked containers, as the pool's are
    _gcpause.freeze_start_up()
    assert gc.get_freeze_count() >= before + len(alive)


class _Cyclic:
    """An object in a reference cycle (as an account worker and its tasks are)."""

    def __init__(self) -> None:
        self.me = self


def test_a_small_fleets_reload_collects_what_died_in_the_frozen_start_up_heap(
    monkeypatch: pytest.MonkeyPatch, refrozen: None
) -> None:
    """Below `FREEZE_AT_ACCOUNTS` the fleet is not frozen by the pool, but ``mtpoold run``
    froze its start-up heap: an account a reload removes died frozen, and the reload's
    refreeze thaws, collects it and freezes again."""
    monkeypatch.setattr(_gcpause, "_start_up_frozen", False)
    removed = _Cyclic()
    gone = weakref.ref(removed)
    _gcpause.freeze_start_up()
    del removed
    gc.collect()
    assert gone() is not None  # frozen: no collection sees the dead cycle
    fleet = FrozenFleet()
    fleet.refreeze(10)
    assert gone() is None
    assert not fleet.frozen and gc.get_freeze_count() > 0  # the heap frozen again
