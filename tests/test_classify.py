"""`mtpoold._classify.classify` on the shapes Telethon and python-socks really produce."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import textwrap

import pytest
import python_socks
import telethon
import trio
import trio_asyncio
from telethon import errors as tl_errors
from telethon.errors import rpc_message_to_error
from telethon.extensions import BinaryReader
from telethon.tl import types
from telethon.tl.alltlobjects import LAYER
from telethon.tl.functions.channels import GetChannelsRequest
from telethon.tl.functions.contacts import ResolveUsernameRequest
from telethon.tl.functions.messages import GetHistoryRequest, GetMessagesRequest
from telethon.tl.types import InputChannel, InputMessageID, InputPeerEmpty, RpcError

from mtpoold._classify import TL_LAYER, classify
from mtpoold._config import PolicyConfig
from mtpoold._errors import (
    ConnectPhase,
    ErrorClass,
    Failure,
    ProtocolViolation,
    ProxyUnavailable,
)
from mtpoold._policy import Verdict, decide

REQUEST = GetHistoryRequest(
    peer=InputPeerEmpty(),
    offset_id=0,
    offset_date=None,
    add_offset=0,
    limit=10,
    max_id=0,
    min_id=0,
    hash=0,
)
API_HASH = "0123456789abcdef0123456789abcdef"
SESSION_STRING = "1BVtsOKkBu7Q2wGqz3x9lK1Lp_mN0aZ8vY4tR6eW2qS5dF7gH9jK0lM3nB5vC8xZ" * 5 + "="


def rpc(code: int, message: str, request: object = REQUEST) -> BaseException:
    """An RPC error exactly as Telethon's MTProtoSender builds it from an rpc_error."""
    return rpc_message_to_error(RpcError(error_code=code, error_message=message), request)


# --- FLOOD_WAIT -----------------------------------------------------------------------------------


def test_classify_FloodWaitError_seconds() -> None:
    exc = tl_errors.rpcerrorlist.FloodWaitError(request=None, capture=37)
    f = classify(exc)
    assert f.error_class is ErrorClass.FLOOD_WAIT
    assert f.retry_after_s == 37.0
    assert f.rpc_code == 420
    assert f.rpc_name == "FLOOD_WAIT_37"


def test_classify_FloodWaitError_of_any_length_is_a_flood_wait() -> None:
    # case 002's kind from Telegram: FLOOD_WAIT_<400 digits> overflowed float() and came out
    # GENERIC "FloodWaitError"; the wait is kept, capped at 2**53 s (a float, exactly)
    exc = rpc(420, "FLOOD_WAIT_1" + "0" * 400)
    f = classify(exc)
    assert (f.error_class, f.retry_after_s) == (ErrorClass.FLOOD_WAIT, float(2**53))


def test_classify_FloodWaitError_from_rpc_message() -> None:
    exc = rpc(420, "FLOOD_WAIT_120")
    assert type(exc) is tl_errors.FloodWaitError
    assert classify(exc) == Failure(
        ErrorClass.FLOOD_WAIT,
        "FLOOD_WAIT_120 (420): A wait of 120 seconds is required (caused by GetHistoryRequest)",
        retry_after_s=120.0,
        rpc_code=420,
        rpc_name="FLOOD_WAIT_120",
        tl_name="messages.GetHistoryRequest",  # the request's TL name: its rate class is "read"
    )


def test_classify_FLOOD_WAIT_0_is_one_second() -> None:
    f = classify(rpc(420, "FLOOD_WAIT_0"))
    assert (f.error_class, f.retry_after_s, f.rpc_name) == (
        ErrorClass.FLOOD_WAIT,
        1.0,
        "FLOOD_WAIT_0",
    )


def test_classify_FloodWaitError_raised_early_by_client() -> None:
    # telethon/client/users.py raises this itself for a request already known flood-waited
    exc = tl_errors.FloodWaitError(request=REQUEST, capture=42)
    assert classify(exc).retry_after_s == 42.0


