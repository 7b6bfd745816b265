"""A cluster on loopback for tests: a real ``redis-server``, one loopback DC and four relays in
the test's Trio loop, and N ``mtpoold run`` daemon processes sharing Redis, the proxies and
twelve accounts (issue 15; the design: docs/ARCHITECTURE.md, "Cluster").

``async with open_cluster(tmp_path) as cluster:`` yields a :class:`Cluster` once every node
logged ``event=daemon_ready``. Real sockets and real processes: the real clock.

What it records for the test's assertions:

- ``cluster.dc.auth_key_overlaps()``: two connections that used one auth key at once
  (the loopback DC closes a connection ``disconnect_delay`` s after its last
  ``ping_delay_disconnect``, as Telegram does, so a frozen node's connection ends on its own);
- :meth:`Cluster.start_violations`: two call starts through one proxy (at its relay, every
  connection's bursts merged: :meth:`~mtpoold.testing.Relay.connection_starts`) closer than
  the proxy's ``interval_s`` minus a tolerance;
- :class:`JobLog`: every job the test submitted, to which node, and how it was answered.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from _redisserver import RedisServer, start_redis

from mtpoold.client import Endpoint, TrioClient
from mtpoold.client import RpcError as ClientRpcError
from mtpoold.testing import DC, Relay, open_relay
from mtpoold.testing.dc import open_dc

from _daemonproc import READY_EVENT, READY_TIMEOUT_S, free_port
from _e2e import API_HASH, fleet_world

#: Accounts, proxies and nodes of the cluster the issue asks for.
ACCOUNTS: Final = 12
PROXIES: Final = 4
NODES: Final = 3
#: Seconds a lease lasts (the config's minimum, 3: failover in seconds, not minutes).
LEASE_S: Final = 3.0
#: Seconds between two call starts through one proxy (every node's starts together).
INTERVAL_S: Final = 0.25
#: Seconds a call start may show early at a relay, measured from the one before it: both
#: travel node -> kernel -> relay (the test's Trio loop, busy with the DC and three nodes' jobs
#: on two cores) and each can be late by the loop's scheduling; a start the shared gate did
#: not admit shows as a gap near 0.
START_TOLERANCE_S: Final = 0.05
#: Seconds a node may take to exit after SIGTERM before it is killed.
EXIT_TIMEOUT_S: Final = 15.0
#: Seconds past a job's deadline by which its answer must have come (the daemon answers a job
#: at its deadline at the latest; a frozen node's answers come after SIGCONT).
ANSWER_GRACE_S: Final = 10.0
#: Node names: ``n1``, ``n2``, ...
NODE_PREFIX: Final = "n"


def account_id(i: int) -> str:
    """The id of account ``i`` (1-based): ``a01`` .. ``a12``."""
    return f"a{i:02d}"


def account_phone(i: int) -> str:
    """The world phone of account ``i`` (1-based), a `fleet_world` user: ``155500001NN``."""
    return f"155500001{i:02d}"


def proxy_name(i: int) -> str:
    """The name of proxy ``i`` (0-based): ``p0`` .. ``p3``."""
    return f"p{i}"


@attrs.define(eq=False)
class Job:
    """One job the test submitted.

    Attributes:
        id: serial number (1, 2, ...), the test's own.
        node: the node it was sent to.
        sent_at: ``trio.current_time()`` when sent, seconds.
        answers: every answer that came back: ``"ok:<account>"`` or ``"error:<class>"``;
            exactly one when the node was live (``DaemonUnreachable`` is no answer: it is in
            ``lost``).
        lost: why no answer came (the connection to the node went away), or ``None``.
        answered_at: when the (first) answer came, seconds.
    """

    id: int
    node: str
    sent_at: float
    answers: list[str] = attrs.field(factory=list)
    lost: str | None = None
    answered_at: float | None = None


@attrs.define(eq=False)
class Node:
    """One ``mtpoold run`` process of the cluster.

    Attributes:
        name: its ``[cluster] node`` (``n1``, ...).
        config: its config file; log: its stderr (logfmt).
        listen: ``127.0.0.1:PORT`` of its RPC listener.
        process: the running process, ``None`` before start / after exit.
        state: ``"running"``, ``"stopped"`` (SIGSTOP), ``"killed"`` (SIGKILL) or ``"exited"``.
    """

    name: str
    config: Path
    log: Path
    listen: str
    process: trio.Process | None = None
    state: str = "exited"

    @property
    def live(self) -> bool:
        """Running and not frozen: a job sent now must be answered."""
        return self.state == "running"

    def endpoint(self) -> Endpoint:
        """Its address and token (the token file the daemon wrote in its state dir)."""
        return Endpoint.discover(self.config)


@attrs.define(eq=False)
class Cluster:
    """The running cluster (see the module doc).

    Attributes:
        dc: the loopback DC (in this Trio loop).
        redis: the redis-server (``aof`` on unless asked otherwise).
        relays: proxy name -> its relay (SOCKS5, in this Trio loop).
        nodes: node name -> :class:`Node`, in start order.
        accounts: account id -> proxy name.
        jobs: every :class:`Job` submitted through :meth:`submit`.
        interval_s: every proxy's ``interval_s``, seconds; lease_s: ``[cluster] lease_s``, s.
    """

    dc: DC
    redis: RedisServer
    relays: dict[str, Relay]
    nodes: dict[str, Node]
    accounts: dict[str, str]
    interval_s: float
    lease_s: float
    key_prefix: str = "mtpoold:"
    #: ``time.time() - trio.current_time()`` at start, seconds: Redis's clock (``TIME``,
    #: this host's wall clock) to this process's trio clock.
    wall_offset_s: float = attrs.field(factory=lambda: time.time() - trio.current_time())
    jobs: list[Job] = attrs.field(factory=list)
    _stack: AsyncExitStack = attrs.field(factory=AsyncExitStack)
    _clients: dict[str, TrioClient] = attrs.field(factory=dict)
    _client_scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    _nursery: trio.Nursery | None = None
    _exits: dict[str, trio.Event] = attrs.field(factory=dict)

    # -- nodes ------------------------------------------------------------------------------

    async def start_node(self, name: str) -> Node:
        """Start (or start again) node ``name``; return once it logged ``daemon_ready``.

        Raises:
            AssertionError: it exited or was not ready within ``READY_TIMEOUT_S``.
        """
        node = self.nodes[name]
        done = self._exits[name] = trio.Event()
        assert self._nursery is not None

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with _node_process(node) as proc:
                node.process, node.state = proc, "running"
                task_status.started()
                await done.wait()  # set by kill(), or at the cluster's exit
            node.process = None
            if node.state != "killed":
                node.state = "exited"

        await self._nursery.start(run)
        return node

    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (no clean shutdown: sockets close, leases stay in Redis)."""
        node = self.nodes[name]
        assert node.process is not None
        node.process.kill()
        node.state = "killed"
        self._exits[name].set()
        # its client stays: the dead process's socket closes, and the jobs in flight on it
        # end as DaemonUnreachable (``Job.lost``)

    def freeze(self, name: str) -> None:
        """SIGSTOP node ``name``: its connections stay open, it answers nothing."""
        node = self.nodes[name]
        assert node.process is not None and node.state == "running"
        node.process.send_signal(signal.SIGSTOP)
        node.state = "stopped"

    def thaw(self, name: str) -> None:
        """SIGCONT node ``name`` after :meth:`freeze`."""
        node = self.nodes[name]
        assert node.process is not None and node.state == "stopped"
        node.process.send_signal(signal.SIGCONT)
        node.state = "running"

    async def restart_redis(self) -> None:
        """Restart redis-server (SIGTERM, start on the same port and dir; AOF replayed)."""
        await trio.to_thread.run_sync(self.redis.restart)

    # -- jobs -------------------------------------------------------------------------------

    async def _client(self, name: str) -> TrioClient:
        client = self._clients.get(name)
        if client is not None:
            return client
        assert self._nursery is not None
        endpoint = self.nodes[name].endpoint()
        got = trio.Event()
        scope = trio.CancelScope()
        self._client_scopes[name] = scope

        async def hold() -> None:
            with scope:
                async with TrioClient.connect(endpoint=endpoint, connect_timeout_s=5) as c:
                    self._clients[name] = c
                    got.set()
                    await trio.sleep_forever()
            self._clients.pop(name, None)
            got.set()

        self._nursery.start_soon(hold)
        await got.wait()
        if name not in self._clients:
            raise ConnectionError(f"no connection to node {name}")
        return self._clients[name]

    def _drop_client(self, name: str) -> None:
        scope = self._client_scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        self._clients.pop(name, None)

    async def submit(
        self, node: str, *, deadline_ms: int = 8000, account: str | None = None
    ) -> Job:
        """Send one job (``invoke help.getNearestDc``, any account unless ``account``) to
        ``node`` and wait for its answer, recorded in a new :class:`Job` of :attr:`jobs`."""
        job = Job(len(self.jobs) + 1, node, trio.current_time())
        self.jobs.append(job)
        options: dict[str, Any] = {"deadline_ms": deadline_ms}
        if account is not None:
            options["account"] = account
        try:
            with trio.fail_after(deadline_ms / 1000 + ANSWER_GRACE_S):
                client = await self._client(node)
                reply = await client.invoke("help.getNearestDc", {}, **options)
        except ClientRpcError as exc:
            job.answers.append(f"error:{exc.error_class}")
        except trio.TooSlowError:
            job.lost = f"no answer {deadline_ms / 1000 + ANSWER_GRACE_S:g} s after sending"
        except Exception as exc:  # DaemonUnreachable, ConnectionError: no answer
            job.lost = f"{type(exc).__name__}: {exc}"
            self._drop_client(node)
        else:
            job.answers.append(f"ok:{reply.meta.get('account')}")
        if job.answers:
            job.answered_at = trio.current_time()
        return job

    # -- what the test asserts --------------------------------------------------------------

    def start_violations(
        self, tolerance_s: float = START_TOLERANCE_S
    ) -> dict[str, list[tuple[float, float]]]:
        """Per proxy, every pair of consecutive call starts at its relay closer than
        ``interval_s - tolerance_s`` (seconds, trio clock): ``{proxy: [(start, next), ...]}``,
        proxies without any left out."""
        found: dict[str, list[tuple[float, float]]] = {}
        for name, relay in self.relays.items():
            starts = relay.connection_starts()
            bad = [
                (a, b)
                for a, b in zip(starts, starts[1:], strict=False)
                if b - a < self.interval_s - tolerance_s
            ]
            if bad:
                found[name] = bad
        return found

    def describe_start(self, proxy: str, at: float) -> str:
        """What started at ``at`` (a :meth:`~mtpoold.testing.Relay.connection_starts` entry
        of ``proxy``): the relay connection, the DC connection behind it (matched by the
        relay's ``upstream_local``), its user and what the DC received on it within 0.1 s."""
        relay = self.relays[proxy]
        conn = next((c for c in relay.connections if at in c.bursts), None)
        if conn is None:
            return f"{at:.3f}: ?"
        first = " (its first bytes: a connect)" if conn.bursts[0] == at else ""
        record = next((r for r in self.dc.connection_log if r.peer == conn.upstream_local), None)
        if record is None:
            return f"{at:.3f}: relay conn {conn.id}{first}, no DC connection"
        seen = sorted(
            {
                m.method or m.name
                for m in self.dc.wire_log
                if m.connection_id == record.id and at - 0.01 <= m.time <= at + 0.1
            }
        )
        return (
            f"{at:.3f}: relay conn {conn.id}{first} -> DC conn {record.id} users"
            f" {record.user_ids} ({record.opened_at:.3f}..{record.closed_at}) got {seen}"
        )

    def reserved_starts(self, proxy: str) -> list[float]:
        """The starts Redis reserved for ``proxy`` (every ``SET {prefix}gate:{proxy}`` in the
        AOF, Redis ms), as trio times of this process (via :attr:`wall_offset_s`), seconds.
        Empty without AOF."""
        key = f"{self.key_prefix}gate:{proxy}".encode()
        out: list[float] = []
        for path in sorted((self.redis.dir / "appendonlydir").glob("*.incr.aof")):
            parts = path.read_bytes().split(b"\r\n")
            for i in range(2, len(parts) - 2):
                if parts[i] == key and parts[i - 2].upper() == b"SET":
                    out.append(int(parts[i + 2]) / 1000 - self.wall_offset_s)
        return sorted(out)

    def describe_violations(self, violations: Mapping[str, list[tuple[float, float]]]) -> str:
        """:meth:`start_violations` spelled out with :meth:`describe_start` and the starts
        Redis reserved for that proxy around them (:meth:`reserved_starts`: a start seen at
        the relay long after its slot is a late node, not a gate that let two through)."""
        lines = []
        for proxy, pairs in violations.items():
            reserved = self.reserved_starts(proxy)
            for a, b in pairs:
                near = [f"{r:.3f}" for r in reserved if a - 0.6 <= r <= b + 0.05]
                lines.append(f"{proxy} gap {b - a:.3f} s < {self.interval_s} s; reserved {near}:")
                lines += [
                    "  " + self.describe_start(proxy, a),
                    "  " + self.describe_start(proxy, b),
                ]
        return "\n".join(lines)

    def min_start_spacing(self) -> float:
        """The smallest gap between consecutive call starts through any one proxy, s."""
        gaps: list[float] = []
        for relay in self.relays.values():
            starts = relay.connection_starts()
            gaps += [b - a for a, b in zip(starts, starts[1:], strict=False)]
        return min(gaps, default=math.inf)

    def holders(self) -> dict[str, str | None]:
        """Account id -> the node whose lease Redis holds for it now (``None``: unheld),
        read from ``{prefix}lease:{account}`` (``"node|epoch|token"``)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=2)
        try:
            ids = sorted(self.accounts)
            values = client.mget([f"{self.key_prefix}lease:{a}" for a in ids])
        finally:
            client.close()
        return {
            a: (v.decode().split("|", 1)[0] if isinstance(v, bytes) else None)
            for a, v in zip(ids, values, strict=True)
        }

    def log_of(self, name: str) -> str:
        """Node ``name``'s log so far (for assertion messages)."""
        try:
            return self.nodes[name].log.read_text()
        except OSError:
            return "(no log)"


