"""The Telegram side's reading of failures: `classify` turns an exception into a `Failure`.

Any exception that escapes a Telethon call (or the proxy handshake below it, or the caller's
deadline around it) becomes a `Failure` of one `ErrorClass` (the vocabulary lives in
`mtpoold._errors`, which knows no Telethon). The pool is handed this function where it is
composed (`mtpoold._compose`); the scheduler itself never imports Telethon or python-socks.

Import order matters here, see `_PROXY_ERROR_ORIGINALS`: this module imports python-socks (and
its asyncio proxy module) *before* Telethon, so python-socks' own exception classes are bound
before Telethon monkey-patches them away. Import it before the first proxied connect (the
composition does, and so does every module that connects).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import struct
import types
from typing import Final

import attrs

# --- python-socks first, Telethon second (order matters, see module docstring) -------------------
import python_socks
import python_socks._errors as _python_socks_errors
import python_socks.async_.asyncio  # noqa: F401 - binds the originals before Telethon rebinds them
import telethon
import telethon.errors as _tl_errors  # after python_socks
import telethon.tl.alltlobjects as _tl_alltlobjects
import trio

from ._errors import (
    DcScope,
    ErrorClass,
    Failure,
    ProtocolViolation,
    ProxyUnavailable,
    redact,
)

__all__ = ["TL_LAYER", "classify", "request_tl_name"]


# --- proxy errors (python-socks vs. Telethon's monkey-patching) ---------------------------------
#
# telethon/network/connection/connection.py, in Connection._proxy_connect (on every proxied
# connect), does:
#     python_socks._errors.ProxyError = ConnectionErrorExtra      # a new local class each time
#     python_socks._errors.ProxyConnectionError = ConnectionError
#     python_socks._errors.ProxyTimeoutError = ConnectionError
# so what a proxy failure looks like depends on what was imported when. We recognise:
#  1. python-socks' original classes: the package attributes (`python_socks.ProxyError`, never
#     rebound) and their common base `ProxyException` (never rebound) — taken at our import;
#  2. Telethon's `ConnectionErrorExtra` replacement, by module and name (new class per connect);
#  3. any exception raised from inside python-socks' code (traceback frames), which covers the
#     plain `ConnectionError` Telethon substitutes for ProxyConnectionError/ProxyTimeoutError;
#  4. by module/name, for classes of a python-socks copy we did not see imported.

_PROXY_ERROR_ORIGINALS: Final[tuple[type[BaseException], ...]] = tuple(
    {
        python_socks.ProxyError,
        python_socks.ProxyConnectionError,
        python_socks.ProxyTimeoutError,
        _python_socks_errors.ProxyException,
    }
)
_PROXY_ERROR_NAMES: Final = frozenset(
    {"ProxyError", "ProxyConnectionError", "ProxyTimeoutError", "ProxyException"}
)


def _is_proxy_error(exc: BaseException) -> bool:
    if isinstance(exc, _PROXY_ERROR_ORIGINALS):
        return True
    # Whatever python_socks._errors holds right now (Telethon's replacements are fine, except
    # the bare ConnectionError, which would swallow every stream error).
    current = tuple(
        c
        for c in (
            getattr(_python_socks_errors, "ProxyError", None),
            getattr(_python_socks_errors, "ProxyConnectionError", None),
            getattr(_python_socks_errors, "ProxyTimeoutError", None),
        )
        if isinstance(c, type) and c not in (ConnectionError, OSError, TimeoutError, Exception)
    )
    if current and isinstance(exc, current):
        return True
    for cls in type(exc).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ == "ConnectionErrorExtra" and module.startswith("telethon."):
            return True
        if cls.__name__ in _PROXY_ERROR_NAMES and module.startswith("python_socks"):
            return True
    if isinstance(exc, OSError | EOFError):
        return _raised_in_python_socks(exc.__traceback__)
    return False


def _raised_in_python_socks(tb: types.TracebackType | None) -> bool:
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(name, str) and (name == "python_socks" or name.startswith("python_socks.")):
            return True
        tb = tb.tb_next
    return False


# --- RPC errors -----------------------------------------------------------------------------------

_FLOOD_WAIT_CLASSES: Final = (
    _tl_errors.FloodWaitError,
    _tl_errors.FloodPremiumWaitError,
    _tl_errors.FloodTestPhoneWaitError,
    _tl_errors.SlowModeWaitError,
)
# FLOOD_WAIT_37, FLOOD_PREMIUM_WAIT_6, FLOOD_TEST_PHONE_WAIT_5, SLOWMODE_WAIT_10, and any other
# 420 "<SOMETHING>_WAIT_<N>" Telegram may invent later.
_WAIT_SECONDS_RE: Final = re.compile(r"^[A-Z0-9_]*?WAIT_(\d+)$")
_SESSION_REVOKED_NAMES: Final = frozenset(
    {
        "AUTH_KEY_UNREGISTERED",
        "SESSION_REVOKED",
        "SESSION_EXPIRED",
        "USER_DEACTIVATED",
        "USER_DEACTIVATED_BAN",
        "AUTH_KEY_DUPLICATED",
        "PHONE_NUMBER_BANNED",
        "AUTH_KEY_INVALID",
    }
)
_PEER_NOT_FOUND_NAMES: Final = frozenset(
    {
        "PEER_ID_INVALID",
        "USERNAME_NOT_OCCUPIED",
        "USERNAME_INVALID",
        "CHANNEL_PRIVATE",
        "CHANNEL_INVALID",
        "MSG_ID_INVALID",
        "USER_ID_INVALID",
        "CHAT_ID_INVALID",  # messages.getChats / getFullChat: no such basic chat (for us)
        # what Telegram says about the caller's invite link: final, whichever account asks
        "INVITE_HASH_INVALID",
        "INVITE_HASH_EXPIRED",
        "INVITE_HASH_EMPTY",
        "USERNAME_PURCHASE_AVAILABLE",  # not occupied: only for sale on fragment.com
        "PHONE_NOT_OCCUPIED",  # contacts.resolvePhone: no user (findable) with that number
    }
)
_THIS_ACCOUNT_ONLY: Final = " [not found for this account only; another account may see it]"

# Telegram's answers for a *frozen* account (one Telegram has frozen for spam/abuse; it can only
# appeal, every other method fails until it is unfrozen or deleted). Sources:
#   - Telegram, "Frozen accounts", https://core.telegram.org/api/auth#frozen-accounts, linked
#     from the method pages' error tables: "400 FROZEN_PARTICIPANT_MISSING The current account is
#     frozen, and cannot access the specified peer";
#   - Telethon's errors.csv (LonamiWebs/Telethon PR #4624 "Frozen errors", issue #4610, both
#     2025-05): ``FROZEN_METHOD_INVALID,420`` "You tried to use a method that is not available
#     for frozen accounts" and ``FROZEN_PARTICIPANT_MISSING,400`` (Telethon 1.45:
#     FrozenMethodInvalidError subclasses FloodError, which is why the "any 420 -> FLOOD_WAIT"
#     rule took it for a flood wait without seconds);
#   - pyrofork issue #151 (2025-08) lists the same two.
# Any other ``FROZEN_*`` name Telegram adds is taken the same way. Not here on purpose:
# USER_RESTRICTED (spam-reported: only creating chats/channels is refused; the account still
# reads) and PEER_FLOOD (its own class, a 24 h rest) — they limit some calls, not the account.
_ACCOUNT_RESTRICTED_NAMES: Final = frozenset(
    {"FROZEN_METHOD_INVALID", "FROZEN_PARTICIPANT_MISSING"}
)
_ACCOUNT_RESTRICTED_PREFIX: Final = "FROZEN_"

# 303 SEE_OTHER "<X>_MIGRATE_<N>": repeat the request on DC N (https://core.telegram.org/api/errors
# "303 SEE_OTHER"; https://core.telegram.org/api/datacenter). USER_/PHONE_/NETWORK_MIGRATE are
# about the account itself (its home DC: after login an authorized session must already live
# there, so for us the session points at the wrong DC); FILE_/STATS_MIGRATE (and any *_MIGRATE_N
# Telegram adds) about one call (a file or statistics kept on another DC).
_MIGRATE_RE: Final = re.compile(r"^([A-Z0-9_]+)_MIGRATE_(\d+)$")
_ACCOUNT_MIGRATE_KINDS: Final = frozenset({"USER", "PHONE", "NETWORK"})

# Telethon's generated classes do not keep the RPC message on the instance: recover it from its
# tables (exact names, and regex names whose capture the instance keeps in an int attribute).
_NAME_BY_CLASS: Final[dict[type, str]] = {}
for _name, _cls in _tl_errors.rpc_errors_dict.items():
    _NAME_BY_CLASS.setdefault(_cls, _name)
_PATTERN_BY_CLASS: Final[dict[type, str]] = {}
for _pattern, _cls in _tl_errors.rpc_errors_re:
    _PATTERN_BY_CLASS.setdefault(_cls, _pattern)
del _name, _cls, _pattern


def _rpc_name(exc: _tl_errors.RPCError) -> str | None:
    instance_message = vars(exc).get("message")
    if isinstance(instance_message, str):  # plain RPCError / base class built by Telethon
        return instance_message
    cls = type(exc)
    if cls in _NAME_BY_CLASS:
        return _NAME_BY_CLASS[cls]
    if cls in _PATTERN_BY_CLASS:
        captures = [v for k, v in vars(exc).items() if k != "request" and isinstance(v, int)]
        if captures:
            return re.sub(r"\(\\d\+\)", str(captures[0]), _PATTERN_BY_CLASS[cls], count=1)
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else None


#: 400 errors that describe this account's standing, not the request: another account may
#: succeed, so they stay GENERIC (rerouted).
_ACCOUNT_SPECIFIC_400: Final = frozenset(
    {
        "USER_BANNED_IN_CHANNEL",
        "USER_RESTRICTED",
        "USER_NOT_PARTICIPANT",
        "USER_NOT_MUTUAL_CONTACT",
        "USER_CHANNELS_TOO_MUCH",
        "CHANNELS_TOO_MUCH",
        "CHAT_ADMIN_REQUIRED",
        "CHAT_WRITE_FORBIDDEN",
        "CHAT_RESTRICTED",
        "CHAT_GUEST_SEND_FORBIDDEN",
        "CHAT_SEND_PLAIN_FORBIDDEN",
        "CHAT_SEND_MEDIA_FORBIDDEN",
        "YOU_BLOCKED_USER",
        "USER_IS_BLOCKED",
        "INPUT_USER_DEACTIVATED",
        "PREMIUM_ACCOUNT_REQUIRED",
        "TAKEOUT_REQUIRED",
        "CONNECTION_NOT_INITED",
        "CONNECTION_LAYER_INVALID",
        "API_ID_INVALID",
        "API_ID_PUBLISHED_FLOOD",
    }
)


_CAUSED_BY_RE: Final = re.compile(r" \(caused by [\w()]+\)$")


def _rpc_failure(exc: _tl_errors.RPCError) -> Failure:
    name = _rpc_name(exc)
    code = getattr(exc, "code", None)
    code = code if isinstance(code, int) else None
    upper = (name or "").upper()
    # Telethon ends its text with "(caused by InvokeWithoutUpdatesRequest(GetHistoryRequest))":
    # the wrappers are the pool's, not the caller's; name the function called.
    said = _CAUSED_BY_RE.sub("", str(exc))
    if (caused_by := _request_name(getattr(exc, "request", None))) is not None and said != str(exc):
        said += f" (caused by {caused_by})"
    text = redact(f"{name or type(exc).__name__} ({code}): {said}")

    tl_name = request_tl_name(getattr(exc, "request", None))

    def failure(
        error_class: ErrorClass, message: str = text, retry_after_s: float | None = None
    ) -> Failure:
        return Failure(
            error_class, message, retry_after_s, rpc_code=code, rpc_name=name, tl_name=tl_name
        )

    seconds: int | None = None
    if isinstance(exc, _FLOOD_WAIT_CLASSES):
        seconds = int(exc.seconds)
    elif (m := _WAIT_SECONDS_RE.match(upper)) and (code == 420 or "FLOOD" in upper):
        seconds = int(m.group(1))
    if seconds is not None:
        # Telethon (client/users.py): "FLOOD_WAIT_0 has been observed" -> treat as 1 s; a
        # wait of any length is kept, at most 2**53 s (float() of 400 digits overflows)
        return failure(ErrorClass.FLOOD_WAIT, retry_after_s=float(min(max(seconds, 1), 2**53)))
    if upper in _ACCOUNT_RESTRICTED_NAMES or upper.startswith(_ACCOUNT_RESTRICTED_PREFIX):
        # before "any 420 -> FLOOD_WAIT": FROZEN_METHOD_INVALID is a 420 without seconds
        return failure(ErrorClass.ACCOUNT_RESTRICTED, f"{text} [Telegram froze this account]")
    if (m := _MIGRATE_RE.match(upper)) and code in (303, None):
        return _wrong_dc(exc, name or upper, m.group(1), int(m.group(2)), code)
    if isinstance(exc, _tl_errors.PeerFloodError) or upper == "PEER_FLOOD":
        return failure(ErrorClass.PEER_FLOOD)
    if upper in _SESSION_REVOKED_NAMES:
        return failure(ErrorClass.SESSION_REVOKED)
    if upper in _PEER_NOT_FOUND_NAMES:
        return failure(ErrorClass.PEER_NOT_FOUND)
    if code == 420:  # a flood error without a duration: still the account's flood limit
        return failure(ErrorClass.FLOOD_WAIT, retry_after_s=None)
    if code == 400 and upper not in _ACCOUNT_SPECIFIC_400:
        # Telegram's 400 BAD_REQUEST: "the query contains errors" (METHOD_INVALID,
        # LIMIT_INVALID, OFFSET_INVALID, …). Another account would get the same answer: the
        # caller's mistake, final, no penalty — never a retry that burns more accounts.
        return failure(ErrorClass.INVALID_ARGUMENT)
    return failure(ErrorClass.GENERIC)


def _wrong_dc(
    exc: _tl_errors.RPCError, name: str, kind: str, dc_id: int, code: int | None
) -> Failure:
    scope: DcScope = "account" if kind in _ACCOUNT_MIGRATE_KINDS else "call"
    if scope == "account":
        message = (
            f"Telegram answered {name}: this account lives on DC {dc_id}, not on the DC its"
            " session points at; re-authorize the account"
        )
    else:
        message = (
            f"Telegram answered {name}: this call must be made on DC {dc_id},"
            " which mtpoold does not connect to"
        )
    caused_by = _request_name(getattr(exc, "request", None))
    if caused_by is not None:
        message += f" (caused by {caused_by})"
    return Failure(
        ErrorClass.WRONG_DC, message, rpc_code=code, rpc_name=name, dc_id=dc_id, dc_scope=scope
    )


def _request_name(request: object) -> str | None:
    """The innermost TL function's class name (through invokeWithoutUpdates & co.)."""
    for _ in range(8):  # invokeWithLayer(initConnection(invokeWithoutUpdates(f))) at most
        inner = getattr(request, "query", None)
        if inner is None:
            break
        request = inner
    return None if request is None else type(request).__name__


