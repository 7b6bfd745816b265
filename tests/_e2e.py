"""End-to-end fleet helpers: a config of real accounts over real proxies against a loopback DC,
and a pool opened on it that checks, on the way out, that nothing was left behind.

The stack under test is the whole one: ``Pool`` -> ``TelethonClient`` -> python-socks ->
pproxy (a subprocess) -> ``mtpoold.testing.dc``. Real sockets, so the real clock.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_asyncio

from mtpoold._aiolog import AioExceptionHandler
from mtpoold._compose import open_pool
from mtpoold._config import Config, parse_config
from mtpoold._errors import JobFailed
from mtpoold._pool import Pool
from mtpoold._stats import AccountStatistics, LaneStatistics
from mtpoold._store import StateStore
from mtpoold.testing import DC, Proxy
from mtpoold.testing.dc import User, World, default_world, rpc_error

from _fakeclient import NO_SHARING

API_HASH = "0123456789abcdef0123456789abcdef"

#: Seconds the DC may take to see every connection closed after the pool exits.
CONNECTIONS_CLOSE_TIMEOUT_S = 5.0
#: interval_s of the direct lane in a fleet's config unless a test says otherwise, seconds.
DIRECT_INTERVAL_S = 0.1


def fleet_world(extra_users: int = 4) -> World:
    """The default world plus ``extra_users`` plain users (phones 155500001NN, ids 11NN), so a
    fleet of more than the five usable default users can be built."""
    base = default_world()
    extra = tuple(
        User(id=1100 + i, access_hash=0x110000 + i, first_name=f"Fleet{i}",
             phone=f"155500001{i:02d}")
        for i in range(1, extra_users + 1)
    )  # fmt: skip
    return World(users=base.users + extra, channels=base.channels)


#: Phones of users that can log in (erin, 15550000005, is deactivated and not listed).
PHONES = (
    "15550000001", "15550000002", "15550000003", "15550000004",
    "15550000101", "15550000102", "15550000103", "15550000104",
)  # fmt: skip


def proxy_entry(name: str, proxy: Proxy | tuple[str, int], **extra: Any) -> dict[str, Any]:
    """A ``[[proxies]]`` table for a running test proxy (or a bare socks5 ``(host, port)``)."""
    if isinstance(proxy, tuple):
        host, port = proxy
        entry: dict[str, Any] = {"name": name, "type": "socks5", "host": host, "port": port}
    else:
        entry = {"name": name, "type": proxy.kind, "host": proxy.host, "port": proxy.port}
        if proxy.username is not None:
            entry["username"] = proxy.username
            entry["password"] = proxy.password
    entry.update(extra)
    return entry


def fleet_config(
    tmp_path: Path,
    dc: DC,
    *,
    proxies: list[dict[str, Any]],
    accounts: Mapping[str, tuple[str, str | None]],
    policy: Mapping[str, Any] | None = None,
    telegram: Mapping[str, Any] | None = None,
    direct: Mapping[str, Any] | None = None,
    economy: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """A validated config for ``dc``.

    Args:
        proxies: ``[[proxies]]`` tables (see :func:`proxy_entry`).
        accounts: account id -> (phone of a world user, proxy name or None). Each account
            logs in with ``dc.session_string(phone)``.
        policy: ``[policy]`` keys.
        telegram: extra ``[telegram]`` keys (the DC's id/host/port/RSA key are set).
        direct: ``[direct]`` keys, over ``interval_s = DIRECT_INTERVAL_S`` (the lane of the
            accounts with no proxy; its own default, 2 s, would pace a test's calls).
        economy: ``[economy]`` keys over `NO_SHARING` (identical jobs are neither shared
            nor merged unless a test asks: most tests count one call per job).
        extra: more top-level tables (``economy``, ``rate_classes``).
    """
    data: dict[str, Any] = {
        **(extra or {}),
        "telegram": {
            "dc_id": dc.dc_id,
            "dc_host": dc.host,
            "dc_port": dc.port,
            "rsa_keys": [dc.public_key_pem],
            "connect_timeout_s": 5.0,
            **(telegram or {}),
        },
        "direct": {"interval_s": DIRECT_INTERVAL_S, **(direct or {})},
        "proxies": proxies,
        "accounts": [
            {
                "id": acc_id,
                "api_id": 12345 + i,
                "api_hash": API_HASH,
                "session_string": dc.session_string(phone),
                **({"proxy": proxy} if proxy else {}),
            }
            for i, (acc_id, (phone, proxy)) in enumerate(accounts.items())
        ],
    }
    if policy:
        data["policy"] = dict(policy)
    data["economy"] = {**NO_SHARING, **data.get("economy", {}), **(economy or {})}
    return parse_config(data, base_dir=tmp_path)


def _trio_tasks() -> set[trio.lowlevel.Task]:
    """The current task and its descendants (fixtures such as the DC and the proxies run in
    tasks of their own, outside this tree)."""
    found: set[trio.lowlevel.Task] = set()
    todo: list[trio.lowlevel.Task | None] = [trio.lowlevel.current_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


@attrs.define(eq=False)
class Fleet:
    """A running pool on real Telethon clients, and what the checks need."""

    pool: Pool
    dc: DC
    config: Config
    loop: asyncio.AbstractEventLoop
    handler: AioExceptionHandler
    leftover_aio_tasks: list[str] = attrs.field(factory=list)

    def account(self, account_id: str) -> AccountStatistics:
        return next(a for a in self.pool.statistics().accounts if a.id == account_id)

    def lane(self, name: str) -> LaneStatistics:
        return next(p for p in self.pool.statistics().proxies if p.name == name)

    def user_id(self, account_id: str) -> int:
        """The world user id an account is logged in as."""
        acc = next(a for a in self.config.accounts if a.id == account_id)
        assert acc.session_string is not None
        return next(
            u.id
            for u in self.dc.world.users
            if u.phone and self.dc.session_string(u.phone) == acc.session_string
        )

    def account_of_user(self) -> dict[int, str]:
        return {self.user_id(a.id): a.id for a in self.config.accounts}

    def proxy_of(self, account_id: str) -> str | None:
        return next(a.proxy for a in self.config.accounts if a.id == account_id)

    def aio_tasks_of(self, account_id: str) -> list[asyncio.Task[Any]]:
        """Pending asyncio tasks working for ``account_id`` (named by mtpoold's task factory)."""
        tag = f"[mtpoold account={account_id} "
        return [t for t in asyncio.all_tasks(self.loop) if not t.done() and tag in t.get_name()]


async def wait_until(
    condition: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``condition()`` holds, checking every 10 ms; fail after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - real-time e2e state (fleet, relays, DC) has no event
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@asynccontextmanager
async def open_fleet(
    dc: DC, config: Config, *, store: StateStore | None = None
) -> AsyncIterator[Fleet]:
    """``open_pool(config, store=store)`` with the real Telethon client factory, checked on
    exit.

    On exit (also when the body failed, so the body's error is not masked by a check, the
    checks only run after a clean body):

    - right after the pool closed its clients and before its trio-asyncio loop closes, no
      asyncio task is pending on that loop (trio-asyncio would cancel leftovers silently);
    - the asyncio exception handler the pool installed (``loop.get_exception_handler()``,
      an :class:`AioExceptionHandler`) handled no report at all, "... was never retrieved"
      included, after a ``gc.collect()`` both before and after the loop closed, and no future
      of the loop still alive holds an exception nobody retrieved (it would be reported by
      a later collection, in some other test);
    - no trio task started inside the pool outlives it;
    - the DC sees every connection closed.
    """
    trio_before = _trio_tasks()
    leftovers: list[str] = []
    original_aclose = Pool._aclose

    async def aclose_then_look(self: Pool) -> None:
        await original_aclose(self)
        loop = trio_asyncio.current_loop.get()
        leftovers.extend(repr(t) for t in asyncio.all_tasks(loop) if not t.done())

    fleet: Fleet | None = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Pool, "_aclose", aclose_then_look)
        async with open_pool(config, store=store) as pool:
            loop = trio_asyncio.current_loop.get()
            handler = loop.get_exception_handler()
            assert isinstance(handler, AioExceptionHandler)
            fleet = Fleet(pool, dc, config, loop, handler, leftovers)
            yield fleet
            gc.collect()  # reports of collected futures reach the handler synchronously
            assert handler.count == 0, handler.statistics()
    gc.collect()
    assert leftovers == [], "asyncio tasks left after the pool closed its clients"
    assert handler.count == 0, handler.statistics()
    # Futures still referenced (by the clients the test's pool keeps) would only be reported
    # at some later collection, in another test: find them now.
    unretrieved = [
        repr(o) for o in gc.get_objects()
        if isinstance(o, asyncio.Future) and o.get_loop() is loop
        and getattr(o, "_log_traceback", False)
    ]  # fmt: skip
    assert unretrieved == [], "futures whose exception was never retrieved"
    await wait_until(
        lambda: dc.statistics().connections == 0,
        timeout_s=CONNECTIONS_CLOSE_TIMEOUT_S,
        what="the DC to see every connection closed",
    )
    # Checked once the DC's own per-connection tasks ended too.
    extra = sorted(t.name for t in _trio_tasks() - trio_before)
    assert extra == [], "trio tasks outlived the pool"


@attrs.define(eq=False)
class Blackhole:
    """A TCP listener that accepts and never answers (see :func:`open_blackhole`)."""

    host: str
    port: int
    accepted: int = 0
    open: int = 0


@asynccontextmanager
async def open_blackhole(host: str = "127.0.0.1") -> AsyncIterator[Blackhole]:
    """Listen on a free port; accept every connection, read everything, answer nothing.

    Used as a "proxy" that takes the TCP connection and then swallows the handshake.
    ``accepted`` / ``open`` count connections, so a test can see its client hang up.
    """

    async with trio.open_nursery() as nursery:
        hole: Blackhole | None = None

        async def swallow(stream: trio.SocketStream) -> None:
            assert hole is not None
            hole.accepted += 1
            hole.open += 1
            try:
                async with stream:
                    while await stream.receive_some(4096):
                        pass
            except trio.BrokenResourceError:
                pass
            finally:
                hole.open -= 1

        listeners = await nursery.start(functools.partial(trio.serve_tcp, swallow, 0, host=host))
        hole = Blackhole(host, int(listeners[0].socket.getsockname()[1]))
        try:
            yield hole
        finally:
            nursery.cancel_scope.cancel()


async def flood_resolve(pool: Any, dc: DC, peer: str, *, seconds: int = 3600) -> int:
    """Make the DC answer the first account's (``PHONES[0]``) next ``contacts.ResolveUsername``
    with FLOOD_WAIT_``seconds`` and run a ``resolve`` of ``peer`` into it (the job fails);
    returns how many ResolveUsername that account has sent so far, as the DC counts them."""
    dc.faults.add(
        rpc_error(420, f"FLOOD_WAIT_{seconds}"), user=PHONES[0], method="contacts.ResolveUsername"
    )
    with pytest.raises(JobFailed):
        await pool.resolve(peer, deadline_s=10)
    return dc.counters(PHONES[0])["contacts.ResolveUsername"]
