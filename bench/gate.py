"""Scenario 1: mtpoold's rate gate vs the PHP system's ``Cache::add`` throttle on Redis.

The PHP system throttles each proxy with Laravel's ``Cache::add("proxy_throttle:<key>", 1, 2)``
on Redis: a Lua script that sets the key with a 2 s TTL only if it does not exist. A job whose
add fails sleeps a random 150–350 ms and tries again, for up to 60 s; one worker process runs
one job at a time. We reproduce that against a real ``redis-server`` with real worker processes
and run mtpoold's `ProxyLane` (capacity limiter + `RateGate`) on the same workload: P proxies ×
W workers per proxy, each worker looping "wait for a start slot, make a call of CALL_S, repeat".

All times are scaled down uniformly by ``SCALE`` (2 s interval -> 200 ms; retry sleeps, TTL,
60 s budget, mtpoold's 50–150 ms jitter and the call time likewise), so a 40 s run covers
400 s of production time. Fixed costs (a Redis round trip, a process wake-up, epoll's 1 ms
timeout granularity) weigh 10x more than they would unscaled: both systems pay them.
"""

from __future__ import annotations

import dataclasses
import math
import random
import socket
import subprocess
import time
from typing import Any, Final

from ._common import Report, child_command, jain, ms, parse_child_output, percentile

NAME: Final = "gate"
TITLE: Final = "1. Rate gate vs the PHP system's Redis Cache::add throttle"

SCALE: Final = 0.1


@dataclasses.dataclass(frozen=True)
class Timing:
    """The production timings (2 s interval, PHP retry sleep 150–350 ms, 60 s budget,
    mtpoold's 50–150 ms jitter, a 300 ms call) multiplied by ``scale``; all in seconds."""

    scale: float

    @property
    def interval_s(self) -> float:
        return 2.0 * self.scale  # proxy_throttle_sec = 2

    @property
    def retry_sleep_s(self) -> tuple[float, float]:
        return (0.150 * self.scale, 0.350 * self.scale)  # usleep(rand(150, 350) * 1000)

    @property
    def budget_s(self) -> float:
        return 60.0 * self.scale  # a job gives up waiting for the throttle after 60 s

    @property
    def jitter_s(self) -> tuple[float, float]:
        return (0.050 * self.scale, 0.150 * self.scale)  # mtpoold's DEFAULT_JITTER_S

    @property
    def call_s(self) -> float:
        return 0.300 * self.scale  # the call each job makes once it has its slot


SCALED: Final = Timing(SCALE)  # this scenario's
INTERVAL_S: Final = SCALED.interval_s
RETRY_SLEEP_S: Final = SCALED.retry_sleep_s
BUDGET_S: Final = SCALED.budget_s
JITTER_S: Final = SCALED.jitter_s
CALL_S: Final = SCALED.call_s
TOLERANCE_S: Final = 0.001  # gaps shorter than interval - 1 ms count as violations

# Laravel's RedisStore::add (Illuminate\Cache\LuaScripts::add), with setex -> psetex for ms TTLs.
ADD_LUA: Final = (
    "return redis.call('exists',KEYS[1])<1 and redis.call('psetex',KEYS[1],ARGV[2],ARGV[1])"
)


# --- the PHP baseline (runs in worker processes) ------------------------------------------------


