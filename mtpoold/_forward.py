"""One pool, many doors: a job given to any node of a cluster is served by the node that can.

In cluster mode (``[cluster]``, issue 15) every node accepts every job. `Doors.serve` decides
where a job runs and, when another node must run it, forwards it there over that node's own
JSON-RPC ``POST /rpc`` (`PeerLinks`: keep-alive HTTP/1.1 connections per peer, the cluster's
one shared bearer token). The rule (``README.md`` "Cluster" repeats it for users):

* **A forwarded request is never forwarded again.** It carries the hop marker header
  `HOP_HEADER` (``Mtpoold-Forwarded-By: <node>``); the receiving node runs it on its own
  accounts only (`mtpoold._server` reads the header).
* **Pinned** (``options.account``): served where the account's lease is. Held here (a lease
  valid on the local clock) → the local pool. Held by another live node (one ``MGET`` of the
  lease key) → forwarded there. Held by nobody, or by a node that does not answer (nothing
  sent) → looked up again every renew interval (``lease_s / 3``) until the job's deadline:
  a failover moves the account within ``lease_s + disconnect_delay_s + lease_s / 3``
  (README "Cluster"); still nowhere at the deadline → NO_ACCOUNT_AVAILABLE naming why, with
  ``retry_after_s`` = that failover bound. A holder answering NO_ACCOUNT_AVAILABLE with no
  attempt and no ``retry_after_s`` (it let the account go after our look-up: a drain) gets
  one more look-up a renew interval later; the same answer from the same holder again is the
  reply (a disabled account is answered so, one interval late). An account the config does
  not know, and any pinned job while Redis is unreachable, goes to the local pool (which
  says why).
* **Tagged or free** (no ``options.account``): the local accounts first. Only when the local
  pool answers NO_ACCOUNT_AVAILABLE **having made no attempt** (no local account matches the
  tags, or none can start before the deadline) and time is left, the job is forwarded to the
  peers holding matching accounts, the one with the most matching accounts that are not
  cooling, disabled, retired or draining first (from the peers' status summaries, refreshed every
  renew interval). A peer that answers NO_ACCOUNT_AVAILABLE with no attempt, or cannot be
  reached, passes the job to the next; the last answer is the reply. While the summaries
  cannot be read (Redis unreachable) the local answer is the reply.
* **Exactly one reply.** The reply of a forwarded job is the peer's reply as it sent it
  (result, or error object with its code and ``data``). A peer that goes away after the
  request was sent (connection lost before a complete reply) makes the job fail with
  -32001, class STREAM_CLOSED ("outcome unknown": the peer may have made the call),
  ``retry_after_s`` = the failover bound, ``attempts`` 1. A peer that does not answer
  within the job's deadline (+ `DEADLINE_GRACE_S`): -32001 DEADLINE_EXCEEDED.
* **Cancellation.** The forwarded request carries the job's remaining deadline
  (``options.deadline_ms``). When the original job is cancelled (``cancel``, its client gone,
  a shutdown) its connection to the peer is closed, and the peer cancels the job, as for any
  HTTP client that disconnects (`mtpoold._httprpc`); the connection is not reused.

Why forwarding and not a Redis stream: ``docs/ARCHITECTURE.md`` ("Cluster").

No Redis here: the cluster is seen through `ClusterDirectory` (`NodeDirectory` adapts the
daemon's cluster task, `mtpoold._clusterrun.ClusterNode`; `RegistryDirectory` the core's
`NodeRegistry` and `LeaseBook`), so the single-node path imports none of it. The daemon
builds its doors with `Doors.for_cluster` and runs `Doors.run` in its nursery.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import select
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import attrs
import h11
import trio

from ._errors import ErrorClass, JobFailed
from ._httprpc import HOP_HEADER
from ._logformat import log_event
from ._rpc import SHUTTING_DOWN, RpcError

if TYPE_CHECKING:
    from ._clusternodes import NodeRegistry
    from ._clusterrun import ClusterNode
    from ._leases import LeaseBook

__all__ = [
    "FORWARD_OUTCOMES",
    "DEADLINE_GRACE_S",
    "HOP_HEADER",
    "ClusterDirectory",
    "Doors",
    "ForwardableJob",
    "configured_accounts",
    "NodeDirectory",
    "PeerLinks",
    "PeerLost",
    "PeerUnreachable",
    "RegistryDirectory",
    "node_summary",
    "rpc_address",
]

_log = logging.getLogger("mtpoold.forward")

#: How a forwarded job ended: the peer answered it ("ok"), answered an error ("error"), never
#: answered within the deadline ("lost"), or could not be reached ("unreachable").
FORWARD_OUTCOMES: Final = frozenset({"ok", "error", "lost", "unreachable"})
#: Seconds past a forwarded job's deadline its peer still has to deliver the reply (the
#: peer answers at the deadline itself; this covers the wire and a busy event loop).
DEADLINE_GRACE_S: Final = 2.0
#: Seconds to connect to a peer, at most (bounded by the job's deadline too).
CONNECT_TIMEOUT_S: Final = 2.0
#: Seconds an idle keep-alive connection to a peer is kept: below the peer's own idle limit
#: (``handshake_timeout_s``, 10 s by default), so the peer never closes a connection we are
#: about to reuse.
IDLE_KEEP_S: Final = 4.0
#: Idle connections kept per peer, at most.
IDLE_PER_PEER: Final = 8
#: Requests in flight to one peer at once, at most (each on its own connection).
CONNECTIONS_PER_PEER: Final = 64
#: Bytes of a peer's reply, at most (a job's result; `mtpoold._rpcclient.MAX_REPLY_BYTES`).
MAX_REPLY_BYTES: Final = 64 * 2**20
_READ_BYTES: Final = 65536
#: Account states a peer cannot serve a job on soon (its summary's ``held`` values).
_UNSERVING: Final = frozenset({"cooldown", "disabled", "retired", "draining"})


# --- the transport: keep-alive POST /rpc to peers -------------------------------------------------


class PeerUnreachable(Exception):
    """Nothing reached the peer's pool: refused, timed out connecting, refused at its door
    (401/403/503), or it is shutting down. Safe to try elsewhere.

    Attributes:
        cause: One line naming the peer and why (no token).
        http_status: The HTTP status of a refusal at the peer's door, else None.
    """

    def __init__(self, cause: str, *, http_status: int | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.http_status = http_status


class PeerLost(Exception):
    """The request went out but no complete reply came back (the peer died, the connection
    broke): whether the peer made the call is unknown.

    Attributes:
        cause: One line naming the peer and what happened.
    """

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


#: Opens a stream to a peer's ``rpc`` address (``host:port`` or ``unix:/path``).
Connector = Callable[[str], Awaitable[trio.abc.Stream]]


async def _open_rpc_stream(rpc: str) -> trio.abc.Stream:
    if rpc.startswith("unix:"):
        return await trio.open_unix_socket(rpc[5:])
    host, sep, port = rpc.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"not a host:port address: {rpc!r}")
    return await trio.open_tcp_stream(host.strip("[]"), int(port))


def _closed_by_peer(stream: trio.abc.Stream) -> bool:
    """Whether an idle socket already has something to read (EOF: the peer closed it, or
    stray bytes): such a connection is not reused. Memory streams (tests) are never stale."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))  # readable, hung up or in error: not reused
    except (OSError, ValueError):
        return True