@pytest.mark.parametrize(
    ("message", "cls", "seconds"),
    [
        ("FLOOD_PREMIUM_WAIT_6", tl_errors.FloodPremiumWaitError, 6.0),
        ("FLOOD_TEST_PHONE_WAIT_5", tl_errors.FloodTestPhoneWaitError, 5.0),
        ("SLOWMODE_WAIT_10", tl_errors.SlowModeWaitError, 10.0),
    ],
)
def test_classify_flood_wait_family(message: str, cls: type, seconds: float) -> None:
    exc = rpc(420, message)
    assert type(exc) is cls
    f = classify(exc)
    assert (f.error_class, f.retry_after_s, f.rpc_code, f.rpc_name) == (
        ErrorClass.FLOOD_WAIT,
        seconds,
        420,
        message,
    )


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("FLOOD_PREMIUM_WAIT_6", 6.0),
        ("FLOOD_TEST_PHONE_WAIT_5", 5.0),
        ("FLOOD_NEWTHING_WAIT_9", 9.0),
    ],
)
def test_classify_plain_420_RPCError_parses_seconds(message: str, seconds: float) -> None:
    # A 420 whose name is not in Telethon's table: Telethon builds the base class with the message.
    exc = tl_errors.FloodError(request=REQUEST, message=message, code=420)
    f = classify(exc)
    assert (f.error_class, f.retry_after_s, f.rpc_name) == (ErrorClass.FLOOD_WAIT, seconds, message)
    unknown = rpc(420, "FLOOD_NEWTHING_WAIT_9")
    assert type(unknown) is tl_errors.FloodError
    assert classify(unknown).retry_after_s == 9.0


def test_classify_plain_RPCError_420() -> None:
    exc = tl_errors.RPCError(REQUEST, "FLOOD_PREMIUM_WAIT_6", 420)
    assert classify(exc).retry_after_s == 6.0


def test_classify_420_without_seconds_is_flood_wait_without_duration() -> None:
    f = classify(rpc(420, "FLOOD_SOMETHING_NEW"))
    assert (f.error_class, f.retry_after_s, f.rpc_name) == (
        ErrorClass.FLOOD_WAIT,
        None,
        "FLOOD_SOMETHING_NEW",
    )


# --- PEER_FLOOD -----------------------------------------------------------------------------------


def test_classify_PeerFloodError() -> None:
    exc = rpc(400, "PEER_FLOOD")
    assert type(exc) is tl_errors.PeerFloodError
    f = classify(exc)
    assert (f.error_class, f.rpc_code, f.rpc_name, f.retry_after_s) == (
        ErrorClass.PEER_FLOOD,
        400,
        "PEER_FLOOD",
        None,
    )
    assert classify(tl_errors.PeerFloodError(request=None)).error_class is ErrorClass.PEER_FLOOD


# --- SESSION_REVOKED ------------------------------------------------------------------------------

SESSION_REVOKED = [
    (401, "AUTH_KEY_UNREGISTERED", tl_errors.AuthKeyUnregisteredError),
    (401, "SESSION_REVOKED", tl_errors.SessionRevokedError),
    (401, "SESSION_EXPIRED", tl_errors.SessionExpiredError),
    (401, "USER_DEACTIVATED", tl_errors.UserDeactivatedError),
    (401, "USER_DEACTIVATED_BAN", tl_errors.UserDeactivatedBanError),
    (406, "AUTH_KEY_DUPLICATED", tl_errors.AuthKeyDuplicatedError),
    (400, "PHONE_NUMBER_BANNED", tl_errors.PhoneNumberBannedError),
    (401, "AUTH_KEY_INVALID", tl_errors.AuthKeyInvalidError),
]


@pytest.mark.parametrize(("code", "message", "cls"), SESSION_REVOKED)
def test_classify_session_revoked(code: int, message: str, cls: type) -> None:
    exc = rpc(code, message)
    assert type(exc) is cls
    f = classify(exc)
    assert (f.error_class, f.rpc_code, f.rpc_name) == (ErrorClass.SESSION_REVOKED, code, message)
    assert classify(cls(request=None)).error_class is ErrorClass.SESSION_REVOKED


@pytest.mark.parametrize(("code", "message", "cls"), SESSION_REVOKED)
def test_classify_session_revoked_by_message_only(code: int, message: str, cls: type) -> None:
    # e.g. a Telethon version whose table lacks the name: the base class carries the message
    exc = tl_errors.UnauthorizedError(REQUEST, message, code)
    f = classify(exc)
    assert (f.error_class, f.rpc_name) == (ErrorClass.SESSION_REVOKED, message)