_FUNCTIONS_MODULE: Final = "telethon.tl.functions"


def request_tl_name(request: object) -> str | None:
    """The innermost TL function of a request (through invokeWithoutUpdates & co.) with its
    namespace, as Telethon names it: ``"contacts.ResolveUsernameRequest"``,
    ``"PingDelayDisconnectRequest"`` (top level); None for no request (or a list of them).

    What a FLOOD_WAIT's rate class is read from (`mtpoold._rateclass.RateClasses.class_of`
    accepts this spelling) and what the request guard is asked about.
    """
    name = _request_name(request)
    if name is None or isinstance(request, list | tuple):
        return None
    for _ in range(8):
        inner = getattr(request, "query", None)
        if inner is None:
            break
        request = inner
    module = type(request).__module__ or ""
    namespace = (
        module[len(_FUNCTIONS_MODULE) :].lstrip(".") if module.startswith(_FUNCTIONS_MODULE) else ""
    )
    return f"{namespace}.{name}" if namespace else name


def _migrate_context(exc: BaseException) -> _tl_errors.RPCError | None:
    """The ``*_MIGRATE`` error Telethon was following when `exc` was raised, if any.

    Telethon's ``_call`` answers USER_/PHONE_/NETWORK_MIGRATE by calling
    ``TelegramBaseClient._switch_dc(new_dc)`` inside its ``except`` block (for an authorized
    session only USER_MIGRATE; it drops the auth key first), so a failure of that switch
    (``ValueError("Failed to get DC N")``, a connect error) has the migrate error as context.
    """
    context = exc.__context__
    for _ in range(8):  # e.g. ValueError <- StopIteration <- StopIteration <- UserMigrateError
        if context is None or isinstance(context, _tl_errors.RPCError):
            break
        context = context.__context__
    if not isinstance(context, _tl_errors.RPCError):
        return None
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__") or "")
        if tb.tb_frame.f_code.co_name == "_switch_dc" and module.startswith(
            ("telethon", "mtpoold")  # Telethon's, or an override in mtpoold's client
        ):
            return context
        tb = tb.tb_next
    return None


