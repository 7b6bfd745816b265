"""The per-proxy rate gate shared by every node: one atomic reservation in Redis per call start."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, final

import trio

from ._redisclock import RedisClock
from ._redislink import RedisLink
from ._startwindow import DEFAULT_S

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

        start = max(now + jitter, last_start + last_window + interval)

    with the jitter drawn by the caller from ``jitter_s`` and inside the ``max`` for the
    reason `RateGate` gives (a saturated gate starts exactly once per interval plus the
    window), and ``last_window`` the previous start's window: how late after its slot that
    start may go (`mtpoold._startwindow`, chosen by the node that reserved it). The caller
    starts at the slot mapped onto its trio clock (`reserve_at`,
    `mtpoold._redisclock.RedisClock`), or not at all past its own window.

    Args:
        link: The node's Redis link.
        proxy_key: The proxy's key (the lane's name); the gate key is ``{p}gate:{proxy_key}``.
        interval_s: Minimum seconds between two starts, >= 0.
        jitter_s: ``(low, high)`` seconds of uniform jitter, ``0 <= low <= high``.
        rng: Source of the jitter.
        php_keys: Migration mode: also honour and set the PHP throttle key.
        php_prefix: Prefix of the PHP keys (e.g. ``"laravel_cache:"``).
        clock: Redis's clock seen from this node (`mtpoold._redisclock.RedisClock`), shared
            by the node's gates; a new one if None.

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
        clock: RedisClock | None = None,
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
        self.clock = RedisClock() if clock is None else clock
        # Whole ms, never under the interval asked for.
        self._interval_ms = math.ceil(round(interval_s * 1000, 6))
        self._gate_key = link.key("gate", proxy_key)
        self._php_key = f"{php_prefix}tg:proxy:throttle:{proxy_key}"
        #: Redis ms of this gate object's last reserved start, its slot (None before the first).
        self.last_start_ms: int | None = None
        #: Reservations made through this object.
        self.reservations = 0

    def __repr__(self) -> str:
        return (
            f"<SharedGate {self.proxy_key} interval_s={self.interval_s} "
            f"reservations={self.reservations}>"
        )

    async def reserve(
        self,
        lease: Lease | None,
        *,
        window_s: float = DEFAULT_S,
        connecting: bool = False,
        conn_ttl_ms: int = 0,
    ) -> float:
        """`reserve_at`, as the seconds (>= 0) to sleep from now before the start."""
        start_at, _ = await self.reserve_at(
            lease, window_s=window_s, connecting=connecting, conn_ttl_ms=conn_ttl_ms
        )
        return max(0.0, start_at - trio.current_time())

    async def reserve_at(
        self,
        lease: Lease | None,
        *,
        window_s: float = DEFAULT_S,
        connecting: bool = False,
        conn_ttl_ms: int = 0,
    ) -> tuple[float, float]:
        """Reserve this caller's start slot; return where it falls on the trio clock.

        One round trip. Atomically: checks ``lease`` is the value of ``{p}lease:{account}``;
        computes ``start = max(now + jitter, last_end + interval)`` (in migration mode also
        past the PHP throttle key's PTTL, and sets that key to expire at ``start + window +
        interval``); stores ``last_end = start + window``; with ``connecting`` sets
        ``{p}conn:{account}`` PX ``conn_ttl_ms``.

        Args:
            lease: The caller's lease on the account the call is for; None for a lane call
                not on behalf of an account (no check).
            window_s: How late after the earliest instant of its slot this start may go
                (s, >= 0; rounded up to whole ms; the node's
                `mtpoold._startwindow.StartWindow`, `DEFAULT_S` for a caller without one):
                the next slot is reserved at least ``interval + window`` after this one.
                Ignored (0) on an ungated proxy.
            connecting: This start opens the account's connection.
            conn_ttl_ms: PX of the conn key (lease ms + disconnect delay ms) when connecting.

        Raises:
            LeaseLost: the lease is not the caller's; nothing reserved.
            ClusterUnavailable: Redis unreachable or too slow.

        Returns:
            ``(start_at, earliest_at)``, trio clock seconds: the slot mapped through
            `clock` (`mtpoold._redisclock.RedisClock`). Starting at ``start_at`` is never
            before the slot on Redis's clock; the slot may have been as early as
            ``earliest_at`` (their gap is about the fastest recent round trip, not this
            reply's travel time).
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
        sent_at = trio.current_time()
        reply = await self.link.run_script(
            "reserve",
            [self._gate_key, lease_key, conn_key, self._php_key],
            [
                value,
                self._interval_ms,
                jitter_ms,
                conn_ttl_ms if connecting else 0,
                1 if self.php_keys else 0,
                math.ceil(round(window_s * 1000, 6)) if self._interval_ms > 0 else 0,
            ],
        )
        if int(reply[0]) < 0:
            assert lease is not None
            raise LeaseLost(lease.account_id)
        received_at = trio.current_time()
        self.reservations += 1
        self.last_start_ms = int(reply[1])
        self.clock.observe(sent_at, received_at, int(reply[3]) / 1_000_000)
        earliest_at, start_at = self.clock.local_span(self.last_start_ms / 1000)
        return start_at, earliest_at
