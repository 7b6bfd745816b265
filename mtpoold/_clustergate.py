"""The per-proxy rate gate shared by every node: one atomic reservation in Redis per call start."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, final

from ._redislink import RedisLink

if TYPE_CHECKING:
    from ._leases import Lease

__all__ = ["LeaseLost", "SharedGate"]


class LeaseLost(Exception):
    """The caller's lease on ``account_id`` is not the one in Redis (expired, released or
    taken by another node): nothing was reserved and the call must not start.

    Attributes:
        account_id: The account whose lease is lost.
    """

    def __init__(self, account_id: str) -> None:
        super().__init__(f"lease on account {account_id} lost")
        self.account_id = account_id


@final
class SharedGate:
    """Call starts through one proxy, across every node, at least ``interval_s`` apart, FIFO
    by arrival at Redis, in one round trip per start.

    The reservation (script ``reserve``, Redis's clock in ms) is the cluster form of
    `mtpoold._gate.RateGate`'s::

        start = max(now + jitter, last_start + interval)

    with the jitter drawn by the caller from ``jitter_s`` and inside the ``max`` for the
    reason `RateGate` gives (a saturated gate starts exactly once per interval). The caller
    sleeps the returned delay on its trio clock.

    Args:
        link: The node's Redis link.
        proxy_key: The proxy's key (the lane's name); the gate key is ``{p}gate:{proxy_key}``.
        interval_s: Minimum seconds between two starts, >= 0.
        jitter_s: ``(low, high)`` seconds of uniform jitter, ``0 <= low <= high``.
        rng: Source of the jitter.
        php_keys: Migration mode: also honour and set the PHP throttle key.
        php_prefix: Prefix of the PHP keys (e.g. ``"laravel_cache:"``).

    Raises:
        ValueError: ``interval_s`` negative or the jitter range invalid.
    """

    def __init__(
        self,
        link: RedisLink,
        proxy_key: str,
        interval_s: float,
        jitter_s: tuple[float, float],
        rng: random.Random,
        php_keys: bool = False,
        php_prefix: str = "",
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s!r}")
        low, high = jitter_s
        if not 0 <= low <= high:
            raise ValueError(f"jitter_s must satisfy 0 <= low <= high, got {jitter_s!r}")
        self.link = link
        self.proxy_key = proxy_key
        self.interval_s = interval_s
        self.jitter_s = jitter_s
        self.rng = rng
        self.php_keys = php_keys
        self.php_prefix = php_prefix
        # Whole ms, never under the interval asked for.
        self._interval_ms = math.ceil(round(interval_s * 1000, 6))
        self._gate_key = link.key("gate", proxy_key)
        self._php_key = f"{php_prefix}tg:proxy:throttle:{proxy_key}"
        #: Redis ms of this gate object's last reserved start (None before the first).
        self.last_start_ms: int | None = None
        #: Reservations made through this object.
        self.reservations = 0

    def __repr__(self) -> str:
        return (
            f"<SharedGate {self.proxy_key} interval_s={self.interval_s} "
            f"reservations={self.reservations}>"
        )

    async def reserve(
        self, lease: Lease | None, *, connecting: bool = False, conn_ttl_ms: int = 0
    ) -> float:
        """Reserve this caller's start slot; return the seconds (>= 0) to sleep before it.

        One round trip. Atomically: checks ``lease`` is the value of ``{p}lease:{account}``;
        computes ``start = max(now + jitter, last + interval)`` (in migration mode also past
        the PHP throttle key's PTTL, and sets that key to expire at ``start + interval``);
        stores ``start``; with ``connecting`` sets ``{p}conn:{account}`` PX ``conn_ttl_ms``.

        Args:
            lease: The caller's lease on the account the call is for; None for a lane call
                not on behalf of an account (no check).
            connecting: This start opens the account's connection.
            conn_ttl_ms: PX of the conn key (lease ms + disconnect delay ms) when connecting.

        Raises:
            LeaseLost: the lease is not the caller's; nothing reserved.
            ClusterUnavailable: Redis unreachable or too slow.

        The sleep counts from when the reply arrives, so a start is never earlier than its
        reservation on Redis's clock; two starts' real gap differs from ``interval_s`` by at
        most the difference of their replies' travel times (sub-ms on loopback).
        """
        low, high = self.jitter_s
        jitter_ms = 0
        if self._interval_ms > 0 and high > 0:
            jitter_ms = round(self.rng.uniform(low, high) * 1000)
        if lease is None:
            lease_key = conn_key = self._gate_key
            value = ""
        else:
            lease_key = self.link.key("lease", lease.account_id)
            conn_key = self.link.key("conn", lease.account_id)
            value = lease.value
        reply = await self.link.run_script(
            "reserve",
            [self._gate_key, lease_key, conn_key, self._php_key],
            [
                value,
                self._interval_ms,
                jitter_ms,
                conn_ttl_ms if connecting else 0,
                1 if self.php_keys else 0,
            ],
        )
        if int(reply[0]) < 0:
            assert lease is not None
            raise LeaseLost(lease.account_id)
        self.reservations += 1
        self.last_start_ms = int(reply[1])
        return max(0.0, int(reply[0]) / 1000)