# --- replies this Telethon cannot parse -----------------------------------------------------------

#: The TL layer of the installed Telethon (what it tells Telegram in invokeWithLayer).
TL_LAYER: Final[int] = int(_tl_alltlobjects.LAYER)
_TELETHON_VERSION: Final = str(getattr(telethon, "__version__", "?"))
_UPGRADE_HINT: Final = "upgrade Telethon (pip install -U telethon) to a release with a newer layer"
# Frames of Telethon's TL deserialization: TLObject.from_reader, TLRequest.read_result and the
# BinaryReader under them.
_PARSING_FRAMES: Final = frozenset({"from_reader", "read_result"})
_PARSING_MODULE: Final = "telethon.extensions.binaryreader"


def _raised_parsing(exc: BaseException) -> bool:
    """Whether `exc` was raised while Telethon deserialized a reply (a TL object)."""
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__") or ""
        if isinstance(module, str) and (
            module == _PARSING_MODULE
            or (tb.tb_frame.f_code.co_name in _PARSING_FRAMES and module.startswith("telethon"))
        ):
            return True
        tb = tb.tb_next
    return False


def _unsupported_reply(exc: BaseException) -> Failure:
    # Never str(exc): TypeNotFoundError's text carries "Remaining bytes: b'...'" and
    # BinaryReader's BufferError the bytes it read — the reply: names, phone numbers, text.
    if isinstance(exc, _tl_errors.TypeNotFoundError):
        constructor = int(getattr(exc, "invalid_constructor_id", 0) or 0) & 0xFFFFFFFF
        what = f"unknown constructor 0x{constructor:08x}"
    else:
        what = f"{type(exc).__name__} while reading it"
    return Failure(
        ErrorClass.UNSUPPORTED_REPLY,
        f"Telegram's reply cannot be parsed by this Telethon (Telethon {_TELETHON_VERSION},"
        f" TL layer {TL_LAYER}: {what}); {_UPGRADE_HINT}",
    )


