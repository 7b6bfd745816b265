"""A node's account leases in Redis: fenced, batched, renewed well inside the lease time."""

from __future__ import annotations

import math
import secrets
from collections.abc import Collection, Sequence
from typing import Final, final

import attrs
import trio

from ._redislink import ClusterUnavailable, RedisLink

__all__ = ["Lease", "LeaseBook", "lease_margin_s"]

#: What ACQUIRE answers for an account it refused, by its code.
REFUSALS: Final = {0: "leased by another node", -1: "connection may be open", -2: "PHP lock held"}


def lease_margin_s(lease_s: float) -> float:
    """Seconds a lease ends locally before Redis expires it: ``min(0.5, lease_s / 10)``."""
    return min(0.5, lease_s / 10)


@attrs.frozen
class Lease:
    """One account's lease as held by ``node``.

    Attributes:
        account_id: The account.
        node: The holding node's name.
        epoch: The Redis epoch id the lease was taken in (``{p}epoch``).
        token: Fencing token from ``INCR {p}fence``: strictly increasing across the cluster.
    """

    account_id: str
    node: str
    epoch: str
    token: int

    @property
    def value(self) -> str:
        """The value stored at ``{p}lease:{account_id}``: ``"node|epoch|token"``."""
        return f"{self.node}|{self.epoch}|{self.token}"


