"""Which nodes are alive, who holds which account, and which node an account belongs on."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final, final

from ._redislink import ClusterUnavailable, RedisLink

__all__ = ["NodeNameTaken", "NodeRegistry", "assign_accounts", "preferred_node"]


class NodeNameTaken(ClusterUnavailable):
    """This node's ``{p}node:{name}`` key holds another process's info: two nodes were given
    one ``[cluster] node`` name (or a killed node's key has not expired yet, at most
    ``lease_s``). A `ClusterUnavailable`: the node holds no lease while it lasts, says why
    (``cause``: the name, the other's rpc address and pid) and tries again each round.

    Attributes:
        other: The other process's info (``rpc``, ``pid``, ...), ``{}`` if not JSON.
    """

    def __init__(self, node: str, other: Mapping[str, Any]) -> None:
        super().__init__(
            f"node name {node!r} is in use by another live node (rpc {other.get('rpc', '?')},"
            f" pid {other.get('pid', '?')}); give each node its own [cluster] node"
        )
        self.other = dict(other)


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
        self._info_json = json.dumps(self.info, sort_keys=True)
        self._lease_ms = math.ceil(lease_s * 1000)

    def __repr__(self) -> str:
        return f"<NodeRegistry {self.node}>"

    def _pairs(self, reply: Sequence[Any]) -> dict[str, dict[str, Any]]:
        """``[name, json, ...]`` -> ``{name: dict}``; a value that is not a JSON object
        (another program's key, a torn write) gives ``{}``, never an error."""
        out: dict[str, dict[str, Any]] = {}
        for name, raw in zip(reply[::2], reply[1::2], strict=True):
            try:
                value = json.loads(raw) if raw else {}
            except ValueError:
                value = {}
            out[str(name)] = value if isinstance(value, dict) else {}
        return out

    async def heartbeat(self, status: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Refresh this node's key (and its status, PX 3 x renew interval) and return every
        live node's info by name, this node included. One round trip.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
            NodeNameTaken: another process's info is under this node's name (nothing is
                written; a killed node's key expires within ``lease_s``).

        ``status``: JSON-able (``json.dumps``); None keeps the last one until it expires.
        The status key's PX is ``lease_s`` (3 x the renew interval ``lease_s / 3``).
        """
        reply = await self.link.run_script(
            "heartbeat",
            [
                self.link.key("nodes"),
                self.link.key("node", self.node),
                self.link.key("status", self.node),
            ],
            [
                self.node,
                self._info_json,
                self._lease_ms,
                "" if status is None else json.dumps(status, sort_keys=True, default=str),
                self._lease_ms,
                self.link.key("node", ""),
            ],
        )
        if len(reply) == 1:
            raise NodeNameTaken(self.node, self._pairs(["", reply[0]])[""])
        return self._pairs(reply)

    async def leave(self) -> None:
        """Delete this node's key if it is still this node's (a clean exit: the others take
        its accounts at their next round). One round trip.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        await self.link.run_script("leave", [self.link.key("node", self.node)], [self._info_json])

    async def holders(self, account_ids: Sequence[str]) -> dict[str, str | None]:
        """The node holding each account's lease (None: unheld). One MGET.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        ids = list(account_ids)
        if not ids:
            return {}
        values = await self.link.command("MGET", *(self.link.key("lease", a) for a in ids))
        return {
            a: (v.rsplit("|", 2)[0] if isinstance(v, str) and v.count("|") >= 2 else None)
            for a, v in zip(ids, values, strict=True)
        }

    async def statuses(self) -> dict[str, dict[str, Any]]:
        """Every live node's last status (``{p}status:{name}``) by name.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        reply = await self.link.run_script(
            "statuses",
            [self.link.key("nodes")],
            [self.link.key("node", ""), self.link.key("status", "")],
        )
        return self._pairs(reply)


#: BLAKE2b personalization of the rendezvous hash (any fixed value; every node must use the same).
HRW_PERSON: Final = b"mtpoold-hrw"


def _score(node: str, account_id: str) -> int:
    digest = hashlib.blake2b(
        f"{node}\n{account_id}".encode(), digest_size=8, person=HRW_PERSON
    ).digest()
    return int.from_bytes(digest, "big")


def preferred_node(account_id: str, nodes: Collection[str]) -> str | None:
    """The node ``account_id`` belongs on among ``nodes`` (rendezvous / HRW hashing): the node
    with the highest hash of (node, account). Stable across processes; when a node leaves,
    only its accounts move. None if ``nodes`` is empty.

    The hash is BLAKE2b (8 bytes, `HRW_PERSON`) of ``"{node}\n{account_id}"``;
    ties (never seen) go to the smaller name. Even in expectation: each node gets each
    account with probability 1/n, so a small fleet can be off by a few.
    """
    best: tuple[int, str] | None = None
    for node in nodes:
        key = (_score(node, account_id), node)
        if best is None or key[0] > best[0] or (key[0] == best[0] and node < best[1]):
            best = key
    return None if best is None else best[1]


def assign_accounts(account_ids: Collection[str], nodes: Collection[str]) -> dict[str, str]:
    """Which node each account belongs on: rendezvous hashing with bounded loads.

    Every node computes the same answer from the same account ids and live node names (no
    coordination): accounts are taken in id order, each goes to the highest-ranked node (by
    `preferred_node`'s hash) that still has room, and room is ``floor(n / k)`` per node plus
    one more on the first ``n mod k`` nodes to fill up — so loads differ by at most one
    whatever the names, and when a node leaves mostly its own accounts move (an account
    keeps its first-choice node unless that node filled up first).

    Args:
        account_ids: Every account of the fleet (the same set on every node).
        nodes: The live node names.

    Returns:
        ``{account_id: node}``; empty when ``nodes`` is empty.
    """
    names = sorted(set(nodes))
    if not names:
        return {}
    ids = sorted(set(account_ids))
    floor, extra = divmod(len(ids), len(names))
    load = dict.fromkeys(names, 0)
    placed: dict[str, str] = {}
    for account_id in ids:
        ranked = sorted(names, key=lambda node: (-_score(node, account_id), node))
        for node in ranked:
            if load[node] < floor or (load[node] == floor and extra > 0):
                if load[node] == floor:
                    extra -= 1
                load[node] += 1
                placed[account_id] = node
                break
    return placed