# --- classify -------------------------------------------------------------------------------------

_STREAM_CLOSED_TYPES: Final = (
    ConnectionError,  # incl. ConnectionResetError, BrokenPipeError, Telethon's "Not connected"
    asyncio.IncompleteReadError,
    EOFError,
    _tl_errors.InvalidBufferError,
    _tl_errors.InvalidChecksumError,
    _tl_errors.AuthKeyNotFound,  # Telethon: may be temporary -> reconnect, not disable
    _tl_errors.ReadCancelledError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    TimeoutError,  # == asyncio.TimeoutError on 3.11: a connect/read timed out inside Telethon
    OSError,  # any other socket error while connected
)
_REQUEST_UNSUCCESSFUL_RE: Final = re.compile(r"^Request was unsuccessful \d+ time\(s\)$")
_ENTITY_NOT_FOUND_RE: Final = re.compile(
    r"^(Could not find the input entity for |Cannot find any entity corresponding to "
    r"|No user has .* as username)"
)


_SERIALIZING_FRAMES: Final = frozenset(
    {"_bytes", "__bytes__", "serialize_bytes", "serialize_datetime"}
)


def _raised_serializing(exc: BaseException) -> bool:
    """Whether `exc` was raised inside a TLObject's serialization (Telethon's ``_bytes``)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in _SERIALIZING_FRAMES and "telethon" in (
            tb.tb_frame.f_globals.get("__name__") or ""
        ):
            return True
        tb = tb.tb_next
    return False


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by a Telethon call, its proxy, or its deadline.

    Never raises, and never puts a secret or reply bytes into the `Failure` (see `redact`).

    Args:
        exc: The exception. An exception group with exactly one leaf is classified as that
            leaf; Telethon's `MultiError` as its first error.

    Returns:
        A `Failure`: which class for which exception is the table under
        "`mtpoold/_classify.py`" in ``docs/CONTRACTS.md``; the RPC error names are this
        module's lists (`_SESSION_REVOKED_NAMES`, `_PEER_NOT_FOUND_NAMES`,
        `_ACCOUNT_RESTRICTED_NAMES`, `_ACCOUNT_SPECIFIC_400`, `_STREAM_CLOSED_TYPES`, ...);
        where two rows could match, the first check in `_classify` wins.
    """
    try:
        return _classify(exc)
    except Exception:  # pragma: no cover - defensive: classification must never crash a worker
        return Failure(ErrorClass.GENERIC, redact(type(exc).__name__))