# --- PEER_NOT_FOUND -------------------------------------------------------------------------------

PEER_NOT_FOUND = [
    ("PEER_ID_INVALID", tl_errors.PeerIdInvalidError),
    ("USERNAME_NOT_OCCUPIED", tl_errors.UsernameNotOccupiedError),
    ("USERNAME_INVALID", tl_errors.UsernameInvalidError),
    ("CHANNEL_PRIVATE", tl_errors.ChannelPrivateError),
    ("CHANNEL_INVALID", tl_errors.ChannelInvalidError),
    ("MSG_ID_INVALID", tl_errors.MsgIdInvalidError),
    ("USER_ID_INVALID", tl_errors.UserIdInvalidError),
    ("CHAT_ID_INVALID", tl_errors.ChatIdInvalidError),
    # what Telegram says about the caller's invite link (messages.checkChatInvite)
    ("INVITE_HASH_INVALID", tl_errors.InviteHashInvalidError),
    ("INVITE_HASH_EXPIRED", tl_errors.InviteHashExpiredError),
    ("INVITE_HASH_EMPTY", tl_errors.InviteHashEmptyError),
    ("USERNAME_PURCHASE_AVAILABLE", tl_errors.UsernamePurchaseAvailableError),
]


@pytest.mark.parametrize(("message", "cls"), PEER_NOT_FOUND)
def test_classify_peer_not_found(message: str, cls: type) -> None:
    exc = rpc(400, message, ResolveUsernameRequest(username="durov"))
    assert type(exc) is cls
    f = classify(exc)
    assert (f.error_class, f.rpc_code, f.rpc_name) == (ErrorClass.PEER_NOT_FOUND, 400, message)
    assert "for this account only" not in f.message  # a server answer holds for every account
    by_name = classify(tl_errors.BadRequestError(REQUEST, message, 400))
    assert by_name.error_class is ErrorClass.PEER_NOT_FOUND


@pytest.mark.parametrize(
    "text",
    [
        # telethon/client/users.py get_input_entity
        "Could not find the input entity for PeerUser(user_id=777000) (PeerUser). Please read "
        "https://docs.telethon.dev/en/stable/concepts/entities.html to find out more details.",
        # telethon/client/users.py _get_entity_from_string
        'Cannot find any entity corresponding to "some_user"',
        'No user has "some_user" as username',
    ],
)
def test_classify_telethon_local_entity_not_found(text: str) -> None:
    f = classify(ValueError(text))
    assert f.error_class is ErrorClass.PEER_NOT_FOUND
    assert f.message.endswith("[not found for this account only; another account may see it]")


# --- STREAM_CLOSED --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(104, "Connection reset by peer"),
        ConnectionError("Cannot send requests while disconnected"),  # mtprotosender.send
        ConnectionError("Connection to Telegram failed 5 time(s)"),  # mtprotosender._connect
        ConnectionError("Not connected"),  # connection.Connection.send/recv
        asyncio.IncompleteReadError(b"\x00\x01", 4),
        BrokenPipeError(32, "Broken pipe"),
        ValueError("Request was unsuccessful 5 time(s)"),  # client/users.py after retries
        tl_errors.InvalidBufferError(b"\x6c\xfe\xff\xff"),  # tcpfull: HTTP code 404 payload
        tl_errors.InvalidBufferError(b"\x01"),
        tl_errors.InvalidChecksumError(1, 2),
        tl_errors.AuthKeyNotFound(),
        OSError(113, "No route to host"),
        TimeoutError(),  # asyncio.wait_for around the connect
        TimeoutError(),
    ],
    ids=repr,
)
def test_classify_stream_closed(exc: BaseException) -> None:
    f = classify(exc)
    assert f.error_class is ErrorClass.STREAM_CLOSED
    assert (f.retry_after_s, f.rpc_code, f.rpc_name) == (None, None, None)


def test_classify_stream_closed_message() -> None:
    assert classify(ConnectionResetError(104, "Connection reset by peer")) == Failure(
        ErrorClass.STREAM_CLOSED, "ConnectionResetError: [Errno 104] Connection reset by peer"
    )


