"""Scenario 6: economy — Telegram requests per job, the ``[economy]`` switches off vs on.

The order-check workload of issue 12: jobs ``get_messages(@channel, [id])`` over public
channels picked by a Zipf law, message ids uniform over each channel's posts, served by
accounts with string sessions (Telethon forgets every access hash when its client is rebuilt).
A queue submits them: a fixed number of submitters each take the next job as soon as their
last one is answered, so that many jobs are in flight at once. The accounts sit behind real
SOCKS5 proxies (``mtpoold.testing.open_proxy``: pproxy), spread evenly; each proxy is a gated
lane as in production, its ``interval_s`` scaled down from the shipped one to keep the run
short — the request counts do not depend on it, only how many jobs wait together does. The
lanes' start jitter is scaled by the same factor (:class:`ScaledJitter`, through
``open_pool(rng=...)``), the bench's only departure from the shipped code paths. The loopback
DC (``mtpoold.testing.dc``, ``synthetic_world``) runs in the same process and counts every
request per account and method (``dc.counters``): every figure below is counted at the DC.
The workload line below gives this run's sizes (``FULL`` in ``bench/economy.py``).

Each side runs the same phases on its own DC and state directory, one after the other in the
same process: **off** (``[economy]`` all False, today's behaviour) and **on** (all True).
Phases: *pass 1* (a fresh pool); *pass 2* (the same jobs again, same pool); *restart* (a new
pool on the same state dir, the same jobs); *flooded* (right after, on that pool: the DC floods
the first account on ``contacts.ResolveUsername`` for a day; a new draw of jobs from the same
law, so the last pass's account–channel pairing does not simply replay; that account's share
of the jobs against the others' mean); *resolve* (a fresh pool and state dir, jobs of which a
share are ``resolve @channel``) and its *pass 2*.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

from ._common import Report, run_child

NAME: Final = "economy"
TITLE: Final = "6. Economy: Telegram requests per job, [economy] off vs on"

API_HASH: Final = "0123456789abcdef0123456789abcdef"
RESOLVE: Final = "contacts.ResolveUsername"
GET_MESSAGES: Final = "channels.GetMessages"
GET_MESSAGES: Final = "channels.GetMessages"
FLOOD_S: Final = 86400.0  # the flood of the "flooded" phase, seconds (24 h)
SWITCHES: Final = (
    "flood_scopes",
    "budgets",
    "peer_memory",
    "route_by_knowledge",
    "share_identical",
    "merge_get_messages",
)

#: The full run's workload (``--quick`` scales the jobs down).
FULL: Final[dict[str, Any]] = {
    "jobs": 1000,
    "channels": 100,
    "accounts": 10,
    "messages": 20,
    "zipf_s": 1.0,
    "resolve_share": 0.10,
    "in_flight": 100,
    "proxies": 2,
    "capacity": 2,
    "interval_s": 0.005,
    "seed": 12,
}

#: Goals of issue 12.
GOAL_REQUESTS_PER_JOB: Final = 0.5
GOAL_RESOLVE_PER_JOB: Final = 0.05
GOAL_FLOODED_SHARE: Final = 0.90

#: (key, label, kind of jobs, steady state: the ResolveUsername goal applies) in run order.
PHASES: Final = (
    ("pass1", "pass 1 (fresh pool)", "get_messages", False),
    ("pass2", "pass 2 (same pool)", "get_messages", True),
    ("restart", "restart (new pool, same state dir)", "get_messages", True),
    ("flooded", "flooded (1 account on ResolveUsername)", "get_messages", False),
    ("resolve1", "with resolve jobs, pass 1 (fresh pool)", "mixed", False),
    ("resolve2", "with resolve jobs, pass 2", "mixed", True),
)


# -- the workload ----------------------------------------------------------------------------


def workload(
    *,
    jobs: int,
    channels: int,
    messages: int,
    zipf_s: float,
    resolve_share: float,
    seed: int,
) -> list[tuple[str, str, int]]:
    """The jobs, in submission order: ``(kind, "@username", message id)``.

    ``kind`` is ``"get_messages"`` or ``"resolve"`` (a share ``resolve_share`` of them, the
    id then unused). Channel ``k`` (0-based) is picked with weight ``1 / (k + 1) ** zipf_s``.
    Deterministic for a seed.
    """
    from mtpoold.testing.dc import synthetic_channel_username

    rng = random.Random(seed)
    weights = [1.0 / (k + 1) ** zipf_s for k in range(channels)]
    picks = rng.choices(range(channels), weights=weights, k=jobs)
    out = []
    for k in picks:
        kind = "resolve" if rng.random() < resolve_share else "get_messages"
        out.append((kind, "@" + synthetic_channel_username(k), rng.randint(1, messages)))
    return out


# -- one side --------------------------------------------------------------------------------


def _config(
    dc: Any, sessions: Sequence[str], proxies: Sequence[Any], w: dict[str, Any], on: bool
) -> Any:
    from mtpoold._config import parse_config

    lanes = [
        {
            "name": f"px{i}",
            "type": "socks5",
            "host": p.host,
            "port": p.port,
            "capacity": w["capacity"],
            "interval_s": w["interval_s"],
        }
        for i, p in enumerate(proxies)
    ]
    accounts = []
    for i, session in enumerate(sessions):
        acc: dict[str, Any] = {
            "id": f"a{i}",
            "api_id": 12345 + i,
            "api_hash": API_HASH,
            "session_string": session,
        }
        if lanes:
            acc["proxy"] = lanes[i * len(lanes) // len(sessions)]["name"]
        accounts.append(acc)
    data = {
        "telegram": {
            "dc_id": dc.dc_id,
            "dc_host": dc.host,
            "dc_port": dc.port,
            "rsa_keys": [dc.public_key_pem],
            "connect_timeout_s": 10.0,
        },
        # no proxies (the smoke test): the direct lane, gated the same way
        "direct": {"capacity": w["capacity"], "interval_s": w["interval_s"]},
        "economy": {s: on for s in SWITCHES},
        "policy": {"job_deadline_s": 120.0},
        "proxies": lanes,
        "accounts": accounts,
    }
    with tempfile.TemporaryDirectory() as tmp:
        return parse_config(data, base_dir=Path(tmp))


PRODUCTION_INTERVAL_S: Final = 2.0  # the shipped interval_s, that the bench scales down


class ScaledJitter(random.Random):
    """The gates' jitter scaled like their interval: the lanes draw a start's jitter with
    ``rng.uniform(low, high)`` (``mtpoold._gate.RateGate``; 50–150 ms shipped); this source,
    handed to ``open_pool(rng=...)``, returns ``scale`` times that. Without it a 5 ms lane
    would still wait 50–150 ms per start and the run would take ~20x longer."""

    def __init__(self, scale: float, seed: int) -> None:
        super().__init__(seed)
        self.scale = scale

    def uniform(self, a: float, b: float) -> float:
        return super().uniform(a, b) * self.scale


@asynccontextmanager
async def _pool(config: Any, state_dir: Path, jitter_scale: float, seed: int) -> Any:
    from mtpoold._compose import open_pool
    from mtpoold._daemon import STORE_FILE_NAME
    from mtpoold._store import StateStore

    store = StateStore.open(state_dir / STORE_FILE_NAME)
    try:
        rng = ScaledJitter(jitter_scale, seed)
        async with open_pool(config, store=store, rng=rng) as pool:
            yield pool
    finally:
        store.close()


def _dc_counts(dc: Any) -> Counter[str]:
    counts: Counter[str] = dc.total_counters()
    return counts


async def _phase(
    pool: Any, dc: Any, users: Sequence[int], jobs: Sequence[tuple[str, str, int]], in_flight: int
) -> dict[str, Any]:
    """Run ``jobs`` through ``pool`` as a queue would; what the DC saw and how jobs went."""
    import trio

    from mtpoold import JobFailed

    served: Counter[str] = Counter()  # account id -> get_messages jobs it answered
    failed: Counter[str] = Counter()  # error class -> jobs
    shared = merged = 0
    todo: Iterator[tuple[str, str, int]] = iter(jobs)

    async def submitter() -> None:
        nonlocal shared, merged
        for kind, peer, msg_id in todo:
            try:
                if kind == "resolve":
                    res = await pool.resolve(peer)
                else:
                    res = await pool.get_messages(peer, [msg_id])
                    served[res.meta.account] += 1
            except JobFailed as exc:
                failed[str(exc.error_class.value)] += 1
                continue
            shared += bool(getattr(res.meta, "shared", False))
            merged += getattr(res.meta, "merged", 1) > 1

    before = _dc_counts(dc)
    calls_before = [dc.counters(u)[GET_MESSAGES] for u in users]
    refused_before: Counter[str] = sum((dc.limits.refused(u) for u in users), Counter())
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(submitter)
    wall = time.perf_counter() - t0
    spent = _dc_counts(dc) - before
    calls = {f"a{i}": dc.counters(u)[GET_MESSAGES] - calls_before[i] for i, u in enumerate(users)}
    refused: Counter[str] = sum((dc.limits.refused(u) for u in users), Counter())
    refused -= refused_before
    return {
        "jobs": len(jobs),
        "get_messages_jobs": sum(1 for j in jobs if j[0] == "get_messages"),
        "resolve_jobs": sum(1 for j in jobs if j[0] == "resolve"),
        "requests": sum(spent.values()),
        "by_method": dict(spent.most_common()),
        "refused": dict(refused),
        "served": dict(served),
        "calls": calls,
        "failed": dict(failed),
        "shared": shared,
        "merged": merged,
        "wall_s": wall,
    }


async def _side(on: bool, w: dict[str, Any], proxies: Sequence[Any]) -> dict[str, Any]:
    from mtpoold.testing.dc import open_dc, synthetic_world

    world = synthetic_world(users=w["accounts"], channels=w["channels"], messages=w["messages"])
    users = [u.id for u in world.users]
    plain = workload(
        jobs=w["jobs"],
        channels=w["channels"],
        messages=w["messages"],
        zipf_s=w["zipf_s"],
        resolve_share=0.0,
        seed=w["seed"],
    )
    fresh = workload(  # the flooded phase: a new draw, so no pairing of the last pass replays
        jobs=w["jobs"],
        channels=w["channels"],
        messages=w["messages"],
        zipf_s=w["zipf_s"],
        resolve_share=0.0,
        seed=w["seed"] + 2,
    )
    mixed = workload(
        jobs=w["jobs"],
        channels=w["channels"],
        messages=w["messages"],
        zipf_s=w["zipf_s"],
        resolve_share=w["resolve_share"],
        seed=w["seed"] + 1,
    )
    phases: dict[str, Any] = {}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    async with open_dc(world) as dc:
        sessions = [dc.session_string(u) for u in users]
        config = _config(dc, sessions, proxies, w, on)
        n = w["in_flight"]
        scale = w["interval_s"] / PRODUCTION_INTERVAL_S
        seed = w["seed"]
        with tempfile.TemporaryDirectory(prefix="mtpoold-bench-economy-") as tmp:
            state_a, state_b = Path(tmp) / "a", Path(tmp) / "b"
            async with _pool(config, state_a, scale, seed) as pool:
                phases["pass1"] = await _phase(pool, dc, users, plain, n)
                phases["pass2"] = await _phase(pool, dc, users, plain, n)
            async with _pool(config, state_a, scale, seed + 1) as pool:
                phases["restart"] = await _phase(pool, dc, users, plain, n)
                dc.limits.flood(users[0], RESOLVE, FLOOD_S)
                probe = await _learn_flood(pool)
                phases["flooded"] = await _phase(pool, dc, users, fresh, n)
                dc.limits.unflood(users[0])
            async with _pool(config, state_b, scale, seed + 2) as pool:
                phases["resolve1"] = await _phase(pool, dc, users, mixed, n)
                phases["resolve2"] = await _phase(pool, dc, users, mixed, n)
    return {
        "on": on,
        "phases": phases,
        "flooded_account": "a0",
        "flood_probe": probe,
        "seconds": time.perf_counter() - t0,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


async def measure_async(**overrides: Any) -> dict[str, Any]:
    """Both sides, off then on, inside the caller's Trio run; JSON-safe figures.

    Args:
        **overrides: keys of :data:`FULL` (the smoke test runs a tiny workload, no proxies).
    """
    from mtpoold.testing import open_proxy

    unknown = set(overrides) - set(FULL)
    if unknown:
        raise TypeError(f"unknown workload keys: {sorted(unknown)}")
    w = {**FULL, **overrides}
    async with AsyncExitStack() as stack:
        proxies = [
            await stack.enter_async_context(open_proxy("socks5")) for _ in range(w["proxies"])
        ]
        off = await _side(False, w, proxies)
        on = await _side(True, w, proxies)
    return {"workload": w, "off": off, "on": on}


def measure(quick: bool = False, **overrides: Any) -> dict[str, Any]:
    """Child entry point: :func:`measure_async` in a Trio run of its own.

    Args:
        quick: a tenth of the jobs (at least 20) unless ``jobs`` is given.
        **overrides: keys of :data:`FULL`.
    """
    import trio

    if quick and "jobs" not in overrides:
        overrides["jobs"] = max(20, FULL["jobs"] // 10)
    return trio.run(lambda: measure_async(**overrides))


# -- the report ------------------------------------------------------------------------------


def per_job(phase: dict[str, Any], method: str | None = None) -> float:
    """Requests per job in ``phase`` (all methods, or only ``method``)."""
    count = phase["requests"] if method is None else phase["by_method"].get(method, 0)
    return float(count) / phase["jobs"] if phase["jobs"] else math.nan


async def _learn_flood(pool: Any) -> str:
    """One ``contacts.ResolveUsername`` pinned to a0, which the DC answers FLOOD_WAIT (24 h):
    how the pool learns of the flood, as it would in production. Returns the job's error
    class (``FLOOD_WAIT`` expected on both sides)."""
    from mtpoold import JobFailed

    try:
        await pool.invoke(RESOLVE, {"username": "mtpoold_bench_probe"}, account="a0")
    except JobFailed as exc:
        return str(exc.error_class.value)
    return "OK"


def flooded_share(side: dict[str, Any], accounts: int, what: str = "served") -> float:
    """The flooded account's get_messages jobs (``what="served"``) or its channels.GetMessages
    calls at the DC (``"calls"``) ÷ the mean of the other accounts' (1.0 = even)."""
    served = side["phases"]["flooded"][what]
    flooded = side["flooded_account"]
    others = [served.get(f"a{i}", 0) for i in range(accounts) if f"a{i}" != flooded]
    mean = sum(others) / len(others) if others else 0.0
    return served.get(flooded, 0) / mean if mean else math.nan


