"""Scenario 7: three mtpoold nodes sharing proxies through Redis vs the PHP gate on the same Redis.

Issue 15's cluster: every node runs the daemon's own lane per proxy (`mtpoold._lane.ProxyLane`,
capacity 1 as the config's default, in cluster mode) on the proxy's shared gate in Redis
(`mtpoold._clustergate.SharedGate`: one atomic reservation ``start = max(now + jitter, last
start + its window + interval)`` in Redis's clock per call start, one round trip, no polling;
the lane starts at that slot mapped onto its clock, or reserves again if it would be later than
its window, which the node chooses from its own wake-ups, `mtpoold._startwindow`). Each node is a
separate process on its own trio-asyncio loop and `mtpoold._redislink.RedisLink`, holds a
fenced lease (`mtpoold._leases.LeaseBook`) on one account per worker, renews it and beats its
node heartbeat every lease_s / 3 as the daemon's cluster task does, and passes the lease to
every reservation (the gate checks it atomically). Workers loop "wait for a start slot, make a
call of CALL_S, repeat", W per proxy in total, spread over the nodes.

The PHP baseline is the gate scenario's (`bench.gate.php_worker`: Laravel's ``Cache::add``
throttle, a random 150–350 ms sleep between tries, one job at a time per worker process), the
same P × W workload, on the same ``redis-server`` in the same run, one phase after the other
(sharing two cores at once would measure the contention, not the gates). The full run is at
the production timings (`FULL`: scale 1, the shipped 2 s interval), the quick one scaled by
`bench.gate.SCALE` as there (`QUICK`). Redis round trips per job: mtpoold's are every command
and script the nodes sent (``RedisLink.round_trips``: reservations, lease renewals, heartbeats, the
initial acquire) over the jobs started; the PHP side's are Redis's own count of ``EVAL`` calls
(``INFO commandstats``) over its jobs started.
"""

from __future__ import annotations

import math
import random
import subprocess
import time
from typing import Any, Final

from ._common import Report, child_command, ms, parse_child_output
from .gate import (
    SCALE,
    TOLERANCE_S,
    Timing,
    _free_port,
    _summary,
    _table,
    analyse,
    gate_rows,
)

NAME: Final = "cluster"
TITLE: Final = "7. Cluster: three nodes on one Redis gate vs the PHP Cache::add gate"

NODES: Final = 3
PREFIX: Final = "mtpoold:"
#: The full run is at the production timings (scale 1: the shipped 2 s interval): a start's
#: wake-up lateness and the cushion are fixed costs in ms, which a 10x scaled-down interval
#: would weigh 10x (scenario `gate`'s note); the quick run is scaled like `gate`'s.
FULL: Final = {"proxies": 4, "workers": 12, "duration_s": 300.0, "scale": 1.0}
QUICK: Final = {"proxies": 4, "workers": 12, "duration_s": 10.0, "scale": SCALE}


def lease_s(scale: float) -> float:
    """The ``[cluster] lease_s`` default (15 s) at ``scale``, s."""
    return 15.0 * scale


# --- one mtpoold node (runs in its own process) ---------------------------------------------