# --- PROXY_UNAVAILABLE ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        python_socks.ProxyError("General SOCKS server failure", error_code=1),
        python_socks.ProxyConnectionError(
            111, "Could not connect to proxy 10.0.0.1:1080 [refused]"
        ),
        python_socks.ProxyTimeoutError("Proxy connection timed out: 10"),
    ],
    ids=repr,
)
def test_classify_python_socks_errors(exc: BaseException) -> None:
    assert classify(exc).error_class is ErrorClass.PROXY_UNAVAILABLE


def test_classify_telethon_replacement_ConnectionErrorExtra() -> None:
    # The shape Telethon's connection.py puts in place of python_socks._errors.ProxyError.
    class ConnectionErrorExtra(ConnectionError):
        def __init__(self, message: object, error_code: int | None = None) -> None:
            super().__init__(message)
            self.error_code = error_code

    ConnectionErrorExtra.__module__ = "telethon.network.connection.connection"
    f = classify(ConnectionErrorExtra("General SOCKS server failure", error_code=1))
    assert f.error_class is ErrorClass.PROXY_UNAVAILABLE


def test_classify_ConnectionError_raised_inside_python_socks() -> None:
    # After Telethon's rebinding, python-socks raises a bare ConnectionError: known by its frames.
    namespace: dict[str, object] = {"__name__": "python_socks.async_.asyncio._proxy"}
    exec("def connect():\n    raise ConnectionError(111, 'Could not connect to proxy')", namespace)
    with pytest.raises(ConnectionError) as info:
        namespace["connect"]()  # type: ignore[operator]
    assert classify(info.value).error_class is ErrorClass.PROXY_UNAVAILABLE


PROBE = textwrap.dedent(
    """
    import asyncio, collections, json, logging, socket, sys

    order = sys.argv[1]
    if order == "mtpoold-first":
        import mtpoold._classify as E
        import python_socks, python_socks._errors
        import telethon
        from telethon.network.connection import ConnectionTcpFull
    else:
        import telethon
        from telethon.network.connection import ConnectionTcpFull
        import python_socks, python_socks._errors

    captured_before = (python_socks.ProxyError, python_socks.ProxyConnectionError,
                       python_socks.ProxyTimeoutError)

    def closed_port():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    async def proxy_failures():
        async def hang_up(reader, writer):
            writer.close()
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        hang_up_port = server.sockets[0].getsockname()[1]
        loggers = collections.defaultdict(lambda: logging.getLogger("probe"))
        out = []
        for port in (closed_port(), hang_up_port):
            conn = ConnectionTcpFull("127.0.0.1", 443, 2, loggers=loggers,
                                     proxy=(python_socks.ProxyType.SOCKS5, "127.0.0.1", port))
            try:
                await conn.connect(timeout=5)
            except BaseException as exc:
                out.append(exc)
            else:
                out.append(None)
        server.close()
        await server.wait_closed()
        return out

    # One real proxied connect: this is when Telethon rebinds python_socks._errors.*.
    real = asyncio.run(proxy_failures())
    if order == "telethon-first":
        import mtpoold._classify as E
    real += asyncio.run(proxy_failures())
    rebound = python_socks._errors.ProxyError
    samples = [
        captured_before[0]("refused", error_code=1),
        captured_before[1](111, "refused"),
        captured_before[2]("timed out"),
        python_socks.ProxyError("x"),
        rebound("x", error_code=5),
    ] + real
    print(json.dumps({
        "rebound": rebound is not captured_before[0],
        "classes": [E.classify(x).error_class.value if x is not None else None for x in samples],
        "types": [type(x).__name__ for x in samples],
    }))
    """
)


@pytest.mark.parametrize("order", ["mtpoold-first", "telethon-first"])
def test_classify_proxy_errors_whatever_the_import_order(order: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE, order],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rebound"] is True, "Telethon no longer rebinds python_socks errors?"
    assert result["classes"] == ["PROXY_UNAVAILABLE"] * 9, result
    if order == "telethon-first":
        # python-socks' asyncio module was imported after the rebinding: a bare ConnectionError
        # comes out, recognisable only by the python-socks frames it was raised from.
        assert "ConnectionError" in result["types"][5:], result


# --- DEADLINE_EXCEEDED / GENERIC ------------------------------------------------------------------