def _classify(exc: BaseException) -> Failure:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _classify(exc.exceptions[0])
    if isinstance(exc, _tl_errors.MultiError):
        first = next((e for e in exc.exceptions if e is not None), None)
        if first is not None:
            return _classify(first)
    if isinstance(exc, trio.TooSlowError):
        return Failure(ErrorClass.DEADLINE_EXCEEDED, "call deadline exceeded")
    if isinstance(exc, _tl_errors.RPCError):
        return _rpc_failure(exc)
    if (migrate := _migrate_context(exc)) is not None:
        failure = _rpc_failure(migrate)
        if failure.error_class is ErrorClass.WRONG_DC:
            switch = redact(f"{type(exc).__name__}: {exc}")
            return attrs.evolve(
                failure, message=f"{failure.message}; Telethon's switch to that DC failed: {switch}"
            )
    if isinstance(exc, ProxyUnavailable):
        return Failure(ErrorClass.PROXY_UNAVAILABLE, redact(str(exc)))
    if isinstance(exc, ProtocolViolation):
        return Failure(ErrorClass.PROTOCOL_ERROR, redact(str(exc)))
    if isinstance(exc, _tl_errors.TypeNotFoundError) or (
        not isinstance(exc, _STREAM_CLOSED_TYPES) and _raised_parsing(exc)
    ):
        return _unsupported_reply(exc)

    text = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if isinstance(exc, struct.error | OverflowError) and _raised_serializing(exc):
        return Failure(
            ErrorClass.INVALID_ARGUMENT,
            f"request arguments out of range for their TL types: {text}",
        )
    if isinstance(exc, sqlite3.DatabaseError):  # only Telethon's session file is SQLite here
        return Failure(
            ErrorClass.SESSION_REVOKED,
            f"the session file cannot be used any more ({text}); restore it or log the account"
            " in again with mtpoold authorize",
        )
    if _is_proxy_error(exc):
        return Failure(ErrorClass.PROXY_UNAVAILABLE, text)
    if isinstance(exc, _STREAM_CLOSED_TYPES):
        return Failure(ErrorClass.STREAM_CLOSED, text)
    if isinstance(exc, ValueError):
        message = str(exc)
        if _REQUEST_UNSUCCESSFUL_RE.match(message):
            return Failure(ErrorClass.STREAM_CLOSED, text)
        if _ENTITY_NOT_FOUND_RE.match(message):
            return Failure(ErrorClass.PEER_NOT_FOUND, text + _THIS_ACCOUNT_ONLY)
    return Failure(ErrorClass.GENERIC, text)