def php_worker(
    port: int, proxy: int, worker: int, t0: float, t_end: float, seed: int, scale: float = SCALE
) -> Any:
    """One Laravel queue worker: jobs for one proxy, one at a time, until ``t_end``, at the
    `Timing` of ``scale``.

    Times are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by all processes).
    """
    timing = Timing(scale)
    import redis

    rng = random.Random(seed)
    r = redis.Redis(host="127.0.0.1", port=port)
    key = f"laravel_cache:proxy_throttle:proxy{proxy}"
    ttl_ms = round(timing.interval_s * 1000)
    r.ping()
    ready = time.monotonic()
    time.sleep(max(0.0, t0 - time.monotonic()))
    jobs: list[tuple[float, float | None]] = []
    while time.monotonic() < t_end:
        arrival = time.monotonic()
        start = None
        while True:
            if r.eval(ADD_LUA, 1, key, 1, ttl_ms):
                start = time.monotonic()
                break
            if time.monotonic() - arrival >= timing.budget_s:
                break  # the job fails: "proxy throttle wait exceeded"
            time.sleep(rng.uniform(*timing.retry_sleep_s))
        jobs.append((arrival, start))
        if start is not None:
            time.sleep(timing.call_s)
    return {"proxy": proxy, "worker": worker, "ready": ready, "jobs": jobs}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(host="127.0.0.1", port=port).ping()
            return proc, port
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def run_php(proxies: int, workers: int, duration_s: float) -> list[dict[str, Any]]:
    """Run the PHP baseline: redis-server + proxies × workers processes."""
    redis_proc, port = _start_redis()
    try:
        n = proxies * workers
        t0 = time.monotonic() + 1.0 + 0.08 * n  # time for every interpreter to start
        t_end = t0 + duration_s
        procs = [
            subprocess.Popen(
                child_command(
                    "bench.gate:php_worker",
                    port=port,
                    proxy=p,
                    worker=w,
                    t0=t0,
                    t_end=t_end,
                    seed=p * 1000 + w,
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for p in range(proxies)
            for w in range(workers)
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=duration_s + BUDGET_S + 120)
            if proc.returncode != 0:
                raise RuntimeError(f"php worker failed: {err[-2000:]}")
            results.append(parse_child_output(out))
        late = sum(1 for r in results if r["ready"] > t0)
        return [{"t0": t0, "t_end": t_end, "late_workers": late, "workers": results}]
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


# --- mtpoold (runs in one child process) ----------------------------------------------------------


def mtpoold_lanes(proxies: int, workers: int, duration_s: float) -> Any:
    """The same workload through mtpoold's ProxyLane (capacity 1, the config default)."""
    import trio

    from mtpoold._lane import ProxyLane
    from mtpoold._promptwake import SPIN_S, PromptWake

    out: dict[str, Any] = {}

    async def main() -> None:
        wake = PromptWake()  # one for all lanes, as the pool's (`mtpoold._pool.Pool`)
        lanes = [
            ProxyLane(
                key=f"p{p}",
                name=f"p{p}",
                type="socks5",
                capacity=1,
                interval_s=INTERVAL_S,
                jitter_s=JITTER_S,
                rng=random.Random(p),
                wake=wake,
            )
            for p in range(proxies)
        ]
        t0 = trio.current_time() + 0.5
        t_end = t0 + duration_s
        results: list[dict[str, Any]] = []

        async def worker(p: int, w: int) -> None:
            jobs: list[tuple[float, float | None]] = []
            await trio.sleep_until(t0)
            while trio.current_time() < t_end:
                arrival = trio.current_time()
                start = None
                with trio.move_on_at(arrival + BUDGET_S) as budget:
                    async with lanes[p].slot() as started:
                        start = started
                        budget.deadline = math.inf  # the budget is for waiting only
                        await trio.sleep(CALL_S)
                jobs.append((arrival, start))
            results.append({"proxy": p, "worker": w, "ready": t0, "jobs": jobs})

        async with trio.open_nursery() as nursery:
            for p in range(proxies):
                for w in range(workers):
                    nursery.start_soon(worker, p, w)
        out.update(
            t0=t0,
            t_end=t_end,
            late_workers=0,
            workers=results,
            spin_s=SPIN_S,
            spins=wake.spins,
            spins_skipped=wake.skipped,
        )

    trio.run(main)
    return [out]


# --- analysis -------------------------------------------------------------------------------------


def analyse(
    run: dict[str, Any], proxies: int, workers: int, timing: Timing = SCALED
) -> list[dict[str, float]]:
    """Per-proxy figures of one run at ``timing``."""
    t0, t_end = run["t0"], run["t_end"]
    interval_s = timing.interval_s
    warm = t0 + workers * interval_s  # the first round of a full queue is not steady state
    rows = []
    for p in range(proxies):
        mine = [w for w in run["workers"] if w["proxy"] == p]
        starts = sorted(s for w in mine for _, s in w["jobs"] if s is not None and t0 <= s <= t_end)
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        per_worker = [
            sum(1 for _, s in w["jobs"] if s is not None and t0 <= s <= t_end) for w in mine
        ]
        waits: list[float] = []
        gave_up = 0
        for w in mine:
            for arrival, s in w["jobs"]:
                if not warm <= arrival <= t_end:
                    continue
                if s is None:
                    gave_up += 1
                    waits.append(timing.budget_s)  # censored: it waited the whole budget
                else:
                    waits.append(s - arrival)
        mean_gap = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else math.nan
        rows.append(
            {
                "proxy": p,
                "starts": len(starts),
                "utilization": interval_s / mean_gap,
                "min_gap": min(gaps) if gaps else math.nan,
                "violations": sum(1 for g in gaps if g < interval_s - TOLERANCE_S),
                "jobs": len(waits),
                "p50": percentile(waits, 50),
                "p95": percentile(waits, 95),
                "p99": percentile(waits, 99),
                "max": max(waits) if waits else math.nan,
                "gave_up": gave_up,
                "jain": jain(per_worker),
            }
        )
    return rows


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    return {
        "utilization": min(r["utilization"] for r in rows),
        "min_gap": min(r["min_gap"] for r in rows),
        "violations": sum(r["violations"] for r in rows),
        "p50": max(r["p50"] for r in rows),
        "p99": max(r["p99"] for r in rows),
        "max": max(r["max"] for r in rows),
        "gave_up": sum(r["gave_up"] for r in rows),
        "jobs": sum(r["jobs"] for r in rows),
        "jain": min(r["jain"] for r in rows),
    }


def _table(label: str, rows: list[dict[str, float]]) -> list[str]:
    lines = [
        f"**{label}**",
        "",
        "| proxy | starts | utilization | min gap | violations | wait p50 | p95 | p99 | max "
        "| gave up (60 s) | Jain |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| p{r['proxy']} | {r['starts']} | {r['utilization'] * 100:.2f} % "
            f"| {ms(r['min_gap'], 2)} | {r['violations']} | {ms(r['p50'], 0)} | {ms(r['p95'], 0)} "
            f"| {ms(r['p99'], 0)} | {ms(r['max'], 0)} | {r['gave_up']} / {r['jobs']} "
            f"| {r['jain']:.4f} |"
        )
    return lines + [""]


def gate_rows(
    report: Report,
    a: dict[str, float],
    b: dict[str, float],
    ideal: float,
    *,
    utilization_goal: float,
    every_wait: bool = False,
    interval_s: float = INTERVAL_S,
) -> None:
    """The summary rows a gate comparison shares (this scenario's and `bench.cluster`'s):
    utilization, gaps and violations, waits, budget, fairness — mtpoold's summary ``a`` against
    the PHP baseline's ``b`` (`_summary`), ``ideal`` the FIFO ideal wait (s); ``every_wait``
    adds the p50 and max rows; ``interval_s`` the run's interval (s)."""
    report.row(
        "utilization of 1/interval (worst proxy)",
        f"{a['utilization'] * 100:.2f} %",
        f"{b['utilization'] * 100:.2f} %",
        f"{a['utilization'] / b['utilization']:.3f}x",
        f">= {utilization_goal * 100:g} %",
        a["utilization"] >= utilization_goal,
    )
    report.row(
        "min gap between starts / violations",
        f"{ms(a['min_gap'], 2)} / {a['violations']}",
        f"{ms(b['min_gap'], 2)} / {b['violations']}",
        "",
        f"0 violations (gap < {ms(interval_s - TOLERANCE_S, 0)})",
        a["violations"] == 0,
    )
    if every_wait:
        report.row("wait p50 (worst proxy)", ms(a["p50"], 0), ms(b["p50"], 0), "")
    report.row(
        "wait p99 (worst proxy)",
        ms(a["p99"], 0),
        ms(b["p99"], 0),
        f"{b['p99'] / a['p99']:.2f}x lower" if a["p99"] > 0 else "",
        f"<= FIFO ideal {ms(ideal, 0)} + {ms(interval_s, 0)}",
        a["p99"] <= ideal + interval_s,
    )
    if every_wait:
        report.row("wait max", ms(a["max"], 0), ms(b["max"], 0), "")
    report.row(
        "jobs that hit the 60 s budget",
        f"{a['gave_up']} / {a['jobs']}",
        f"{b['gave_up']} / {b['jobs']}",
        "",
    )
    report.row(
        "Jain fairness (worst proxy)",
        f"{a['jain']:.4f}",
        f"{b['jain']:.4f}",
        "",
        ">= 0.99",
        a["jain"] >= 0.99,
    )


def run(*, quick: bool) -> Report:
    from ._common import run_child

    proxies, workers = 4, 12
    duration = 10.0 if quick else 40.0
    report = Report(NAME, TITLE)
    php = run_php(proxies, workers, duration)[0]
    mine = run_child(
        "bench.gate:mtpoold_lanes", proxies=proxies, workers=workers, duration_s=duration
    )[0]
    php_rows, our_rows = analyse(php, proxies, workers), analyse(mine, proxies, workers)
    a, b = _summary(our_rows), _summary(php_rows)
    ideal = workers * INTERVAL_S - CALL_S

    gate_rows(report, a, b, ideal, utilization_goal=0.995, every_wait=True)

    report.details += [
        f"Workload: {proxies} proxies × {workers} workers per proxy, {duration:g} s "
        f"(= {duration / SCALE:g} s unscaled), time scale {SCALE:g}: interval "
        f"{ms(INTERVAL_S, 0)}, PHP retry sleep {ms(RETRY_SLEEP_S[0], 0)}–{ms(RETRY_SLEEP_S[1], 0)},"
        f" budget {BUDGET_S:g} s, mtpoold jitter {ms(JITTER_S[0], 0)}–{ms(JITTER_S[1], 0)}, "
        f"each job's call {ms(CALL_S, 0)}. FIFO ideal wait = workers × interval − call = "
        f"{ms(ideal, 0)}.",
        "",
    ]
    report.details += _table(
        "mtpoold (ProxyLane: CapacityLimiter(1) + RateGate, one trio process)", our_rows
    )
    report.details += _table(
        f"PHP baseline (redis-server + {proxies * workers} worker processes, Cache::add Lua)",
        php_rows,
    )
    if php["late_workers"]:
        report.notes.append(f"{php['late_workers']} PHP workers were not ready at t0.")
    lateness = INTERVAL_S / a["utilization"] - INTERVAL_S
    production_interval_s = INTERVAL_S / SCALE
    report.values.update(
        tolerance=ms(TOLERANCE_S, 0),
        php_sleep=f"{ms(RETRY_SLEEP_S[0], 0)}–{ms(RETRY_SLEEP_S[1], 0)}",
        interval=ms(INTERVAL_S, 0),
        scale=f"{SCALE:g}",
        production_interval=f"{production_interval_s:g} s",
        lateness=ms(lateness, 2),
        lateness_share=f"{lateness / INTERVAL_S * 100:.2f} %",
        utilization=f"{a['utilization'] * 100:.2f} %",
        utilization_goal="99.5 %",
        production_utilization=(
            f"{production_interval_s / (production_interval_s + lateness) * 100:.2f} %"
        ),
        php_violations=str(b["violations"]),
        php_gave_up=f"{b['gave_up']} / {b['jobs']}",
        php_jain=f"{b['jain']:.4f}",
        spin=ms(mine["spin_s"], 0),
        spins=str(mine["spins"]),
        spins_skipped=str(mine["spins_skipped"]),
        starts_per_s=f"{proxies / INTERVAL_S:g}",
    )
    return report


ANALYSIS: Final = """
**Definitions.** *Utilization* = interval ÷ mean gap between consecutive starts on a proxy over
the run (one start every interval is the ceiling). *Violation* = a gap shorter than the
interval minus {tolerance} (timestamps are taken where the worker proceeds to its call, i.e.
what the proxy sees). *Wait* = arrival at the gate → start, for jobs arriving after the first
full round (workers × interval) of a saturated queue; a job that gives up counts as a wait of
the whole budget. *Jain's fairness index* = (Σxᵢ)² / (n·Σxᵢ²) over xᵢ = starts won by worker
i of a proxy during the run: one when every worker gets the same share, one over n when one
worker gets all. The *FIFO ideal* wait of a saturated proxy is workers × interval − call time.

**Why the PHP gate loses.** After the Redis key expires, the next start waits for whichever
worker's random {php_sleep} sleep (scaled) ends first, so every gap is the interval plus a
polling delay (utilization below the ceiling); who wins is random, so waits have a long tail,
some jobs exhaust the budget while others go straight through ({php_gave_up} gave up in this
run), and per-worker shares are far from equal (Jain {php_jain}). The TTL spaces the *Redis
writes*, not the calls: a worker that is scheduled late after its `EVAL` returns makes the
next gap shorter than the interval ({php_violations} violations in this run). mtpoold's gate
is a FIFO with one reservation at the head and `sleep_until`, so every waiter gets its turn in
order and no start is ever closer than the interval.

**What limits mtpoold.** The mean gap is the interval plus each start's wake-up lateness:
{lateness} per start in this run, {lateness_share} of the scaled {interval} interval, hence a
worst-proxy utilization of {utilization} against the {utilization_goal} goal.
`RateGate.wait_for_slot` (mtpoold/_gate.py) counts the next reservation from the *real* start,
so lateness is never recovered, and a plain `trio.sleep_until` wakes late (epoll's millisecond
timeout is rounded up, and an idle VM wakes slowly). So the gate sleeps until {spin} before
its slot and spins the rest with checkpoints (`mtpoold._promptwake`), within the pool's CPU
budget: {spins} starts spun, {spins_skipped} left to a plain sleep when the budget was spent
(this scaled run asks for {starts_per_s} starts a second).
At the production {production_interval} interval the same lateness would give
{production_utilization}.
"""
