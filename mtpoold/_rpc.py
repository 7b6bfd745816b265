"""JSON-RPC 2.0 for mtpoold's websocket API: parsing, parameter validation, error objects.

Pure: no I/O, no trio, no pool. `mtpoold._server` feeds it frames and sends what it returns;
`mtpoold._rpcclient` uses the same codes to read replies.

Protocol choices (this docstring is the reference):

* Every request needs an ``id`` (a string or an integer). A message without one (a JSON-RPC
  *notification*) is answered with ``-32600`` and ``"id": null`` instead of being silently
  dropped: a job nobody can receive the result of is a client bug worth reporting.
* Batches (a JSON array) are not supported: answered with one ``-32600`` error, ``"id": null``.
* ``params`` is an object (named parameters). Methods without parameters also accept it
  absent, ``{}`` or ``[]``. Unknown parameter names are rejected with ``-32602`` so typos
  surface.
* Numbers: every number JSON can write is read — integers of up to `MAX_INT_DIGITS` digits
  exactly, and a number beyond the float range (``1e400``) as an infinity — and judged by the
  parameter it sits in: out of that parameter's range, or of the wrong kind, it is ``-32602``
  naming the parameter (``params.options.deadline_ms``, ``params.ids[2]``; in ``invoke``'s
  ``args``, the TL argument: ``argument 'limit' must be an integer -2147483648..2147483647``).
  Only ``NaN`` / ``Infinity`` (not JSON) and integers longer than `MAX_INT_DIGITS` digits
  (Python's int/str limit) are ``-32700``.
* Nesting: a frame of more than `MAX_JSON_DEPTH` levels of arrays and objects is ``-32700``
  ("nested too deeply"), whichever decoder read it.

Error codes:

======  ====================  =====================================================
code    ``data.class``        meaning
======  ====================  =====================================================
-32700  PARSE_ERROR           the frame is not JSON, or a binary frame is not UTF-8
                              (the connection stays open); a text frame that is not
                              UTF-8 closes the connection with 1007 instead
-32600  INVALID_REQUEST       not a JSON-RPC 2.0 request object (no id, no
                              ``"jsonrpc": "2.0"``, id reused while in flight, batch)
-32601  METHOD_NOT_FOUND      unknown method
-32602  INVALID_ARGUMENT      a parameter is missing or has the wrong type; the
                              message names it, e.g. ``params.ids[2]: expected an
                              integer, got a string``. Also a job the pool refused as
                              INVALID_ARGUMENT (unknown TL method, unknown account).
-32603  INTERNAL_ERROR        a bug while handling this one request
-32001  <ErrorClass>          the job failed (FLOOD_WAIT, PEER_NOT_FOUND, GENERIC, ...)
-32002  NO_ACCOUNT_AVAILABLE  no account can serve the job before its deadline
-32003  SHUTTING_DOWN         the daemon is stopping
-32004  CANCELLED             cancelled by a ``cancel`` request
-32005  TOO_MANY_IN_FLIGHT    the connection is at its ``max_in_flight`` limit
                              (the rule: `mtpoold._server`, limits of one
                              connection)
-32006  CONFIG_INVALID        ``reload`` refused the new config; the daemon keeps
                              running on the old one. ``data.problems`` lists
                              every problem, one line each
======  ====================  =====================================================

Every error object has ``data = {"class", "retry_after_s", "account", "attempts"}``, plus
``data.problems`` (a list of strings) on -32006.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs
import orjson

from ._errors import ErrorClass
from ._validation import EXPECT, JSON, FieldProblem, Structurer

__all__ = [
    "CANCELLED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "JOB_FAILED",
    "MAX_DEADLINE_MS",
    "MAX_INT_DIGITS",
    "MAX_JSON_DEPTH",
    "METHODS",
    "METHOD_NOT_FOUND",
    "NO_ACCOUNT_AVAILABLE",
    "PARSE_ERROR",
    "SHUTTING_DOWN",
    "TOO_MANY_IN_FLIGHT",
    "RELOAD_FAILED",
    "CancelParams",
    "DisableParams",
    "EnableParams",
    "CooldownsParams",
    "ClearCooldownParams",
    "ForgetParams",
    "GetMessagesParams",
    "InvokeParams",
    "JobOptions",
    "NoParams",
    "ReloadParams",
    "Request",
    "RequestId",
    "ResolveParams",
    "RpcError",
    "StatusParams",
    "WireClass",
    "code_for_error_class",
    "encode_error",
    "encode_job_result",
    "encode_result",
    "parse_params",
    "parse_request",
]

# --- codes ----------------------------------------------------------------------------------------

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
JOB_FAILED: Final = -32001
NO_ACCOUNT_AVAILABLE: Final = -32002
SHUTTING_DOWN: Final = -32003
CANCELLED: Final = -32004
TOO_MANY_IN_FLIGHT: Final = -32005
RELOAD_FAILED: Final = -32006

_CODE_BY_ERROR_CLASS: Final[Mapping[ErrorClass, int]] = {
    ErrorClass.NO_ACCOUNT_AVAILABLE: NO_ACCOUNT_AVAILABLE,
    ErrorClass.SHUTTING_DOWN: SHUTTING_DOWN,
    ErrorClass.CANCELLED: CANCELLED,
    ErrorClass.INVALID_ARGUMENT: INVALID_PARAMS,
}

RequestId: TypeAlias = str | int


class WireClass(enum.StrEnum):
    """``data.class`` of the errors the protocol makes itself (see the module table); a job's
    errors carry an `mtpoold.ErrorClass` value there instead."""

    PARSE_ERROR = "PARSE_ERROR"
    INVALID_REQUEST = "INVALID_REQUEST"
    METHOD_NOT_FOUND = "METHOD_NOT_FOUND"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    TOO_MANY_IN_FLIGHT = "TOO_MANY_IN_FLIGHT"
    CONFIG_INVALID = "CONFIG_INVALID"
    #: Client side: a reply whose error carries no class.
    UNKNOWN = "UNKNOWN"


def code_for_error_class(error_class: ErrorClass) -> int:
    """The JSON-RPC error code for a job that failed with ``error_class``: the module table's
    ``code`` column (-32001 for every class it does not list)."""
    return _CODE_BY_ERROR_CLASS.get(error_class, JOB_FAILED)


class RpcError(Exception):
    """One JSON-RPC error object, raisable.

    Args:
        code: The JSON-RPC error code (see the module table).
        message: One line for humans; never a secret.
        error_class: ``data.class``: an `ErrorClass` (a job's) or a `WireClass` (the
            protocol's); kept as its string (``error_class == "FLOOD_WAIT"``), and on the
            client side any string the daemon sent.
        retry_after_s: ``data.retry_after_s``: seconds after which a retry makes sense.
        account: ``data.account``: the account of the last attempt, if any.
        attempts: ``data.attempts``: calls made for the job.
        request_id: The id of the request the error answers, when it could be read
            (set by `parse_request`; None otherwise).
        problems: ``data.problems``: one line per problem (``reload``'s -32006 only).
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        error_class: ErrorClass | WireClass | str,
        retry_after_s: float | None = None,
        account: str | None = None,
        attempts: int = 0,
        request_id: RequestId | None = None,
        problems: tuple[str, ...] = (),
    ) -> None:
        super().__init__(code, message)
        self.problems = problems
        self.code = code
        self.message = message
        self.error_class: str = (
            error_class.value if isinstance(error_class, ErrorClass) else str(error_class)
        )
        self.retry_after_s = retry_after_s
        self.account = account
        self.attempts = attempts
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.error_class} ({self.code}): {self.message}"

    def to_object(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member: ``{"code", "message", "data"}``."""
        data: dict[str, Any] = {
            "class": self.error_class,
            "retry_after_s": self.retry_after_s,
            "account": self.account,
            "attempts": self.attempts,
        }
        if self.problems:
            data["problems"] = list(self.problems)
        return {"code": self.code, "message": self.message, "data": data}

    @classmethod
    def from_object(cls, obj: object) -> RpcError:
        """Rebuild an `RpcError` from a reply's ``error`` member (client side).

        Args:
            obj: The decoded ``error`` member.

        Returns:
            The error; missing or malformed fields get neutral defaults, never an exception.
        """
        if not isinstance(obj, Mapping):
            return cls(
                INTERNAL_ERROR,
                f"malformed error object: {obj!r}",
                error_class=WireClass.INTERNAL_ERROR,
            )
        data = obj.get("data")
        data = data if isinstance(data, Mapping) else {}
        code = obj.get("code")
        retry = data.get("retry_after_s")
        attempts = data.get("attempts")
        account = data.get("account")
        problems = data.get("problems")
        return cls(
            code if isinstance(code, int) else INTERNAL_ERROR,
            str(obj.get("message", "")),
            error_class=str(data.get("class") or WireClass.UNKNOWN),
            retry_after_s=float(retry) if isinstance(retry, int | float) else None,
            account=account if isinstance(account, str) else None,
            attempts=attempts if isinstance(attempts, int) else 0,
            problems=tuple(str(p) for p in problems) if isinstance(problems, list) else (),
        )


def _invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message, error_class=ErrorClass.INVALID_ARGUMENT)


def _invalid_request(message: str, request_id: RequestId | None = None) -> RpcError:
    return RpcError(
        INVALID_REQUEST, message, error_class=WireClass.INVALID_REQUEST, request_id=request_id
    )


# --- requests -------------------------------------------------------------------------------------


@attrs.frozen
class Request:
    """One parsed JSON-RPC request (parameters not yet validated; see `parse_params`).

    Attributes:
        id: The request id (string or integer).
        method: The method name.
        params: The raw ``params`` member: a dict, a list, or None when absent.
    """

    id: RequestId
    method: str
    params: dict[str, Any] | list[Any] | None


class _NotJson(ValueError):
    """Text `json.loads` would accept but JSON (RFC 8259) does not: NaN, Infinity."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not allowed")