def test_classify_TooSlowError() -> None:
    assert classify(trio.TooSlowError()) == Failure(
        ErrorClass.DEADLINE_EXCEEDED, "call deadline exceeded"
    )


@pytest.mark.parametrize(
    "exc",
    [
        rpc(500, "INTERNAL_SERVER_ERROR"),
        rpc(-503, "Timeout"),
        rpc(400, "USER_BANNED_IN_CHANNEL"),  # this account's standing: rerouted
        ValueError("Unknown proxy protocol type: 9"),
        ValueError("whatever"),
        RuntimeError("The asyncio event loop must not change after connection"),
        TypeError("Expected TLRequest"),
        KeyError("x"),
    ],
    ids=repr,
)
def test_classify_generic(exc: BaseException) -> None:
    assert classify(exc).error_class is ErrorClass.GENERIC


@pytest.mark.parametrize(
    "name", ["MESSAGE_EMPTY", "METHOD_INVALID", "LIMIT_INVALID", "OFFSET_INVALID"]
)
def test_classify_400_bad_request_is_the_callers_final_error(name: str) -> None:
    failure = classify(rpc(400, name))
    assert (failure.error_class, failure.rpc_code, failure.rpc_name) == (
        ErrorClass.INVALID_ARGUMENT,
        400,
        name,
    )
    verdict = decide(failure, PolicyConfig(), proxy_failures=0, attempt=1)
    assert verdict == Verdict(retry=False)  # final: another account would get the same answer


def test_classify_500_keeps_rpc_fields() -> None:
    f = classify(rpc(500, "INTERNAL_SERVER_ERROR"))
    assert (f.rpc_code, f.rpc_name) == (500, "INTERNAL_SERVER_ERROR")


def test_classify_regex_class_name_reconstructed() -> None:
    f = classify(rpc(303, "FILE_MIGRATE_4"))
    assert f.rpc_name == "FILE_MIGRATE_4"


def test_classify_single_exception_group_and_MultiError() -> None:
    group = ExceptionGroup("x", [tl_errors.FloodWaitError(request=None, capture=5)])
    assert classify(group).retry_after_s == 5.0
    multi = tl_errors.MultiError(
        [None, rpc(400, "PEER_FLOOD")], [object(), None], [REQUEST, REQUEST]
    )
    assert classify(multi).error_class is ErrorClass.PEER_FLOOD


# --- redaction ------------------------------------------------------------------------------------


def test_classify_redacts_secrets() -> None:
    exc = ValueError(f"bad session {SESSION_STRING} with api_hash={API_HASH}")
    f = classify(exc)
    assert SESSION_STRING[:20] not in f.message
    assert API_HASH not in f.message
    assert f.message == "ValueError: bad session [redacted] with api_hash=[redacted]"


# --- exceptions -----------------------------------------------------------------------------------


# --- INVALID_ARGUMENT: the request cannot be serialized ------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        GetMessagesRequest([InputMessageID(2**31)]),  # TL int
        GetMessagesRequest([InputMessageID(-(2**31) - 1)]),
        GetHistoryRequest(InputPeerEmpty(), 0, None, 0, 1, 0, 0, 2**63),  # TL long
        GetChannelsRequest([InputChannel(2**64, 0)]),
    ],
)
def test_classify_request_out_of_range_while_serializing_is_invalid_argument(
    request_: object,
) -> None:
    with pytest.raises((struct.error, OverflowError)) as info:
        bytes(request_)  # type: ignore[call-overload]  # what Telethon's sender does first
    f = classify(info.value)
    assert f.error_class is ErrorClass.INVALID_ARGUMENT
    assert f.message.startswith("request arguments out of range for their TL types: ")
    assert decide(f, PolicyConfig(), proxy_failures=0, attempt=1) == Verdict(retry=False)


def test_classify_struct_error_elsewhere_stays_generic() -> None:
    with pytest.raises(struct.error) as info:
        struct.pack("<i", 2**40)
    assert classify(info.value).error_class is ErrorClass.GENERIC
    assert classify(OverflowError("int too big")).error_class is ErrorClass.GENERIC


