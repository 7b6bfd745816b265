"""Issue 15's cluster under faults: three ``mtpoold run`` processes sharing four proxies and
twelve accounts through a real redis-server, jobs to every node throughout, while one node is
SIGKILLed, another SIGSTOPped for longer than the lease time and then SIGCONTed, and Redis
restarts (AOF on). What must hold:

- 0 overlapping connections on any auth key (the loopback DC's ``auth_key_overlaps``);
- no two call starts through one proxy closer than its ``interval_s`` (at its relay, minus
  ``START_TOLERANCE_S``, the wire's own jitter: see ``tests/_cluster.py``);
- every job submitted to a node that was not killed answered exactly once (a reply or an error
  reply; never lost, never twice);
- the killed node's accounts taken over by other nodes within the README's bound,
  ``lease_s + disconnect_delay_s + lease_s / 3`` (its leases run out, then the DC closes its
  connections ``disconnect_delay_s`` after their last ping, then a renew round picks them up),
  plus ``FAILOVER_MARGIN_S``, and then served there (a job pinned to each answered with a
  result within its `SERVE_DEADLINE_MS`, after its proxy's gate queue).

Real processes and sockets: the real clock (about 40 s on 2 cores).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from _cluster import Cluster, Job, open_cluster

pytestmark = pytest.mark.alone

#: Seconds every node may take, after start, until all twelve accounts are held somewhere.
SETTLE_TIMEOUT_S = 15.0
#: Seconds between two jobs sent to one node; at most IN_FLIGHT_PER_NODE of them at once.
JOB_EVERY_S = 0.1
IN_FLIGHT_PER_NODE = 4
#: Seconds beyond the README's failover bound for the test's own look-ups: the holders are
#: read from Redis every 0.1 s (measured: held elsewhere 6.0..6.2 s after the SIGKILL, bound 7 s).
FAILOVER_MARGIN_S = 1.0
#: Deadline (ms) of the pinned job sent to a moved account's new holder: it queues at that
#: proxy's gate behind the load's jobs and the keepalive pings (interval 0.25 s).
SERVE_DEADLINE_MS = 6000
#: Seconds the whole test may take (a hang fails with a traceback instead).
TEST_TIMEOUT_S = 120.0
#: Seconds after the Redis restart within which every live node serves jobs again.
RECOVERY_TIMEOUT_S = 15.0


def _failover_bound_s(cluster: Cluster) -> float:
    """README: a killed node's accounts are served by others within
    ``lease_s + disconnect_delay_s + lease_s / 3`` (disconnect_delay_s = lease_s)."""
    return cluster.lease_s + cluster.lease_s + cluster.lease_s / 3


async def _load(cluster: Cluster, stop: trio.Event) -> None:
    """Jobs to every live node, one each ``JOB_EVERY_S``, until ``stop``; waits for the
    answers of those in flight."""
    in_flight: collections.Counter[str] = collections.Counter()

    async def one(node: str) -> None:
        in_flight[node] += 1
        try:
            await cluster.submit(node)
        finally:
            in_flight[node] -= 1

    async with trio.open_nursery() as nursery:
        while not stop.is_set():
            for name, node in cluster.nodes.items():
                if node.live and in_flight[name] < IN_FLIGHT_PER_NODE:
                    nursery.start_soon(one, name)
            with trio.move_on_after(JOB_EVERY_S):
                await stop.wait()


async def _until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> float:
    """Poll ``condition()`` every 0.1 s; return the trio time it first held."""
    with trio.move_on_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - other processes' state has no event
            await trio.sleep(0.1)
        return trio.current_time()
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


async def _served_by_others(
    cluster: Cluster, accounts: list[str], dead: str
) -> dict[str, tuple[float, float]]:
    """Wait until each of ``accounts`` is held by a live node other than ``dead`` and a job
    pinned to it on that node is answered with a result (one watcher per account, at once).

    Returns:
        account -> (trio time Redis first showed it held elsewhere, time its job was served).
    """
    found: dict[str, tuple[float, float]] = {}
    tries: list[str] = []  # every pinned job's answers, printed for a failover that took long
    started_at = trio.current_time()

    async def watch(account: str) -> None:
        held_at: float | None = None
        while True:
            holder = cluster.holders().get(account)
            if holder is not None and holder != dead and cluster.nodes[holder].live:
                held_at = held_at if held_at is not None else trio.current_time()
                job = await cluster.submit(holder, account=account, deadline_ms=SERVE_DEADLINE_MS)
                tries.append(f"{account}@{trio.current_time() - started_at:.2f}:{job.answers}")
                if job.answers == [f"ok:{account}"]:
                    found[account] = (held_at, trio.current_time())
                    return
            await trio.sleep(0.1)

    with trio.move_on_after(_failover_bound_s(cluster) + FAILOVER_MARGIN_S + 10):
        async with trio.open_nursery() as nursery:
            for account in accounts:
                nursery.start_soon(watch, account)
    print("pinned jobs after the kill:", " ".join(tries))
    assert sorted(found) == sorted(accounts), f"never served elsewhere: {found}"
    return found


def _served_ok(jobs: list[Job], node: str, since: float) -> bool:
    """Whether a job sent to ``node`` at or after ``since`` was answered with a result."""
    return any(
        j.node == node
        and j.sent_at >= since
        and j.answers[:1] != []
        and j.answers[0].startswith("ok:")
        for j in jobs
    )


async def test_kill_freeze_and_redis_restart_never_share_an_auth_key(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        await _chaos(tmp_path)


async def _chaos(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        n1, n2, n3 = cluster.nodes
        await _until(
            lambda: all(cluster.holders().values()),
            timeout_s=SETTLE_TIMEOUT_S,
            what="every account held by a node",
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_load, cluster, stop)
            await trio.sleep(3)

            # 1. SIGKILL n1: its accounts move to n2/n3 within the README's bound
            held_by_n1 = [a for a, node in cluster.holders().items() if node == n1]
            killed_at = trio.current_time()
            cluster.kill(n1)
            moved = await _served_by_others(cluster, held_by_n1, n1)
            # the lease bound: held by a live node (then served by a job pinned to it there,
            # which queues at the proxy like any other job)
            failover_s = max(held for held, _served in moved.values()) - killed_at
            print(
                f"n1 held {held_by_n1}; after SIGKILL (s): held elsewhere / served "
                + ", ".join(
                    f"{a} {h - killed_at:.2f}/{s - killed_at:.2f}" for a, (h, s) in moved.items()
                )
            )

            print(f"{trio.current_time():.1f} freeze")
            # 2. SIGSTOP n2 for longer than a lease, then SIGCONT
            cluster.freeze(n2)
            await trio.sleep(cluster.lease_s + 2)
            cluster.thaw(n2)
            thawed_at = trio.current_time()
            await _until(
                lambda: _served_ok(cluster.jobs, n2, thawed_at),
                timeout_s=RECOVERY_TIMEOUT_S,
                what="n2 serving jobs again after SIGCONT",
            )

            print(f"{trio.current_time():.1f} redis restart")
            # 3. Redis restarts (AOF on): nodes stop starting calls meanwhile, then resume
            await cluster.restart_redis()
            restarted_at = trio.current_time()
            for node in (n2, n3):
                await _until(
                    lambda node=node: _served_ok(cluster.jobs, node, restarted_at),  # type: ignore[misc]
                    timeout_s=RECOVERY_TIMEOUT_S,
                    what=f"{node} serving jobs again after the Redis restart",
                )
            await trio.sleep(1)
            print(f"{trio.current_time():.1f} stop")
            stop.set()
        print(f"{trio.current_time():.1f} stopped")
        for job in cluster.jobs:
            if job.lost or len(job.answers) != 1:
                print("unanswered:", job)

        overlaps = cluster.dc.auth_key_overlaps()
        violations = cluster.start_violations()
        by_node = collections.Counter((j.node, (j.answers or ["lost"])[0].split(":")[0])
                                      for j in cluster.jobs)  # fmt: skip
        print(f"jobs: {len(cluster.jobs)} {dict(by_node)}; min start spacing"
              f" {cluster.min_start_spacing():.3f} s; overlaps {len(overlaps)}")  # fmt: skip

        unanswered = [
            job
            for job in cluster.jobs
            # in flight on the node SIGKILLed: its client saw the socket close, no answer due
            if not (job.node == n1 and job.lost is not None)
            and (job.lost is not None or len(job.answers) != 1)
        ]
        bound_s = _failover_bound_s(cluster) + FAILOVER_MARGIN_S
        print(
            f"checks: overlaps {len(overlaps)}; unanswered {len(unanswered)}; failover"
            f" {failover_s:.2f} s (<= {bound_s:g}); proxies with close starts {sorted(violations)}"
        )
        assert overlaps == [], overlaps
        assert unanswered == [], unanswered
        assert failover_s <= bound_s, failover_s
        assert violations == {}, cluster.describe_violations(violations)
