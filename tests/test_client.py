"""TelethonClient: real Telethon + python-socks + trio-asyncio against loopback fake proxies."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio_asyncio
from telethon import errors as tl_errors
from telethon.crypto import AuthKey
from telethon.network.connection import (
    ConnectionTcpFull,
)
from telethon.sessions import SQLiteSession, StringSession
from telethon.tl import functions as tl_functions
from telethon.tl import types as tl_types

from mtpoold._aiolog import (
    AioContext,
    AioExceptionHandler,
    aio_context,
    install_exception_handler,
)
from mtpoold._classify import classify
from mtpoold._client import TelethonClient, telethon_client_factory
from mtpoold._config import (
    AccountConfig,
    Config,
    DaemonConfig,
    PolicyConfig,
    ProxyConfig,
    TelegramConfig,
    proxy_key,
)
from mtpoold._errors import ConfigError, ErrorClass, JobFailed, StartMissed

Handler = Callable[[trio.SocketStream], Awaitable[None]]


def _string_session(dc_host: str = "127.0.0.2") -> str:
    session = StringSession()
    session.set_dc(2, dc_host, 443)
    session.auth_key = AuthKey(os.urandom(256))
    return session.save()


SESSION = _string_session()
API_HASH = "0123456789abcdef0123456789abcdef"


def _account(**kw: Any) -> AccountConfig:
    kw.setdefault("session_string", SESSION)
    return AccountConfig(id="acc1", api_id=12345, api_hash=API_HASH, proxy="p1", **kw)


def _socks5(port: int, **kw: Any) -> ProxyConfig:
    return ProxyConfig(name="p1", type="socks5", host="127.0.0.1", port=port, **kw)


def _client(port: int, *, timeout_s: float = 5.0, **proxy_kw: Any) -> TelethonClient:
    proxy = _socks5(port, **proxy_kw)
    return TelethonClient(
        account=_account(),
        telegram=TelegramConfig(dc_host="127.0.0.2", dc_port=443, connect_timeout_s=timeout_s),
        proxy=proxy,
        proxy_key=proxy_key(proxy),
    )


@attrs.define
class Loop:
    loop: asyncio.AbstractEventLoop
    handler: AioExceptionHandler

    def pending_tasks(self) -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks(self.loop) if not t.done()}


@pytest.fixture
async def aio() -> AsyncIterator[Loop]:
    async with trio_asyncio.open_loop() as loop:
        handler = install_exception_handler(loop)
        yield Loop(loop, handler)
        gc.collect()  # "never retrieved" reports happen when futures are collected
        await trio.lowlevel.checkpoint()
        assert handler.count == 0, handler.statistics()


async def _listen(nursery: trio.Nursery, handler: Handler) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def _close_at_once(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def _garbage(stream: trio.SocketStream) -> None:
    with trio.move_on_after(5):
        await stream.receive_some(64)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await stream.aclose()


async def _silent(stream: trio.SocketStream) -> None:
    """Accept, read everything, never answer (a blackholing proxy)."""
    async with stream:
        while await stream.receive_some(4096):
            pass


async def _socks5_then_silent(stream: trio.SocketStream) -> None:
    """A SOCKS5 proxy that grants CONNECT, then a 'DC' that never answers."""
    async with stream:
        greeting = await stream.receive_some(2)
        assert greeting[:1] == b"\x05"
        buf = await stream.receive_some(greeting[1])
        await stream.send_all(b"\x05\x00")  # no authentication
        buf = await stream.receive_some(512)
        assert buf[:2] == b"\x05\x01"
        await stream.send_all(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        while await stream.receive_some(4096):
            pass


async def _refused_port() -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def test_TelethonClient_builds_telegram_client_as_configured() -> None:
    account = _account(device_model="Pixel 7", app_version="10.1", lang_code="de")
    client = TelethonClient(
        account=account,
        telegram=TelegramConfig(dc_id=4, dc_host="10.0.0.1", dc_port=8443, connect_timeout_s=7.5),
        proxy=_socks5(1080, password="hunter22"),
        proxy_key="k",
    )
    tg = client._build()
    assert isinstance(tg.session, StringSession)
    assert tg.flood_sleep_threshold == 0
    assert tg._request_retries == 1
    assert tg._raise_last_call_error is True
    assert tg._no_updates is True
    assert tg._auto_reconnect is False
    assert tg._timeout == 7.5
    assert tg._proxy["password"] == "hunter22"
    assert issubclass(tg._connection, ConnectionTcpFull)
    assert tg._init_request.device_model == "Pixel 7"
    assert tg._init_request.app_version == "10.1"
    assert tg._init_request.lang_code == "de"
    client._apply_server(tg.session)
    assert (tg.session.dc_id, tg.session.server_address, tg.session.port) == (4, "10.0.0.1", 8443)
    assert tg.session.auth_key is not None  # set_dc keeps the key


def test_TelethonClient_test_mode_uses_test_dc_addresses() -> None:
    client = TelethonClient(
        account=_account(), telegram=TelegramConfig(dc_id=2, test_mode=True), proxy=None
    )
    tg = client._build()
    client._apply_server(tg.session)
    assert (tg.session.dc_id, tg.session.server_address) == (2, "149.154.167.40")


def test_TelethonClient_session_file(tmp_path: Any) -> None:
    path = tmp_path / "acc1.session"
    account = AccountConfig(id="acc1", api_id=1, api_hash=API_HASH, session=str(path))
    client = TelethonClient(account=account, telegram=TelegramConfig(), proxy=None)
    tg = client._build()
    assert isinstance(tg.session, SQLiteSession)
    tg.session.close()


def test_TelethonClient_session_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTPOOLD_TEST_SESSION", SESSION)
    account = AccountConfig(
        id="acc1", api_id=1, api_hash=API_HASH, session_string_env="MTPOOLD_TEST_SESSION"
    )
    client = TelethonClient(account=account, telegram=TelegramConfig(), proxy=None)
    assert isinstance(client._build().session, StringSession)
    monkeypatch.delenv("MTPOOLD_TEST_SESSION")
    with pytest.raises(ConfigError, match=r"MTPOOLD_TEST_SESSION"):
        client._build()


def test_TelethonClient_repr_has_no_secrets() -> None:
    client = _client(1080, password="hunter22")
    text = repr(client)
    assert text.startswith("<TelethonClient account=acc1 proxy=p1(")
    for secret in (API_HASH, SESSION, "hunter22"):
        assert secret not in text


def _config(**telegram: Any) -> Config:
    proxy = _socks5(1080)
    return Config(
        daemon=DaemonConfig(),
        telegram=TelegramConfig(**telegram),
        policy=PolicyConfig(),
        proxies=(proxy,),
        accounts=(_account(),),
    )


def test_telethon_client_factory_builds_unconnected_clients() -> None:
    factory = telethon_client_factory(_config(dc_host="127.0.0.2"))
    client = factory(_account())
    assert isinstance(client, TelethonClient)
    assert client.proxy_key == proxy_key(_socks5(1080))
    assert not client.is_connected()


def test_telethon_client_factory_refuses_one_session_from_two_sources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The config cannot see that an inline string and an env variable hold the same text.
    monkeypatch.setenv("MTPOOLD_TEST_DUP", SESSION)
    accounts = (
        AccountConfig(id="a1", api_id=1, api_hash=API_HASH, session_string=SESSION),
        AccountConfig(id="a2", api_id=2, api_hash=API_HASH, session_string_env="MTPOOLD_TEST_DUP"),
    )
    config = Config(proxies=(), accounts=accounts)
    with pytest.raises(ConfigError) as info:
        telethon_client_factory(config)
    assert info.value.problems == (
        'accounts[1] ("a2"): session_string_env MTPOOLD_TEST_DUP holds the same auth key as'
        ' accounts[0] ("a1"), session_string; one auth key must never be used by two accounts',
    )
    assert SESSION not in str(info.value)


def test_telethon_client_factory_reports_bad_rsa_key() -> None:
    with pytest.raises(ConfigError, match=r"rsa_keys\[0\]"):
        telethon_client_factory(_config(rsa_keys=("-----BEGIN RSA PUBLIC KEY-----\nnope\n",)))


# --- the real path: Telethon -> python-socks -> trio-asyncio -> loopback -----------------------


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (_close_at_once, {ErrorClass.PROXY_UNAVAILABLE, ErrorClass.STREAM_CLOSED}),
        (_garbage, {ErrorClass.PROXY_UNAVAILABLE}),
    ],
)
async def test_TelethonClient_connect_through_broken_proxy_is_classified(
    aio: Loop, nursery: trio.Nursery, handler: Handler, expected: set[ErrorClass]
) -> None:
    port = await _listen(nursery, handler)
    client = _client(port)
    with pytest.raises(Exception) as info:  # noqa: PT011 - any exception, classified below
        await client.connect()
    assert classify(info.value).error_class in expected
    assert not client.is_connected()
    await client.disconnect()
    assert aio.pending_tasks() == set()


async def test_TelethonClient_connect_to_refused_proxy_is_proxy_unavailable(aio: Loop) -> None:
    client = _client(await _refused_port())
    with pytest.raises(Exception) as info:  # noqa: PT011
        await client.connect()
    assert classify(info.value).error_class is ErrorClass.PROXY_UNAVAILABLE
    await client.disconnect()
    assert aio.pending_tasks() == set()


@pytest.mark.parametrize("handler", [_silent, _socks5_then_silent])
async def test_TelethonClient_cancelled_connect_leaves_no_asyncio_task(
    aio: Loop, nursery: trio.Nursery, handler: Handler
) -> None:
    port = await _listen(nursery, handler)
    client = _client(port)
    for _ in range(2):  # connect() works again after a cancelled connect + disconnect
        with trio.move_on_after(0.3) as scope:
            await client.connect()
        assert scope.cancelled_caught
        assert not client.is_connected()
        assert aio.pending_tasks() == set()  # connect() cleaned up on its way out
        await client.disconnect()
        assert aio.pending_tasks() == set()
    assert aio.handler.count == 0


async def test_TelethonClient_call_when_not_connected_is_stream_closed(aio: Loop) -> None:
    client = _client(1)
    with pytest.raises(ConnectionError) as info:
        await client.call("help.getConfig", {})
    assert classify(info.value).error_class is ErrorClass.STREAM_CLOSED


async def test_TelethonClient_call_rejects_bad_arguments_before_any_io(aio: Loop) -> None:
    client = _client(1)
    with pytest.raises(JobFailed, match=r'^INVALID_ARGUMENT: unknown TL function "nope\.Nope"$'):
        await client.call("nope.Nope", {})
    with pytest.raises(JobFailed, match=r"unknown argument bogus"):
        await client.call("help.getConfig", {"bogus": 1})


async def test_TelethonClient_disconnect_is_safe_before_connect(aio: Loop) -> None:
    client = _client(1)
    await client.disconnect()
    await client.disconnect()
    assert not client.is_connected()


async def test_TelethonClient_disconnect_is_shielded(aio: Loop, nursery: trio.Nursery) -> None:
    port = await _listen(nursery, _socks5_then_silent)
    client = _client(port)
    with trio.move_on_after(0.3):
        await client.connect()
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.disconnect()  # runs to completion despite the cancelled scope
    assert aio.pending_tasks() == set()


async def test_TelethonClient_sets_aio_context_for_its_tasks(
    aio: Loop, nursery: trio.Nursery
) -> None:
    seen: list[AioContext | None] = []
    port = await _listen(nursery, _socks5_then_silent)
    client = _client(port)
    previous = aio.loop.get_task_factory()
    assert previous is not None  # install_exception_handler's

    def spy(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
        seen.append(aio_context.get())
        return previous(loop, coro, **kw)

    aio.loop.set_task_factory(spy)
    with trio.move_on_after(0.3):
        await client.connect()
    await client.disconnect()
    assert seen
    assert set(seen) == {AioContext(account="acc1", proxy_key=client.proxy_key)}
    assert aio_context.get() is None


# --- the asyncio exception handler ---------------------------------------------------------


# --- call / resolve / get_messages over a fake TelegramClient (no network) -------------------


class FakeTelegram:
    """Stands in for ``TelegramClient`` behind the trio-asyncio bridge."""

    def __init__(self, responses: dict[type, Any]) -> None:
        self.responses = responses
        self.requests: list[Any] = []
        self.looked_up: list[Any] = []
        self.cancelled = 0

    def is_connected(self) -> bool:
        return True

    async def __call__(self, request: Any) -> Any:
        asyncio.get_running_loop()  # we are on the asyncio side
        self.requests.append(request)
        response = self.responses[type(request)]
        if isinstance(response, BaseException):
            raise response
        if callable(response):
            try:
                return await response(request)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return response

    async def get_input_entity(self, target: Any) -> Any:
        self.looked_up.append(target)
        if target == "news" or isinstance(target, tl_types.PeerChannel):
            return tl_types.InputPeerChannel(channel_id=CHANNEL.id, access_hash=CHANNEL.access_hash)
        if isinstance(target, tl_types.PeerUser):
            return tl_types.InputPeerUser(user_id=target.user_id, access_hash=5)
        if isinstance(target, tl_types.PeerChat):  # basic chats need no access hash
            return tl_types.InputPeerChat(chat_id=target.chat_id)
        raise ValueError(f'No user has "{target}" as username')


CHANNEL = tl_types.Channel(
    id=1234567890,
    title="News",
    photo=tl_types.ChatPhotoEmpty(),
    date=None,
    access_hash=2**62,
    broadcast=True,
    username="news",
)
CHANNEL_FULL = tl_types.messages.ChatFull(
    full_chat=tl_types.ChannelFull(
        id=CHANNEL.id, about="about", read_inbox_max_id=0, read_outbox_max_id=0,
        unread_count=0, chat_photo=tl_types.PhotoEmpty(id=0),
        notify_settings=tl_types.PeerNotifySettings(), bot_info=[], pts=1,
        participants_count=31337,
    ),
    chats=[CHANNEL],
    users=[],
)  # fmt: skip


def _with_fake(responses: dict[type, Any]) -> tuple[TelethonClient, FakeTelegram]:
    client = _client(1)
    fake = FakeTelegram(responses)
    client._tg = fake  # type: ignore[assignment]
    return client, fake


async def test_TelethonClient_resolve_username_fetches_full_channel(aio: Loop) -> None:
    client, fake = _with_fake(
        {
            tl_functions.contacts.ResolveUsernameRequest: tl_types.contacts.ResolvedPeer(
                peer=tl_types.PeerChannel(CHANNEL.id), chats=[CHANNEL], users=[]
            ),
            tl_functions.channels.GetFullChannelRequest: CHANNEL_FULL,
        }
    )
    summary = await client.resolve("https://t.me/news/5")
    assert summary["kind"] == "channel"
    assert summary["participants_count"] == 31337
    assert summary["peer_id"] == -1001234567890
    assert [type(r).__name__ for r in fake.requests] == [
        "ResolveUsernameRequest",
        "GetFullChannelRequest",
    ]
    assert fake.requests[0].username == "news"
    assert fake.requests[1].channel == tl_types.InputChannel(CHANNEL.id, CHANNEL.access_hash)


async def test_TelethonClient_resolve_private_channel(aio: Loop) -> None:
    client, _ = _with_fake(
        {
            tl_functions.contacts.ResolveUsernameRequest: tl_types.contacts.ResolvedPeer(
                peer=tl_types.PeerChannel(CHANNEL.id), chats=[CHANNEL], users=[]
            ),
            tl_functions.channels.GetFullChannelRequest: tl_errors.ChannelPrivateError(None),
        }
    )
    summary = await client.resolve("@news")
    assert summary["private"] is True
    assert summary["participants_count"] is None


async def test_TelethonClient_resolve_invite(aio: Loop) -> None:
    invite = tl_types.ChatInvite(
        title="Club", photo=tl_types.PhotoEmpty(id=0), participants_count=3, color=0,
        broadcast=True, channel=True,
    )  # fmt: skip
    client, fake = _with_fake({tl_functions.messages.CheckChatInviteRequest: invite})
    summary = await client.resolve("t.me/+AbCdEf12")
    assert (summary["kind"], summary["private"], summary["participants_count"]) == (
        "channel",
        True,
        3,
    )
    assert fake.requests[0].hash == "AbCdEf12"


async def test_TelethonClient_resolve_unknown_username_is_classified(aio: Loop) -> None:
    error = tl_errors.UsernameNotOccupiedError(None)
    client, _ = _with_fake({tl_functions.contacts.ResolveUsernameRequest: error})
    with pytest.raises(tl_errors.UsernameNotOccupiedError) as info:
        await client.resolve("@nobody_here")
    assert classify(info.value).error_class is ErrorClass.PEER_NOT_FOUND


async def test_TelethonClient_get_messages_channel(aio: Loop) -> None:
    msg = tl_types.Message(id=7, peer_id=tl_types.PeerChannel(CHANNEL.id), date=None, message="hi")
    client, fake = _with_fake(
        {
            tl_functions.channels.GetMessagesRequest: tl_types.messages.ChannelMessages(
                pts=1, count=1, messages=[msg, tl_types.MessageEmpty(id=8, peer_id=None)],
                chats=[], users=[], topics=[],
            )
        }
    )  # fmt: skip
    out = await client.get_messages("@news", [7, 8])
    assert out["7"]["text"] == "hi"
    assert out["8"] == {"exists": False}
    request = fake.requests[0]
    assert request.channel == tl_types.InputChannel(CHANNEL.id, CHANNEL.access_hash)
    assert request.id == [tl_types.InputMessageID(7), tl_types.InputMessageID(8)]


async def test_TelethonClient_get_messages_private_chat_filters_other_chats(aio: Loop) -> None:
    mine = tl_types.Message(id=1, peer_id=tl_types.PeerUser(777), date=None, message="a")
    other = tl_types.Message(id=2, peer_id=tl_types.PeerUser(888), date=None, message="b")
    client, fake = _with_fake(
        {
            tl_functions.users.GetUsersRequest: [tl_types.User(id=777, first_name="U")],
            tl_functions.messages.GetMessagesRequest: tl_types.messages.Messages(
                messages=[mine, other], chats=[], users=[], topics=[]
            ),
        }
    )
    out = await client.get_messages(777, [1, 2])
    assert out["1"]["exists"] is True
    assert out["2"] == {"exists": False}
    assert fake.looked_up == [tl_types.PeerUser(777)]
    assert [type(r).__name__ for r in fake.requests] == ["GetUsersRequest", "GetMessagesRequest"]
    assert fake.requests[0].id == [tl_types.InputUser(777, 5)]
    with pytest.raises(JobFailed, match=r"ids must not be empty"):
        await client.get_messages(777, [])


@pytest.mark.parametrize(
    ("peer", "responses"),
    [
        # Telegram leaves users it does not know out of users.getUsers (or sends UserEmpty)
        (777, {tl_functions.users.GetUsersRequest: []}),
        (777, {tl_functions.users.GetUsersRequest: [tl_types.UserEmpty(id=777)]}),
        # ... and answers messages.getChats for an unknown basic chat with an RPC error
        (-1, {tl_functions.messages.GetChatsRequest: tl_errors.ChatIdInvalidError(None)}),
        (-1009999999, {tl_functions.messages.GetChatsRequest: tl_errors.PeerIdInvalidError(None)}),
        ("-1006001", {tl_functions.messages.GetChatsRequest: tl_types.messages.Chats(chats=[])}),
    ],
)
async def test_TelethonClient_get_messages_of_unknown_user_or_chat_is_peer_not_found(
    aio: Loop, peer: int | str, responses: dict[type, Any]
) -> None:
    client, fake = _with_fake(responses)  # no GetMessagesRequest: it must not be sent
    with pytest.raises(Exception) as info:
        await client.get_messages(peer, [1])
    assert classify(info.value).error_class is ErrorClass.PEER_NOT_FOUND
    assert len(fake.requests) == 1


async def test_TelethonClient_get_messages_of_a_basic_chat_checks_it_first(aio: Loop) -> None:
    chat = tl_types.Chat(id=42, title="Group", photo=tl_types.ChatPhotoEmpty(),
                         participants_count=3, date=None, version=1)  # fmt: skip
    mine = tl_types.Message(id=1, peer_id=tl_types.PeerChat(42), date=None, message="a")
    client, fake = _with_fake(
        {
            tl_functions.messages.GetChatsRequest: tl_types.messages.Chats(chats=[chat]),
            tl_functions.messages.GetMessagesRequest: tl_types.messages.Messages(
                messages=[mine], chats=[], users=[], topics=[]
            ),
        }
    )
    out = await client.get_messages(-42, [1, 2])
    assert out["1"]["exists"] is True and out["2"] == {"exists": False}
    assert fake.requests[0] == tl_functions.messages.GetChatsRequest([42])


async def test_TelethonClient_call_resolves_peers_and_wraps_results(aio: Loop) -> None:
    client, fake = _with_fake(
        {
            tl_functions.channels.GetFullChannelRequest: CHANNEL_FULL,
            tl_functions.users.GetUsersRequest: [tl_types.User(id=1, first_name="A")],
            tl_functions.account.UpdateStatusRequest: True,
        }
    )
    out = await client.call("channels.GetFullChannel", {"channel": "@news"})
    assert out["_"] == "ChatFull"
    assert out["full_chat"]["participants_count"] == 31337
    assert out["chats"][0]["access_hash"] == 2**62
    assert fake.looked_up == ["news"]
    assert fake.requests[0].channel == tl_types.InputChannel(CHANNEL.id, CHANNEL.access_hash)
    out = await client.call("users.getUsers", {"id": [{"_": "InputUserSelf"}]})
    assert out["_"] == "Vector"
    assert out["value"][0]["_"] == "User"
    assert await client.call("account.updateStatus", {"offline": False}) == {
        "_": "Bool",
        "value": True,
    }
    with pytest.raises(JobFailed, match=r"is not a user"):
        await client.call("users.getUsers", {"id": ["@news"]})


async def test_TelethonClient_cancelled_call_cancels_asyncio_side(aio: Loop) -> None:
    async def hang(request: Any) -> Any:
        await asyncio.sleep(3600)

    client, fake = _with_fake({tl_functions.help.GetConfigRequest: hang})
    with trio.move_on_after(0.1) as scope:
        await client.call("help.getConfig", {})
    assert scope.cancelled_caught
    assert fake.cancelled == 1
    assert aio.pending_tasks() == set()


async def test_TelethonClient_needs_a_trio_asyncio_loop() -> None:
    client, _ = _with_fake({})
    with pytest.raises(RuntimeError, match=r"inside trio_asyncio\.open_loop\(\)"):
        await client.call("help.getConfig", {})
    await client.disconnect()  # never raises


async def test_TelethonClient_session_file_survives_cancelled_connects(
    aio: Loop, nursery: trio.Nursery, tmp_path: Any
) -> None:
    port = await _listen(nursery, _socks5_then_silent)
    account = AccountConfig(
        id="acc1", api_id=1, api_hash=API_HASH, session=str(tmp_path / "acc1.session")
    )
    client = TelethonClient(
        account=account, telegram=TelegramConfig(dc_host="127.0.0.2"), proxy=_socks5(port)
    )
    for _ in range(3):  # no auth key yet: cancelled during the key exchange, each time
        with trio.move_on_after(0.3):
            await client.connect()
        await client.disconnect()
    assert aio.pending_tasks() == set()
    assert (tmp_path / "acc1.session").exists()


async def test_TelethonClient_connect_past_its_open_by_opens_no_socket(
    aio: Loop, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Cluster mode's start slot at the socket (`WireMonitor.open_by`): a connect that reaches
    the socket after it raises StartMissed with nothing sent and nothing blamed; before it,
    the connect goes to the proxy as usual."""
    accepted: list[trio.SocketStream] = []

    async def counting(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await _silent(stream)

    caplog.set_level(logging.INFO, logger="mtpoold")
    client = _client(await _listen(nursery, counting))
    client.set_open_by(trio.current_time() - 0.001)
    with pytest.raises(StartMissed) as info:
        await client.connect()
    assert info.value.late_s > 0
    # logged as the routine it is in cluster mode, not as a fault
    [missed] = [r for r in caplog.records if "outcome=StartMissed" in r.getMessage()]
    assert missed.levelno == logging.INFO
    await trio.sleep(0.05)
    assert accepted == []  # no TCP connection was opened
    assert not client.is_connected()
    assert aio.pending_tasks() == set()
    client.set_open_by(trio.current_time() + 5.0)
    with trio.move_on_after(0.3):
        await client.connect()
    assert len(accepted) == 1
    await client.disconnect()
    client.set_open_by(None)
    assert aio.pending_tasks() == set()