@attrs.define(eq=False)
class _PeerConnection:
    stream: trio.abc.Stream
    h11: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0


@final
@attrs.define(eq=False)
class PeerLinks:
    """Keep-alive HTTP/1.1 connections to the cluster's peers, one request at a time each.

    Args:
        node: This node's name, sent in the hop marker `HOP_HEADER`.
        token: The bearer token; the cluster's nodes share one (``README.md`` "Cluster").
        connect: Opens a stream to an ``rpc`` address (default: TCP or a unix socket).
        connect_timeout_s: Seconds a connect may take, at most.

    Resource handling: idle connections are kept `IDLE_KEEP_S` seconds (at most
    `IDLE_PER_PEER` per peer) and closed by `aclose`; a connection whose exchange was
    cancelled or failed is closed at once, never reused.
    """

    node: str
    token: str = attrs.field(repr=False)
    connect: Connector = _open_rpc_stream
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    _idle: dict[str, list[_PeerConnection]] = attrs.field(init=False, factory=dict)
    _limits: dict[str, trio.CapacityLimiter] = attrs.field(init=False, factory=dict)
    #: Connections opened, and exchanges that reused a kept-alive one (tests, status).
    opened: int = attrs.field(init=False, default=0)
    reused: int = attrs.field(init=False, default=0)

    async def call(self, rpc: str, request: Mapping[str, Any]) -> Any:
        """POST one JSON-RPC request object to the peer at ``rpc``; its decoded reply object.

        No deadline of its own: the caller's cancel scope bounds it (and a cancel closes the
        connection, which cancels the peer's job).

        Raises:
            PeerUnreachable: nothing reached the peer's dispatcher (connect failed, refused at
                its door, it is shutting down: HTTP 401/403/503 or any refusal status).
            PeerLost: the request was sent, no complete reply came back.
        """
        limit = self._limits.setdefault(rpc, trio.CapacityLimiter(CONNECTIONS_PER_PEER))
        async with limit:
            conn = await self._take_idle(rpc)
            if conn is None:
                conn = await self._open(rpc)
            else:
                self.reused += 1
            done = False
            try:
                status, reply = await self._exchange(rpc, conn, request)
                done = True
            finally:
                if not done:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(conn.stream)
            await self._settle(rpc, conn)
        if status != 200 and not (isinstance(reply, Mapping) and reply.get("id") is not None):
            message = ""
            if isinstance(reply, Mapping) and isinstance(reply.get("error"), Mapping):
                message = str(reply["error"].get("message", ""))
            raise PeerUnreachable(
                f"node at {rpc} refused the request: HTTP {status} {message}".rstrip(),
                http_status=status,
            )
        return reply

    async def _take_idle(self, rpc: str) -> _PeerConnection | None:
        idle = self._idle.get(rpc) or []
        while idle:
            conn = idle.pop()
            fresh = trio.current_time() - conn.idle_since < IDLE_KEEP_S
            if fresh and not _closed_by_peer(conn.stream):
                return conn
            await trio.aclose_forcefully(conn.stream)
        return None

    async def _open(self, rpc: str) -> _PeerConnection:
        try:
            with trio.fail_after(self.connect_timeout_s):
                stream = await self.connect(rpc)
        except trio.TooSlowError:
            raise PeerUnreachable(
                f"node at {rpc} did not accept a connection within {self.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise PeerUnreachable(
                f"cannot connect to node at {rpc}: {exc.strerror or type(exc).__name__}"
            ) from None
        self.opened += 1
        return _PeerConnection(stream)

    async def _exchange(
        self, rpc: str, conn: _PeerConnection, request: Mapping[str, Any]
    ) -> tuple[int, Any]:
        body = json.dumps(request, ensure_ascii=False, allow_nan=False).encode("utf-8")
        head = h11.Request(
            method="POST",
            target="/rpc",
            headers=[
                (b"Host", rpc.encode("idna") if not rpc.startswith("unix:") else b"localhost"),
                (b"Authorization", b"Bearer " + self.token.encode("utf-8")),
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(body)).encode()),
                (HOP_HEADER.encode("ascii"), self.node.encode("utf-8")),
            ],
        )
        data = conn.h11.send(head) + (conn.h11.send(h11.Data(data=body)) or b"")
        data += conn.h11.send(h11.EndOfMessage()) or b""
        try:
            await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise PeerLost(f"connection to node at {rpc} lost while sending") from None
        status = 0
        received = bytearray()
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise PeerLost(f"node at {rpc} sent a broken HTTP reply ({exc})") from None
            if event is h11.NEED_DATA:
                try:
                    chunk = await conn.stream.receive_some(_READ_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    chunk = b""
                if not chunk and conn.h11.their_state is not h11.DONE:
                    raise PeerLost(f"connection to node at {rpc} lost before its reply")
                conn.h11.receive_data(bytes(chunk))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                received += event.data
                if len(received) > MAX_REPLY_BYTES:
                    raise PeerLost(f"node at {rpc} sent a reply over {MAX_REPLY_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise PeerLost(f"connection to node at {rpc} lost before its reply")
        try:
            return status, json.loads(received)
        except ValueError:
            raise PeerLost(f"node at {rpc} sent an HTTP {status} reply that is not JSON") from None

    async def _settle(self, rpc: str, conn: _PeerConnection) -> None:
        """Keep a connection whose exchange completed cleanly, else close it."""
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            idle = self._idle.setdefault(rpc, [])
            if len(idle) < IDLE_PER_PEER:
                conn.idle_since = trio.current_time()
                idle.append(conn)
                return
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(conn.stream)

    def idle_connections(self) -> int:
        """Idle kept-alive connections to all peers."""
        return sum(len(v) for v in self._idle.values())

    async def aclose(self) -> None:
        """Close every idle connection. Idempotent."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await trio.aclose_forcefully(conn.stream)


def configured_accounts(
    current: Callable[[], Any],
) -> Callable[[], Mapping[str, tuple[str, ...]]]:
    """`Doors`' ``accounts`` for a config that a reload may replace: ``current()`` returns the
    config in force (an `mtpoold.Config`); its accounts' tags by id are built once per config
    object, not per job."""
    seen: list[Any] = [None, {}]

    def accounts() -> Mapping[str, tuple[str, ...]]:
        config = current()
        if seen[0] is not config:
            seen[:] = [config, {a.id: tuple(a.tags) for a in config.accounts}]
        result: Mapping[str, tuple[str, ...]] = seen[1]
        return result

    return accounts


def rpc_address(listen: str, *, host: str | None = None) -> str:
    """The address a node advertises to its peers (``rpc`` of its node record) for its
    ``[daemon] listen``: a wildcard host (``0.0.0.0``, ``::``, empty) becomes ``host``
    (default: this machine's fully qualified name); anything else is kept as it is.

    Raises:
        ValueError: ``listen`` is malformed (`mtpoold._listen.parse_listen`).
    """
    import socket

    from ._listen import parse_listen

    address = parse_listen(listen)
    if address.path is not None:
        return f"unix:{address.path}"
    name = address.host or ""
    if name in ("", "0.0.0.0", "::"):
        name = host if host is not None else socket.getfqdn()
    return f"[{name}]:{address.port}" if ":" in name else f"{name}:{address.port}"


# --- what the doors know of the cluster -----------------------------------------------------------


class ClusterDirectory(Protocol):
    """What forwarding needs to know of the cluster (`RegistryDirectory` over the core)."""

    @property
    def node(self) -> str:
        """This node's name."""
        ...

    def holds(self, account_id: str) -> bool:
        """Whether this node holds the account's lease, valid on the local clock now."""
        ...

    async def holders(self, account_ids: Sequence[str]) -> Mapping[str, str | None]:
        """The node holding each account's lease (None: unheld); one Redis round trip.

        Raises:
            ClusterUnavailable: Redis unreachable (any exception counts as that here).
        """
        ...

    async def statuses(self) -> Mapping[str, Mapping[str, Any]]:
        """Every live node's status summary (`node_summary`) by name; one round trip."""
        ...


@final
@attrs.define(eq=False)
class RegistryDirectory:
    """`ClusterDirectory` over the core's `NodeRegistry` and `LeaseBook` (`mtpoold._clusternodes`,
    `mtpoold._leases`)."""

    registry: NodeRegistry
    leases: LeaseBook

    @property
    def node(self) -> str:
        """This node's name (the registry's)."""
        return self.registry.node

    def holds(self, account_id: str) -> bool:
        """`LeaseBook.lease` is not None."""
        return self.leases.lease(account_id) is not None

    async def holders(self, account_ids: Sequence[str]) -> Mapping[str, str | None]:
        """`NodeRegistry.holders`."""
        return await self.registry.holders(account_ids)

    async def statuses(self) -> Mapping[str, Mapping[str, Any]]:
        """`NodeRegistry.statuses`."""
        return await self.registry.statuses()


@final
@attrs.define(eq=False)
class NodeDirectory:
    """`ClusterDirectory` over the daemon's `mtpoold._clusterrun.ClusterNode`: its lease book
    for `holds`, its registry for `holders` and `statuses`, and the ``rpc`` address of each
    live node from the node records of its last heartbeat (``live_nodes``) when a summary
    does not carry one."""

    cluster: ClusterNode

    @property
    def node(self) -> str:
        """This node's name."""
        return self.cluster.node

    def holds(self, account_id: str) -> bool:
        """A lease valid on the local clock (`LeaseBook.lease`)."""
        return self.cluster.book.lease(account_id) is not None

    async def holders(self, account_ids: Sequence[str]) -> Mapping[str, str | None]:
        """`ClusterNode.fetch_holders` (one MGET)."""
        return await self.cluster.fetch_holders(account_ids)

    async def statuses(self) -> Mapping[str, Mapping[str, Any]]:
        """Every live node's summary, with its ``rpc`` address (one round trip)."""
        statuses = await self.cluster.registry.statuses()
        live = self.cluster.live_nodes
        out: dict[str, Mapping[str, Any]] = {}
        for name in set(statuses) | set(live):
            status = dict(statuses.get(name) or {})
            if not status.get("rpc"):
                status["rpc"] = (live.get(name) or {}).get("rpc")
            out[name] = status
        return out


def _held_states(status: Mapping[str, Any]) -> Mapping[str, str]:
    """A summary's held accounts -> their state: ``held`` as a mapping (`node_summary`) or a
    list of ids (states unknown: ``"held"``); those in its ``draining`` list: ``"draining"``."""
    held = status.get("held")
    if isinstance(held, Mapping):
        states = {str(a): str(s) for a, s in held.items()}
    elif isinstance(held, list | tuple):
        states = dict.fromkeys(map(str, held), "held")
    else:
        return {}
    draining = status.get("draining")
    for account in draining if isinstance(draining, list | tuple) else ():
        if str(account) in states:
            states[str(account)] = "draining"  # on its way to another node
    return states


def node_summary(
    stats: Any, *, node: str, rpc: str, held: Collection[str], lanes_limit: int = 200
) -> dict[str, Any]:
    """A node's status summary for ``{p}status:{name}`` (`NodeRegistry.heartbeat`'s
    ``status``): what cluster status and forwarding read of the other nodes.

    Args:
        stats: This node's ``Pool.statistics()`` (a `PoolStatistics`), or its unstructured
            JSON form. With ``accounts=False`` (cheaper for a large fleet) the held accounts'
            states are unknown (``"held"``) and forwarding ranks peers by count alone.
        node: This node's name.
        rpc: Where its JSON-RPC listens for peers (``host:port``).
        held: The accounts whose lease this node holds.
        lanes_limit: Lanes listed at most (the busiest first); the rest are counted.

    Returns:
        ``{"node", "rpc", "jobs_in_flight", "jobs_ok", "jobs_failed", "held": {account:
        state}, "lanes": [{"key", "name", "type", "in_flight", "capacity", "waiting",
        "calls", "cooldown_remaining_s"}], "lanes_more": int}`` — ids, counts and seconds
        only (no secret, no personal data).
    """
    accounts = _field(stats, "accounts") or ()
    states = {str(_field(a, "id")): str(_field(a, "state")) for a in accounts}
    lanes = [
        {
            k: _field(p, k)
            for k in (
                "key",
                "name",
                "type",
                "in_flight",
                "capacity",
                "waiting",
                "calls",
                "cooldown_remaining_s",
            )
        }
        for p in _field(stats, "proxies") or ()
    ]
    lanes.sort(key=lambda p: (-_number(p.get("in_flight")), -_number(p.get("waiting"))))
    return {
        "node": node,
        "rpc": rpc,
        "jobs_in_flight": _field(stats, "jobs_in_flight"),
        "jobs_ok": _field(stats, "jobs_ok"),
        "jobs_failed": _field(stats, "jobs_failed"),
        "held": {a: states.get(a, "held") for a in sorted(held)},
        "lanes": lanes[:lanes_limit],
        "lanes_more": max(0, len(lanes) - lanes_limit),
    }


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` of a JSON form, ``obj.name`` of a statistics snapshot, None if absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    value = getattr(obj, name, None)
    return value.value if isinstance(value, enum.Enum) else value


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


# --- the doors ------------------------------------------------------------------------------------


@attrs.frozen
class ForwardableJob:
    """A job request as a node received it, with what routing reads of it.

    Attributes:
        method: ``invoke``, ``resolve`` or ``get_messages``.
        params: Its ``params`` as the client sent them (JSON); forwarded as they are, with
            ``options.deadline_ms`` set to what is left of the job's deadline.
        account: ``options.account``, or None.
        tags: ``options.tags``.
        deadline_s: ``options.deadline_ms`` in seconds, or None (the policy's default).
    """

    method: str
    params: Mapping[str, Any]
    account: str | None = None
    tags: tuple[str, ...] = ()
    deadline_s: float | None = None


#: Runs a job on this node's own pool: the JSON result, or `JobFailed` / `RpcError`.
LocalRun = Callable[[], Awaitable[Any]]


@attrs.frozen
class _Snapshot:
    at: float = -math.inf  # trio time of the refresh
    statuses: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    cause: str | None = None  # why the last refresh failed, if it did


def _cause_of(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, str) else type(exc).__name__


@final
@attrs.define(eq=False)
class Doors:
    """Routes each job of a cluster node: its own pool, or forwarded to a peer (module
    docstring: the rule).

    Args:
        directory: The cluster as this node sees it.
        links: The connections to peers (its ``node`` is this node's name).
        accounts: The configured accounts and their tags (id -> tags), read at each job (a
            reload may change them).
        default_deadline_s: A job's deadline when it names none (``[policy] job_deadline_s``).
        refresh_s: Seconds between two reads of the peers' status summaries, and between two
            look-ups of a pinned account held nowhere (the renew interval, ``lease_s / 3``).
        failover_s: The bound on moving a dead node's account (``lease_s`` +
            ``disconnect_delay_s`` + ``lease_s / 3``, README "Cluster"): ``retry_after_s``
            of the errors this module makes.

    Resource handling: `run` (in the daemon's nursery) refreshes the peers' summaries until
    cancelled; `serve` runs in the job's task. Leaving `run` closes the idle connections.
    """

    directory: ClusterDirectory
    links: PeerLinks
    accounts: Callable[[], Mapping[str, Collection[str]]]
    default_deadline_s: float
    refresh_s: float
    failover_s: float
    #: Why this node serves less than its share now (`ClusterNode.trouble`), for status.
    trouble: Callable[[], str | None] = lambda: None
    #: Why this node's last try to acquire the account was refused (`LeaseBook.refused`:
    #: "PHP lock held", "quarantine", ...), or None: named when a pinned job finds it unheld.
    refusal: Callable[[str], str | None] = lambda _account: None
    _snapshot: _Snapshot = attrs.field(init=False, factory=_Snapshot)
    _in_flight: dict[int, tuple[str, str | None, str, float]] = attrs.field(
        init=False, factory=dict
    )  # forwarded jobs: method, account, node, trio time sent
    _next_id: int = attrs.field(init=False, default=0)
    _refreshed: trio.Event = attrs.field(init=False, factory=trio.Event)
    #: Jobs forwarded by outcome (status, metrics): one of `FORWARD_OUTCOMES`.
    forwarded: dict[str, int] = attrs.field(init=False, factory=dict)

    @classmethod
    def for_cluster(
        cls,
        cluster: ClusterNode,
        *,
        token: str,
        accounts: Callable[[], Mapping[str, Collection[str]]],
        default_deadline_s: float,
    ) -> Doors:
        """The daemon's doors over its `mtpoold._clusterrun.ClusterNode`.

        Args:
            cluster: The node's cluster task (``[cluster]`` config, lease book, registry).
            token: The bearer token, the same on every node of the cluster.
            accounts: The configured accounts and their tags (id -> tags), at each call.
            default_deadline_s: ``[policy] job_deadline_s``.

        Summaries are read every ``lease_s / 3``; the failover bound is ``lease_s +
        disconnect_delay_s + lease_s / 3`` (the lease expires, the dead node's connection is
        closed by the DC, another node's next round takes the account). The daemon runs
        `run` in its nursery and passes the `RpcServer` ``doors=`` this.
        """
        config = cluster.config
        return cls(
            directory=NodeDirectory(cluster),
            links=PeerLinks(node=cluster.node, token=token),
            accounts=accounts,
            default_deadline_s=default_deadline_s,
            refresh_s=config.renew_interval_s,
            failover_s=config.lease_s + config.disconnect_delay_s + config.renew_interval_s,
            trouble=lambda: cluster.trouble,
            refusal=lambda account: (
                cluster.trouble
                if cluster.book.refused.get(account) == "quarantine"
                else cluster.book.refused.get(account)
            ),
        )

    @property
    def node(self) -> str:
        """This node's name."""
        return self.directory.node

    # --- the peers' summaries ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh the peers' summaries every ``refresh_s`` until cancelled (the first
        before ``task_status.started``). Never raises for Redis being unreachable."""
        try:
            await self.refresh()
            task_status.started()
            while True:
                await trio.sleep(self.refresh_s)
                await self.refresh()
        finally:
            with trio.CancelScope(shield=True):
                await self.links.aclose()

    async def refresh(self) -> None:
        """Read every live node's summary once (one round trip); on failure keep the last
        ones and remember the cause (shown by `cluster_status`)."""
        try:
            statuses = dict(await self.directory.statuses())
        except Exception as exc:  # ClusterUnavailable, or a bug in a peer's summary
            cause = _cause_of(exc)
            if cause != self._snapshot.cause:
                log_event(
                    _log,
                    logging.WARNING,
                    "cluster_status_unread",
                    node=self.node,
                    cause=cause,
                    exc_info=not hasattr(exc, "cause"),  # not Redis's: a bug, with its trace
                )
            self._snapshot = attrs.evolve(self._snapshot, cause=cause)
        else:
            self._snapshot = _Snapshot(at=trio.current_time(), statuses=statuses)

    def _peer_rpc(self, node: str) -> str | None:
        status = self._snapshot.statuses.get(node)
        rpc = status.get("rpc") if isinstance(status, Mapping) else None
        return rpc if isinstance(rpc, str) and rpc else None

    def cluster_status(self, *, holders: bool = True) -> dict[str, Any]:
        """The whole cluster as last read, for ``status`` (JSON-safe, never blocks).

        Args:
            holders: Include ``holders`` (one entry per configured account); False for
                ``status {"summary": true}``, which keeps the counts only.

        Returns:
            ``{"node", "age_s", "error", "trouble", "failover_s", "accounts_total", "unheld",
            "nodes": [{"name", "rpc", "live", "held", "jobs_in_flight", "jobs_ok", "jobs_failed",
            "lanes", "lanes_more", "start_window_ms", "missed_starts"}], "holders": {account:
            node or None}, "forwarded": {outcome: n}}`` — ``age_s`` seconds since the
            summaries were read (None: never), ``start_window_ms`` the node's start window
            (ms, `mtpoold._startwindow`) by its gated lanes' ``interval_s`` (``{"2": 8.7}``),
            ``error`` why the last read failed (None when it worked), ``trouble`` why this
            node serves less than its share (Redis unreachable, its name taken by another
            live node, the epoch quarantine; None: nothing), ``held`` a count;
            every configured account is in ``holders`` (None: held by no live node).
        """
        snap = self._snapshot
        nodes: list[dict[str, Any]] = []
        by_account: dict[str, str | None] = dict.fromkeys(sorted(self.accounts()))
        for name in sorted(snap.statuses):
            status = snap.statuses[name]
            held = _held_states(status)
            for account in held:
                by_account[str(account)] = name
            nodes.append(
                {
                    "name": name,
                    "rpc": status.get("rpc"),
                    "live": True,
                    "held": len(held),
                    "jobs_in_flight": status.get("jobs_in_flight"),
                    "jobs_ok": status.get("jobs_ok"),
                    "jobs_failed": status.get("jobs_failed"),
                    "lanes": list(status.get("lanes") or ()),
                    "lanes_more": status.get("lanes_more", 0),
                    # its start windows (ms per gated lane) and the starts that missed them
                    "start_window_ms": dict(status.get("start_window_ms") or {}),
                    "missed_starts": status.get("missed_starts", 0),
                }
            )
        now = trio.current_time()
        view: dict[str, Any] = {
            "node": self.node,
            "age_s": None if snap.at == -math.inf else round(now - snap.at, 3),
            "error": snap.cause,
            "trouble": self.trouble(),
            "failover_s": self.failover_s,
            "accounts_total": len(by_account),
            "unheld": sum(1 for v in by_account.values() if v is None),
            "nodes": nodes,
            "forwarded": dict(self.forwarded),
        }
        if holders:
            view["holders"] = by_account
        return view

    # --- routing ----------------------------------------------------------------------------------

    async def serve(self, job: ForwardableJob, local: LocalRun) -> Any:
        """Serve one job that came from a client (not from a peer): here or on a peer.

        Args:
            job: The request.
            local: Runs it on this node's pool.

        Returns:
            The job's JSON result (``{"result", "meta"}``), the local pool's or the peer's.

        Raises:
            JobFailed: the local pool's failure; NO_ACCOUNT_AVAILABLE when a pinned account
                is held nowhere until the deadline; STREAM_CLOSED when a peer went away
                mid-job; DEADLINE_EXCEEDED when a peer did not answer in time.
            RpcError: the peer's error reply, as it sent it.
        """
        deadline_at = trio.current_time() + (
            job.deadline_s if job.deadline_s is not None else self.default_deadline_s
        )
        if job.account is not None:
            return await self._pinned(job, job.account, deadline_at, local)
        try:
            return await local()
        except JobFailed as exc:
            if exc.error_class is not ErrorClass.NO_ACCOUNT_AVAILABLE or exc.attempts:
                raise
            local_failure = exc
        return await self._elsewhere(job, deadline_at, local_failure)

    async def _pinned(
        self, job: ForwardableJob, account: str, deadline_at: float, local: LocalRun
    ) -> Any:
        if account not in self.accounts():
            return await local()  # the pool names it: INVALID_ARGUMENT
        refused_by: str | None = None  # the holder that answered "no account" once already
        while True:
            if self.directory.holds(account):
                return await local()
            try:
                holder = (await self.directory.holders([account])).get(account)
            except Exception as exc:  # ClusterUnavailable: the pool says why it cannot serve
                if not hasattr(exc, "cause"):  # not Redis's: a bug, logged with its trace
                    log_event(_log, logging.ERROR, "holder_lookup_crashed", exc_info=True)
                return await local()
            if holder == self.node:
                return await local()  # taken here meanwhile (or lost: the pool says so)
            rpc = self._peer_rpc(holder) if holder is not None else None
            if holder is not None and rpc is None:
                await self.refresh()  # a node that joined since the last read
                rpc = self._peer_rpc(holder)
            if holder is None:
                refusal = self.refusal(account)
                why = f"account {account} is held by no live node" + (
                    f" ({refusal})" if refusal else ""
                )
            elif rpc is None:
                why = f"account {account} is held by node {holder}, which is not live"
            else:
                try:
                    return await self._forward(holder, rpc, job, deadline_at)
                except PeerUnreachable as exc:
                    why = f"account {account} is held by node {holder}: {exc.cause}"
                except RpcError as exc:
                    # "Not held by this node": the holder let it go (a drain) after our
                    # look-up. Looked up once more a round later; the same answer from the
                    # same holder again (a disabled account, say) is the reply.
                    moving = (
                        exc.error_class == ErrorClass.NO_ACCOUNT_AVAILABLE.value
                        and not exc.attempts
                        and exc.retry_after_s is None
                    )
                    if not moving or refused_by == holder:
                        raise
                    if trio.current_time() + self.refresh_s >= deadline_at:
                        raise
                    refused_by = holder
                    await trio.sleep(self.refresh_s)
                    continue
            if trio.current_time() + self.refresh_s >= deadline_at:
                raise JobFailed(
                    ErrorClass.NO_ACCOUNT_AVAILABLE,
                    f"{why} (an account moves within {self.failover_s:g} s when its node dies)",
                    retry_after_s=self.failover_s,
                    account=account,
                )
            await trio.sleep(self.refresh_s)

    def _candidates(self, tags: Collection[str]) -> list[tuple[str, str]]:
        """(node, rpc) of the peers holding accounts with every tag, most servable first."""
        wanted = set(tags)
        matching = {a for a, t in self.accounts().items() if wanted <= set(t)}
        ranked: list[tuple[int, int, str, str]] = []
        for name, status in self._snapshot.statuses.items():
            rpc = status.get("rpc")
            held = _held_states(status)
            if name == self.node or not isinstance(rpc, str) or not rpc:
                continue
            mine = [s for a, s in held.items() if a in matching]
            servable = sum(1 for s in mine if s not in _UNSERVING)
            if mine:
                ranked.append((-servable, -len(mine), name, rpc))
        ranked.sort()
        return [(name, rpc) for _, _, name, rpc in ranked]

    async def _elsewhere(
        self, job: ForwardableJob, deadline_at: float, local_failure: JobFailed
    ) -> Any:
        last: JobFailed | RpcError = local_failure
        if self._snapshot.cause is not None:
            raise local_failure  # Redis unreachable: no peer can confirm a lease either
        for name, rpc in self._candidates(job.tags):
            if trio.current_time() >= deadline_at:
                break
            try:
                return await self._forward(name, rpc, job, deadline_at)
            except PeerUnreachable:
                continue
            except RpcError as exc:
                if exc.error_class != ErrorClass.NO_ACCOUNT_AVAILABLE.value or exc.attempts:
                    raise
                last = exc
        raise last

    async def _forward(self, name: str, rpc: str, job: ForwardableJob, deadline_at: float) -> Any:
        """One forwarded request: the peer's result, or its error raised as `RpcError`.

        Raises:
            PeerUnreachable: nothing ran there (also a peer answering SHUTTING_DOWN).
            RpcError: the peer's error reply.
            JobFailed: STREAM_CLOSED (peer lost mid-job), DEADLINE_EXCEEDED (no reply in time).
        """
        left_s = deadline_at - trio.current_time()
        if left_s <= 0:
            raise JobFailed(
                ErrorClass.DEADLINE_EXCEEDED,
                f"the job's deadline passed before it could be forwarded to node {name}",
                account=job.account,
            )
        params = dict(job.params)
        options = dict(params.get("options") or {})
        options["deadline_ms"] = max(1.0, left_s * 1000)
        params["options"] = options
        request = {"jsonrpc": "2.0", "id": 1, "method": job.method, "params": params}
        log_event(
            _log, logging.DEBUG, "job_forwarded", node=name, method=job.method, account=job.account
        )
        self._next_id += 1
        key = self._next_id
        self._in_flight[key] = (job.method, job.account, name, trio.current_time())
        try:
            with trio.move_on_at(deadline_at + DEADLINE_GRACE_S) as waited:
                reply = await self._call(name, rpc, request, job)
        finally:
            del self._in_flight[key]
        if waited.cancelled_caught:
            self._count("lost")
            raise JobFailed(
                ErrorClass.DEADLINE_EXCEEDED,
                f"node {name} did not answer the forwarded job within its deadline",
                account=job.account,
                attempts=1,
            )
        if not isinstance(reply, Mapping):
            self._count("lost")
            raise JobFailed(
                ErrorClass.STREAM_CLOSED,
                f"node {name} sent a reply that is not a JSON-RPC reply object",
                account=job.account,
                attempts=1,
            )
        if "error" in reply:
            error = RpcError.from_object(reply["error"])
            if error.code == SHUTTING_DOWN:
                self._count("unreachable")
                raise PeerUnreachable(f"node {name} is shutting down")
            self._count("error")
            raise error
        self._count("ok")
        return reply.get("result")

    async def _call(
        self, name: str, rpc: str, request: Mapping[str, Any], job: ForwardableJob
    ) -> Any:
        """`PeerLinks.call`, counted and logged; a lost peer is STREAM_CLOSED."""
        try:
            return await self.links.call(rpc, request)
        except PeerUnreachable as exc:
            self._count("unreachable")
            if exc.http_status in (401, 403):  # a cluster whose nodes do not share a token
                log_event(_log, logging.ERROR, "peer_refused", node=name, cause=exc.cause)
            else:
                log_event(_log, logging.INFO, "peer_unreachable", node=name, cause=exc.cause)
            raise
        except PeerLost as exc:
            self._count("lost")
            log_event(_log, logging.WARNING, "peer_lost", node=name, cause=exc.cause)
            raise JobFailed(
                ErrorClass.STREAM_CLOSED,
                f"node {name} went away mid-job ({exc.cause}); whether it made the call is"
                f" unknown; its accounts move to another node within {self.failover_s:g} s",
                retry_after_s=self.failover_s,
                account=job.account,
                attempts=1,
            ) from None

    def forwarding(self) -> list[dict[str, Any]]:
        """The jobs this node has forwarded and waits for, oldest first, for ``jobs``:
        ``[{"method", "account", "node", "age_s"}]`` (account None for a free job)."""
        now = trio.current_time()
        return [
            {"method": method, "account": account, "node": node, "age_s": round(now - at, 3)}
            for method, account, node, at in self._in_flight.values()
        ]

    def _count(self, outcome: str) -> None:
        self.forwarded[outcome] = self.forwarded.get(outcome, 0) + 1