@asynccontextmanager
async def _node_process(node: Node) -> AsyncIterator[trio.Process]:
    """``mtpoold run`` for ``node``, yielded once it logged ``daemon_ready``. Each node has its
    own ``XDG_RUNTIME_DIR`` (the session locks' dir, `mtpoold._sessionlock`): the nodes stand
    for separate hosts, so they must not see each other's machine-local auth key locks. At
    exit, whatever happened: SIGCONT (a frozen process ignores SIGTERM), SIGTERM, wait up to
    `EXIT_TIMEOUT_S`, then SIGKILL; shielded, so no process outlives the test."""
    runtime = node.config.parent / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    argv = [sys.executable, "-m", "mtpoold", "run", "--config", str(node.config)]
    with node.log.open("ab") as err:
        proc = await trio.lowlevel.open_process(argv, stderr=err, env=env)
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            while READY_EVENT not in (text := await trio.Path(node.log).read_text()):
                assert proc.returncode is None, f"node {node.name} exited: {text}"
                await trio.sleep(0.05)
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                with trio.move_on_after(EXIT_TIMEOUT_S):
                    await proc.wait()
            if proc.returncode is None:  # pragma: no cover - a hang is a bug: don't leak it
                proc.kill()
                await proc.wait()


def node_config(
    *,
    name: str,
    listen: str,
    state_dir: Path,
    dc: DC,
    redis_url: str,
    relays: Mapping[str, Relay],
    accounts: Mapping[str, tuple[str, str]],
    lease_s: float,
    interval_s: float,
) -> str:
    """The TOML config of one node: ``[daemon]``, ``[cluster]``, ``[telegram]`` for ``dc``,
    every relay as a ``[[proxies]]`` SOCKS5 proxy (``interval_s``), every account
    (id -> (phone, proxy)) with its ``dc.session_string``. Every node gets the same proxies
    and accounts; only ``name``, ``listen`` and ``state_dir`` differ."""
    lines = [
        "[daemon]",
        f'listen = "{listen}"',
        f'state_dir = "{state_dir}"',
        "shutdown_grace_s = 2",
        "",
        "[cluster]",
        f'redis_url = "{redis_url}"',
        f'node = "{name}"',
        f"lease_s = {lease_s}",
        "op_timeout_s = 0.5",
        "",
        "[economy]",  # every job is its own call (none shared or merged)
        "share_identical = false",
        "merge_get_messages = false",
        "",
        "[telegram]",
        f"dc_id = {dc.dc_id}",
        f'dc_host = "{dc.host}"',
        f"dc_port = {dc.port}",
        f"rsa_keys = [{json.dumps(dc.public_key_pem)}]",
        "connect_timeout_s = 3.0",
        "",
    ]
    for pname, relay in relays.items():
        lines += [
            "[[proxies]]",
            f'name = "{pname}"',
            'type = "socks5"',
            f'host = "{relay.host}"',
            f"port = {relay.port}",
            f"interval_s = {interval_s}",
            "",
        ]
    for i, (acc, (phone, proxy)) in enumerate(accounts.items()):
        lines += [
            "[[accounts]]",
            f'id = "{acc}"',
            f"api_id = {12345 + i}",
            f'api_hash = "{API_HASH}"',
            f'session_string = "{dc.session_string(phone)}"',
            f'proxy = "{proxy}"',
            "",
        ]
    return "\n".join(lines)


