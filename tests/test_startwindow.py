"""The start window a cluster node reserves with: the cost minimum over its own wake-ups
(`mtpoold._startwindow`; no clock, no Redis)."""

from __future__ import annotations

import math
import random

import pytest

from mtpoold._startwindow import (
    CEILING_S,
    DEFAULT_S,
    FLOOR_S,
    MIN_SAMPLES,
    REFRESH_EVERY,
    SAMPLES,
    StartWindow,
)


def _fed(lateness: list[float]) -> StartWindow:
    window = StartWindow()
    for late_s in lateness:
        window.observe(late_s, DEFAULT_S)
    return window


def test_the_default_until_enough_wake_ups_are_known_clamped_to_the_interval() -> None:
    window = _fed([0.0001] * (MIN_SAMPLES - 1))
    assert window.window_s(2.0) == DEFAULT_S
    assert window.window_s(0.008) == pytest.approx(0.002)  # a quarter of the interval
    assert window.window_s(0.001) == FLOOR_S


def test_a_quiet_node_asks_for_a_little_more_than_its_slowest_wake_up_needed() -> None:
    rng = random.Random(7)
    lateness = [0.0008 + rng.random() * 0.0012 for _ in range(SAMPLES)]  # 0.8-2.0 ms
    window = _fed(lateness)
    # at 2 s a missed slot costs 2 s: past the slowest wake-up seen (which the next one
    # exceeds with chance 1/513), by a little (the top ones lie close together)
    assert max(lateness) < window.window_s(2.0) < max(lateness) + 0.001
    assert window.window_s(2.0) < DEFAULT_S


def test_an_exponential_tail_gets_the_window_that_maximises_the_starts() -> None:
    rng = random.Random(9)
    base_s, scale_s, interval_s = 0.001, 0.0005, 2.0
    window = _fed([base_s + rng.expovariate(1 / scale_s) for _ in range(SAMPLES)])
    # lateness base + Exp(scale): (interval + w) / (1 - exp(-(w - base) / scale)) is least
    # about w = base + scale * ln(interval / scale), 5.15 ms here
    best_s = base_s + scale_s * math.log(interval_s / scale_s)
    assert window.window_s(interval_s) == pytest.approx(best_s, abs=0.0005)


def test_rare_long_stalls_are_not_paid_for_on_every_start_unless_slots_are_long() -> None:
    rng = random.Random(8)
    lateness = [0.001 + rng.random() * 0.001 for _ in range(SAMPLES)]
    for i in range(0, SAMPLES, 100):  # about 1 % of the wake-ups stall 30-40 ms
        lateness[i] = 0.030 + rng.random() * 0.010
    window = _fed(lateness)
    # 2 s slots: losing 1 % of them (about 20 ms a start) beats a 40 ms window on all
    assert window.window_s(2.0) <= 0.002
    # 60 s slots: losing 1 % of them costs 600 ms a start; covering the stalls costs 40 ms
    assert window.window_s(60.0) >= max(lateness)
    # never wider than the ceiling, however long the interval
    stalled = _fed([0.045 + 0.015 * i / SAMPLES for i in range(SAMPLES)])  # 45-60 ms
    assert stalled.window_s(600.0) == pytest.approx(CEILING_S, abs=0.0001)
    for _ in range(REFRESH_EVERY):  # stalls past the ceiling are not waited for
        window.observe(0.5, DEFAULT_S)
    assert window.window_s(60.0) < 0.5


def test_observe_says_whether_the_start_may_go_and_counts_the_misses() -> None:
    window = StartWindow()
    assert window.observe(0.004, 0.005) is True
    assert window.observe(-0.001, 0.005) is True  # woke early on this clock: not late
    assert window.observe(0.006, 0.005) is False
    assert (window.missed, window.samples) == (1, 3)


def test_the_window_follows_the_node_as_its_load_changes() -> None:
    window = _fed([0.001] * SAMPLES)
    quiet = window.window_s(2.0)
    for _ in range(SAMPLES):  # the host gets busy: every wake-up is 8 ms late
        window.observe(0.008, quiet)
    assert 0.001 < quiet < 0.002  # every wake-up alike: a sliver past them
    assert 0.008 < window.window_s(2.0) < 0.009
