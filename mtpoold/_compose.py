"""Where the pool meets Telethon: the scheduling core composed with the Telegram side.

The scheduling core (`mtpoold._pool` and the rooms under it) imports no Telethon, python-socks
or trio-asyncio; `tests/test_layers.py` checks its import graph. This module chooses what the
core is handed (`mtpoold._pool.TelegramSide`): Telethon clients (`mtpoold._client`), their
failures read by `mtpoold._classify.classify`, the request checks of `mtpoold._tljson` and
`mtpoold._links`, the session locks of `mtpoold._sessionlock`, and a trio-asyncio loop with
mtpoold's exception handler (`mtpoold._aiolog`). ``mtpoold.open_pool`` is `open_pool`.

The Telegram side is imported when a pool is composed, not when this module is: ``import
mtpoold`` stays free of Telethon.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._config import Config
from ._pool import ClientFactory, Pool, TelegramSide
from ._pool import open_pool as _open_core_pool

if TYPE_CHECKING:
    from ._store import StateStore

__all__ = ["open_pool", "telethon_side"]


@asynccontextmanager
async def _asyncio_loop() -> AsyncIterator[object]:
    """One trio-asyncio loop for the pool's Telethon clients (callbacks run in batches,
    `mtpoold._aioloop`), with an exception handler that logs stray asyncio errors with account
    and proxy context (`mtpoold._aiolog`)."""
    from ._aiolog import install_exception_handler
    from ._aioloop import open_aio_loop

    async with open_aio_loop() as loop:
        install_exception_handler(loop)
        yield loop


def telethon_side(
    *, client_factory: ClientFactory | None = None, lock_sessions: bool = True
) -> TelegramSide:
    """The real Telegram side of a pool.

    Imports python-socks before Telethon (`mtpoold._classify`, see its docstring), before any
    client is built.

    Args:
        client_factory: Builds one account's client; default: real Telethon clients
            (`mtpoold._client.telethon_client_factory`, which checks every account once per
            config and raises ``ConfigError``). Requests are checked and failures
            classified as for Telethon either way.
        lock_sessions: Hold every account's session with an exclusive ``flock`` while the
            pool uses it (`mtpoold._sessionlock.lock_sessions_of`), so no second process can
            open it and get the session killed with AUTH_KEY_DUPLICATED. False only for tests
            that deliberately share sessions.

    Returns:
        The `TelegramSide` to hand `mtpoold._pool.open_pool`.
    """
    from ._classify import classify
    from ._links import check_message_ids, check_peer, peer_key
    from ._messagelink import message_id_of_link
    from ._sessionlock import lock_sessions_of
    from ._tljson import check_request

    make_factory: Callable[[Config], ClientFactory]
    if client_factory is None:
        from ._client import telethon_client_factory

        make_factory = telethon_client_factory
    else:
        fixed = client_factory
        make_factory = lambda _config: fixed  # noqa: E731

    def request_check(method: str, args: Mapping[str, Any], allow: Collection[str]) -> None:
        check_request(method, args, allow=allow)

    def peer_check(peer: str | int, argument: str) -> None:
        check_peer(peer, argument=argument)

    return TelegramSide(
        client_factory=make_factory,
        classify=classify,
        check_request=request_check,
        check_peer=peer_check,
        check_message_ids=check_message_ids,
        message_id_of_link=message_id_of_link,
        peer_key=peer_key,
        lock_sessions=lock_sessions_of if lock_sessions else None,
        open_runtime=_asyncio_loop,
    )


@asynccontextmanager
async def _open_cluster_pool(
    config: Config,
    telegram: TelegramSide,
    *,
    store: StateStore | None,
    wall_clock: Callable[[], float],
    rng: random.Random | None,
) -> AsyncIterator[Pool]:
    """Cluster mode (``[cluster]``): the trio-asyncio loop, the Redis link inside it, the
    node (`mtpoold._clusterrun.ClusterNode`), the core pool with the node as its cluster
    side and the store sharing per-account state (`mtpoold._clusterstate.ClusterStore`),
    then the cluster task. On exit: the hand-over (drain, flush, release), then the pool
    closes, then the link."""
    import attrs

    from ._clusterrun import open_cluster_node
    from ._forward import rpc_address

    assert config.cluster is not None
    rng = rng or random.Random()
    async with _asyncio_loop():
        async with open_cluster_node(
            config.cluster, rpc=rpc_address(config.daemon.listen), rng=rng, wall_clock=wall_clock
        ) as node:
            pool_store: Any = store
            if store is not None and node.state is not None:
                from ._clusterstate import ClusterStore

                pool_store = ClusterStore(store, node.state)
            core_side = attrs.evolve(telegram, open_runtime=None)  # the loop is open
            async with contextlib.AsyncExitStack() as stack:
                opening = _open_core_pool(
                    config,
                    core_side,
                    store=pool_store,
                    wall_clock=wall_clock,
                    rng=rng,
                    cluster=node,
                )
                if pool_store is not store:
                    # the start-up restore reads the local file: nothing of it is queued for
                    # Redis (an account's shared state arrives with its lease)
                    with pool_store.quiet():
                        pool = await stack.enter_async_context(opening)
                    pool_store.cooldown_cause_of = pool.cooldown_cause
                else:
                    pool = await stack.enter_async_context(opening)
                async with node.running(pool):
                    yield pool


def open_pool(
    config: Config,
    *,
    client_factory: ClientFactory | None = None,
    store: StateStore | None = None,
    lock_sessions: bool = True,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> AbstractAsyncContextManager[Pool]:
    """Open a pool for ``config`` inside the caller's Trio run: ``async with open_pool(c) as
    pool``.

    Opens one trio-asyncio loop (every Telethon coroutine runs inside it) with an exception
    handler that logs stray asyncio errors with account and proxy context, and a nursery for
    the accounts' connection watchers. On exit, every client is disconnected (shielded,
    bounded by ``mtpoold._pool.CLOSE_TIMEOUT_S`` = 10 s) and every task is gone. See
    `mtpoold._pool.open_pool` (the core) and `telethon_side` (what it is handed).

    Args:
        config: A validated :class:`mtpoold.Config`.
        client_factory: Builds one account's client; default: real Telethon clients.
        store: A :class:`mtpoold._store.StateStore` to load from and write verdicts to.
        lock_sessions: Hold every account's session with an exclusive ``flock`` while the
            pool uses it (default; the daemon does too). Raises ``SessionLocked`` if one is
            held. False only for tests that deliberately share sessions. Cluster mode takes
            no session locks: the leases make a session exclusive across the nodes.
        wall_clock: UNIX time in seconds, used to store cooldowns across restarts.
        rng: Source of the gates' jitter.

    With ``config.cluster`` (``[cluster]``) the pool is one node of a cluster: leases,
    shared gates and shared state in Redis (`mtpoold._clusterrun`); accounts become
    schedulable as this node acquires their leases.

    Returns:
        An async context manager yielding the :class:`Pool`. Entering it raises
        ``ConfigError`` (an account that cannot be used, an unreadable Redis password file)
        or ``SessionLocked`` before any task exists.
    """
    if config.cluster is not None:
        # The cluster's leases make an account's session exclusive across every node (and
        # several nodes may share one host); a host-wide session lock would refuse them.
        lock_sessions = False
    telegram = telethon_side(client_factory=client_factory, lock_sessions=lock_sessions)
    if config.cluster is not None:  # several nodes through Redis; else no Redis import at all
        return _open_cluster_pool(config, telegram, store=store, wall_clock=wall_clock, rng=rng)
    return _open_core_pool(config, telegram, store=store, wall_clock=wall_clock, rng=rng)
