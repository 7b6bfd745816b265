"""The node's cluster task: heartbeat, lease renewal, rebalancing and draining (issue 15).

One `ClusterNode` per daemon in cluster mode (``[cluster]``), the one owner of the node's
`mtpoold._leases.LeaseBook`. Every ``lease_s / 3`` seconds it sends one heartbeat
(`mtpoold._clusternodes.NodeRegistry.heartbeat`, with this node's status summary) and one
renew of every held lease, then:

* **desired** = the accounts whose rendezvous-hashed node among the live ones is this node
  (`mtpoold._clusternodes.assign_accounts`);
* desired and unheld: acquired in one batch; each acquired account's shared state is pulled
  (`mtpoold._clusterstate.ClusterState.pull_many`) and applied like the start-up restore
  applies the state store's (`mtpoold._pool.Pool.take_over`) *before* it becomes schedulable,
  so a FLOOD_WAIT seen on another node keeps it out for the rest of its seconds;
* held and not desired: drained — out of scheduling ("draining"), the call in flight waited
  for, the connection closed, the shared state flushed, then the lease released;
* not held here: out of scheduling, `mtpoold._stats.AccountState.REMOTE` with "held by node
  b" or "unheld" (one MGET).

Between rounds it wakes when the earliest held lease runs out on the local trio clock
(`LeaseBook.valid_until`: the request's send time + ``lease_s`` - a margin): a lease that could
not be renewed (Redis unreachable) is cut off there — the call in flight cancelled, the
connection dropped, the account out of scheduling with "cluster: redis … unreachable; leases
unconfirmed" — before Redis can expire it and give the account to another node. Jobs then get
NO_ACCOUNT_AVAILABLE naming that cause; when Redis answers again, leases are renewed or
re-acquired (their state pulled again) and the accounts come back.

The lanes' start slots come from `SharedGate` through `ClusterNode.shared_start` (one
reservation per start, the lease checked atomically), checked again on the local clock just
before the start (`mtpoold._lane.SharedStart`).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ._clustergate import LeaseLost, SharedGate
from ._clusternodes import NodeRegistry, assign_accounts, preferred_node
from ._config import ClusterConfig
from ._errors import ConfigError
from ._lane import LeaseUnconfirmed
from ._leases import LeaseBook
from ._logformat import log_event
from ._redisclock import RedisClock
from ._redislink import ClusterUnavailable, RedisLink
from ._startwindow import StartWindow

if TYPE_CHECKING:
    from ._clusterstate import ClusterState
    from ._pool import Pool

__all__ = ["ClusterNode", "open_cluster_node", "read_password_file", "unconfirmed"]

log = logging.getLogger("mtpoold.cluster")

#: Seconds the orderly hand-over at shutdown (drain, flush, release) may take in all.
SHUTDOWN_HANDOVER_S: Final = 10.0


#: Rounds (``lease_s / 3`` each) an account must be seen unheld by every node before a node
#: the placement does not give it to takes it (`ClusterNode._adoptions`): more than a
#: failover leaves it unheld (the dead holder's lease, 3 rounds, then its conn key, 3 more,
#: then the new holder's next round), so adoption never races the placement's own moves.
ADOPT_AFTER_ROUNDS: Final = 8


def unconfirmed(cause: str) -> str:
    """The reason an account is out of scheduling while Redis cannot confirm its lease:
    ``"cluster: redis 10.0.0.5:6379 unreachable (TimeoutError); leases unconfirmed"``."""
    return f"cluster: {cause}; leases unconfirmed"


def read_password_file(path: str) -> str:
    """The Redis password from ``[cluster] password_file`` (first line, no newline). A file
    group or others can read is tightened to 0600 with a warning, like a session file.

    Raises:
        ConfigError: the file cannot be read (the message names the path, never its text).
    """
    from ._secrets import ensure_private_file

    ensure_private_file(path, "redis password file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError([f"cluster.password_file: cannot read {path} ({reason})"]) from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError([f"cluster.password_file: {path} is empty"])
    return password


@final
class _LaneStart:
    """One lane's `mtpoold._lane.SharedStart`: the `SharedGate` of its proxy key, with the
    account's lease from the node's lease book."""

    def __init__(self, node: ClusterNode, lane_key: str, jitter_s: tuple[float, float]) -> None:
        self._node = node
        self._lane_key = lane_key
        self._jitter_s = jitter_s
        self._gate: SharedGate | None = None
        self.window = node.start_window

    def _gate_for(self, interval_s: float) -> SharedGate:
        gate = self._gate
        if gate is None or gate.interval_s != interval_s:  # a reload changed the interval
            node = self._node
            gate = self._gate = SharedGate(
                node.link,
                self._lane_key,
                interval_s,
                self._jitter_s if interval_s > 0 else (0.0, 0.0),
                node.rng,
                php_keys=node.config.php_keys,
                php_prefix=node.config.php_prefix,
                clock=node.redis_clock,
            )
        return gate

    def clock_spread_s(self) -> float:
        """The node's Redis-clock uncertainty now (s; `RedisClock.spread_s`)."""
        return self._node.redis_clock.spread_s()

    async def reserve(
        self, account_id: str | None, *, connecting: bool, interval_s: float, window_s: float
    ) -> tuple[float, float]:
        """One reservation in Redis (`SharedGate.reserve_at`): ``(start_at, earliest_at)``,
        trio clock s.

        Raises:
            LeaseUnconfirmed: no locally valid lease, the lease lost in Redis, or Redis
                unreachable.
        """
        node = self._node
        lease = None
        if account_id is not None:
            lease = node.book.lease(account_id)
            if lease is None:
                raise LeaseUnconfirmed(account_id, node.why_unconfirmed(account_id))
        try:
            return await self._gate_for(interval_s).reserve_at(
                lease, window_s=window_s, connecting=connecting, conn_ttl_ms=node.conn_ttl_ms
            )
        except LeaseLost:
            assert account_id is not None
            raise LeaseUnconfirmed(
                account_id, f"cluster: the lease on account {account_id} was lost"
            ) from None
        except ClusterUnavailable as exc:
            node.note_unavailable(exc.cause)
            raise LeaseUnconfirmed(account_id or "", unconfirmed(exc.cause)) from None

    def confirm(self, account_id: str | None) -> None:
        """Raise `LeaseUnconfirmed` unless the lease is still valid on the local clock."""
        if account_id is not None and self._node.book.lease(account_id) is None:
            raise LeaseUnconfirmed(account_id, self._node.why_unconfirmed(account_id))


