"""Waking on time for a start slot (`mtpoold._promptwake`): never early, spinning within its
budget, never under virtual time, cancellable while it spins."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mtpoold._gate import RateGate
from mtpoold._promptwake import SPIN_S, PromptWake


def test_it_never_returns_before_the_instant_and_spins_the_last_stretch() -> None:
    # a spin long enough that a loaded CI host's late wake-up still leaves some of it
    wake = PromptWake(spin_s=0.05, burst_s=1.0)

    async def main() -> list[float]:
        early: list[float] = []
        for gap_s in (0.12, 0.06, 0.02, 0.0):  # longer than the spin, shorter, none
            at = trio.current_time() + gap_s
            await wake.sleep_until(at)
            early.append(at - trio.current_time())
        return early

    early = trio.run(main)
    assert all(e <= 0 for e in early), early
    assert wake.spins >= 2  # the first two at least had a stretch left after their sleep
    assert wake.skipped == 0


def test_the_budget_refills_at_its_share_of_wall_time_and_holds_at_most_the_burst() -> None:
    wake = PromptWake(spin_s=0.005, share=0.1, burst_s=0.01)
    assert wake._take(0.005, 100.0)  # the burst is in hand from the start
    assert wake._take(0.005, 100.0)
    assert not wake._take(0.005, 100.0)  # spent: a plain sleep
    assert not wake._take(0.005, 100.04)  # 40 ms at 10 % refills 4 ms: not enough
    assert wake._take(0.005, 100.06)  # 6 ms in hand again
    assert wake._take(0.01, 101.0)  # a quiet second refills no more than the burst
    assert not wake._take(0.001, 101.0)
    assert wake.skipped == 3


def test_an_exhausted_budget_sleeps_plainly() -> None:
    wake = PromptWake(spin_s=0.05, share=0.0, burst_s=0.0)

    async def main() -> None:
        for _ in range(3):
            at = trio.current_time() + 0.08
            await wake.sleep_until(at)
            assert trio.current_time() >= at

    trio.run(main)
    assert wake.spins == 0
    assert wake.skipped == 3


def test_virtual_time_never_spins_and_wakes_exactly_on_the_instant() -> None:
    wake = PromptWake()
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> float:
        at = trio.current_time() + 7.25
        await wake.sleep_until(at)
        return trio.current_time() - at

    assert trio.run(main, clock=clock) == 0.0
    assert wake.spins == wake.skipped == 0


def test_a_cancel_while_spinning_raises_at_once() -> None:
    wake = PromptWake(spin_s=0.15, burst_s=1.0)  # a long spin, so the cancel lands inside it

    async def main() -> tuple[bool, float]:
        at = trio.current_time() + 0.2
        with trio.move_on_at(at - 0.05) as scope:  # 100 ms into the 150 ms spin
            await wake.sleep_until(at)
        return scope.cancelled_caught, at - trio.current_time()

    caught, left_s = trio.run(main)
    assert caught
    assert left_s > 0  # it left before the instant, not at it
    assert wake.spins == 1


def test_a_gate_on_the_real_clock_starts_at_or_after_every_reservation() -> None:
    wake = PromptWake(spin_s=0.03, burst_s=1.0)  # most of each gap: spun even if woken late
    gate = RateGate(interval_s=0.04, jitter_s=(0.0, 0.0), wake=wake)

    async def main() -> list[float]:
        starts: list[float] = []
        for _ in range(5):
            starts.append(await gate.wait_for_slot())
        return starts

    starts = trio.run(main)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(g >= 0.04 for g in gaps), gaps
    assert wake.spins >= 1


@pytest.mark.parametrize(
    ("spin_s", "share", "burst_s"), [(-0.001, 0.1, 0.1), (SPIN_S, 1.5, 0.1), (SPIN_S, 0.1, -1)]
)
def test_bad_settings_are_refused(spin_s: float, share: float, burst_s: float) -> None:
    with pytest.raises(ValueError, match="spin_s and burst_s"):
        PromptWake(spin_s, share, burst_s)