@final
class LeaseBook:
    """A node's leases. One owner: the node's cluster task (not safe for concurrent calls).

    Args:
        link: The node's Redis link.
        node: This node's name.
        lease_s: Lease time in seconds (PX of a lease key).
        disconnect_delay_s: Seconds a connection may outlive its last ping (the DC's
            ping_delay_disconnect); the conn key outlives the lease by this much.
        php_keys: Migration mode: also take/extend/release the PHP account lock.
        php_prefix: Prefix of the PHP keys.
    """

    def __init__(
        self,
        link: RedisLink,
        node: str,
        *,
        lease_s: float,
        disconnect_delay_s: float,
        php_keys: bool = False,
        php_prefix: str = "",
    ) -> None:
        self.link = link
        self.node = node
        self.lease_s = lease_s
        self.disconnect_delay_s = disconnect_delay_s
        self.php_keys = php_keys
        self.php_prefix = php_prefix
        #: Redis ms until which no account may be acquired (after Redis lost its memory),
        #: or None if no quarantine was seen.
        self.quarantined_until_ms: int | None = None
        #: Why the last acquire/renew did not do its whole job (Redis unreachable, quarantine),
        #: or None once one did.
        self.last_cause: str | None = None
        #: Accounts the last acquire refused, with the reason (`REFUSALS`).
        self.refused: dict[str, str] = {}
        self._lease_ms = math.ceil(lease_s * 1000)
        self._quarantine_ms = math.ceil((lease_s + disconnect_delay_s) * 1000)
        self._conn_ttl_ms = self._quarantine_ms
        self._margin_s = lease_margin_s(lease_s)
        self._held: dict[str, Lease] = {}
        self._valid_until: dict[str, float] = {}
        # Leases lost (renew said so) whose conn key may still be ours: release clears it.
        self._lost: dict[str, Lease] = {}

    def __repr__(self) -> str:
        return f"<LeaseBook {self.node} held={len(self._held)} lost={len(self._lost)}>"

    @property
    def conn_ttl_ms(self) -> int:
        """PX of a conn key: lease ms + disconnect delay ms (pass to `SharedGate.reserve`)."""
        return self._conn_ttl_ms

    @property
    def held(self) -> frozenset[str]:
        """Accounts in the book, locally valid or not (renew decides)."""
        return frozenset(self._held)

    def _keys(self, account_id: str) -> list[str]:
        return [
            self.link.key("lease", account_id),
            self.link.key("conn", account_id),
            f"{self.php_prefix}tg:mtproto:lock:{account_id}",
        ]

    def lease(self, account_id: str) -> Lease | None:
        """The lease on ``account_id`` if held and still valid on the local trio clock."""
        if self.valid_until(account_id) > trio.current_time():
            return self._held[account_id]
        return None

    def valid_until(self, account_id: str) -> float:
        """Trio time (s) until which the lease is locally valid; ``-inf`` if not held."""
        return self._valid_until.get(account_id, -math.inf)

    async def acquire(self, account_ids: Sequence[str]) -> dict[str, Lease]:
        """Try to take the leases on ``account_ids`` in one round trip.

        An account is refused while another node's lease or its conn key exists, while PHP
        holds its lock (migration mode), and every account while the epoch is in quarantine.

        Returns:
            The leases acquired (a subset of ``account_ids``).

        Raises:
            ClusterUnavailable: Redis unreachable or too slow (nothing acquired locally).

        Accounts already in the book are skipped (not asked for again). A lease taken in
        Redis whose reply never arrived (a timeout) stays unused and expires after
        ``lease_s``.
        """
        wanted = [a for a in dict.fromkeys(account_ids) if a not in self._held]
        if not wanted:
            return {}
        keys = [self.link.key("fence"), self.link.key("epoch")]
        for account_id in wanted:
            keys += self._keys(account_id)
        args: list[str | int] = [
            self.node,
            self._lease_ms,
            self._quarantine_ms,
            1 if self.php_keys else 0,
            secrets.token_hex(8),
        ]
        sent_at = trio.current_time()
        try:
            reply = await self.link.run_script("acquire", keys, args)
        except ClusterUnavailable as exc:
            self.last_cause = exc.cause
            raise
        ok, epoch, until_ms, now_ms = int(reply[0]), str(reply[1]), int(reply[2]), int(reply[3])
        self.refused = {}
        if not ok:
            self.quarantined_until_ms = until_ms
            self.last_cause = (
                f"cluster: epoch quarantine, no account acquired for"
                f" {max(0, until_ms - now_ms) / 1000:.1f} s more (redis had no epoch: a first"
                f" start on an empty redis, or it lost its data: a restart without AOF, FLUSHALL)"
            )
            self.refused = dict.fromkeys(wanted, "quarantine")
            return {}
        self.last_cause = None
        valid_until = sent_at + self.lease_s - self._margin_s
        acquired: dict[str, Lease] = {}
        for account_id, result in zip(wanted, reply[4:], strict=True):
            token = int(result)
            if token <= 0:
                self.refused[account_id] = REFUSALS.get(token, "refused")
                continue
            lease = Lease(account_id, self.node, epoch, token)
            self._held[account_id] = lease
            self._valid_until[account_id] = valid_until
            self._lost.pop(account_id, None)
            acquired[account_id] = lease
        return acquired

    async def renew(self, connected: Collection[str]) -> set[str]:
        """Renew every held lease in one round trip; return the ids lost.

        ``connected``: held accounts with an open connection: their conn keys are extended
        too. ``valid_until`` becomes (trio time when the request was sent) + ``lease_s`` -
        margin, margin = ``min(0.5, lease_s / 10)`` s. Lost leases (key gone, expired,
        another node's) are dropped from the book.

        Raises:
            ClusterUnavailable: leases keep their old ``valid_until`` and run out.
        """
        held = list(self._held.values())
        if not held:
            return set()
        keys: list[str] = []
        args: list[str | int] = [self._lease_ms, self._conn_ttl_ms, 1 if self.php_keys else 0]
        for lease in held:
            keys += self._keys(lease.account_id)
            args += [lease.value, 1 if lease.account_id in connected else 0]
        sent_at = trio.current_time()
        try:
            reply = await self.link.run_script("renew", keys, args)
        except ClusterUnavailable as exc:
            self.last_cause = exc.cause
            raise
        self.last_cause = None
        valid_until = sent_at + self.lease_s - self._margin_s
        lost: set[str] = set()
        for lease, result in zip(held, reply, strict=True):
            if int(result) == 1:
                self._valid_until[lease.account_id] = valid_until
            else:
                lost.add(lease.account_id)
                self._drop(lease.account_id)
                self._lost[lease.account_id] = lease
        return lost

    def _drop(self, account_id: str) -> None:
        self._held.pop(account_id, None)
        self._valid_until.pop(account_id, None)

    async def release(self, account_ids: Sequence[str]) -> None:
        """Release leases (compare-and-delete) and their conn keys, in one round trip.

        Call after the account's connection is closed. Dropped from the book even if Redis
        is unreachable (the keys then expire by themselves).

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.

        An account renew reported lost may be released too: that clears its conn key if the
        key is still this lease's, so the account can move without waiting for it to expire.
        """
        leases: list[Lease] = []
        for account_id in dict.fromkeys(account_ids):
            lease = self._held.get(account_id) or self._lost.pop(account_id, None)
            self._drop(account_id)
            if lease is not None:
                leases.append(lease)
        if not leases:
            return
        keys: list[str] = []
        args: list[str | int] = [1 if self.php_keys else 0]
        for lease in leases:
            keys += self._keys(lease.account_id)
            args.append(lease.value)
        try:
            await self.link.run_script("release", keys, args)
        except ClusterUnavailable as exc:
            self.last_cause = exc.cause
            raise