def _ratio(on: float, off: float) -> str:
    return "n/a" if not off or math.isnan(on) or math.isnan(off) else f"{on / off:.2f}"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.0f} %"


def _load(side: dict[str, Any]) -> str:
    return (
        f"{side['load_before'][0]:.2f} → {side['load_after'][0]:.2f} (1 min), "
        f"{side['load_after'][1]:.2f} (5 min)"
    )


def build_report(res: dict[str, Any]) -> Report:
    """Rows, tables and the generated text of RESULTS.md from one run's figures."""
    report = Report(NAME, TITLE)
    w, off, on = res["workload"], res["off"], res["on"]
    steady = [key for key, _, _, is_steady in PHASES if is_steady]
    for key, label, _, _ in PHASES:
        a, b = on["phases"][key], off["phases"][key]
        goal = f"<= {GOAL_REQUESTS_PER_JOB}" if key == "pass1" else ""
        met = per_job(a) <= GOAL_REQUESTS_PER_JOB if key == "pass1" else None
        report.row(
            f"{label}: Telegram requests per job, on vs off",
            f"{per_job(a):.3f}",
            f"{per_job(b):.3f}",
            _ratio(per_job(a), per_job(b)),
            goal,
            met,
        )
        rgoal = f"<= {GOAL_RESOLVE_PER_JOB}" if key in steady else ""
        rmet = per_job(a, RESOLVE) <= GOAL_RESOLVE_PER_JOB if key in steady else None
        report.row(
            f"{label}: ResolveUsername per job, on vs off",
            f"{per_job(a, RESOLVE):.3f}",
            f"{per_job(b, RESOLVE):.3f}",
            _ratio(per_job(a, RESOLVE), per_job(b, RESOLVE)),
            rgoal,
            rmet,
        )
    share_on, share_off = flooded_share(on, w["accounts"]), flooded_share(off, w["accounts"])
    report.row(
        "flooded account's share of get_messages jobs (÷ the others' mean), on vs off",
        _pct(share_on),
        _pct(share_off),
        "",
        f">= {GOAL_FLOODED_SHARE:.0%}",
        None if math.isnan(share_on) else share_on >= GOAL_FLOODED_SHARE,
    )
    calls_on = flooded_share(on, w["accounts"], "calls")
    calls_off = flooded_share(off, w["accounts"], "calls")
    report.row(
        "flooded account's share of channels.GetMessages calls at the DC, on vs off",
        _pct(calls_on),
        _pct(calls_off),
        "",
        "",
        None,
    )

    report.details += [
        f"Workload: {w['jobs']:,} jobs per phase over {w['channels']} channels (Zipf s = "
        f"{w['zipf_s']}), {w['accounts']} accounts with string sessions, {w['in_flight']} in "
        f"flight; {w['proxies']} SOCKS5 proxies, each a lane of capacity {w['capacity']} and "
        f"interval {w['interval_s'] * 1000:g} ms (production default 2 s); "
        f"{w['resolve_share']:.0%} `resolve` jobs in the resolve phases. Load average "
        f"(before → after each side): off {_load(off)}; on {_load(on)}. The off side took "
        f"{off['seconds']:.0f} s, the on side {on['seconds']:.0f} s.",
        "",
        "| phase | side | jobs | failed | requests | req/job | ResolveUsername/job "
        "| GetMessages/job | other requests | refused at DC | shared | merged | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label, _, _ in PHASES:
        for name, side in (("off", off), ("on", on)):
            p = side["phases"][key]
            other = p["requests"] - p["by_method"].get(RESOLVE, 0)
            other -= p["by_method"].get(GET_MESSAGES, 0)
            others = ", ".join(
                f"{m} {n}" for m, n in p["by_method"].items() if m not in (RESOLVE, GET_MESSAGES)
            )
            failed = ", ".join(f"{c} {n}" for c, n in p["failed"].items()) or "0"
            refused = sum(p["refused"].values())
            report.details.append(
                f"| {label} | {name} | {p['jobs']} | {failed} | {p['requests']} "
                f"| {per_job(p):.3f} | {per_job(p, RESOLVE):.3f} | {per_job(p, GET_MESSAGES):.3f} "
                f"| {other}{f' ({others})' if others else ''} | {refused} | {p['shared']} "
                f"| {p['merged']} | {p['wall_s']:.1f} |"
            )
    report.details.append("")
    for name, side in (("off", off), ("on", on)):
        served = side["phases"]["flooded"]["served"]
        row = ", ".join(f"a{i} {served.get(f'a{i}', 0)}" for i in range(w["accounts"]))
        calls = side["phases"]["flooded"]["calls"]
        crow = ", ".join(f"a{i} {calls.get(f'a{i}', 0)}" for i in range(w["accounts"]))
        report.details.append(
            f"- Flooded phase, {name}: get_messages jobs per account (a0 flooded on "
            f"ResolveUsername for {FLOOD_S / 3600:.0f} h at the DC; the probe look-up pinned to "
            f"a0 was answered {side['flood_probe']}): {row}; channels.GetMessages "
            f"calls at the DC per account: {crow}."
        )
    report.details += ["", *_findings(res, share_on, share_off), ""]
    return report


def _findings(res: dict[str, Any], share_on: float, share_off: float) -> list[str]:
    """Sentences generated from the figures (RESULTS.md's prose carries no other numbers)."""
    w, off, on = res["workload"], res["off"], res["on"]
    p1_on, p1_off = on["phases"]["pass1"], off["phases"]["pass1"]
    out = ["**What this run shows** (generated from the figures above):", ""]
    ratios = [
        per_job(on["phases"][k]) / per_job(off["phases"][k])
        for k, _, _, _ in PHASES
        if per_job(off["phases"][k])
    ]
    same = all(abs(r - 1) <= 0.05 for r in ratios)
    if same:
        out.append(
            f"- On and off are within 5 % of each other in every phase (requests per job "
            f"on ÷ off from {min(ratios):.2f} to {max(ratios):.2f}): in the build measured "
            "the `[economy]` switches make no measurable difference to what reaches "
            "Telegram."
        )
    else:
        out.append(
            f"- Requests per job, on ÷ off, range from {min(ratios):.2f} to "
            f"{max(ratios):.2f} over the phases."
        )
    resolve_p1 = p1_off["by_method"].get(RESOLVE, 0)
    out.append(
        f"- Off (today's behaviour), pass 1 sent {p1_off['requests']:,} requests for "
        f"{p1_off['jobs']:,} jobs, {resolve_p1:,} of them ResolveUsername "
        f"({_pct(resolve_p1 / p1_off['requests'] if p1_off['requests'] else math.nan)}); "
        f"pass 2 in the same process still sent "
        f"{off['phases']['pass2']['by_method'].get(RESOLVE, 0):,} ResolveUsername and the "
        f"restart {off['phases']['restart']['by_method'].get(RESOLVE, 0):,}."
    )
    goal_p1 = per_job(p1_on) <= GOAL_REQUESTS_PER_JOB
    steady = [key for key, _, _, is_steady in PHASES if is_steady]
    worst_key = max(steady, key=lambda k: per_job(on["phases"][k], RESOLVE))
    worst = per_job(on["phases"][worst_key], RESOLVE)
    labels = {key: label for key, label, _, _ in PHASES}
    out.append(
        f"- On, pass 1: {per_job(p1_on):.3f} requests per job — goal "
        f"<= {GOAL_REQUESTS_PER_JOB} {'met' if goal_p1 else 'missed'}"
        + ("" if goal_p1 else f" by {per_job(p1_on) / GOAL_REQUESTS_PER_JOB:.1f}x")
        + ". ResolveUsername per job at steady state (the worst of "
        + ", ".join(label for key, label, _, _ in PHASES if key in steady)
        + f": {labels[worst_key]}): {worst:.3f} — goal <= {GOAL_RESOLVE_PER_JOB} "
        + (
            "met."
            if worst <= GOAL_RESOLVE_PER_JOB
            else f"missed by {worst / GOAL_RESOLVE_PER_JOB:.1f}x."
        )
    )
    out.append(
        f"- With a0 flooded on ResolveUsername for {FLOOD_S / 3600:g} h at the DC, its share of "
        "the "
        f"get_messages jobs against the other {w['accounts'] - 1} accounts' mean: on "
        f"{_pct(share_on)}, off {_pct(share_off)} — goal >= {GOAL_FLOODED_SHARE:.0%} "
        + ("met." if not math.isnan(share_on) and share_on >= GOAL_FLOODED_SHARE else "missed.")
    )
    failures = {
        f"{name} {k}": sum(side["phases"][k]["failed"].values())
        for name, side in (("off", off), ("on", on))
        for k, _, _, _ in PHASES
        if side["phases"][k]["failed"]
    }
    if failures:
        out.append(
            "- Jobs that failed: "
            + ", ".join(f"{k}: {n}" for k, n in failures.items())
            + " (error classes in the table)."
        )
    else:
        out.append("- No job failed on either side.")
    return out


def run(*, quick: bool) -> Report:
    return build_report(run_child("bench.economy:measure", timeout_s=900.0, quick=quick))


ANALYSIS: Final = """
- **Counted at the DC, not at mtpoold's API.** Every figure is the loopback DC's request counter
  (`dc.counters(user)`, per account and method, every RPC call that reached it, refused ones
  included), summed over the accounts and taken as the difference over a phase. It includes
  what Telethon sends on its own (connection set-up, look-ups), which is what Telegram counts.
- **Why these phases.** The first pass is the workload as the economy issue measured it; the
  second pass and the restart are the steady state the peer memory is for (string sessions keep
  no access hashes across a restart, so the restart pass is where a persistent memory shows);
  the flooded phase checks that a ResolveUsername flood no longer takes the account out of
  `get_messages` it can still serve; the resolve variant mixes in jobs that must send a look-up
  (`resolve` reports counts, so its `channels.getFullChannel` is part of its price).
- **What the ratios mean.** *on ÷ off* below one is requests saved by the `[economy]` features;
  the off side is today's behaviour (every switch False), run in the same process on the same
  jobs, so the ratio is free of the machine's speed. Timing plays no part in the goals; the
  gated lane's interval only decides how many jobs wait together (what sharing and merging
  can use), and is scaled down from production to keep the run short (see the workload line).
"""