# --- ACCOUNT_RESTRICTED: frozen accounts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "exc_type"),
    [
        (420, "FROZEN_METHOD_INVALID", tl_errors.FrozenMethodInvalidError),
        (400, "FROZEN_PARTICIPANT_MISSING", tl_errors.FrozenParticipantMissingError),
        (400, "FROZEN_SOMETHING_NEW", tl_errors.BadRequestError),  # any later FROZEN_*
        (420, "FROZEN_SOMETHING_NEW", tl_errors.FloodError),
    ],
)
def test_classify_frozen_account_is_ACCOUNT_RESTRICTED(
    code: int, message: str, exc_type: type
) -> None:
    exc = rpc(code, message)
    assert type(exc) is exc_type
    f = classify(exc)
    assert (f.error_class, f.rpc_code, f.rpc_name, f.retry_after_s) == (
        ErrorClass.ACCOUNT_RESTRICTED,
        code,
        message,
        None,
    )
    assert f.message.startswith(f"{message} ({code}): ")
    assert f.message.endswith("[Telegram froze this account]")


def test_classify_FROZEN_METHOD_INVALID_is_not_a_flood_wait() -> None:
    exc = rpc(420, "FROZEN_METHOD_INVALID")
    assert isinstance(exc, tl_errors.FloodError)  # why the "any 420" rule used to take it
    verdict = decide(classify(exc), PolicyConfig(), proxy_failures=0, attempt=1)
    assert verdict.account_cooldown_s == 0.0
    assert verdict.disable_reason is not None
    assert verdict.disable_reason.startswith("FROZEN_METHOD_INVALID: ")


# --- WRONG_DC: 303 *_MIGRATE_N --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "exc_type", "dc_id", "scope"),
    [
        ("USER_MIGRATE_4", tl_errors.UserMigrateError, 4, "account"),
        ("PHONE_MIGRATE_1", tl_errors.PhoneMigrateError, 1, "account"),
        ("NETWORK_MIGRATE_3", tl_errors.NetworkMigrateError, 3, "account"),
        ("FILE_MIGRATE_4", tl_errors.FileMigrateError, 4, "call"),
        ("STATS_MIGRATE_5", tl_errors.StatsMigrateError, 5, "call"),
        ("SOMETHING_MIGRATE_2", tl_errors.InvalidDCError, 2, "call"),  # one Telegram adds later
    ],
)
def test_classify_MIGRATE_is_WRONG_DC(message: str, exc_type: type, dc_id: int, scope: str) -> None:
    exc = rpc(303, message)
    assert type(exc) is exc_type
    f = classify(exc)
    assert (f.error_class, f.rpc_code, f.rpc_name, f.dc_id, f.dc_scope) == (
        ErrorClass.WRONG_DC,
        303,
        message,
        dc_id,
        scope,
    )
    assert f.message.startswith(f"Telegram answered {message}: ")
    assert f"DC {dc_id}" in f.message
    assert f.message.endswith("(caused by GetHistoryRequest)")


def test_classify_FILE_MIGRATE_message_is_precise() -> None:
    f = classify(rpc(303, "FILE_MIGRATE_4"))
    assert f.message == (
        "Telegram answered FILE_MIGRATE_4: this call must be made on DC 4, which mtpoold does"
        " not connect to (caused by GetHistoryRequest)"
    )
    user = classify(rpc(303, "USER_MIGRATE_4"))
    assert user.message == (
        "Telegram answered USER_MIGRATE_4: this account lives on DC 4, not on the DC its session"
        " points at; re-authorize the account (caused by GetHistoryRequest)"
    )


def test_classify_MIGRATE_names_the_innermost_request() -> None:
    from telethon.tl.functions import InvokeWithoutUpdatesRequest

    f = classify(rpc(303, "FILE_MIGRATE_2", InvokeWithoutUpdatesRequest(REQUEST)))
    assert f.message.endswith("(caused by GetHistoryRequest)")
    assert classify(rpc(303, "FILE_MIGRATE_2", None)).message.endswith("not connect to")


