"""TL objects <-> JSON: results out, requests in.

Out: `to_json` turns whatever Telethon returns (TLObjects, lists of them, bools, ints) into
plain JSON values. Every TLObject becomes a dict whose ``"_"`` is the class name Telethon's
``to_dict()`` gives it (``"User"``, ``"Channel"``, ``"ChatFull"`` — for namespaced types such
as ``messages.ChatFull`` that is the bare name, as Telethon writes it), bytes become base64
text and datetimes ISO 8601 UTC text ending in ``Z``. Integers are kept as integers of any size
(access hashes and ids beyond 2**53 included); JSON readers that need exactness must parse them
as big integers.

Guard: `check_request` checks a request completely (function, block list, argument names,
JSON types, integer ranges, nested constructors, serialization) without a network or an
account, so the pool can refuse a bad job before it takes an account; functions that can
destroy or hand over the account or its sessions (`BLOCKED_METHODS`, `BLOCKED_NAMESPACES`) are
refused unless ``[policy] allow_methods`` names them.

In: `function_by_name` maps a TL method name as people write it (``contacts.resolveUsername``,
``contacts.ResolveUsername``, ``contacts.ResolveUsernameRequest``, ``help.GetConfig``) to
Telethon's request class, and `build_request` constructs that request from JSON arguments,
checked against the schema Telethon carries in each class's ``__init__`` signature. Arguments
that name a peer (``"@durov"``, ``"https://t.me/durov"``, a numeric id) where the schema wants
an ``InputPeer`` / ``InputUser`` / ``InputChannel`` / ``InputDialogPeer`` are handed to a
``resolve_peer(value, kind)`` callback, so each account resolves them with its own client and
entity cache (access hashes are per account).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import functools
import inspect
import math
import re
import struct
import typing
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Final

from telethon.tl import types as tl_types
from telethon.tl.alltlobjects import tlobjects
from telethon.tl.tlobject import TLObject, TLRequest

from ._errors import ErrorClass, JobFailed
from ._validation import did_you_mean

__all__ = [
    "BLOCKED_METHODS",
    "BLOCKED_NAMESPACES",
    "PeerKind",
    "ResolvePeer",
    "blocked_reason",
    "build_request",
    "check_allow_methods",
    "check_request",
    "from_json",
    "function_by_name",
    "function_suggestion",
    "ZERO_DEFAULT_ARGUMENTS",
    "to_json",
    "type_by_name",
    "zero_defaults",
]

JSONValue = Any  # dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None

MAX_DEPTH: Final = 64  # nesting levels accepted in request arguments


class PeerKind(enum.Enum):
    """What a peer reference must become, from the schema type of the field it sits in."""

    PEER = "peer"  # InputPeer
    USER = "user"  # InputUser
    CHANNEL = "channel"  # InputChannel
    DIALOG_PEER = "dialog_peer"  # InputDialogPeer


ResolvePeer = Callable[[str | int, PeerKind], Awaitable[TLObject]]
"""``async resolve_peer(value, kind) -> TLObject``: turn ``"@name"``, a t.me link or a numeric
id into an Input* object of `kind`, with the calling account's client."""

_PEER_KINDS: Final[dict[str, PeerKind]] = {
    "TypeInputPeer": PeerKind.PEER,
    "TypeInputUser": PeerKind.USER,
    "TypeInputChannel": PeerKind.CHANNEL,
    "TypeInputDialogPeer": PeerKind.DIALOG_PEER,
}

_FUNCTIONS_PREFIX: Final = "telethon.tl.functions"
_TYPES_PREFIX: Final = "telethon.tl.types"


# --- out: to_json ---------------------------------------------------------------------------

#: Types `to_json` returns unchanged, by exact type (subclasses take the slower checks).
_PLAIN: Final = frozenset({str, int, bool, type(None)})


def to_json(obj: object) -> JSONValue:
    """Convert a Telethon result into a JSON-safe value.

    Args:
        obj: A TLObject, a list/tuple/dict of them, or a plain value.

    Returns:
        Plain JSON data: TLObjects as dicts with ``"_"`` = Telethon's class name, bytes as
        base64 (standard alphabet, padded), datetimes as ISO 8601 UTC with ``Z`` (naive
        datetimes are taken as UTC, as Telethon does), dates as ``YYYY-MM-DD``, ints unchanged
        at any size, non-finite floats as None. A value of any other type becomes
        ``{"_": "unsupported", "type": <class name>}`` (never its repr, which could hold
        secrets).
    """
    # Fast paths first, by exact type: this walk runs over every result (hot at 1,000s of
    # calls per second); subclasses fall through to the isinstance checks below, TLObject's
    # (an ABC: a slow check) among them. Plain values in a dict or a list are taken as they
    # are without a call (most fields of a result are).
    value: Any = obj
    kind = type(value)
    if kind is dict:
        return {
            k if type(k) is str else str(k): v if type(v) in _PLAIN else to_json(v)
            for k, v in value.items()
        }
    if kind in _PLAIN:
        return value
    if kind is list:
        return [v if type(v) in _PLAIN else to_json(v) for v in value]
    if kind is dt.datetime and value.tzinfo is dt.UTC:
        return value.replace(tzinfo=None).isoformat() + "Z"
    if isinstance(obj, TLObject):
        return to_json(obj.to_dict())
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, dt.datetime):
        return format_datetime(obj)
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return {"_": "unsupported", "type": type(obj).__name__}


