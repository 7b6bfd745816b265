"""A node's account leases in Redis: fenced, batched, renewed well inside the lease time."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import final

import attrs

from ._redislink import RedisLink

__all__ = ["Lease", "LeaseBook"]


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
        #: The last `ClusterUnavailable` cause, or None once Redis answered again.
        self.last_cause: str | None = None

    def lease(self, account_id: str) -> Lease | None:
        """The lease on ``account_id`` if held and still valid on the local trio clock."""
        raise NotImplementedError

    def valid_until(self, account_id: str) -> float:
        """Trio time (s) until which the lease is locally valid; ``-inf`` if not held."""
        raise NotImplementedError

    async def acquire(self, account_ids: Sequence[str]) -> dict[str, Lease]:
        """Try to take the leases on ``account_ids`` in one round trip.

        An account is refused while another node's lease or its conn key exists, while PHP
        holds its lock (migration mode), and every account while the epoch is in quarantine.

        Returns:
            The leases acquired (a subset of ``account_ids``).

        Raises:
            ClusterUnavailable: Redis unreachable or too slow (nothing acquired locally).
        """
        raise NotImplementedError

    async def renew(self, connected: Collection[str]) -> set[str]:
        """Renew every held lease in one round trip; return the ids lost.

        ``connected``: held accounts with an open connection: their conn keys are extended
        too. ``valid_until`` becomes (trio time when the request was sent) + ``lease_s`` -
        margin, margin = ``min(0.5, lease_s / 10)`` s. Lost leases (key gone, expired,
        another node's) are dropped from the book.

        Raises:
            ClusterUnavailable: leases keep their old ``valid_until`` and run out.
        """
        raise NotImplementedError

    async def release(self, account_ids: Sequence[str]) -> None:
        """Release leases (compare-and-delete) and their conn keys, in one round trip.

        Call after the account's connection is closed. Dropped from the book even if Redis
        is unreachable (the keys then expire by themselves).

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        raise NotImplementedError