def test_classify_rpc_error_names_the_called_function_not_the_pools_wrappers() -> None:
    """Telethon's text says "(caused by InvokeWithoutUpdatesRequest(GetHistoryRequest))"; the
    wrapper is the pool's (receive_updates=False), so the message names GetHistoryRequest."""
    from telethon.tl.functions import InvokeWithoutUpdatesRequest

    f = classify(rpc(400, "CHANNEL_PRIVATE", InvokeWithoutUpdatesRequest(REQUEST)))
    assert f.message.startswith("CHANNEL_PRIVATE (400): ")
    assert f.message.endswith(" (caused by GetHistoryRequest)"), f.message
    assert "InvokeWithoutUpdates" not in f.message


# Telethon's TelegramBaseClient._switch_dc -> _get_dc, as far as it fails: the code lives in a
# module named like Telethon's, as classify looks for the frame of a telethon/mtpoold module.
_TELETHON_LIKE: dict[str, object] = {"__name__": "telethon.client.telegrambaseclient"}
exec(
    textwrap.dedent(
        """
        def _switch_dc(new_dc):
            try:
                next(iter(()))
            except StopIteration:
                raise ValueError(f"Failed to get DC {new_dc} (cdn = False)")
        """
    ),
    _TELETHON_LIKE,
)


def test_classify_failure_while_following_a_migrate_is_WRONG_DC() -> None:
    # Telethon's _call: except UserMigrateError as e: await self._switch_dc(e.new_dc)
    # (the real thing, through the loopback DC, is in test_classify_real_telethon_answers)
    switch_dc = _TELETHON_LIKE["_switch_dc"]
    assert callable(switch_dc)
    caught: BaseException | None = None
    try:
        try:
            raise rpc(303, "USER_MIGRATE_4")
        except tl_errors.UserMigrateError:
            switch_dc(4)
    except ValueError as exc:
        caught = exc
    assert caught is not None
    f = classify(caught)
    assert (f.error_class, f.dc_id, f.dc_scope, f.rpc_name) == (
        ErrorClass.WRONG_DC,
        4,
        "account",
        "USER_MIGRATE_4",
    )
    assert f.message.endswith(
        "; Telethon's switch to that DC failed: ValueError: Failed to get DC 4 (cdn = False)"
    )
    # the same ValueError without the migrate context stays GENERIC
    assert classify(ValueError("Failed to get DC 4 (cdn = False)")).error_class is (
        ErrorClass.GENERIC
    )


# --- UNSUPPORTED_REPLY: replies this Telethon cannot parse ----------------------------------------

PHONE, FIRST, LAST = "79161234567", "Alice", "Liddell"
USER = types.User(id=123, first_name=FIRST, last_name=LAST, phone=PHONE, access_hash=42)
USER_ID = struct.pack("<I", types.User.CONSTRUCTOR_ID)
UNKNOWN_ID = struct.pack("<I", 0xDEADBEEF)
REPLY = bytes(types.messages.Messages(messages=[], topics=[], chats=[], users=[USER]))


def read_reply(data: bytes) -> BaseException:
    """What Telethon's MTProtoSender hands the caller when ``read_result`` fails on ``data``."""
    with pytest.raises(Exception) as info, BinaryReader(data) as reader:
        REQUEST.read_result(reader)
    return info.value


def assert_no_personal_data(f: Failure) -> None:
    for private in (PHONE, PHONE[:5], FIRST, LAST, "Remaining", "\\x"):
        assert private not in f.message


@pytest.mark.parametrize(
    "data",
    [
        UNKNOWN_ID + bytes(USER)[4:],  # the whole reply has a constructor newer than our layer
        REPLY.replace(USER_ID, UNKNOWN_ID),  # one object inside it has
    ],
    ids=["top-level", "nested"],
)
def test_classify_TypeNotFoundError_is_UNSUPPORTED_REPLY(data: bytes) -> None:
    exc = read_reply(data)
    assert type(exc) is tl_errors.TypeNotFoundError
    assert PHONE in str(exc) and FIRST in str(exc)  # Telethon's text: "Remaining bytes: b'...'"
    f = classify(exc)
    assert f == Failure(
        ErrorClass.UNSUPPORTED_REPLY,
        "Telegram's reply cannot be parsed by this Telethon (Telethon"
        f" {telethon.__version__}, TL layer {LAYER}: unknown constructor 0xdeadbeef); upgrade"
        " Telethon (pip install -U telethon) to a release with a newer layer",
    )
    assert TL_LAYER == LAYER
    assert_no_personal_data(f)
    assert decide(f, PolicyConfig(), proxy_failures=0, attempt=1) == Verdict(retry=False)


