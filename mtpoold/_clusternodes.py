"""Which nodes are alive, who holds which account, and which node an account belongs on."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, final

from ._redislink import RedisLink

__all__ = ["NodeRegistry", "preferred_node"]


@final
class NodeRegistry:
    """This node's entry in ``{p}node:{name}`` / ``{p}nodes`` and a view of the others.

    Args:
        link: The node's Redis link.
        node: This node's name.
        lease_s: A node key's PX (a node that stops heartbeating drops out after it).
        info: This node's JSON-able info (``rpc``, ``pid``, ``started_unix``, ``version``).
    """

    def __init__(
        self, link: RedisLink, node: str, *, lease_s: float, info: Mapping[str, Any]
    ) -> None:
        self.link = link
        self.node = node
        self.lease_s = lease_s
        self.info = dict(info)

    async def heartbeat(self, status: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Refresh this node's key (and its status, PX 3 x renew interval) and return every
        live node's info by name, this node included. One round trip.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        raise NotImplementedError

    async def holders(self, account_ids: Sequence[str]) -> dict[str, str | None]:
        """The node holding each account's lease (None: unheld). One MGET.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        raise NotImplementedError

    async def statuses(self) -> dict[str, dict[str, Any]]:
        """Every live node's last status (``{p}status:{name}``) by name.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        raise NotImplementedError


def preferred_node(account_id: str, nodes: Collection[str]) -> str | None:
    """The node ``account_id`` belongs on among ``nodes`` (rendezvous / HRW hashing): the node
    with the highest hash of (node, account). Stable across processes; when a node leaves,
    only its accounts move. None if ``nodes`` is empty.
    """
    raise NotImplementedError