def node(
    port: int,
    name: str,
    index: int,
    nodes: int,
    proxies: int,
    workers: int,
    t0: float,
    t_end: float,
    seed: int,
    scale: float = SCALE,
) -> Any:
    """One node: its share of every proxy's W workers (worker w belongs to node w % nodes),
    each with its own account and lease, through a local lane and the shared gate, at the
    `bench.gate.Timing` of ``scale``.

    Times are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by all processes).
    """
    import trio

    from mtpoold._aioloop import open_aio_loop
    from mtpoold._clustergate import SharedGate
    from mtpoold._clusternodes import NodeRegistry
    from mtpoold._gcpause import freeze_start_up
    from mtpoold._lane import LeaseUnconfirmed, ProxyLane
    from mtpoold._leases import LeaseBook
    from mtpoold._promptwake import SPIN_S, PromptWake
    from mtpoold._redisclock import RedisClock
    from mtpoold._redislink import ClusterUnavailable, open_redis_link
    from mtpoold._startwindow import StartWindow

    timing, lease = Timing(scale), lease_s(scale)
    mine = [(p, w) for p in range(proxies) for w in range(workers) if w % nodes == index]
    out: dict[str, Any] = {}
    rtt: list[float] = []
    lateness: list[float] = []  # trio clock s from a slot's earliest instant to the wake-up
    windows: list[float] = []  # the window each reservation asked for, s
    #: (s since t0, lateness s, window s, clock bounds' width s) per wake-up: where in the run
    #: the late ones fell, and how much of each was the Redis clock's uncertainty
    late_log: list[tuple[float, float, float, float]] = []

    class Shared:
        """The daemon's `SharedStart` (`mtpoold._clusterrun`), without a ClusterNode: the
        lease from the book, the slot from the proxy's gate."""

        def __init__(self, gate: SharedGate, book: LeaseBook, window: StartWindow) -> None:
            self.gate, self.book, self.window = gate, book, window
            self.earliest: dict[str, float] = {}
            self.window_of: dict[str, float] = {}
            self.width_of: dict[str, float] = {}

        def clock_spread_s(self) -> float:
            return self.gate.clock.spread_s()

        async def reserve(
            self, account_id: str | None, *, connecting: bool, interval_s: float, window_s: float
        ) -> tuple[float, float]:
            assert account_id is not None
            sent = time.monotonic()
            slot = await self.gate.reserve_at(self.book.lease(account_id), window_s=window_s)
            rtt.append(time.monotonic() - sent)
            windows.append(window_s)
            self.earliest[account_id] = slot[1]
            self.window_of[account_id] = window_s
            self.width_of[account_id] = slot[0] - slot[1]
            return slot

        def confirm(self, account_id: str | None) -> None:
            if account_id is not None:
                late = trio.current_time() - self.earliest[account_id]
                lateness.append(late)
                late_log.append(
                    (
                        time.monotonic() - t0,
                        late,
                        self.window_of[account_id],
                        self.width_of[account_id],
                    )
                )
            if account_id is not None and self.book.lease(account_id) is None:
                raise LeaseUnconfirmed(account_id, "lease ran out")

    async def main() -> None:
        async with (
            open_aio_loop(),
            open_redis_link(
                url=f"redis://127.0.0.1:{port}/0", password=None, key_prefix=PREFIX
            ) as link,
        ):
            book = LeaseBook(link, name, lease_s=lease, disconnect_delay_s=lease)
            registry = NodeRegistry(
                link, name, lease_s=lease, info={"rpc": "", "pid": 0, "started_unix": 0}
            )
            accounts = {(p, w): f"p{p}-w{w}" for p, w in mine}
            held: dict[str, Any] = {}
            while len(held) < len(accounts):  # the epoch's first quarantine, if any
                try:
                    held.update(await book.acquire([a for a in accounts.values() if a not in held]))
                except ClusterUnavailable:
                    pass
                if len(held) < len(accounts):
                    await trio.sleep(0.05)
            clock, window = RedisClock(), StartWindow()  # the node's, as `ClusterNode`'s
            wake = PromptWake()  # the node's, as the pool's (`mtpoold._pool.Pool`)
            lanes = [
                ProxyLane(
                    key=f"p{p}",
                    name=f"p{p}",
                    type="socks5",
                    capacity=1,
                    interval_s=timing.interval_s,
                    jitter_s=timing.jitter_s,
                    shared=Shared(
                        SharedGate(
                            link,
                            f"p{p}",
                            timing.interval_s,
                            timing.jitter_s,
                            random.Random(seed * 100 + p),
                            clock=clock,
                        ),
                        book,
                        window,
                    ),
                    wake=wake,
                )
                for p in range(proxies)
            ]
            results: list[dict[str, Any]] = []
            freeze_start_up()  # as `mtpoold run` does once ready (mtpoold/_gcpause.py)
            ready = time.monotonic()
            lost: list[str] = []

            async def cluster_task() -> None:
                while True:
                    await trio.sleep(lease / 3)
                    lost.extend(await book.renew(list(accounts.values())))
                    await registry.heartbeat()

            async def worker(p: int, w: int) -> None:
                account = accounts[(p, w)]
                jobs: list[tuple[float, float | None]] = []
                while time.monotonic() < t_end:
                    arrival = time.monotonic()
                    start = None
                    with trio.move_on_after(timing.budget_s):  # the budget: waiting only
                        async with lanes[p].slot(account=account):
                            start = time.monotonic()
                            with trio.CancelScope(shield=True):  # the call is not the wait
                                await trio.sleep(timing.call_s)
                    jobs.append((arrival, start))
                results.append({"proxy": p, "worker": w, "ready": ready, "jobs": jobs})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cluster_task)  # the leases are renewed from the start
                await trio.sleep(max(0.0, t0 - time.monotonic()))
                trips_at_t0 = link.round_trips
                async with trio.open_nursery() as inner:
                    for p, w in mine:
                        inner.start_soon(worker, p, w)
                trips = link.round_trips - trips_at_t0
                nursery.cancel_scope.cancel()
            await book.release(list(accounts.values()))
        out.update(
            node=name,
            workers=results,
            round_trips=trips,
            lost=lost,
            late_reservations=sum(lane.late_reservations for lane in lanes),
            reserve_rtt_p50=_pct(rtt, 50),
            reserve_rtt_p99=_pct(rtt, 99),
            lateness_p50=_pct(lateness, 50),
            lateness_p99=_pct(lateness, 99),
            lateness_max=max(lateness, default=0.0),
            lateness_p90=_pct(lateness, 90),
            late_log=late_log,
            window_p50=_pct(windows, 50),
            window_max=max(windows, default=0.0),
            window_mean=sum(windows) / len(windows) if windows else 0.0,
            spin_s=SPIN_S,
            spins=wake.spins,
            spins_skipped=wake.skipped,
        )

    trio.run(main)
    return out