def test_classify_truncated_reply_is_UNSUPPORTED_REPLY_without_its_bytes() -> None:
    exc = read_reply(REPLY[:-6])  # BinaryReader: "No more data left to read (... b'79161')"
    assert type(exc) is BufferError
    assert PHONE[:5] in str(exc) and LAST in str(exc)
    f = classify(exc)
    assert f.error_class is ErrorClass.UNSUPPORTED_REPLY
    assert f"TL layer {LAYER}: BufferError while reading it" in f.message
    assert_no_personal_data(f)


def test_classify_never_copies_reply_bytes_into_a_message() -> None:
    reply = b"\x05" + FIRST.encode() + b"\x00\x0b" + PHONE.encode() + b"'\"\\"
    for exc in (
        RuntimeError(f"unexpected answer {reply!r} from the server"),  # GENERIC
        ValueError(f"cut off: {reply!r}"[:-3]),  # a repr cut off at the end
        tl_errors.InvalidBufferError(reply),  # STREAM_CLOSED: "Invalid response buffer ..."
        ConnectionError(f"peer sent {bytearray(reply)!r}"),
        ValueError(f"{reply!r}, {reply!r}"),
    ):
        f = classify(exc)
        assert_no_personal_data(f)
        assert "bytes>" in f.message, f.message
    assert classify(RuntimeError(f"got {reply!r}.")).message == "RuntimeError: got <22 bytes>."


# --- wire faults raised by mtpoold._client ------------------------------------------------------


def test_classify_ProxyUnavailable() -> None:
    exc = ProxyUnavailable("tokyo", ConnectPhase.PROXY_HANDSHAKE, "closed the connection")
    assert isinstance(exc, ConnectionError)
    assert classify(exc) == Failure(
        ErrorClass.PROXY_UNAVAILABLE,
        "proxy tokyo closed the connection (proxy_handshake, before the DC answered)",
    )
    group = ExceptionGroup("x", [exc])
    assert classify(group).error_class is ErrorClass.PROXY_UNAVAILABLE


def test_classify_ProtocolViolation() -> None:
    exc = ProtocolViolation(f"412 messages in 1 s after bad_server_salt, key {API_HASH}")
    assert isinstance(exc, ConnectionError)  # still not STREAM_CLOSED
    assert classify(exc) == Failure(
        ErrorClass.PROTOCOL_ERROR, "412 messages in 1 s after bad_server_salt, key [redacted]"
    )


# --- the real thing: Telethon through the loopback DC ---------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "error_class", "dc_scope"),
    [
        (420, "FROZEN_METHOD_INVALID", ErrorClass.ACCOUNT_RESTRICTED, None),
        (400, "FROZEN_PARTICIPANT_MISSING", ErrorClass.ACCOUNT_RESTRICTED, None),
        (303, "FILE_MIGRATE_4", ErrorClass.WRONG_DC, "call"),
        (303, "STATS_MIGRATE_4", ErrorClass.WRONG_DC, "call"),
        (303, "NETWORK_MIGRATE_4", ErrorClass.WRONG_DC, "account"),  # authorized: Telethon raises
        # authorized or not, Telethon follows USER_MIGRATE itself (_switch_dc); the loopback DC
        # has no DC 4, so the switch fails with ValueError("Failed to get DC 4")
        (303, "USER_MIGRATE_4", ErrorClass.WRONG_DC, "account"),
    ],
)
async def test_classify_real_telethon_answers(
    code: int, message: str, error_class: ErrorClass, dc_scope: str | None
) -> None:
    from mtpoold.testing.dc import open_dc, open_telethon_client, rpc_error

    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_telethon_client(dc, "15550000001") as client:
            dc.faults.add(rpc_error(code, message), method="contacts.ResolveUsername")
            with pytest.raises(Exception) as info:
                await trio_asyncio.aio_as_trio(client)(ResolveUsernameRequest("mtpoold_news"))
    f = classify(info.value)
    assert (f.error_class, f.dc_scope, f.rpc_name) == (error_class, dc_scope, message)
    if dc_scope is not None:
        assert f.dc_id == 4
        assert "(caused by ResolveUsernameRequest)" in f.message