def format_datetime(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    text = value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def parse_datetime(value: object, field: str) -> dt.datetime:
    """Parse an ISO 8601 string (``Z`` or offset; naive = UTC) or a Unix time in seconds.

    Raises:
        JobFailed: INVALID_ARGUMENT if `value` is neither.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            pass
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC)
    raise _invalid(f"argument {field!r} must be an ISO 8601 datetime or Unix seconds")


# --- names -> classes -----------------------------------------------------------------------


def _namespace(cls: type, prefix: str) -> str:
    module = cls.__module__
    if module.startswith(prefix):
        return module[len(prefix) :].lstrip(".")
    return ""  # telethon.tl.patched.Message & co. live in the top-level types namespace


@functools.cache
def _function_index() -> dict[tuple[str, str], type[TLRequest]]:
    index: dict[tuple[str, str], type[TLRequest]] = {}
    for cls in tlobjects.values():
        if cls.__module__.startswith(_FUNCTIONS_PREFIX):
            index[(_namespace(cls, _FUNCTIONS_PREFIX), cls.__name__.lower())] = cls
    return index


@functools.cache
def _type_index() -> dict[tuple[str, str], type[TLObject]]:
    index: dict[tuple[str, str], type[TLObject]] = {}
    for cls in tlobjects.values():
        if not cls.__module__.startswith(_FUNCTIONS_PREFIX):
            index[(_namespace(cls, _TYPES_PREFIX), cls.__name__.lower())] = cls
    return index


def _split_name(name: str) -> tuple[str, str]:
    text = name.strip()
    for prefix in ("functions.", "types.", "tl."):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    namespace, _, method = text.rpartition(".")
    return namespace.lower(), method.lower()


#: Names `function_by_name` resolved, as written (a job names its method on every call);
#: bounded, since the names come from jobs.
_FUNCTIONS_BY_NAME: Final[dict[str, type[TLRequest]]] = {}
_FUNCTIONS_BY_NAME_MAX: Final = 4096


def function_by_name(name: str) -> type[TLRequest]:
    """Find Telethon's request class for a TL method name.

    The method part is matched case-insensitively within its namespace, with or without
    Telethon's ``Request`` suffix: ``contacts.resolveUsername``, ``contacts.ResolveUsername``
    and ``contacts.ResolveUsernameRequest`` all give ``ResolveUsernameRequest``;
    ``help.GetConfig`` gives ``help.GetConfigRequest``; ``InvokeWithLayer`` (no namespace) the
    top-level one. Methods whose own name ends in "Request" (``messages.hideChatJoinRequest``)
    are matched first as written.

    Args:
        name: The method name.

    Returns:
        The request class (a subclass of ``TLRequest``).

    Raises:
        JobFailed: INVALID_ARGUMENT ``unknown TL function "<name>"`` if there is none, followed
            by ``; did you mean messages.GetHistory?`` when a known name is close
            (`function_suggestion`).
    """
    if type(name) is str:
        known = _FUNCTIONS_BY_NAME.get(name)
        if known is not None:
            return known
    if not isinstance(name, str) or not name.strip():
        raise _invalid(f"unknown TL function {_quote(name)}")
    namespace, method = _split_name(name)
    index = _function_index()
    for candidate in (method + "request", method):
        cls = index.get((namespace, candidate))
        if cls is not None:
            if type(name) is str and len(_FUNCTIONS_BY_NAME) < _FUNCTIONS_BY_NAME_MAX:
                _FUNCTIONS_BY_NAME[name] = cls
            return cls
    raise _invalid(f"unknown TL function {_quote(name)}{function_suggestion(name)}")


@functools.cache
def _function_names() -> tuple[str, ...]:
    return tuple(sorted(_display_name(cls) for cls in _function_index().values()))


def function_suggestion(name: str) -> str:
    """``"; did you mean messages.GetHistory?"`` for an unknown TL function name, or ``""``.

    Case-insensitive (as `function_by_name`), with or without Telethon's ``Request`` suffix:
    close spellings in any namespace (``messages.GetHistry``), and the same method in
    another namespace (``help.ResolveUsername`` -> ``contacts.ResolveUsername``).
    """
    text = name.strip()
    if text.lower().endswith("request"):
        text = text[: -len("request")]
    names = _function_names()
    hint = did_you_mean(text, names, fold_case=True)
    if hint:
        return hint
    method = text.rpartition(".")[2].lower()
    same = [n for n in names if n.rpartition(".")[2].lower() == method][:3]
    return f"; did you mean {' or '.join(same)}?" if same else ""


def type_by_name(name: str) -> type[TLObject]:
    """Find Telethon's constructor class for a TL type name (``"InputPeerChannel"``).

    Matching is case-insensitive; a namespace (``"messages.ChatFull"``) picks a namespaced
    type; a bare name prefers the top-level namespace, then a unique namespaced one.

    Raises:
        JobFailed: INVALID_ARGUMENT ``unknown TL type "<name>"`` if there is none.
    """
    if not isinstance(name, str) or not name.strip():
        raise _invalid(f"unknown TL type {_quote(name)}")
    namespace, type_name = _split_name(name)
    index = _type_index()
    cls = index.get((namespace, type_name))
    if cls is None and not namespace:
        matches = [c for (ns, n), c in index.items() if n == type_name]
        if len(matches) == 1:
            cls = matches[0]
    if cls is None:
        raise _invalid(f"unknown TL type {_quote(name)}")
    return cls


def _quote(name: object) -> str:
    text = str(name)
    if len(text) > 80:
        text = text[:79] + "…"
    return '"' + text.replace('"', "'") + '"'


def _invalid(message: str) -> JobFailed:
    return JobFailed(ErrorClass.INVALID_ARGUMENT, message)


# --- the block list -------------------------------------------------------------------------

#: Every function of these TL namespaces is blocked. ``auth.*`` is the login machinery: on an
#: authorized session its functions log the key out (``auth.logOut``), end every other session
#: (``auth.resetAuthorizations``), hand the authorization to another key, device or DC
#: (``auth.exportAuthorization`` / ``importAuthorization``, the QR-login tokens
#: ``auth.exportLoginToken`` / ``importLoginToken`` / ``acceptLoginToken``), bind or drop
#: temporary keys (``auth.bindTempAuthKey``, ``auth.dropTempAuthKeys``), re-log the key in as
#: someone else (``auth.signIn``, ``auth.importBotAuthorization``,
#: ``auth.importWebTokenAuthorization``) or reset the 2FA password by e-mail
#: (``auth.recoverPassword``). None of it is a job for a pool of already authorized accounts,
#: and a namespace rule also covers login functions a newer Telethon adds.
BLOCKED_NAMESPACES: Final[frozenset[str]] = frozenset({"auth"})

#: Functions outside `BLOCKED_NAMESPACES` that destroy or hand over the account or its
#: sessions, with the reason (names as Telethon spells them, ``namespace.Name``). Left out on
#: purpose: what only reads (``account.getAuthorizations``, ``account.getPassword``), what only
#: protects (``account.declinePasswordReset``, ``account.invalidateSignInCodes``), Telegram
#: Passport data (not the account), and content the account may legitimately delete
#: (``messages.deleteHistory``, ``channels.deleteChannel``): those are the caller's business.
BLOCKED_METHODS: Final[Mapping[str, str]] = {
    # the account itself
    "account.DeleteAccount": "deletes the account for good",
    "account.SetAccountTTL": "sets when the account self-destructs",
    "account.SendConfirmPhoneCode": "part of confirming or cancelling an account deletion",
    "account.ConfirmPhone": "part of confirming or cancelling an account deletion",
    # sessions
    "account.ResetAuthorization": "terminates a session of the account",
    "account.SetAuthorizationTTL": "sets when idle sessions are terminated",
    "account.ResetWebAuthorization": "terminates a web login of the account",
    "account.ResetWebAuthorizations": "terminates every web login of the account",
    "DestroyAuthKey": "destroys the session's auth key",
    "DestroySession": "destroys the MTProto session under the client",
    # the credentials that log in: phone, 2FA password and its recovery e-mail, login e-mail,
    # passkeys — changing any hands the account over
    "account.SendChangePhoneCode": "starts moving the account to another phone number",
    "account.ChangePhone": "moves the account to another phone number",
    "account.UpdatePasswordSettings": "sets, changes or removes the 2FA password and e-mail",
    "account.ConfirmPasswordEmail": "confirms a new 2FA recovery e-mail",
    "account.ResendPasswordEmail": "part of setting a new 2FA recovery e-mail",
    "account.CancelPasswordEmail": "part of setting a new 2FA recovery e-mail",
    "account.ResetPassword": "resets the 2FA password",
    "account.SendVerifyEmailCode": "starts setting the login e-mail",
    "account.VerifyEmail": "sets the login e-mail",
    "account.InitPasskeyRegistration": "starts adding a passkey that can log in",
    "account.RegisterPasskey": "adds a passkey that can log in",
    "account.DeletePasskey": "removes a passkey of the account",
    # the MTProto key exchange belongs to the client library
    "ReqPq": "MTProto key exchange, owned by the client library",
    "ReqPqMulti": "MTProto key exchange, owned by the client library",
    "ReqDHParams": "MTProto key exchange, owned by the client library",
    "SetClientDHParams": "MTProto key exchange, owned by the client library",
}


def blocked_reason(name: str) -> str | None:
    """Why a TL function is blocked by default, or None if it is not.

    Args:
        name: A TL function name in any spelling `function_by_name` accepts.

    Raises:
        JobFailed: INVALID_ARGUMENT if there is no such function.
    """
    return _blocked_reason(function_by_name(name))


def _blocked_reason(cls: type[TLRequest]) -> str | None:
    try:
        return _BLOCKED_REASONS[cls]
    except KeyError:
        reason = _BLOCKED_REASONS[cls] = _blocked_reason_of(cls)
        return reason


#: `_blocked_reason` by class, filled as classes are met (at most one entry per TL class).
_BLOCKED_REASONS: Final[dict[type, str | None]] = {}


def _blocked_reason_of(cls: type[TLRequest]) -> str | None:
    label = _display_name(cls)
    namespace = label.rpartition(".")[0]
    if namespace in BLOCKED_NAMESPACES:
        return f"{namespace}.* is login machinery: it can log out, log in or hand over the account"
    return BLOCKED_METHODS.get(label)


def check_allow_methods(names: Collection[str]) -> list[str]:
    """Problems with an ``allow_methods`` list, ``"[i]: reason"`` (empty when all are fine).

    Each entry must name a TL function Telethon knows and that is blocked by default (the
    list only unblocks; it is not an allow-list of everything callable).
    """
    problems: list[str] = []
    for i, name in enumerate(names):
        try:
            cls = function_by_name(name)
        except JobFailed:
            problems.append(f"[{i}]: unknown TL function {_quote(name)}")
            continue
        if _blocked_reason(cls) is None:
            problems.append(
                f"[{i}]: {_display_name(cls)} is not blocked; allow_methods only unblocks"
                " functions of the built-in block list"
            )
    return problems


def _allowed_set(allow: Collection[str]) -> frozenset[str]:
    if isinstance(allow, tuple):  # the config's: the same tuple for every job
        return _allowed_tuple(allow)
    return _allowed_names(allow)


@functools.lru_cache(maxsize=16)
def _allowed_tuple(allow: tuple[str, ...]) -> frozenset[str]:
    return _allowed_names(allow)


def _allowed_names(allow: Collection[str]) -> frozenset[str]:
    names: set[str] = set()
    for name in allow:
        try:
            names.add(_display_name(function_by_name(name)))
        except JobFailed:
            continue  # the config checks the list; an unknown name allows nothing
    return frozenset(names)


def _check_allowed(cls: type[TLRequest], allowed: frozenset[str], where: str) -> None:
    reason = _blocked_reason(cls)
    label = _display_name(cls)
    if reason is not None and label not in allowed:
        raise _invalid(
            f"{where}{label} is blocked: {reason}; to allow it, add it to"
            f' [policy] allow_methods (allow_methods = ["{label}"])'
        )


# --- schema: what a constructor argument wants ---------------------------------------------


class _Shape(typing.NamedTuple):
    is_list: bool
    base: str  # "int", "str", "bytes", "bool", "float", "datetime", "TypeX" or "TLObject"
    optional: bool
    bounds: tuple[int, int] | None = None  # (min, max) of an int field's TL type, if known
    default: int | None = None  # what an omitted (or null) optional argument becomes


#: Plain ``int``/``long`` arguments that default to 0 when omitted, in the functions whose
#: name starts with ``get`` or ``search`` (`zero_defaults`). Telegram documents 0 as "none"
#: for each: ``offset_id``/``offset``/``add_offset``/``offset_rate``/``offset_topic`` 0 start
#: at the newest entry, ``max_id``/``min_id`` 0 set no bound (core.telegram.org/api/offsets),
#: ``hash`` 0 says the caller holds no cached copy (core.telegram.org/api/offsets#hash-
#: generation). ``limit`` is not among them: 0 asks for no entries, not for a default count.
ZERO_DEFAULT_ARGUMENTS: Final = frozenset(
    {"offset_id", "offset", "add_offset", "offset_rate", "offset_topic", "max_id", "min_id", "hash"}
)


#: Integer ranges by the serialization Telethon generates for a field (``struct.pack('<i',
#: self.x)``: int, ``'<q'``: long, ``'<I'``: unsigned; ``self.x.to_bytes(16, ...)``: int128).
_PACK_BOUNDS: Final[dict[str, tuple[int, int]]] = {
    "i": (-(2**31), 2**31 - 1),
    "q": (-(2**63), 2**63 - 1),
    "I": (0, 2**32 - 1),
}
_PACK_RE: Final = re.compile(
    r"struct\.pack\('<([iqI])', (?:self\.(\w+)\)|x\) for x in self\.(\w+))"
)
_TO_BYTES_RE: Final = re.compile(r"self\.(\w+)\.to_bytes\((\d+), 'little', signed=True\)")


def _int_bounds(cls: type[TLObject]) -> dict[str, tuple[int, int]]:
    """The integer range of each int field, read from Telethon's generated ``_bytes``."""
    try:
        source = inspect.getsource(cls._bytes)
    except (OSError, TypeError):  # pragma: no cover - no source: serialization still checks
        return {}
    bounds: dict[str, tuple[int, int]] = {}
    for m in _PACK_RE.finditer(source):
        bounds[m.group(2) or m.group(3)] = _PACK_BOUNDS[m.group(1)]
    for m in _TO_BYTES_RE.finditer(source):
        bits = int(m.group(2)) * 8
        bounds[m.group(1)] = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return bounds


def _shape_of(annotation: object, has_default: bool) -> _Shape:
    optional = has_default
    is_list = False
    ann: object = annotation
    for _ in range(4):  # unwrap Optional[List[Optional[...]]] and friends
        if isinstance(ann, typing.ForwardRef):
            ann = ann.__forward_arg__
        if isinstance(ann, str):
            text = ann.strip()
            if text.startswith(("List[", "list[")) and text.endswith("]"):
                is_list = True
                ann = text[5:-1].strip("'\" ")
                continue
            return _Shape(is_list, text.strip("'\" "), optional)
        origin = typing.get_origin(ann)
        args = typing.get_args(ann)
        if origin is typing.Union:
            rest = [a for a in args if a is not type(None)]
            if len(rest) < len(args):
                optional = True
            if len(rest) == 1:
                ann = rest[0]
                continue
            return _Shape(is_list, "TLObject", optional)  # a union of constructor classes
        if origin is list:
            is_list = True
            ann = args[0] if args else "TLObject"
            continue
        break
    if ann is inspect.Parameter.empty:
        return _Shape(is_list, "any", optional)
    if isinstance(ann, type):
        if issubclass(ann, TLObject):
            return _Shape(is_list, "TLObject", optional)
        return _Shape(is_list, ann.__name__, optional)
    return _Shape(is_list, "any", optional)


def _is_optional_annotation(annotation: object) -> bool:
    return typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(
        annotation
    )


def zero_defaults(cls: type[TLObject]) -> frozenset[str]:
    """The arguments of `cls` that default to 0 when omitted.

    The rule: `cls` is a TL function whose name starts with ``get`` or ``search`` (the
    read-only listings: ``messages.getHistory``, ``messages.search``, ``contacts.getContacts``
    …), and the argument is a plain (not flags, not vector) TL ``int`` or ``long`` named in
    `ZERO_DEFAULT_ARGUMENTS`. Functions that act (``messages.deleteHistory``'s or
    ``messages.readHistory``'s ``max_id``, ``account.resetAuthorization``'s ``hash``) keep
    every argument required: there 0 means "all", which nobody should get by omission.
    """
    if not issubclass(cls, TLRequest):
        return frozenset()
    method = _display_name(cls).rpartition(".")[2].lower()
    if not method.startswith(("get", "search")):
        return frozenset()
    params = inspect.signature(cls.__init__).parameters
    return frozenset(
        name
        for name in ZERO_DEFAULT_ARGUMENTS
        if name in params
        and params[name].annotation is int
        and params[name].default is inspect.Parameter.empty
    )


@functools.cache
def _signature(cls: type[TLObject]) -> dict[str, _Shape]:
    """What each argument of `cls` wants, from Telethon's ``__init__`` signature.

    An argument is optional (omitted = None) when its annotation allows None (a TL flags
    field, or a ``date`` Telethon writes as 0 for None) or when it has a default. The one kind
    of default on a non-Optional annotation is Telethon's ``random_id`` filler, which makes
    random integers: it stands in for int fields only, so a ``random_id:bytes`` (the
    sponsored-message id of ``messages.viewSponsoredMessage`` & co.) stays required. The
    arguments of `zero_defaults` are optional too, and omitted they are 0.
    """
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    bounds = _int_bounds(cls)
    shapes: dict[str, _Shape] = {}
    for p in params:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        has_default = p.default is not inspect.Parameter.empty
        shape = _shape_of(p.annotation, has_default)
        if has_default and not _is_optional_annotation(p.annotation) and shape.base != "int":
            shape = shape._replace(optional=False)
        shapes[p.name] = shape._replace(bounds=bounds.get(p.name))
    for name in zero_defaults(cls):
        shapes[name] = shapes[name]._replace(optional=True, default=0)
    return shapes


@functools.cache
def _subclass_ids(type_name: str) -> frozenset[int] | None:
    """SUBCLASS_OF_ID values acceptable for a ``TypeX`` schema name (None: unknown, no check)."""
    if not type_name.startswith("Type"):
        return None
    modules = [tl_types] + [
        getattr(tl_types, n)
        for n in dir(tl_types)
        if isinstance(getattr(tl_types, n), type(tl_types))
    ]
    for module in modules:
        alias = getattr(module, type_name, None)
        if alias is None:
            continue
        members = typing.get_args(alias) or (alias,)
        ids = {getattr(m, "SUBCLASS_OF_ID", None) for m in members}
        ids.discard(None)
        if ids:
            return frozenset(i for i in ids if isinstance(i, int))
    return None


# --- in: build_request ----------------------------------------------------------------------


async def build_request(
    name: str,
    args: Mapping[str, Any],
    *,
    resolve_peer: ResolvePeer | None = None,
) -> TLRequest:
    """Build a Telethon request from a method name and JSON arguments.

    Arguments are checked against the constructor's signature: names must exist, required ones
    must be given. Values are converted by the schema type of their field:

    - TL objects from dicts ``{"_": "InputPeerChannel", "channel_id": 1, "access_hash": 2}``
      (recursively; the constructor must fit the field's TL type);
    - ``bytes`` from base64 text (standard or URL-safe alphabet, padding optional);
    - ``datetime`` from ISO 8601 text or Unix seconds;
    - ``int`` from ints or decimal strings (for ids beyond 2**53 from JavaScript clients);
    - ``[]`` in an optional vector field as absent (None), which is how `to_json` writes an
      absent one;
    - an omitted (or null) pagination integer of a ``get``/``search`` function
      (``offset_id``, ``add_offset``, ``max_id``, ``min_id``, ``hash`` …, the rule:
      `zero_defaults`) as 0, as Telegram documents it;
    - peer references — a string (``"@name"``, ``"name"``, ``"t.me/name"``, a t.me link) or an
      int (marked id, ``-100…`` for channels) in an ``InputPeer`` / ``InputUser`` /
      ``InputChannel`` / ``InputDialogPeer`` field — through ``await resolve_peer(value, kind)``,
      once per distinct (value, kind), after the whole request has been checked.

    Args:
        name: TL method name, see `function_by_name`.
        args: JSON object of arguments (snake_case names, as in Telethon).
        resolve_peer: Resolves peer references with the calling account's client. Without it,
            a peer reference is an INVALID_ARGUMENT error.

    Returns:
        The request, ready for ``client(request)``.

    Raises:
        JobFailed: INVALID_ARGUMENT for an unknown function or type, unknown or missing
            arguments (all named), or a value that does not fit its field.
        Exception: whatever `resolve_peer` raises (for instance PEER_NOT_FOUND).
    """
    cls = function_by_name(name)
    if not isinstance(args, Mapping):
        raise _invalid(f"arguments of {_display_name(cls)} must be a JSON object")
    builder = _Builder(peer_refs=resolve_peer is not None)
    request = builder.construct(cls, args, path="", depth=0)
    if builder.refs:
        assert resolve_peer is not None
        resolved: dict[tuple[str | int, PeerKind], TLObject] = {}
        for ref in builder.refs:
            key = (ref.value, ref.kind)
            if key not in resolved:
                resolved[key] = await resolve_peer(ref.value, ref.kind)
            ref.resolved = resolved[key]
        _substitute(request, depth=0)
    return typing.cast(TLRequest, request)


def check_request(method: str, args: Mapping[str, Any], *, allow: Collection[str]) -> None:
    """Check a raw ``invoke`` job completely, without a network or an account.

    Pure and cheap (microseconds for a typical request): the pool calls it before it
    schedules the job, so a bad request never takes an account, a rate-gate slot or a
    retry. It rejects everything `build_request` would, short of resolving peers, and more:

    - an unknown TL function, or one on the block list (`BLOCKED_NAMESPACES`,
      `BLOCKED_METHODS`) not named in `allow` — also when wrapped as the ``query`` of
      ``invokeWithLayer`` & co.;
    - unknown or missing argument names, JSON values of the wrong type for their TL type,
      integers outside their TL type's range (int32, int64, int128, int256), unknown or
      ill-fitting ``{"_": ...}`` constructors at any depth;
    - anything else Telethon would fail to serialize (a date past 2038, a flag group given
      in part, ...), with peer references stood in for by empty Input* objects.

    Args:
        method: TL function name, see `function_by_name`.
        args: Its JSON arguments.
        allow: Blocked function names to allow (``[policy] allow_methods``).

    Raises:
        JobFailed: INVALID_ARGUMENT naming the method or the argument.
    """
    cls = function_by_name(method)
    allowed = _allowed_set(allow)
    _check_allowed(cls, allowed, "")
    if not isinstance(args, Mapping):
        raise _invalid(f"arguments of {_display_name(cls)} must be a JSON object")
    builder = _Builder(peer_refs=True, allowed=allowed)
    request = builder.construct(cls, args, path="", depth=0)
    for ref in builder.refs:
        ref.resolved = _placeholder(ref.kind)
    _substitute(request, depth=0)
    try:
        bytes(request)
    # AssertionError: Telethon asserts that a flag group's fields are given all or none
    # (messages.TranslateText's peer, id; messages.RequestUrlAuth's peer, msg_id, button_id)
    except (
        struct.error,
        OverflowError,
        ValueError,
        TypeError,
        AttributeError,
        AssertionError,
    ) as exc:
        raise _invalid(
            f"{_display_name(cls)}: arguments cannot be serialized: {type(exc).__name__}: "
            + _quote(exc)[1:-1]
        ) from None


def _placeholder(kind: PeerKind) -> TLObject:
    """An empty Input* object of `kind`: what a peer reference becomes for `check_request`."""
    if kind is PeerKind.USER:
        return tl_types.InputUserEmpty()
    if kind is PeerKind.CHANNEL:
        return tl_types.InputChannelEmpty()
    if kind is PeerKind.DIALOG_PEER:
        return tl_types.InputDialogPeer(tl_types.InputPeerEmpty())
    return tl_types.InputPeerEmpty()


def from_json(value: Mapping[str, Any]) -> TLObject:
    """Build a TL object (type or request) from its JSON form, as `to_json` writes it.

    Peer references are not resolved here: give Input* objects as dicts.

    Raises:
        JobFailed: INVALID_ARGUMENT as for `build_request`.
    """
    if not isinstance(value, Mapping):
        raise _invalid("a TL object must be a JSON object")
    return _Builder(peer_refs=False).tl_object("TLObject", dict(value), path="", depth=0)


class _PeerRef:
    """Placeholder for a peer reference until the account resolves it."""

    __slots__ = ("kind", "resolved", "value")

    def __init__(self, value: str | int, kind: PeerKind) -> None:
        self.value = value
        self.kind = kind
        self.resolved: TLObject | None = None


def _substitute(obj: TLObject, *, depth: int) -> None:
    if depth > MAX_DEPTH:  # pragma: no cover - construct() already bounds the depth
        return
    for key, value in vars(obj).items():
        if isinstance(value, _PeerRef):
            setattr(obj, key, value.resolved)
        elif isinstance(value, TLObject):
            _substitute(value, depth=depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, _PeerRef):
                    value[i] = item.resolved
                elif isinstance(item, TLObject):
                    _substitute(item, depth=depth + 1)


class _Builder:
    def __init__(self, *, peer_refs: bool, allowed: frozenset[str] | None = None) -> None:
        self._peer_refs = peer_refs
        self._allowed = allowed  # None: no block-list check (see check_request)
        self.refs: list[_PeerRef] = []

    def construct(
        self, cls: type[TLObject], args: Mapping[str, Any], *, path: str, depth: int
    ) -> TLObject:
        if depth > MAX_DEPTH:
            raise _invalid(f"arguments nested deeper than {MAX_DEPTH} levels")
        shapes = _signature(cls)  # type: ignore[arg-type]  # type[X] is hashable: python/mypy#11470
        given = {k: v for k, v in args.items() if k != "_"}
        unknown = sorted(str(k) for k in given if k not in shapes)
        if unknown:
            label = _display_name(cls)
            hint = did_you_mean(unknown[0], shapes) if len(unknown) == 1 else ""
            raise _invalid(
                f"{label}: unknown argument{'s' if len(unknown) > 1 else ''} "
                + ", ".join(f"{path}{k}" for k in unknown)
                + f"{hint} (expected: {', '.join(shapes) or 'none'})"
            )
        missing = [k for k, shape in shapes.items() if not shape.optional and given.get(k) is None]
        if missing:
            label = _display_name(cls)
            raise _invalid(
                f"{label}: missing argument{'s' if len(missing) > 1 else ''} "
                + ", ".join(f"{path}{k}" for k in missing)
            )
        # Every argument is passed: an omitted one can only be optional here (a flags field,
        # or a date Telethon types Optional and writes as 0), and None is what Telethon takes
        # for it — its signature gives some of them no default (GetHistory's offset_date).
        kwargs = {k: shape.default for k, shape in shapes.items()}
        for key, value in given.items():
            kwargs[key] = self.value(shapes[key], value, path=f"{path}{key}", depth=depth)
        return cls(**kwargs)

    def value(self, shape: _Shape, value: Any, *, path: str, depth: int) -> Any:
        if value is None:
            return shape.default
        if shape.is_list:
            if not isinstance(value, list):
                raise _invalid(f"argument {path!r} must be a list")
            if not value and shape.optional:
                # Telethon's to_dict() writes absent optional vectors as []; an absent flag
                # is what they were (and flag groups only serialize when all are absent).
                return None
            item = shape._replace(is_list=False, optional=False)
            return [
                self.value(item, v, path=f"{path}[{i}]", depth=depth + 1)
                for i, v in enumerate(value)
            ]
        base = shape.base
        if base == "int":
            return _int(value, path, shape.bounds)
        if base == "str":
            if not isinstance(value, str):
                raise _invalid(f"argument {path!r} must be a string")
            return value
        if base == "bool":
            if not isinstance(value, bool):
                raise _invalid(f"argument {path!r} must be true or false")
            return value
        if base == "float":
            return _float(value, path)
        if base == "bytes":
            return _bytes(value, path)
        if base == "datetime":
            return parse_datetime(value, path)
        if base == "any":
            return value
        # a TL type
        if isinstance(value, dict):
            return self.tl_object(base, value, path=path, depth=depth)
        kind = _PEER_KINDS.get(base)
        if kind is not None and isinstance(value, str | int) and not isinstance(value, bool):
            if not self._peer_refs:
                raise _invalid(f"argument {path!r}: peer references need an account to resolve")
            ref = _PeerRef(value, kind)
            self.refs.append(ref)
            return ref
        expected = base.removeprefix("Type") if base.startswith("Type") else "TL object"
        hint = " or a peer reference (@username, t.me link, id)" if kind is not None else ""
        raise _invalid(f'argument {path!r} must be a {{"_": "{expected}", ...}} object{hint}')

    def tl_object(self, base: str, value: dict[str, Any], *, path: str, depth: int) -> TLObject:
        type_name = value.get("_")
        where = f"argument {path!r}: " if path else ""
        if not isinstance(type_name, str):
            raise _invalid(f'{where}TL object needs a "_" naming its constructor')
        try:
            cls: type[TLObject] = type_by_name(type_name)
        except JobFailed:
            try:
                cls = function_by_name(type_name)  # e.g. a query inside invokeWithLayer
            except JobFailed:
                raise _invalid(f"{where}unknown TL type {_quote(type_name)}") from None
            if self._allowed is not None:  # a wrapped query is a call like any other
                _check_allowed(cls, self._allowed, where)
        allowed = _subclass_ids(base)
        if allowed is not None and getattr(cls, "SUBCLASS_OF_ID", None) not in allowed:
            raise _invalid(
                f"{where}{_display_name(cls)} does not fit field type {base.removeprefix('Type')}"
            )
        return self.construct(cls, value, path=f"{path}." if path else "", depth=depth + 1)


_DISPLAY_NAMES: Final[dict[type, str]] = {}


def _display_name(cls: type) -> str:
    """``messages.GetHistory``: the name a message gives a TL class (cached per class)."""
    name = _DISPLAY_NAMES.get(cls)
    if name is None:
        name = _DISPLAY_NAMES[cls] = _compute_display_name(cls)
    return name


def _compute_display_name(cls: type) -> str:
    is_function = cls.__module__.startswith(_FUNCTIONS_PREFIX)
    ns = _namespace(cls, _FUNCTIONS_PREFIX if is_function else _TYPES_PREFIX)
    name = cls.__name__
    if issubclass(cls, TLRequest) and name.endswith("Request"):
        name = name[: -len("Request")]
    return f"{ns}.{name}" if ns else name


_DECIMAL_RE: Final = re.compile(r"-?[0-9]+")  # ASCII digits only: "²".isdigit() is True


def _int(value: Any, path: str, bounds: tuple[int, int] | None = None) -> int:
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) <= 80 and _DECIMAL_RE.fullmatch(text):
            number = int(text)
    if number is None:
        raise _invalid(f"argument {path!r} must be an integer")
    if bounds is not None and not bounds[0] <= number <= bounds[1]:
        raise _invalid(
            f"argument {path!r} must be an integer {bounds[0]}..{bounds[1]},"
            f" got {_show_int(number)}"
        )
    return number


def _show_int(number: int) -> str:
    """An integer for a message: in full up to 128 bits (str() fails past 4,300 digits)."""
    if number.bit_length() <= 128:
        return str(number)
    return f"{'-' if number < 0 else ''}an integer of {number.bit_length()} bits"


def _float(value: Any, path: str) -> float:
    """A TL ``double`` from a JSON number: finite, within the range of a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"argument {path!r} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond 1.8e308
        number = math.inf
    if not math.isfinite(number):
        raise _invalid(f"argument {path!r} must be a finite number (a TL double)")
    return number


def _bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise _invalid(f"argument {path!r} must be base64 text")
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"argument {path!r} must be base64 text") from None
