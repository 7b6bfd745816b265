"""Scenario 4: 10,000 accounts on 1,000 proxies — start-up, memory, scheduling cost, statistics;
and a fleet of 100,000 idle accounts on 10,000 proxies — start-up, memory, statistics.

Scheduling figures use a zero-cost client (no network, no asyncio hop), so they measure the
pool alone. Each size runs in a fresh interpreter so RSS deltas are its own. Memory per
*connected* account uses real Telethon clients against the loopback DC (direct, interval 0).
"""

from __future__ import annotations

import gc
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from ._common import Report, ms, percentile, rss_bytes, run_child

NAME: Final = "scale"
TITLE: Final = "4. Scale: 10,000 accounts on 1,000 proxies; 100,000 on 10,000"
ACCOUNTS_PER_PROXY: Final = 10
#: Issue 14's large fleet: accounts, proxies.
FLEET: Final = (100_000, 10_000)
#: The per-job CPU figures are the median of this many batches of the probe's invokes.
BATCHES: Final = 5
#: Issue fourteen's goal for the pool's CPU per job with the zero-cost client (s).
INVOKE_GOAL_S: Final = 100e-6


class ZeroCostClient:
    """A client that answers at once: no I/O, no asyncio hop, no checkpoint."""

    def __init__(self, account: Any) -> None:
        self._connected = False
        self._answer = {"ok": True}

    async def connect(self) -> None:
        self._connected = True

    async def call(self, method: str, args: Any) -> dict[str, Any]:
        return self._answer

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        return self._answer

    async def get_messages(self, peer: Any, ids: Any) -> dict[str, Any]:
        return self._answer

    async def disconnect(self) -> None:
        self._connected = False

    def is_connected(self) -> bool:
        return self._connected


def config_dict(accounts: int, proxies: int, *, interval_s: float = 2.0) -> dict[str, Any]:
    return {
        "proxies": [
            {
                "name": f"p{i}",
                "type": "socks5",
                "host": "127.0.0.1",  # never dialled: the probe's client is zero-cost
                "port": 10_000 + i,
                "interval_s": interval_s,
            }
            for i in range(proxies)
        ],
        "accounts": [
            {
                "id": f"a{i}",
                "api_id": 1000 + i,
                "api_hash": f"{i:032x}",
                "session_string": f"bench-session-{i}",  # one auth key per account
                "proxy": f"p{i % proxies}",
            }
            for i in range(accounts)
        ],
    }


def _scheduler(pool: Any) -> tuple[Any, Any, Any]:
    """``(pick, reserve, release)`` of the pool's dispatcher (mtpoold/_dispatch.py): the
    decision the probe times (``Dispatcher._pick``, an account or None) and the two verbs an
    attempt takes and gives back an account with."""
    dispatch = pool._dispatch
    return dispatch._pick, dispatch.reserve, dispatch.release


class _RunLoopPasses:
    """A Trio instrument: passes of the run loop (one I/O wait each) and task steps."""

    def __init__(self) -> None:
        self.passes = 0
        self.steps = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1

    def before_task_step(self, task: Any) -> None:
        self.steps += 1


