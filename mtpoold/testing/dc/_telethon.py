"""Point an unmodified Telethon client at a loopback DC (inside ``trio_asyncio.open_loop()``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
import trio_asyncio
from telethon import TelegramClient, connection
from telethon.crypto import rsa
from telethon.sessions import StringSession

from ._server import DC
from ._world import User

CONNECTIONS: Final = {
    "full": connection.ConnectionTcpFull,
    "intermediate": connection.ConnectionTcpIntermediate,
    "abridged": connection.ConnectionTcpAbridged,
    # through an MTProxy (``proxy=(host, port, secret)``, e.g. ``MTProxy.telethon_proxy``)
    "mtproxy_abridged": connection.ConnectionTcpMTProxyAbridged,
    "mtproxy_intermediate": connection.ConnectionTcpMTProxyIntermediate,
    "mtproxy_randomized": connection.ConnectionTcpMTProxyRandomizedIntermediate,
}
DISCONNECT_TIMEOUT_S: Final = 5.0
TEST_API_ID: Final = 12345
TEST_API_HASH: Final = "0123456789abcdef0123456789abcdef"


def install_public_key(dc: DC) -> None:
    """Make Telethon trust ``dc``'s RSA key (process-wide; harmless to repeat)."""
    rsa.add_key(dc.public_key_pem, old=False)


def fresh_session(dc: DC) -> StringSession:
    """An empty ``StringSession`` aimed at ``dc`` (no auth key: the client will exchange one)."""
    session = StringSession()
    session.set_dc(dc.dc_id, dc.host, dc.port)
    return session


@asynccontextmanager
async def open_telethon_client(
    dc: DC,
    user: int | str | User | None = None,
    *,
    session: StringSession | None = None,
    transport: str = "full",
    proxy: Any = None,
    connect: bool = True,
    **client_kwargs: Any,
) -> AsyncIterator[TelegramClient]:
    """A Telethon ``TelegramClient`` connected to ``dc``, disconnected on exit.

    Must run inside ``trio_asyncio.open_loop()``; call the client through
    ``trio_asyncio.aio_as_trio``.

    Args:
        dc: the serving DC.
        user: log in as this user (phone or id) via :meth:`DC.session_string`; ``None`` for a
            fresh, unauthorized key (unless ``session`` is given).
        session: use this session instead.
        transport: ``"full"``, ``"intermediate"`` or ``"abridged"``; through an MTProxy
            ``"mtproxy_abridged"``, ``"mtproxy_intermediate"`` or ``"mtproxy_randomized"``
            (padded intermediate, the one ``dd`` secrets need).
        proxy: Telethon/python-socks proxy tuple or dict; for the ``mtproxy_*`` transports
            ``(host, port, secret_hex)``.
        connect: call ``client.connect()`` before yielding.
        **client_kwargs: passed to ``TelegramClient``; test-friendly defaults are
            ``flood_sleep_threshold=0, request_retries=1, connection_retries=1, retry_delay=0,
            receive_updates=False, raise_last_call_error=True``.

    Raises:
        KeyError: if ``transport`` is unknown or ``user`` is not in the world.
    """
    install_public_key(dc)
    if session is None:
        session = StringSession(dc.session_string(user)) if user is not None else fresh_session(dc)
    kwargs: dict[str, Any] = dict(
        flood_sleep_threshold=0,
        request_retries=1,
        connection_retries=1,
        retry_delay=0,
        receive_updates=False,
        raise_last_call_error=True,
    )
    kwargs.update(client_kwargs)
    client = TelegramClient(
        session,
        TEST_API_ID,
        TEST_API_HASH,
        connection=CONNECTIONS[transport],
        proxy=proxy,
        **kwargs,
    )
    try:
        if connect:
            await trio_asyncio.aio_as_trio(client.connect)()
        yield client
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(DISCONNECT_TIMEOUT_S):
            await trio_asyncio.aio_as_trio(client.disconnect)()
        # Telethon stores why it disconnected in a future nobody may await: read it, so
        # asyncio does not log "Future exception was never retrieved" at garbage collection.
        done = client.disconnected
        if done.done() and not done.cancelled():
            done.exception()