@asynccontextmanager
async def open_cluster(
    tmp_path: Path,
    *,
    nodes: int = NODES,
    accounts: int = ACCOUNTS,
    proxies: int = PROXIES,
    lease_s: float = LEASE_S,
    interval_s: float = INTERVAL_S,
    aof: bool = True,
) -> AsyncIterator[Cluster]:
    """Start redis-server, a loopback DC, ``proxies`` relays and ``nodes`` daemons sharing
    them and ``accounts`` accounts (account ``i`` on proxy ``i % proxies``); yield the
    :class:`Cluster` once every node is ready. On the way out: SIGCONT to a frozen node,
    SIGTERM to every node, then the relays, the DC and Redis stop.

    Raises:
        RuntimeError: redis-server did not start; AssertionError: a node did not get ready
            (its log in the message).
    """
    redis = await trio.to_thread.run_sync(lambda: start_redis(tmp_path, aof))
    try:
        async with open_dc(fleet_world(extra_users=accounts)) as dc, AsyncExitStack() as stack:
            relays: dict[str, Relay] = {}
            for p in range(proxies):
                relays[proxy_name(p)] = await stack.enter_async_context(
                    open_relay(target=(dc.host, dc.port), protocol="socks5")
                )
            account_map = {
                account_id(i): (account_phone(i), proxy_name((i - 1) % proxies))
                for i in range(1, accounts + 1)
            }
            token = os.urandom(16).hex()  # one token for every node (forwarded jobs carry it)
            node_map: dict[str, Node] = {}
            for n in range(1, nodes + 1):
                name = f"{NODE_PREFIX}{n}"
                state_dir = tmp_path / name / "state"
                state_dir.mkdir(parents=True, mode=0o700)
                (state_dir / "token").write_text(token + "\n")
                (state_dir / "token").chmod(0o600)
                config = tmp_path / name / "mtpoold.toml"
                listen = f"127.0.0.1:{free_port()}"
                config.write_text(
                    node_config(
                        name=name,
                        listen=listen,
                        state_dir=state_dir,
                        dc=dc,
                        redis_url=redis.url,
                        relays=relays,
                        accounts=account_map,
                        lease_s=lease_s,
                        interval_s=interval_s,
                    )
                )
                config.chmod(0o600)
                node_map[name] = Node(name, config, tmp_path / name / "daemon.log", listen)
            cluster = Cluster(
                dc=dc,
                redis=redis,
                relays=relays,
                nodes=node_map,
                accounts={a: p for a, (_phone, p) in account_map.items()},
                interval_s=interval_s,
                lease_s=lease_s,
            )
            async with trio.open_nursery() as nursery:  # the nodes' and clients' tasks
                cluster._nursery = nursery
                try:
                    async with trio.open_nursery() as starting:
                        for name in node_map:
                            starting.start_soon(cluster.start_node, name)
                    yield cluster
                finally:
                    for name in list(cluster._client_scopes):
                        cluster._drop_client(name)
                    for event in cluster._exits.values():
                        event.set()  # each node's task SIGTERMs it and waits for its exit
    finally:
        await trio.to_thread.run_sync(redis.stop)