#: Digits of the longest integer a frame may hold: Python's int/str conversion limit
#: (``sys.get_int_max_str_digits()``, 4300 by default), far beyond every range we accept.
MAX_INT_DIGITS: Final = 4300


def _parse_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise _NotJson(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def _lone_surrogate(text: str) -> bool:
    """True when a ``\\uD800``-``\\uDFFF`` escape of ``text`` decoded to half a pair: such a
    string is no Unicode text (I-JSON, RFC 7493 §2.1, forbids it) and no reply holding it
    could be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _readable_id(value: object) -> RequestId | None:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def parse_request(frame: str | bytes) -> Request:
    """Decode one websocket frame into a `Request`.

    Args:
        frame: The message as received (text, or UTF-8 bytes).

    Returns:
        The request. Its parameters are checked later by `parse_params`.

    Raises:
        RpcError: PARSE_ERROR (-32700) if the frame is not JSON, or holds NaN, Infinity,
            an integer of more than `MAX_INT_DIGITS` digits, or a string escaping half a
            UTF-16 surrogate pair (``"\\ud800"``: not text, no reply could hold it; I-JSON,
            RFC 7493 §2.1), or nests more than `MAX_JSON_DEPTH` levels (``request_id``
            None);
            INVALID_REQUEST (-32600) if it is a batch, not an object, lacks ``"jsonrpc":
            "2.0"``, lacks an id (notifications are not supported), has an id that is not a
            string or integer, a method that is not a string, or params that are neither an
            object nor an array. ``request_id`` carries the id whenever it was readable.
    """
    obj = _quick_loads(frame)
    if obj is _NOT_QUICK:
        obj = _full_loads(frame)
    if _brackets(frame) > MAX_JSON_DEPTH and _deeper_than(obj, MAX_JSON_DEPTH):
        raise RpcError(PARSE_ERROR, _TOO_DEEP, error_class=WireClass.PARSE_ERROR)
    return _request_of(obj)


#: Levels of arrays and objects a frame may nest (``[]`` is one). Both decoders read deeper
#: (orjson to 1,024, the standard library until Python's recursion limit, about 1,000 less
#: the stack in use), so the limit is ours, the same on either path and for every element of
#: an HTTP batch; no request needs more than a few dozen (`mtpoold._tljson.MAX_DEPTH`).
MAX_JSON_DEPTH: Final = 512
_TOO_DEEP: Final = f"not valid JSON: nested too deeply (more than {MAX_JSON_DEPTH} levels)"


def _brackets(frame: str | bytes) -> int:
    """Opening brackets in ``frame`` (strings included): an upper bound of its depth."""
    if isinstance(frame, str):
        return frame.count("[") + frame.count("{")
    return frame.count(b"[") + frame.count(b"{")


def _deeper_than(obj: object, limit: int) -> bool:
    """Whether ``obj`` (decoded JSON) nests more than ``limit`` levels (without recursion)."""
    if not isinstance(obj, (dict, list)):
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


#: What `_quick_loads` answers for a frame it leaves to `_full_loads`.
_NOT_QUICK: Final = object()
#: Bytes to `_DIGIT_RUN`'s alphabet: ASCII digits (in UTF-8 no other byte is one) to ``0``,
#: every other byte to a space.
_DIGITS_ONLY: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
#: A run of 19 digits: an integer that may not fit in 64 bits, which orjson would read as a
#: float (`_quick_loads` leaves such frames to the standard library, which reads it exactly).
_DIGIT_RUN: Final = b"0" * 19


def _quick_loads(frame: str | bytes) -> Any:
    """``frame`` decoded by orjson, or `_NOT_QUICK` for the standard library's full path.

    orjson takes only strict JSON (RFC 8259): UTF-8, no NaN or Infinity, no number beyond the
    float range, no unpaired surrogate escape (``"\\ud800"``), at most 1,024 levels deep —
    whatever it refuses goes to `_full_loads`, which reads it (``1e400``) or names the
    problem. What it takes it reads as the standard library does, but for an integer beyond
    64 bits (read as a float): a frame with a run of 19 digits goes to `_full_loads` too.
    """
    data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    if _DIGIT_RUN in data.translate(_DIGITS_ONLY):  # a regular expression takes twice as long
        return _NOT_QUICK
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        return _NOT_QUICK


#: The standard library's decoder, built once (`json.loads` with arguments builds one per call).
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int)


def _full_loads(frame: str | bytes) -> Any:
    """``frame`` decoded by the standard library, with the checks of `parse_request`.

    Raises:
        RpcError: PARSE_ERROR, as `parse_request` says.
    """
    try:
        # Bytes are decoded strictly here: json.loads would decode them with surrogatepass.
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        if text.startswith("\ufeff"):  # what json.loads says of a BOM (its decoder does not)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        obj = _DECODER.decode(text)
        if "\\u" in text and _lone_surrogate(_dumps(obj)):
            raise _NotJson("a string holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF)")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        if isinstance(exc, json.JSONDecodeError):
            detail = f"{exc.msg} (line {exc.lineno} column {exc.colno})"
        elif isinstance(exc, _NotJson):
            detail = str(exc)
        elif isinstance(exc, UnicodeDecodeError):
            detail = "the frame is not UTF-8 text"
        elif isinstance(exc, RecursionError):
            raise RpcError(PARSE_ERROR, _TOO_DEEP, error_class=WireClass.PARSE_ERROR) from None
        else:  # pragma: no cover - json.loads raises nothing else
            detail = type(exc).__name__
        raise RpcError(
            PARSE_ERROR, f"not valid JSON: {detail}", error_class=WireClass.PARSE_ERROR
        ) from None
    return obj


#: The members a request may have.
_MEMBERS: Final = frozenset({"jsonrpc", "id", "method", "params"})


def _request_of(obj: Any) -> Request:
    """The `Request` a decoded frame is (`parse_request`'s checks after the JSON)."""
    if isinstance(obj, list):
        raise _invalid_request("batches are not supported: send one request per frame")
    if not isinstance(obj, dict):
        raise _invalid_request(f"a request must be a JSON object, got {JSON.kind(obj)}")
    request_id = _readable_id(obj.get("id"))
    if obj.get("jsonrpc") != "2.0":
        raise _invalid_request('"jsonrpc" must be "2.0"', request_id)
    if "id" not in obj:
        raise _invalid_request(
            'missing "id": notifications are not supported, every request needs an id'
        )
    if request_id is None:
        raise _invalid_request(f'"id" must be a string or an integer, got {JSON.kind(obj["id"])}')
    method = obj.get("method")
    if not isinstance(method, str):
        raise _invalid_request(f'"method" must be a string, got {JSON.kind(method)}', request_id)
    params = obj.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise _invalid_request(
            f'"params" must be an object or an array, got {JSON.kind(params)}', request_id
        )
    if not obj.keys() <= _MEMBERS:
        extra = sorted(set(obj) - _MEMBERS)
        raise _invalid_request(f"unknown member(s) in request: {', '.join(extra)}", request_id)
    return Request(id=request_id, method=method, params=params)


# --- parameters -----------------------------------------------------------------------------------
#
# Each method's params are an attrs class, structured by the problem-path engine
# (`mtpoold._validation`, the config file's too) in its JSON dialect: strict types, unknown
# names refused, validators for ranges, and the first problem in field order as the message
# (``params.ids[2]: expected an integer, got a string``). attrs validators are on while a
# request is structured (only `mtpoold._config.parse_config` turns them off, synchronously).

#: The largest ``options.deadline_ms`` the protocol takes: 2**53 ms (about 285,000 years),
#: exact as a float. The operator's cap (``[policy] job_deadline_s``, checked by the pool) is
#: lower; this bound only keeps numbers no deadline can have out of the pool.
MAX_DEADLINE_MS: Final = 2**53

#: Message ids are TL ``int`` and start at 1 (as `mtpoold._links.MAX_MESSAGE_ID`).
_MESSAGE_ID_RANGE: Final = (1, 2**31 - 1)
#: A numeric peer is a marked id (Bot API style: users id, chats -id, channels -100…id) of a
#: TL ``long`` id — the range `mtpoold._links.parse_link` takes; it says which ids inside
#: it name no peer.
_PEER_ID_RANGE: Final = (-(10**12 + 2**63 - 1), 2**63 - 1)


def _non_empty(_inst: Any, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise FieldProblem(attr.name, "expected a non-empty string")


def _non_empty_items(_inst: Any, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for i, item in enumerate(value):
        if not item.strip():
            raise FieldProblem(f"{attr.name}[{i}]", "expected a non-empty string")


def _deadline_ms(_inst: Any, attr: attrs.Attribute[Any], ms: int | float | None) -> None:
    if ms is None:
        return
    if not ms > 0:  # NaN too
        raise FieldProblem(attr.name, f"expected > 0, got {JSON.show(ms)}")
    if ms > MAX_DEADLINE_MS:
        raise FieldProblem(
            attr.name,
            f"expected at most 2**53 ({MAX_DEADLINE_MS}) milliseconds, got {JSON.show(ms)};"
            " the operator's cap (policy.job_deadline_s) is lower still",
        )


def _max_age_s(_inst: Any, attr: attrs.Attribute[Any], value: int | float | None) -> None:
    if value is None:
        return
    finite = not isinstance(value, int) or value.bit_length() <= 64
    if not (finite and math.isfinite(value) and value >= 0):
        raise FieldProblem(attr.name, f"expected a finite number >= 0, got {JSON.show(value)}")


def _peer(_inst: Any, attr: attrs.Attribute[Any], peer: str | int) -> None:
    if isinstance(peer, str):
        _non_empty(_inst, attr, peer)
        return
    low, high = _PEER_ID_RANGE
    if not low <= peer <= high:
        raise FieldProblem(
            attr.name, f"expected a string or an integer {low}..{high}, got {JSON.show(peer)}"
        )


def _message_ids(_inst: Any, attr: attrs.Attribute[Any], ids: tuple[int, ...]) -> None:
    if not ids:
        raise FieldProblem(attr.name, "expected at least one message id")
    low, high = _MESSAGE_ID_RANGE
    for i, v in enumerate(ids):
        if not low <= v <= high:
            raise FieldProblem(
                f"{attr.name}[{i}]", f"expected an integer {low}..{high}, got {JSON.show(v)}"
            )


@attrs.frozen
class JobOptions:
    """``params.options`` of a job method (read from ``deadline_ms``, ``account``, ``tags``).

    Attributes:
        deadline_s: The job's deadline in seconds (from ``deadline_ms``), or None for the
            pool's default.
        account: Run on this account id only, or None for any.
        tags: Only accounts carrying every one of these tags.
        max_age_s: Seconds old an answer may be (``max_age_s``; 0: a fresh one). Read-only
            functions only: the pool answers INVALID_ARGUMENT for others.
    """

    deadline_s: float | None = None
    account: str | None = None
    tags: tuple[str, ...] = ()
    max_age_s: float = 0.0


@attrs.frozen
class _OptionsDoc:
    """``params.options`` as written; null members are absent ones."""

    deadline_ms: int | float | None = attrs.field(
        default=None, validator=_deadline_ms, metadata={EXPECT: "a number of milliseconds"}
    )
    account: str | None = attrs.field(default=None, validator=_non_empty)
    tags: tuple[str, ...] | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(_non_empty_items),
        metadata={EXPECT: "an array of strings"},
    )
    max_age_s: int | float | None = attrs.field(
        default=None, validator=_max_age_s, metadata={EXPECT: "a number of seconds"}
    )


@attrs.frozen
class InvokeParams:
    """``invoke``: a raw TL function by name. ``args`` defaults to ``{}``."""

    method: str = attrs.field(validator=_non_empty)
    args: dict[str, Any] = attrs.field(factory=dict)
    options: JobOptions = attrs.field(factory=JobOptions)


@attrs.frozen
class ResolveParams:
    """``resolve``: a t.me link, ``@username`` or bare username."""

    link_or_username: str = attrs.field(validator=_non_empty)
    options: JobOptions = attrs.field(factory=JobOptions)


@attrs.frozen
class GetMessagesParams:
    """``get_messages``: message ``ids`` of ``peer`` (username/link string or numeric id).

    ``ids`` absent or null: ``peer`` must be a message link (``https://t.me/chan/123``,
    ``t.me/c/123456/7``), whose message id is the one id (the pool checks it).
    """

    peer: str | int = attrs.field(validator=_peer)
    ids: tuple[int, ...] | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(_message_ids),
        metadata={EXPECT: "an array of integers"},
    )
    options: JobOptions = attrs.field(factory=JobOptions)


@attrs.frozen
class CancelParams:
    """``cancel``: the id of an in-flight request of the same connection."""

    id: RequestId = attrs.field(metadata={EXPECT: "a request id (string or integer)"})


@attrs.frozen
class DisableParams:
    """``accounts.disable``: account ``id`` and a human ``reason`` (absent or null: an
    account already disabled keeps its reason, another gets "disabled by operator")."""

    id: str = attrs.field(validator=_non_empty)
    reason: str | None = attrs.field(default=None, validator=_non_empty)


@attrs.frozen
class EnableParams:
    """``accounts.enable``: account ``id``; ``force`` (default false) also enables an account
    Telegram revoked or deactivated (refused without it)."""

    id: str = attrs.field(validator=_non_empty)
    force: bool = False


@attrs.frozen
class CooldownsParams:
    """``accounts.cooldowns``: account ``id``."""

    id: str = attrs.field(validator=_non_empty)


@attrs.frozen
class ClearCooldownParams:
    """``accounts.clear_cooldown``: account ``id``, optional ``rate_class`` (absent or null:
    every class and the account-wide cooldown)."""

    id: str = attrs.field(validator=_non_empty)
    rate_class: str | None = attrs.field(default=None, validator=_non_empty)


@attrs.frozen
class ForgetParams:
    """``accounts.forget``: ``id`` of an account in the state store but not in the config."""

    id: str = attrs.field(validator=_non_empty)


@attrs.frozen
class ReloadParams:
    """``reload``: no parameters; the daemon re-reads its own config file."""


@attrs.frozen
class NoParams:
    """Methods without parameters (``ping``, ``jobs``)."""


@attrs.frozen
class StatusParams:
    """``status``: ``summary`` true answers the counts and the proxies only (``accounts``
    empty; no account's snapshot is built: cheap for a fleet of thousands)."""

    summary: bool = attrs.field(default=False, metadata={EXPECT: "true or false"})


_Params: TypeAlias = (
    InvokeParams
    | ResolveParams
    | GetMessagesParams
    | CancelParams
    | DisableParams
    | EnableParams
    | CooldownsParams
    | ClearCooldownParams
    | ForgetParams
    | ReloadParams
    | StatusParams
    | NoParams
)

_PARAMS: Final = Structurer(JSON)


def _job_options(value: Any, _t: Any) -> JobOptions:
    return _options_of(_PARAMS.converter.structure(value, _OptionsDoc))


def _options_of(doc: _OptionsDoc) -> JobOptions:
    return JobOptions(
        deadline_s=None if doc.deadline_ms is None else doc.deadline_ms / 1000,
        account=doc.account,
        tags=doc.tags or (),
        max_age_s=0.0 if doc.max_age_s is None else float(doc.max_age_s),
    )


_PARAMS.converter.register_structure_hook(JobOptions, _job_options)

#: Members whose null means "absent" (their defaults: ``{}``, no options).
_NULL_IS_ABSENT: Final = ("args", "options")


_PARAMS_OF: Final[Mapping[str, type[_Params]]] = {
    "invoke": InvokeParams,
    "resolve": ResolveParams,
    "get_messages": GetMessagesParams,
    "status": StatusParams,
    "jobs": NoParams,
    "ping": NoParams,
    "cancel": CancelParams,
    "accounts.disable": DisableParams,
    "accounts.enable": EnableParams,
    "accounts.cooldowns": CooldownsParams,
    "accounts.clear_cooldown": ClearCooldownParams,
    "accounts.forget": ForgetParams,
    "reload": ReloadParams,
}

#: Every method the server answers.
METHODS: Final = frozenset(_PARAMS_OF)


def parse_params(method: str, params: dict[str, Any] | list[Any] | None) -> _Params:
    """Validate the parameters of ``method``.

    Args:
        method: The request's method.
        params: The request's raw ``params`` member.

    Returns:
        One of `InvokeParams`, `ResolveParams`, `GetMessagesParams`, `CancelParams`,
        `DisableParams`, `EnableParams`, `CooldownsParams`, `ClearCooldownParams`,
        `ForgetParams`, `ReloadParams`, `StatusParams`, `NoParams`.

    Raises:
        RpcError: METHOD_NOT_FOUND (-32601) for an unknown method; INVALID_PARAMS (-32602)
            naming the first bad parameter and what was expected.
    """
    cls = _PARAMS_OF.get(method)
    if cls is None:
        raise RpcError(
            METHOD_NOT_FOUND,
            f"unknown method {method!r}; expected one of {', '.join(sorted(METHODS))}",
            error_class=WireClass.METHOD_NOT_FOUND,
        )
    if isinstance(params, list):
        if params:
            raise _invalid_params("params: expected an object (named parameters), got an array")
        params = None
    if params is None:
        named = {}
    elif params.get("args", 0) is None or params.get("options", 0) is None:
        named = {k: v for k, v in params.items() if not (v is None and k in _NULL_IS_ABSENT)}
    else:
        named = params  # read, never changed
    quick = _quick_params(cls, named)
    if quick is not None:
        return quick
    obj, problem = _PARAMS.first_problem(named, cls, "params")
    if problem is not None:
        raise _invalid_params(problem)
    result: _Params = obj
    return result


#: The classes `_quick_params` builds: every field a string, or ``args`` / ``options``.
_QUICK_CLASSES: Final = frozenset({InvokeParams, ResolveParams})
_NO_OPTIONS: Final = JobOptions()


def _quick_params(cls: type[_Params], named: dict[str, Any]) -> _Params | None:
    """``named`` as ``cls`` without the converter, for the well-formed ``invoke`` and
    ``resolve`` params: only the members ``cls`` has, strings where it wants strings, an
    object of ``args`` (taken as the converter takes it: a shallow copy) and plain
    ``options`` (`_quick_options`). ``cls`` is built with its validators on, as the full path
    builds it. None for anything else — a member it does not take, a value of another type,
    a value a validator refuses, a missing member: the full path (`parse_params`) then
    structures ``named`` and names the first problem.
    """
    if cls not in _QUICK_CLASSES:
        return None
    fields: dict[str, Any] = {}
    for key, value in named.items():
        if key == "options":
            options = _quick_options(value)
            if options is None:
                return None
            fields[key] = options
        elif key == "args":
            if type(value) is not dict or cls is not InvokeParams:
                return None
            fields[key] = dict(value)
        elif type(value) is str and key in _STRING_FIELDS[cls]:
            fields[key] = value
        else:
            return None
    try:
        return cls(**fields)
    except (ValueError, TypeError):  # a validator's FieldProblem, a missing member
        return None


#: The string fields of the classes `_quick_params` builds.
_STRING_FIELDS: Final[Mapping[type, frozenset[str]]] = {
    InvokeParams: frozenset({"method"}),
    ResolveParams: frozenset({"link_or_username"}),
}
#: ``params.options`` members and the JSON types `_quick_options` takes for them (a null
#: member is an absent one).
_OPTION_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "deadline_ms": (int, float),
    "account": (str,),
    "tags": (list,),
    "max_age_s": (int, float),
}


def _quick_options(value: Any) -> JobOptions | None:
    """``params.options`` as `JobOptions` without the converter, when every member is one
    `_OptionsDoc` has and of a type its strict hooks take (numbers that are not booleans, a
    string, an array of strings), and its validators pass; None otherwise (the full path)."""
    if type(value) is not dict:
        return None
    if not value:
        return _NO_OPTIONS
    fields: dict[str, Any] = {}
    for key, v in value.items():
        types = _OPTION_TYPES.get(key)
        if types is None:  # unknown, even as null: the full path names it
            return None
        if v is None:
            continue
        if type(v) not in types:
            return None
        if key == "tags":
            for tag in v:
                if type(tag) is not str:
                    return None
            v = tuple(v)
        fields[key] = v
    try:
        return _options_of(_OptionsDoc(**fields))
    except ValueError:  # a validator's FieldProblem
        return None


# --- replies --------------------------------------------------------------------------------------


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_result(request_id: RequestId, result: object) -> str:
    """Encode a success reply.

    Args:
        request_id: The id of the request answered.
        result: A JSON-serialisable value.

    Returns:
        The frame text.

    Raises:
        TypeError: if ``result`` holds something JSON cannot encode.
        ValueError: if ``result`` holds NaN or an infinity, or a circular reference.
    """
    return _dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


#: orjson leaves these to `default` (none given: TypeError), where `json` refuses them too.
_ORJSON_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_job_result(request_id: RequestId, result: object) -> str:
    """Encode a job's success reply (``result``: what the server makes of the pool's answer:
    ``{"result": <value>, "meta": {...}}``) — `encode_result`'s frame, written by orjson.

    A value orjson does not take — an integer beyond 64 bits, a key that is not a string, a
    string holding an unpaired surrogate, a type JSON has no form for — goes to
    `encode_result`, which writes it as before or raises what it raises. One difference, out
    of reach of a job's value: a non-finite float is written ``null`` (as `to_json` writes
    every one a TL result holds, and the server's meta holds none) where `encode_result`
    raises ValueError.

    Raises:
        TypeError: if ``result`` holds something JSON cannot encode.
        ValueError: if ``result`` holds a circular reference.
    """
    try:
        return orjson.dumps(
            {"jsonrpc": "2.0", "id": request_id, "result": result}, option=_ORJSON_OPTIONS
        ).decode()
    except TypeError:  # orjson.JSONEncodeError: not orjson's kind of value
        return encode_result(request_id, result)


def encode_error(request_id: RequestId | None, error: RpcError) -> str:
    """Encode an error reply (``"id": null`` when the request's id was unreadable)."""
    return _dumps({"jsonrpc": "2.0", "id": request_id, "error": error.to_object()})