def _pct(values: list[float], q: float) -> float:
    from ._common import percentile

    return percentile(values, q)


# --- the two phases ------------------------------------------------------------------------------


def _eval_calls(port: int) -> int:
    import redis

    with redis.Redis(host="127.0.0.1", port=port) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


def _spawn(target: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        child_command(target, **kwargs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _collect(procs: list[subprocess.Popen[str]], timeout_s: float) -> list[Any]:
    """Every child's result; each child is waited for (or killed past ``timeout_s``) and its
    pipes read before the first failure is raised."""
    deadline = time.monotonic() + timeout_s
    outputs: list[tuple[int | None, str, str]] = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "\n(killed: timed out)"
        outputs.append((proc.returncode, out, err))
    for code, _, err in outputs:
        if code != 0:
            raise RuntimeError(f"child failed ({code}): {err[-2000:]}")
    return [parse_child_output(out) for _, out, _ in outputs]


def run_php_phase(
    port: int, proxies: int, workers: int, duration_s: float, scale: float = SCALE
) -> dict[str, Any]:
    """The PHP workers (`bench.gate.php_worker`) on the running redis-server at ``port``, at
    the timings of ``scale``."""
    evals_before = _eval_calls(port)
    n = proxies * workers
    t0 = time.monotonic() + 2.0 + 0.3 * n  # every interpreter started (2 busy cores)
    t_end = t0 + duration_s
    procs = [
        _spawn(
            "bench.gate:php_worker",
            port=port,
            proxy=p,
            worker=w,
            t0=t0,
            t_end=t_end,
            seed=p * 1000 + w,
            scale=scale,
        )
        for p in range(proxies)
        for w in range(workers)
    ]
    results = _collect(procs, duration_s + Timing(scale).budget_s + 120)
    late = sum(1 for r in results if r["ready"] > t0)
    return {
        "t0": t0,
        "t_end": t_end,
        "late_workers": late,
        "workers": results,
        "round_trips": _eval_calls(port) - evals_before,
    }


def run_cluster_phase(
    port: int,
    proxies: int,
    workers: int,
    duration_s: float,
    nodes: int = NODES,
    scale: float = SCALE,
) -> dict[str, Any]:
    """``nodes`` node processes (`node`) on the running redis-server at ``port``, at the
    timings of ``scale``."""
    # interpreters, mtpoold imports, and the acquire, which waits out a new epoch's
    # quarantine (`mtpoold._leases`: lease_s + the disconnect delay, lease_s here; this Redis
    # is new)
    t0 = time.monotonic() + 4.0 + 1.5 * nodes + 2 * lease_s(scale)
    t_end = t0 + duration_s
    procs = [
        _spawn(
            "bench.cluster:node",
            port=port,
            name=f"node{i}",
            index=i,
            nodes=nodes,
            proxies=proxies,
            workers=workers,
            t0=t0,
            t_end=t_end,
            seed=i + 1,
            scale=scale,
        )
        for i in range(nodes)
    ]
    results = _collect(procs, duration_s + Timing(scale).budget_s + 120)
    return {
        "t0": t0,
        "t_end": t_end,
        "late_workers": sum(1 for r in results for w in r["workers"] if w["ready"] > t0),
        "workers": [w for r in results for w in r["workers"]],
        "nodes": results,
        "round_trips": sum(r["round_trips"] for r in results),
    }


def _start_redis() -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server on a free loopback port, no persistence (as `bench.gate`'s), once it
    answers PING."""
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis(host="127.0.0.1", port=port) as client:
                client.ping()
            return proc, port
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def measure(
    proxies: int, workers: int, duration_s: float, nodes: int = NODES, scale: float = SCALE
) -> dict[str, Any]:
    """Both phases on one redis-server, at the timings of ``scale``: PHP first, then the
    cluster."""
    redis_proc, port = _start_redis()
    try:
        php = run_php_phase(port, proxies, workers, duration_s, scale)
        ours = run_cluster_phase(port, proxies, workers, duration_s, nodes, scale)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    return {
        "php": php,
        "cluster": ours,
        "proxies": proxies,
        "workers": workers,
        "nodes": nodes,
        "duration_s": duration_s,
        "scale": scale,
    }


# --- the report --------------------------------------------------------------------------------


def _started(run: dict[str, Any]) -> int:
    return sum(1 for w in run["workers"] for _, s in w["jobs"] if s is not None)


def build_report(res: dict[str, Any]) -> Report:
    """The summary rows, tables and analysis values of one `measure` result."""
    proxies, workers, nodes = res["proxies"], res["workers"], res["nodes"]
    duration, scale = res["duration_s"], res["scale"]
    timing, lease = Timing(scale), lease_s(scale)
    interval_s = timing.interval_s
    php, ours = res["php"], res["cluster"]
    php_rows = analyse(php, proxies, workers, timing)
    our_rows = analyse(ours, proxies, workers, timing)
    a, b = _summary(our_rows), _summary(php_rows)
    rt_a = ours["round_trips"] / max(1, _started(ours))
    rt_b = php["round_trips"] / max(1, _started(php))
    ideal = workers * interval_s - timing.call_s
    report = Report(NAME, TITLE)
    gate_rows(report, a, b, ideal, utilization_goal=0.99, interval_s=interval_s)
    report.row(
        "Redis round trips per job",
        f"{rt_a:.2f}",
        f"{rt_b:.2f}",
        f"{rt_b / rt_a:.1f}x fewer" if rt_a > 0 else "",
        "<= 2",
        rt_a <= 2,
    )
    lost = sum(len(n["lost"]) for n in ours["nodes"])
    rtt50 = max(n["reserve_rtt_p50"] for n in ours["nodes"])
    rtt99 = max(n["reserve_rtt_p99"] for n in ours["nodes"])
    report.details += [
        f"Workload: {proxies} proxies × {workers} workers per proxy ({nodes} nodes, worker w on "
        f"node w mod {nodes}), {duration:g} s per phase (= {duration / scale:g} s unscaled), "
        f"time scale {scale:g}: interval {ms(interval_s, 0)}, call {ms(timing.call_s, 0)}, "
        f"lease {lease:g} s (renewed every {lease / 3:g} s), jitter "
        f"{ms(timing.jitter_s[0], 0)}–{ms(timing.jitter_s[1], 0)}. Reservation round trip "
        f"(worst node) p50 {ms(rtt50, 2)}, p99 {ms(rtt99, 2)}; leases lost during the run: "
        f"{lost}.",
        "",
        "| node | round trips | jobs started | per job | wake-up lateness p50 / p90 / p99 / max "
        "| window mean / max | slots missed |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in ours["nodes"]:
        started = sum(1 for w in n["workers"] for _, s in w["jobs"] if s is not None)
        late = " / ".join(
            ms(n.get(k, math.nan), 2)
            for k in ("lateness_p50", "lateness_p90", "lateness_p99", "lateness_max")
        )
        report.details.append(
            f"| {n['node']} | {n['round_trips']} | {started} "
            f"| {n['round_trips'] / max(1, started):.2f} | {late} "
            f"| {ms(n['window_mean'], 2)} / {ms(n['window_max'], 2)} "
            f"| {n.get('late_reservations', 0)} |"
        )
    report.details.append("")
    report.details += _table(
        f"mtpoold cluster ({nodes} node processes, SharedGate + LeaseBook on one redis-server)",
        our_rows,
    )
    report.details += _table(
        f"PHP baseline (the same redis-server, {proxies * workers} worker processes, Cache::add)",
        php_rows,
    )
    for label, run in (("PHP", php), ("cluster", ours)):
        if run["late_workers"]:
            report.notes.append(f"{run['late_workers']} {label} workers were not ready at t0.")
    lateness = interval_s / a["utilization"] - interval_s if a["utilization"] > 0 else math.nan
    window_mean = sum(n["window_mean"] for n in ours["nodes"]) / len(ours["nodes"])
    report.values.update(
        nodes=str(nodes),
        tolerance=ms(TOLERANCE_S, 0),
        interval=ms(interval_s, 0),
        utilization=f"{a['utilization'] * 100:.2f} %",
        php_utilization=f"{b['utilization'] * 100:.2f} %",
        lateness=ms(lateness, 2),
        violations=str(a["violations"]),
        php_violations=str(b["violations"]),
        min_gap=ms(a["min_gap"], 2),
        p99=ms(a["p99"], 0),
        php_p99=ms(b["p99"], 0),
        ideal=ms(ideal, 0),
        jain=f"{a['jain']:.4f}",
        php_jain=f"{b['jain']:.4f}",
        round_trips=f"{rt_a:.2f}",
        php_round_trips=f"{rt_b:.2f}",
        window=ms(window_mean, 2),
        window_max=ms(max(n["window_max"] for n in ours["nodes"]), 2),
        window_share=f"{window_mean / (interval_s + window_mean) * 100:.2f} %",
        late_p99=ms(max(n["lateness_p99"] for n in ours["nodes"]), 2),
        late_reservations=str(sum(n.get("late_reservations", 0) for n in ours["nodes"])),
        spins=str(sum(n.get("spins", 0) for n in ours["nodes"])),
        spins_skipped=str(sum(n.get("spins_skipped", 0) for n in ours["nodes"])),
        spin=ms(ours["nodes"][0].get("spin_s", math.nan), 0),
        rtt_p50=ms(rtt50, 2),
        rtt_p99=ms(rtt99, 2),
        renew_interval=f"{lease / 3:g} s",
        lost=str(lost),
    )
    return report


def run(*, quick: bool) -> Report:
    from ._common import run_child

    sizes = QUICK if quick else FULL
    res = run_child("bench.cluster:measure", timeout_s=900.0, **sizes)
    return build_report(res)


ANALYSIS: Final = """
**Definitions** as in the `gate` scenario (utilization, violation: a gap shorter than the
interval minus {tolerance}, wait, Jain's index over the workers of a proxy, FIFO ideal). Here
the workers of a proxy sit in {nodes} processes; the starts are timestamped on the shared
monotonic clock where each worker proceeds to its call.

**The shared gate.** Each start costs one reservation script in Redis (round trip p50
{rtt_p50}, p99 {rtt_p99} on the worst node), which stores the start it hands out plus its
window: the next caller, from whichever node, is given that plus the interval, so the chain of
starts is exact in Redis's clock and a node's wake-up lateness does not push the next start
back. The worst proxy ran at {utilization} of one start per interval ({lateness} per start above the
{interval} interval), wait p99 {p99} against the FIFO ideal {ideal}, Jain {jain}. Round trips
per job, with lease renewals and heartbeats every {renew_interval} counted in: {round_trips};
leases lost: {lost}.

**Where a start lands.** The reservation hands out a start on Redis's clock; the lane maps it
onto its own with the tightest bounds its recent round trips gave (`mtpoold._redisclock`), so a
slow reply does not make its start late, and starts at that instant. Each reservation carries
a window: how late after the earliest instant of its slot the start may still go. Redis hands
the next caller a slot at least the interval plus that window later, so two real starts
through one proxy never come closer than the interval: {violations} violations, the smallest
gap {min_gap}. A start found later than its window (a late wake-up on a busy core) is not
made: the slot is left unused and another reserved ({late_reservations} such in this run).
Each node chooses its window from its own last wake-ups, as the one that maximises a saturated
proxy's starts (a wider window costs every start, a narrower one loses the slots of the starts
it misses; `mtpoold._startwindow`): a mean of {window} here, at most {window_max}, with the
nodes' wake-up lateness at p99 {late_p99}. The window is the fixed cost: {window_share} of the
starts at this run's {interval} interval. The lateness is small because a lane does not sleep
right up to its slot: it sleeps until {spin} before it and spins the rest with checkpoints
(`mtpoold._promptwake`; {spins} wake-ups spun, {spins_skipped} left to a plain sleep by the
node's spin budget).

**The PHP gate on the same Redis**: {php_utilization} utilization, {php_violations}
violations, wait p99 {php_p99}, Jain {php_jain}, and {php_round_trips} `EVAL` round trips per
job (every failed `Cache::add` is one, and a waiting worker retries until the key expires).
"""