def idle_probe(accounts: int, proxies: int, picks: int, invokes: int) -> dict[str, Any]:
    """Child: build a pool of idle accounts and time what the scheduler does."""
    import trio

    from mtpoold._compose import open_pool
    from mtpoold._config import parse_config
    from mtpoold._dispatch import Job

    data = config_dict(accounts, proxies)
    ungated = config_dict(accounts, proxies, interval_s=0.0)  # reloaded before the invokes
    gc.collect()
    rss0 = rss_bytes()
    out: dict[str, Any] = {"accounts": accounts, "proxies": proxies}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        config = parse_config(data, base_dir=Path(tmp))
        out["parse_s"] = time.perf_counter() - t
        config0 = parse_config(ungated, base_dir=Path(tmp))
    del data, ungated

    async def main() -> None:
        t = time.perf_counter()
        # no session locks: fake sessions, and the probe measures the scheduler, not flock
        async with open_pool(config, client_factory=ZeroCostClient, lock_sessions=False) as pool:
            out["open_s"] = time.perf_counter() - t
            gc.collect()
            out["rss_idle_delta"] = rss_bytes() - rss0

            # one scheduling decision: _pick, then the reservation the pool makes
            pick, reserve, release = _scheduler(pool)
            job = Job(
                method="help.GetConfig",
                deadline_at=math.inf,
                account=None,
                tags=frozenset(),
                started_at=trio.current_time(),
            )
            times = []
            for _ in range(picks):
                t0 = time.perf_counter_ns()
                acc = pick(job, allow_avoided=False)
                times.append((time.perf_counter_ns() - t0) / 1e9)
                assert acc is not None
                reserve(acc)  # the attempt takes it, and gives it back after its call
                release(acc)
            out["pick_p50"] = percentile(times, 50)
            out["pick_p99"] = percentile(times, 99)

            # whole invoke path, sequential, zero-cost client: the same config with every
            # proxy at interval_s = 0 (an ungated lane, no jitter), applied by a real reload
            await pool.reload(config0)
            for _ in range(200):
                await pool.invoke("help.GetConfig", {})
            # CPU per job: the median of BATCHES batches (a shared VM's noise lands in some)
            lat = []
            batch = max(1, invokes // BATCHES)
            cpu = []
            for _ in range(BATCHES):
                c0 = time.process_time()
                for _ in range(batch):
                    t0 = time.perf_counter_ns()
                    await pool.invoke("help.GetConfig", {})
                    lat.append((time.perf_counter_ns() - t0) / 1e9)
                cpu.append((time.process_time() - c0) / batch)
            out["invoke_cpu"] = statistics.median(cpu)
            passes = _RunLoopPasses()  # exact, unlike CPU on a shared machine
            trio.lowlevel.add_instrument(passes)
            for _ in range(200):
                await pool.invoke("help.GetConfig", {})
            trio.lowlevel.remove_instrument(passes)
            out["invoke_passes"] = passes.passes / 200
            out["invoke_steps"] = passes.steps / 200
            out["invoke_p50"] = percentile(lat, 50)
            out["invoke_p99"] = percentile(lat, 99)
            # the same with arguments that differ on every job: each request is checked
            # (`check_request`: built and serialized) and keyed anew, as a fleet's first
            # look-up of each name is (mtpoold/_checkedrequests.py remembers identical ones)
            cpu = []
            for b in range(BATCHES):
                c0 = time.process_time()
                for i in range(b * batch, (b + 1) * batch):
                    await pool.invoke("help.GetAppConfig", {"hash": i})
                cpu.append((time.process_time() - c0) / batch)
            out["invoke_distinct_cpu"] = statistics.median(cpu)
            # Trio's primitives one job needs, alone in this process: the account lock, the
            # run's cancel scope with a deadline, the lane's capacity limiter (its acquire
            # is the job's schedule point) and its release
            lock, limiter = trio.Lock(), trio.CapacityLimiter(10)
            cpu = []
            for _ in range(BATCHES):
                c0 = time.process_time()
                for _ in range(batch):
                    lock.acquire_nowait()
                    with trio.CancelScope(deadline=trio.current_time() + 30):
                        await limiter.acquire()
                        limiter.release()
                    lock.release()
                cpu.append((time.process_time() - c0) / batch)
            out["trio_floor_cpu"] = statistics.median(cpu)

            snaps = []
            for _ in range(20):
                t0 = time.perf_counter()
                pool.statistics()
                snaps.append(time.perf_counter() - t0)
            out["stats_p50"] = percentile(snaps, 50)
            out["stats_max"] = max(snaps)
        out["close_s"] = time.perf_counter() - t - out["open_s"]

    trio.run(main)
    return out


def fleet_probe(accounts: int, proxies: int) -> dict[str, Any]:
    """Child: a very large idle fleet: start-up (parse_config + open_pool), RSS per idle
    account, ``statistics()`` with and without the per-account snapshots, a reload of the
    same config, close; and, apart, ``parse_config`` of the fleet with session files and
    the fleet's TOML text read by `mtpoold._config.parse_toml` and by tomllib."""
    import trio

    from mtpoold._compose import open_pool
    from mtpoold._config import parse_config

    data = config_dict(accounts, proxies)
    gc.collect()
    rss0 = rss_bytes()
    out: dict[str, Any] = {"accounts": accounts, "proxies": proxies}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        config = parse_config(data, base_dir=Path(tmp))
        out["parse_s"] = time.perf_counter() - t
    del data

    async def main() -> None:
        t = time.perf_counter()
        async with open_pool(config, client_factory=ZeroCostClient, lock_sessions=False) as pool:
            out["open_s"] = time.perf_counter() - t
            t = time.perf_counter()
            gc.collect()  # the collection start-up left for later (mtpoold/_gcpause.py)
            out["gc_after_open_s"] = time.perf_counter() - t
            out["rss_idle_delta"] = rss_bytes() - rss0
            for key, full, rounds in (("summary", False, 5), ("full", True, 3)):
                times = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    pool.statistics(accounts=full)
                    times.append(time.perf_counter() - t0)
                out[f"stats_{key}_p50"] = percentile(times, 50)
            t = time.perf_counter()
            await pool.reload(config)  # nothing changed: what SIGHUP costs a steady fleet
            out["reload_s"] = time.perf_counter() - t
            t = time.perf_counter()
        out["close_s"] = time.perf_counter() - t

    trio.run(main)
    # the same fleet with a session file per account (files that do not exist: the paths
    # are resolved, nothing is read), after the pool is gone: its own figure
    files = config_dict(accounts, proxies)
    for i, entry in enumerate(files["accounts"]):
        del entry["session_string"]
        entry["session"] = f"sessions/a{i}.session"
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        parse_config(files, base_dir=Path(tmp))
        out["parse_files_s"] = time.perf_counter() - t
    # the fleet's config file read as `load_config` reads it, and by tomllib alone
    import tomllib

    import rtoml

    from mtpoold._config import parse_toml

    text = rtoml.dumps(config_dict(accounts, proxies))
    out["toml_mb"] = len(text.encode()) / 1e6
    t = time.perf_counter()
    parse_toml(text)
    out["toml_read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tomllib.loads(text)
    out["tomllib_read_s"] = time.perf_counter() - t
    return out


def connected_probe(
    accounts: int, world_path: str, port: int, pem: str, concurrency: int
) -> dict[str, Any]:
    """Child: connect ``accounts`` real Telethon clients through the pool; RSS per connection."""
    import trio

    from mtpoold._compose import open_pool
    from mtpoold._config import parse_config

    from ._dc import session_strings

    sessions = session_strings(world_path, port, accounts)
    data = {
        "telegram": {"dc_id": 2, "dc_host": "127.0.0.1", "dc_port": port, "rsa_keys": [pem]},
        # the no-proxy lane: `concurrency` connects at once, ungated (default: 1 per 2 s)
        "direct": {"capacity": concurrency, "interval_s": 0.0},
        "accounts": [
            {
                "id": f"a{i}",
                "api_id": 12345,
                "api_hash": "0123456789abcdef0123456789abcdef",
                "session_string": s,
            }
            for i, s in enumerate(sessions)
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(data, base_dir=Path(tmp))
    out: dict[str, Any] = {"accounts": accounts}

    async def main() -> None:
        async with open_pool(config) as pool:
            gc.collect()
            rss0 = rss_bytes()
            ids = [a.id for a in config.accounts]
            t = time.perf_counter()

            async def connect_some(chunk: list[str]) -> None:
                for acc_id in chunk:
                    await pool.invoke("help.GetConfig", {}, account=acc_id)

            async with trio.open_nursery() as nursery:
                for k in range(concurrency):
                    nursery.start_soon(connect_some, ids[k::concurrency])
            out["connect_all_s"] = time.perf_counter() - t
            stats = pool.statistics()
            out["connected"] = sum(1 for a in stats.accounts if a.connected)
            gc.collect()
            out["rss_delta"] = rss_bytes() - rss0
            out["rss_total"] = rss_bytes()

    trio.run(main)
    return out


def run(*, quick: bool) -> Report:
    from ._dc import dc_process

    report = Report(NAME, TITLE)
    picks, invokes = (2000, 1000) if quick else (10_000, 5000)
    sizes = [(100, 10), (10_000, 1_000)] if quick else [(100, 10), (1_000, 100), (10_000, 1_000)]
    probes = {
        n: run_child("bench.scale:idle_probe", accounts=n, proxies=p, picks=picks, invokes=invokes)
        for n, p in sizes
    }
    small, big = probes[100], probes[10_000]
    fleet = run_child("bench.scale:fleet_probe", accounts=FLEET[0], proxies=FLEET[1])
    n_conn = 100 if quick else 500
    with dc_process(n_conn) as dc:
        conn = run_child(
            "bench.scale:connected_probe",
            accounts=n_conn,
            world_path=dc.world_path,
            port=dc.port,
            pem=dc.public_key_pem,
            concurrency=16,
        )

    startup = big["parse_s"] + big["open_s"]
    report.row(
        "start-up, 10,000 accounts (parse_config + open_pool)", f"{startup:.2f} s", "", "", "", None
    )
    report.row("RSS per idle account", f"{big['rss_idle_delta'] / 10_000 / 1024:.1f} KiB")
    pick_ratio = big["pick_p99"] / small["pick_p99"]
    report.row(
        "scheduling decision p99 (Pool._pick), 10,000 vs 100 accounts",
        ms(big["pick_p99"], 3),
        ms(small["pick_p99"], 3),
        f"{pick_ratio:.1f}x",
        "<= 2x",
        pick_ratio <= 2,
    )
    inv_ratio = big["invoke_p99"] / small["invoke_p99"]
    report.row(
        "pool.invoke p99, zero-cost client, 10,000 vs 100 accounts",
        ms(big["invoke_p99"], 3),
        ms(small["invoke_p99"], 3),
        f"{inv_ratio:.1f}x",
        "<= 2x",
        inv_ratio <= 2,
    )
    report.row(
        "pool.statistics() at 10,000 accounts, median (max) of 20",
        f"{ms(big['stats_p50'], 1)} ({ms(big['stats_max'], 0)})",
        f"{ms(small['stats_p50'], 2)} at 100",
        f"{big['stats_p50'] / small['stats_p50']:.0f}x",
        "<= 100 ms",
        big["stats_p50"] <= 0.1,
    )
    report.row(
        f"RSS per connected account ({conn['connected']} Telethon clients, loopback DC)",
        f"{conn['rss_delta'] / conn['accounts'] / 1024:.0f} KiB",
    )
    report.row(
        "pool per-job CPU, zero-cost client (pool.invoke, 100 accounts, one job at a time;"
        f" median of {BATCHES} batches)",
        f"{small['invoke_cpu'] * 1e6:,.0f} µs",
        f"{small['invoke_passes']:.1f} run-loop passes, {small['invoke_steps']:.1f} task steps",
        "",
        f"<= {INVOKE_GOAL_S * 1e6:.0f} µs",
        small["invoke_cpu"] <= INVOKE_GOAL_S,
    )
    report.row(
        "  of which Trio's primitives the job needs, timed alone in the same process (a lock,"
        " a cancel scope with a deadline, a capacity limiter's acquire and release)",
        f"{small['trio_floor_cpu'] * 1e6:,.0f} µs",
        f"{small['trio_floor_cpu'] / small['invoke_cpu'] * 100:.0f} % of the job",
    )
    report.row(
        "the same, arguments differing on every job (`help.getAppConfig`, hash = job number:"
        " each request checked and keyed anew)",
        f"{small['invoke_distinct_cpu'] * 1e6:,.0f} µs",
        f"{(small['invoke_distinct_cpu'] - small['invoke_cpu']) * 1e6:+,.0f} µs",
    )
    n, p = FLEET
    fleet_start = fleet["parse_s"] + fleet["open_s"]
    fleet_kib = fleet["rss_idle_delta"] / n / 1024
    where = f"{n:,} idle accounts on {p:,} proxies"
    report.row(
        f"start-up, {where} (parse_config + open_pool)",
        f"{fleet_start:.1f} s",
        f"parse {fleet['parse_s']:.1f} s + open {fleet['open_s']:.1f} s"
        f" (then gc.collect {fleet['gc_after_open_s']:.2f} s)",
        "",
        "<= 3 s",
        fleet_start <= 3.0,
    )
    report.row(
        f"start-up from its config file, {where} (load_config + open_pool)",
        f"{fleet_start + fleet['toml_read_s']:.1f} s",
        f"read {fleet['toml_read_s']:.1f} s + the above",
    )
    report.row(
        f"reading its {fleet['toml_mb']:.0f} MB config file (load_config's parse_toml) vs "
        "tomllib alone, before parse_config",
        f"{fleet['toml_read_s']:.2f} s",
        f"{fleet['tomllib_read_s']:.2f} s",
        f"{fleet['tomllib_read_s'] / fleet['toml_read_s']:.1f}x faster",
    )
    report.row(
        f"parse_config, {where}, a session file per account",
        f"{fleet['parse_files_s']:.1f} s",
        f"{fleet['parse_s']:.1f} s with session strings",
    )
    report.row(
        f"reload of the same config (Pool.reload), {where}",
        f"{fleet['reload_s']:.1f} s",
    )
    report.row(
        f"statistics() summary (accounts=False), {where}, median of 5",
        ms(fleet["stats_summary_p50"], 0),
        "",
        "",
        "<= 100 ms",
        fleet["stats_summary_p50"] <= 0.1,
    )
    report.row(
        f"statistics() full snapshot, {where}, median of 3",
        ms(fleet["stats_full_p50"], 0),
        "",
        "",
        "<= 1 s",
        fleet["stats_full_p50"] <= 1.0,
    )
    report.row(
        f"RSS per idle account, {where}",
        f"{fleet_kib:.2f} KiB",
        "",
        "",
        "<= 3 KiB",
        fleet_kib <= 3.0,
    )

    report.details += [
        "| accounts | proxies | parse_config | open_pool | RSS/idle account "
        "| _pick p50 | _pick p99 "
        "| invoke p50 | invoke p99 | CPU/invoke | statistics() p50 | max | pool close |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, p in sizes:
        r = probes[n]
        report.details.append(
            f"| {n:,} | {p:,} | {r['parse_s']:.3f} s | {r['open_s']:.3f} s "
            f"| {r['rss_idle_delta'] / n / 1024:.1f} KiB | {ms(r['pick_p50'], 3)} "
            f"| {ms(r['pick_p99'], 3)} | {ms(r['invoke_p50'], 3)} | {ms(r['invoke_p99'], 3)} "
            f"| {ms(r['invoke_cpu'], 3)} | {ms(r['stats_p50'], 1)} | {ms(r['stats_max'], 1)} "
            f"| {r['close_s']:.2f} s |"
        )
    report.details += [
        "",
        f"Connected: {conn['connected']} of {conn['accounts']} accounts connected in "
        f"{conn['connect_all_s']:.1f} s (16 at a time), RSS +{conn['rss_delta'] / 2**20:.1f} MiB "
        f"(process total {conn['rss_total'] / 2**20:.0f} MiB).",
        "",
    ]
    report.notes += [
        "RSS per idle account = (RSS with the pool open − RSS before parse_config) / accounts: "
        "config objects, account workers, lanes — everything an unused account costs.",
        "`_pick` is timed alone (perf_counter_ns around the call), followed by the reservation "
        "the pool makes, so the LRU order rotates as in service. `invoke` is timed end to end, "
        "one job at a time, with a zero-cost client, after `pool.reload` of the same config "
        "with every proxy at `interval_s = 0` (an ungated lane: no start jitter either).",
        "Connected accounts: the config sets `[direct] capacity = 16, interval_s = 0` (the "
        "shipped default, one direct start per 2 s, would make 500 connects take 1,000 s). "
        "Each account makes one pinned help.getConfig (connect + call).",
    ]
    report.values.update(
        pick_ratio=f"{pick_ratio:.1f}x",
        invoke_ratio=f"{inv_ratio:.1f}x",
        stats_p50=ms(big["stats_p50"], 1),
        stats_max=ms(big["stats_max"], 0),
        stats_per_account=f"{big['stats_p50'] / 10_000 * 1e6:.1f} µs",
        fleet_start=f"{fleet_start:.1f} s",
        fleet_parse=f"{fleet['parse_s']:.1f} s",
        fleet_open=f"{fleet['open_s']:.1f} s",
        fleet_gc=f"{fleet['gc_after_open_s']:.2f} s",
        invoke_cpu=f"{small['invoke_cpu'] * 1e6:,.0f} µs",
        invoke_distinct_cpu=f"{small['invoke_distinct_cpu'] * 1e6:,.0f} µs",
        trio_floor=f"{small['trio_floor_cpu'] * 1e6:,.0f} µs",
        invoke_rest=f"{(small['invoke_cpu'] - small['trio_floor_cpu']) * 1e6:,.0f} µs",
        invoke_goal=(
            f"at most {INVOKE_GOAL_S * 1e6:.0f} µs, "
            + (
                "met"
                if small["invoke_cpu"] <= INVOKE_GOAL_S
                else f"missed by {(small['invoke_cpu'] - INVOKE_GOAL_S) * 1e6:,.0f} µs"
                f" ({(small['invoke_cpu'] / INVOKE_GOAL_S - 1) * 100:.0f} %)"
            )
        ),
        invoke_passes=f"{small['invoke_passes']:.1f}",
        invoke_steps=f"{small['invoke_steps']:.1f}",
        fleet_summary=ms(fleet["stats_summary_p50"], 0),
        fleet_full=ms(fleet["stats_full_p50"], 0),
        fleet_close=f"{fleet['close_s']:.1f} s",
        fleet_reload=f"{fleet['reload_s']:.1f} s",
        fleet_parse_files=f"{fleet['parse_files_s']:.1f} s",
    )
    return report


ANALYSIS: Final = """
- **Scheduling.** `Pool._pick` once visited every lane on every decision (`for accounts in
  lanes`, with `ProxyLane.earliest_start` → `CapacityLimiter.statistics` per lane): linear in
  proxies. The pool now has an indexed scheduler (`mtpoold/_ready.py`, `ReadyIndex.best`),
  which the figures above measure: the p99 of a decision at the large size is {pick_ratio}
  the small size's; `_pick` is timed followed by the reserve/release pair the pool makes
  around a call. `pool.invoke` end to end grows {invoke_ratio} between the sizes.
- **Per-job CPU with the zero-cost client** ({invoke_cpu} per `pool.invoke` of a read-only
  function, one job at a time; the goal, {invoke_goal}): {invoke_passes}
  passes of Trio's run loop and {invoke_steps} task steps per job, counted by an instrument.
  Trio's primitives the job needs — the account lock, the run's cancel scope with its
  deadline, the lane's capacity limiter with its schedule point — cost {trio_floor} timed
  alone in the same process; the other {invoke_rest} are the pool's own Python, spread over
  the steps listed below, none of them large. The account lock is taken without a schedule
  point when it is free (`AccountWorker.run`), which took one pass off each job. A
  read-only job alone no longer runs in a flight task: it leads its flight in its own task
  (`Pool._lead`, `Flights.start_local`; an identical job may still join and share its
  call), which took the task, the `Event` and its wake-up, a pass and two cancel scopes off
  each job; its deadline rides on the account run's own scope (`AccountWorker.run`'s
  ``deadline_at``) and on a scope the dispatcher opens only while the job queues; a call
  its lane starts at once (ungated, a token free: `ProxyLane.starts_at_once`) opens that
  scope with its call deadline, one deadline per call instead of a second one set after
  the slot. A request identical to one already checked skips `check_request`
  (mtpoold/_checkedrequests.py: by the method as written and the identical key, bounded,
  forgotten when `allow_methods` changes); the probe's jobs are identical, so its figure
  holds no check: with arguments differing on every job it was {invoke_distinct_cpu} (each
  request built and serialized by `check_request` in mtpoold/_tljson.py, and keyed anew).
  What is left, in order of cost in a py-spy profile of this probe: the account run's one
  cancel scope (Trio's `CancelScope` entered and exited: call deadline, job deadline,
  cluster cut-off), the pool's own steps from `invoke` to the account run (`_lead`,
  `_attempt_loop`, `_attempt`, each small), the dispatcher's pick, reserve and release
  with the ready index (mtpoold/_ready.py), the lane's slot (its capacity limiter is the
  job's one schedule point, then two histogram observations), the account lock, and the
  job's bookkeeping (its `Job`, `Member`, `Flight`, registry entry and hops). A reading of
  the trio clock is taken once and passed down where one layer calls the next without a
  wait between them (the dispatcher's pick to the ready index, the slot's start to the
  account run, the pool's acceptance to its job and registry entry); a lane's cooling
  check reads the clock only for a cooldown not over when the slot was asked for; a
  method's read-only entry and its rate classes are looked up once per method, not per job.
- **`pool.statistics()`** is linear in accounts by design (it returns every account):
  {stats_per_account} per account in this run ({stats_p50} median at the large size); what is
  left is building one `AccountStatistics` attrs instance per account in
  `AccountWorker.statistics` (mtpoold/_account.py). The max ({stats_max}) is where a garbage
  collection lands inside one snapshot, not the median path.
- **The large fleet.** Start-up took {fleet_start} (parse {fleet_parse}, open {fleet_open}).
  `parse_config` builds a plain `[[accounts]]` or `[[proxies]]` entry (known keys, values of
  their field's type) in one constructor call with its validators on
  (`Structurer.quick_fields`); an entry that is not plain, or that a validator refuses, goes
  the full way (cattrs, then every validator), which writes its problem lines as before.
  With a session file per account the parse took {fleet_parse_files}: the duplicate-file
  check resolves each directory once and then follows only a link in the last component,
  as `os.path.realpath` does. Python's cyclic garbage collector is paused while the config
  and the pool are built, and a fleet this large is then frozen out of its sight
  (`gc.freeze`, mtpoold/_gcpause.py): the `gc.collect` right after the open took
  {fleet_gc}, where it walked the whole fleet before, as every later full collection
  would. A reload thaws, collects once and freezes again, so cycles of what it replaced are
  still collected: the reload of the same config took {fleet_reload}, that collection
  included (it compares each proxy's wire form once, not once per account, and syncs
  budgets only for accounts with spends or holds). What is left of the open, in order of
  cost in a profile: building one `AccountWorker` per account (its lock, request guard and
  peer book), adding it to the dispatcher's ready index, importing Telethon, and one
  `ProxyLane` per proxy with its two histograms; of the parse, the entries' constructors and
  validators, then the cross-checks between entries. The summary
  (`statistics(accounts=False)`) took {fleet_summary}: account states counted in one loop
  (`mtpoold._account.count_states`) and one snapshot per lane (a lane at rest gives its last
  one again, `ProxyLane.statistics`), about evenly; the budget limits are summed over runs of
  first-seen times (`BudgetBook.summed_limits`). The full snapshot {fleet_full} builds one
  `AccountStatistics` per account, most of it in `AccountWorker.statistics`, with the
  collector paused while it does. Closing the pool took {fleet_close}.
- **Config knobs, no patches.** The invoke figures reload the same config with every proxy
  at `interval_s = 0` (`Pool.reload`, what SIGHUP does); the connected figures set
  `[direct] capacity` and `interval_s = 0` (see the notes).
"""