@final
class ClusterNode:
    """This node in the cluster: its leases, its heartbeat, its lanes' shared gates, and the
    view the doors use (``Pool.cluster``).

    Build with `open_cluster_node`; hand it to the core pool (`mtpoold._pool.open_pool`'s
    ``cluster``: it is the pool's `mtpoold._pool.ClusterSide`), then run it with `running`.

    Args:
        config: ``[cluster]``.
        link: The node's Redis link.
        state: The shared per-account state (its write-behind task runs in `running`), or
            None (no shared state: tests).
        rpc: Where this node's JSON-RPC listens (``host:port``), for the node registry.
        rng: Source of the gates' jitter.
        wall_clock: UNIX time, s.

    Attributes:
        node: This node's name.
        live_nodes: The live nodes' info by name at the last heartbeat (this node included).
        cause: The last `ClusterUnavailable` cause while Redis is unreachable, else None.
        status_source: Builds the status summary each heartbeat publishes
            (``{p}status:{node}``); default: `default_status`. The doors may replace it.
        keepalive_interval_s: ``lease_s / 3`` (`mtpoold._pool.ClusterSide`).
        ping_disconnect_delay_s: ``lease_s``.
    """

    def __init__(
        self,
        config: ClusterConfig,
        link: RedisLink,
        *,
        state: ClusterState | None = None,
        rpc: str = "",
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        from . import __version__

        self.config = config
        self.link = link
        self.state = state
        self.rng = rng or random.Random()
        #: Redis's clock seen from this node, shared by every lane's gate.
        self.redis_clock = RedisClock()
        #: How late after its slot this node's starts may go, shared by its lanes.
        self.start_window = StartWindow()
        self.node = config.node
        self.keepalive_interval_s = config.renew_interval_s
        self.ping_disconnect_delay_s = config.disconnect_delay_s
        self.conn_ttl_ms = int(round((config.lease_s + config.disconnect_delay_s) * 1000))
        self.book = LeaseBook(
            link,
            config.node,
            lease_s=config.lease_s,
            disconnect_delay_s=config.disconnect_delay_s,
            php_keys=config.php_keys,
            php_prefix=config.php_prefix,
        )
        self.registry = NodeRegistry(
            link,
            config.node,
            lease_s=config.lease_s,
            info={
                "rpc": rpc,
                "pid": os.getpid(),
                "started_unix": wall_clock(),
                "version": __version__,
            },
        )
        self.live_nodes: dict[str, dict[str, Any]] = {}
        self.cause: str | None = None
        self.status_source: Callable[[], Mapping[str, Any]] = self.default_status
        self.rounds = 0
        self._quarantined = False
        #: Rounds each account was seen unheld by every node; accounts adopted (`_adoptions`)
        #: and the live nodes they were adopted among.
        self._unheld_rounds: dict[str, int] = {}
        self._adopted: set[str] = set()
        self._adopted_among: set[str] = set()
        self._pool: Pool | None = None
        self._nursery: trio.Nursery | None = None
        #: Accounts taken over here (lease held, shared state applied).
        self._taken: set[str] = set()
        self._draining: set[str] = set()
        self._cutting: set[str] = set()
        #: Taken accounts cut off since their lease was last valid (not cut again).
        self._cut_done: set[str] = set()
        self._holders: dict[str, str | None] = {}
        self._wake = trio.Event()

    def __repr__(self) -> str:
        return (
            f"<ClusterNode {self.node} live={len(self.live_nodes)} held={len(self._taken)}"
            f" draining={len(self._draining)}>"
        )

    # -- ClusterSide (the pool's) -----------------------------------------------------------

    def shared_start(self, lane_key: str, jitter_s: tuple[float, float]) -> _LaneStart:
        """The lane's start slots from the shared gate (`mtpoold._lane.SharedStart`)."""
        return _LaneStart(self, lane_key, jitter_s)

    # -- the doors' view --------------------------------------------------------------------

    @property
    def held(self) -> frozenset[str]:
        """The accounts this node holds and schedules (lease held, shared state applied)."""
        return frozenset(self._taken)

    def holders(self) -> dict[str, str | None]:
        """Every account of the config -> the node holding its lease, as last seen (this
        node's from its own book, the others' from the last round's MGET); None: unheld."""
        out = dict(self._holders)
        for account_id in self._taken:
            out[account_id] = self.node
        return out

    async def fetch_holders(self, account_ids: Sequence[str]) -> dict[str, str | None]:
        """The node holding each account's lease, asked now (one MGET).

        Raises:
            ClusterUnavailable: Redis unreachable.
        """
        return await self.registry.holders(account_ids)

    async def publish_status(self, status: Mapping[str, Any] | None = None) -> None:
        """Publish this node's status summary now (a heartbeat with ``status``; default:
        `status_source`).

        Raises:
            ClusterUnavailable: Redis unreachable.
        """
        self.live_nodes = await self.registry.heartbeat(
            self.status_source() if status is None else status
        )

    def default_status(self) -> dict[str, Any]:
        """The summary each heartbeat publishes: held accounts, accounts by state, lanes,
        the start window (ms) by the gated lanes' ``interval_s`` (``{"2": 8.7}``) and the
        starts that missed theirs (ids, names and counts only: no secret, no phone)."""
        pool = self._pool
        if pool is None:
            return {"node": self.node, "held": []}
        stats = pool.statistics(accounts=False)
        return {
            "node": self.node,
            "held": sorted(self._taken),
            "draining": sorted(self._draining),
            "accounts_by_state": dict(stats.accounts_by_state),
            "lanes": [
                {
                    "key": lane.key,
                    "name": lane.name,
                    "in_flight": lane.in_flight,
                    "waiting": lane.waiting,
                    "calls": lane.calls,
                    "cooldown_remaining_s": lane.cooldown_remaining_s,
                }
                for lane in stats.proxies
            ],
            # the start window a reservation asks for now (`StartWindow.reserving`: the
            # clock's spread plus the wake-up allowance) for each interval_s its gated lanes
            # have (a few, not one per lane), and the starts that missed theirs
            "start_window_ms": {
                f"{interval_s:g}": round(
                    self.start_window.reserving(interval_s, self.redis_clock.spread_s())[0] * 1000,
                    2,
                )
                for interval_s in sorted({p.interval_s for p in stats.proxies if p.interval_s > 0})
            },
            "missed_starts": self.start_window.missed,
            "cause": self.cause,
        }

    @property
    def trouble(self) -> str | None:
        """Why this node serves less than its share right now, one line (no secret), for
        ``status``: Redis unreachable, its node name taken, the epoch quarantine; None when
        nothing is wrong."""
        return self.cause or self.book.last_cause

    def why_unconfirmed(self, account_id: str) -> str:
        """Why this node has no valid lease on the account, one line."""
        if self.cause is not None:
            return unconfirmed(self.cause)
        return f"cluster: this node holds no valid lease on account {account_id}"

    def note_unavailable(self, cause: str) -> None:
        """A round trip found Redis unreachable (``cause``): remembered for the answers."""
        if self.cause is None:
            log_event(log, logging.WARNING, "cluster_unavailable", node=self.node, cause=cause)
        self.cause = cause

    def _note_quarantine(self) -> None:
        """Log the epoch quarantine once when the book first meets it (and its end)."""
        quarantined = bool(self.book.refused) and "quarantine" in self.book.refused.values()
        if quarantined and not self._quarantined:
            log_event(
                log, logging.WARNING, "cluster_quarantine", node=self.node, why=self.book.last_cause
            )
        elif self._quarantined and not quarantined:
            log_event(log, logging.INFO, "cluster_quarantine_over", node=self.node)
        self._quarantined = quarantined

    def _note_available(self) -> None:
        if self.cause is not None:
            log_event(log, logging.INFO, "cluster_available", node=self.node)
        self.cause = None

    # -- running ----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self, pool: Pool) -> AsyncIterator[ClusterNode]:
        """Run the cluster task (and the shared state's write-behind) for ``pool`` for the
        duration of the block; sets ``pool.cluster``. On exit, the orderly hand-over: every
        held account drained (out of scheduling, its call in flight ended, disconnected),
        the shared state flushed, the leases released — bounded by `SHUTDOWN_HANDOVER_S`
        (what is left expires in Redis by itself)."""
        self._pool = pool
        pool.cluster = self
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.state is not None:
                    await nursery.start(self.state.run)
                await nursery.start(self._run)
                try:
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        await self._hand_over_all()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The loop: a round every ``lease_s / 3`` s, and a cut-off when a lease runs out."""
        task_status.started()
        interval_s = self.config.renew_interval_s
        while True:
            started_at = trio.current_time()
            await self._round()
            self.rounds += 1
            next_at = started_at + interval_s
            while True:
                expiry_at = self._earliest_expiry_at()
                with trio.move_on_at(min(next_at, expiry_at)):
                    await self._wake.wait()
                self._wake = trio.Event()
                self._cut_expired()
                if trio.current_time() >= next_at:
                    break

    def wake(self) -> None:
        """Run the next round now (tests; a node that joined)."""
        self._wake.set()

    def _earliest_expiry_at(self) -> float:
        ends = [
            self.book.valid_until(a)
            for a in self._taken
            if a not in self._cutting and self.book.valid_until(a) > trio.current_time()
        ]
        return min(ends, default=float("inf"))

    def _cut_expired(self) -> None:
        """Every taken account whose lease is no longer locally valid: cut off now."""
        for account_id in list(self._taken):
            if (
                account_id not in self._cutting
                and account_id not in self._cut_done
                and self.book.lease(account_id) is None
            ):
                self._cut(account_id, self.why_unconfirmed(account_id))

    def _cut(self, account_id: str, reason: str) -> None:
        pool, nursery = self._pool, self._nursery
        assert pool is not None and nursery is not None
        self._cutting.add(account_id)
        self._cut_done.add(account_id)
        log_event(
            log, logging.WARNING, "lease_cut_off", node=self.node, account=account_id, why=reason
        )

        async def cut() -> None:
            try:
                await pool.cut_off(account_id, reason)
            finally:
                self._cutting.discard(account_id)

        nursery.start_soon(cut, name=f"cut-off:{account_id}")

    async def _round(self) -> None:
        pool = self._pool
        assert pool is not None
        try:
            self.live_nodes = await self.registry.heartbeat(self.status_source())
            connected = [a for a in pool.connected_accounts() if self.book.lease(a) is not None]
            lost = await self.book.renew(connected)
        except ClusterUnavailable as exc:
            self.note_unavailable(exc.cause)
            self._cut_expired()
            # the accounts not held here: their reason names the cause, not "unheld"
            reason = unconfirmed(exc.cause)
            idle = [
                a
                for a in pool.account_ids()
                if a not in self._taken
                and a not in self._cutting
                and a not in self._draining
                and pool.remote_reason(a) not in (None, reason)
            ]
            if idle:
                pool.hold_remote(idle, reason)
            return
        self._note_available()
        for account_id in lost:
            if account_id in self._taken:
                self._taken.discard(account_id)
                self._cut_done.discard(account_id)
                self._cut(account_id, f"cluster: the lease on account {account_id} was lost")
                self._cut_done.discard(account_id)
        ids = pool.account_ids()
        live = list(self.live_nodes) or [self.node]
        placed = assign_accounts(ids, live)
        desired = {a for a in ids if placed.get(a) == self.node}
        desired |= self._adoptions(ids, live)
        held = {a for a in ids if self.book.lease(a) is not None}
        for account_id in sorted(held - desired - self._draining):
            self._start_drain(account_id)
        # held, but no longer in this node's config (a reload removed it): released, or it
        # would stay leased here, renewed each round, and no other node could take it
        for account_id in sorted(set(self.book.held) - set(ids) - self._draining):
            self._start_drain(account_id)
        try:
            want = [a for a in ids if a in desired and a not in held and a not in self._draining]
            if want:
                got = await self.book.acquire(want)
                held |= set(got)
                self._note_quarantine()
            # held, not yet taken over (just acquired, or a pull that failed): pull, apply
            to_take = [
                a
                for a in ids
                if a in held and a in desired and a not in self._taken and a not in self._draining
            ]
            if to_take:
                shared = await self.state.pull_many(to_take) if self.state is not None else {}
                for account_id in to_take:
                    if self.book.lease(account_id) is None:
                        continue
                    pool.take_over(account_id, shared.get(account_id))
                    self._taken.add(account_id)
                    log_event(log, logging.INFO, "lease_taken", node=self.node, account=account_id)
            # taken, still held, but out of scheduling (a lease ran out locally and Redis
            # kept it, or a reservation could not reach Redis): the state is this node's
            for account_id in sorted(self._taken):
                if (
                    account_id not in self._draining
                    and account_id not in self._cutting
                    and self.book.lease(account_id) is not None
                    and pool.remote_reason(account_id) is not None
                ):
                    self._cut_done.discard(account_id)
                    pool.take_over(account_id, None)
            self._taken &= {a for a in held if self.book.lease(a) is not None} | self._draining
            self._adopted &= held
            others = [a for a in ids if a not in held]
            holders = await self.registry.holders(others) if others else {}
        except ClusterUnavailable as exc:
            self.note_unavailable(exc.cause)
            return
        self._holders = dict(holders)
        for account_id in ids:  # rounds each account went unheld by every node
            if holders.get(account_id, self.node) is None and not self._quarantined:
                self._unheld_rounds[account_id] = self._unheld_rounds.get(account_id, 0) + 1
            else:
                self._unheld_rounds.pop(account_id, None)
        by_reason: dict[str, list[str]] = {}
        for account_id, node in holders.items():
            reason = f"held by node {node}" if node else "unheld"
            refused = self.book.refused.get(account_id) if not node else None
            if refused == "quarantine" and self.book.last_cause:
                reason = f"unheld: {self.book.last_cause}"
            elif refused is not None:  # e.g. "PHP lock held" (migration mode)
                reason = f"unheld: {refused}"
            if pool.remote_reason(account_id) != reason and account_id not in self._cutting:
                by_reason.setdefault(reason, []).append(account_id)
        for reason, accounts in by_reason.items():
            pool.hold_remote(accounts, reason)

    def _adoptions(self, ids: Sequence[str], live: Sequence[str]) -> set[str]:
        """Accounts this node takes although the placement puts them elsewhere: unheld by
        every node for `ADOPT_AFTER_ROUNDS` rounds (the nodes' ``[accounts]`` differ, say
        during a reload, and each places it on another node), by the node plain rendezvous
        hashing prefers, by any node after twice as many (the preferred one may not have the
        account). Kept while the live nodes stay the same (not handed back and forth); a
        join or a leave places everything anew. Two nodes trying at once: the acquire is
        atomic, one gets it."""
        if set(live) != self._adopted_among:
            self._adopted_among = set(live)
            self._adopted.clear()
        for account_id in ids:
            rounds = self._unheld_rounds.get(account_id, 0)
            if rounds >= 2 * ADOPT_AFTER_ROUNDS or (
                rounds >= ADOPT_AFTER_ROUNDS and preferred_node(account_id, live) == self.node
            ):
                if account_id not in self._adopted:
                    log_event(
                        log,
                        logging.WARNING,
                        "account_adopted",
                        node=self.node,
                        account=account_id,
                        unheld_rounds=rounds,
                    )
                self._adopted.add(account_id)
        return set(self._adopted)

    def _start_drain(self, account_id: str) -> None:
        nursery = self._nursery
        assert nursery is not None
        self._draining.add(account_id)
        nursery.start_soon(self._drain, account_id, name=f"drain:{account_id}")

    async def _drain(self, account_id: str) -> None:
        """Hand one account over: drain it, flush the shared state, release the lease."""
        pool = self._pool
        assert pool is not None
        try:
            await pool.drain(account_id)
            self._taken.discard(account_id)
            await self._flush_quietly()
            try:
                await self.book.release([account_id])
            except ClusterUnavailable as exc:
                self.note_unavailable(exc.cause)  # the keys expire by themselves
            log_event(log, logging.INFO, "lease_released", node=self.node, account=account_id)
        finally:
            self._draining.discard(account_id)

    async def _flush_quietly(self) -> None:
        if self.state is None:
            return
        try:
            await self.state.flush()
        except ClusterUnavailable as exc:
            self.note_unavailable(exc.cause)

    async def _hand_over_all(self) -> None:
        """Shutdown: drain every held account, flush, release (bounded)."""
        pool = self._pool
        if pool is None:
            return
        held = sorted(a for a in pool.account_ids() if self.book.lease(a) is not None)
        with trio.move_on_after(SHUTDOWN_HANDOVER_S):
            pool.hold_remote(held, "draining")
            async with trio.open_nursery() as nursery:
                for account_id in held:
                    nursery.start_soon(pool.drain, account_id)
            self._taken.clear()
            await self._flush_quietly()
            try:
                if held:
                    await self.book.release(held)
                # leave the registry now, so the others take the accounts over at their next
                # round instead of after this node's key expires (a rolling restart's gap)
                await self.registry.leave()
            except ClusterUnavailable as exc:
                self.note_unavailable(exc.cause)


@asynccontextmanager
async def open_cluster_node(
    config: ClusterConfig,
    *,
    rpc: str = "",
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    shared_state: bool = True,
) -> AsyncIterator[ClusterNode]:
    """Open the Redis link (inside the running trio-asyncio loop) and build the node.

    Args:
        config: ``[cluster]``; its ``password_file`` is read here (`read_password_file`).
        rpc: This node's JSON-RPC address for the registry.
        rng: The gates' jitter source.
        wall_clock: UNIX time, s.
        shared_state: Build the shared per-account state (`ClusterState`); False: none.

    Raises:
        ConfigError: the password file cannot be read.
        ValueError: a malformed ``redis_url``.
    """
    from ._redislink import open_redis_link

    if shared_state:  # its scripts join the registry before the link loads them
        from . import _clusterstate  # noqa: F401

    password = read_password_file(config.password_file) if config.password_file else None
    async with open_redis_link(
        url=config.redis_url,
        password=password,
        key_prefix=config.key_prefix,
        op_timeout_s=config.op_timeout_s,
    ) as link:
        node = ClusterNode(config, link, rpc=rpc, rng=rng, wall_clock=wall_clock)
        if shared_state:
            from ._clusterstate import ClusterState

            book = node.book

            def lease_of(account_id: str) -> str | None:
                lease = book.lease(account_id)
                return None if lease is None else lease.value

            node.state = ClusterState(link, lease_of=lease_of, wall_clock=wall_clock)
        yield node
