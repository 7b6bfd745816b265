"""Error vocabulary of mtpoold: what went wrong, in classes the scheduler can act on.

Plain Python, no Telethon: the scheduling core (gate, lane, ready, dispatch, policy, account,
pool) imports these. Turning the exceptions of Telethon, python-socks and the caller's deadline
into a `Failure` (`classify`) is the Telegram side's job: `mtpoold._classify`.
`mtpoold._policy` turns a `Failure` into a `Verdict`. Where the classes come from:
``docs/ARCHITECTURE.md``, "Where the PHP system's numbers went".
"""

from __future__ import annotations

import ast
import enum
import re
from collections.abc import Iterable
from typing import Final, Literal

import attrs

__all__ = [
    "ConfigError",
    "ErrorClass",
    "Failure",
    "JobFailed",
    "ConnectPhase",
    "DcScope",
    "MtpooldError",
    "ProtocolViolation",
    "ProxyUnavailable",
    "REDACTED",
    "RateClassBlocked",
    "leaves",
    "redact",
]


#: Whom a ``*_MIGRATE_N`` answer is about (see `Failure.dc_scope`).
DcScope = Literal["account", "call"]


class ErrorClass(enum.Enum):
    """What kind of failure a job or call met. ``value == name``, a string (wire format)."""

    # produced by classify()
    FLOOD_WAIT = "FLOOD_WAIT"
    PEER_FLOOD = "PEER_FLOOD"
    STREAM_CLOSED = "STREAM_CLOSED"
    PROXY_UNAVAILABLE = "PROXY_UNAVAILABLE"
    SESSION_REVOKED = "SESSION_REVOKED"
    PEER_NOT_FOUND = "PEER_NOT_FOUND"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    GENERIC = "GENERIC"
    #: the MTProto stream itself misbehaved (resend/salt storm past the wire governor's
    #: ceilings, a security/decryption error): the connection is replaced, the account rests
    #: briefly, the proxy and the other accounts are left alone
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    #: Telegram froze or restricted the account (FROZEN_METHOD_INVALID & co.): disabled
    ACCOUNT_RESTRICTED = "ACCOUNT_RESTRICTED"
    #: a ``*_MIGRATE`` answer the pool cannot follow for this call: final, precise
    WRONG_DC = "WRONG_DC"
    #: a reply this Telethon's TL layer cannot parse (TypeNotFoundError): final, not rerouted
    UNSUPPORTED_REPLY = "UNSUPPORTED_REPLY"
    # produced by the pool (INVALID_ARGUMENT also by classify: Telegram's 400 about the
    # request itself, and a value out of its TL type's range)
    NO_ACCOUNT_AVAILABLE = "NO_ACCOUNT_AVAILABLE"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    CANCELLED = "CANCELLED"


@attrs.frozen
class Failure:
    """What `mtpoold._classify.classify` makes of one exception.

    Attributes:
        error_class: The class the policy acts on.
        message: Short human-readable description, redacted (never a secret, see `redact`).
        retry_after_s: Seconds the server asked us to wait (FLOOD_WAIT), else None.
        rpc_code: Telegram's RPC error code (420, 400, 401, ...) for RPC errors, else None.
        rpc_name: Telegram's RPC error message, e.g. ``"FLOOD_WAIT_37"`` or
            ``"AUTH_KEY_UNREGISTERED"``, for RPC errors, else None.
        dc_id: WRONG_DC only: the DC Telegram named in its ``*_MIGRATE_N`` answer (N), else
            None.
        dc_scope: WRONG_DC only, else None: ``"account"`` for USER_/PHONE_/NETWORK_MIGRATE
            (the account lives on DC ``dc_id``: for an authorized session its session points
            at the wrong DC), ``"call"`` for FILE_/STATS_MIGRATE and any other ``*_MIGRATE_N``
            (this one call must be made on DC ``dc_id``; mtpoold holds one DC connection per
            account).
    """

    error_class: ErrorClass
    message: str
    retry_after_s: float | None = None
    rpc_code: int | None = None
    rpc_name: str | None = None
    dc_id: int | None = None
    dc_scope: DcScope | None = None
    tl_name: str | None = None


class MtpooldError(Exception):
    """Base class of every exception mtpoold raises on purpose."""


class ConfigError(MtpooldError):
    """The configuration is invalid.

    Attributes:
        problems: One line per problem, ``"key.path: reason"``, in the order found. All problems
            of a config are collected before this is raised, not only the first.
    """

    problems: tuple[str, ...]

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(*self.problems)

    def __str__(self) -> str:
        n = len(self.problems)
        if n == 1:
            return f"invalid config: {self.problems[0]}"
        lines = "\n".join(f"  {p}" for p in self.problems)
        return f"invalid config, {n} problems:\n{lines}"


class JobFailed(MtpooldError):
    """A job failed for good (after retries, or with a final error).

    Args:
        error_class: Why, as an `ErrorClass`.
        message: Short redacted description.
        retry_after_s: When it makes sense to try again, in seconds from now (for
            NO_ACCOUNT_AVAILABLE: until the earliest account could serve), else None.
        account: Id of the account that served the last attempt, if any.
        attempts: How many calls were made for the job.
    """

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        retry_after_s: float | None = None,
        account: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(error_class, message)
        self.error_class = error_class
        self.message = message
        self.retry_after_s = retry_after_s
        self.account = account
        self.attempts = attempts

    def __str__(self) -> str:
        details = []
        if self.account is not None:
            details.append(f"account {self.account}")
        if self.attempts:
            details.append(f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        if self.retry_after_s is not None:
            details.append(f"retry after {self.retry_after_s:g} s")
        tail = f" ({', '.join(details)})" if details else ""
        return f"{self.error_class.value}: {self.message}{tail}"

    def __repr__(self) -> str:
        return (
            f"JobFailed({self.error_class!s}, {self.message!r},"
            f" retry_after_s={self.retry_after_s!r}, account={self.account!r},"
            f" attempts={self.attempts!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:  # keep keyword-only fields through pickling
        return (
            _rebuild_job_failed,
            (self.error_class, self.message, self.retry_after_s, self.account, self.attempts),
        )


def _rebuild_job_failed(
    error_class: ErrorClass,
    message: str,
    retry_after_s: float | None,
    account: str | None,
    attempts: int,
) -> JobFailed:
    return JobFailed(
        error_class, message, retry_after_s=retry_after_s, account=account, attempts=attempts
    )


class RateClassBlocked(MtpooldError):
    """The request guard refused a request before it went on the wire: its (account, rate
    class) is cooling down after a FLOOD_WAIT, or out of budget. Like ``ProxyCoolingDown`` it
    is *not an attempt*: nothing was sent; the pool schedules the job again elsewhere.

    Attributes:
        account: The account id.
        rate_class: The class of the refused request (`mtpoold._rateclass`).
        tl_name: The refused TL function.
        retry_after_s: Seconds until the class is free again for this account.
        reason: ``"flood"`` (a FLOOD_WAIT cooldown) or ``"budget"`` (a window is spent).
    """

    def __init__(
        self,
        account: str,
        rate_class: str,
        tl_name: str,
        retry_after_s: float,
        reason: Literal["flood", "budget"],
    ) -> None:
        super().__init__(
            f"account {account}: rate class {rate_class} is"
            f" {'cooling down' if reason == 'flood' else 'out of budget'} for"
            f" {retry_after_s:.1f} s ({tl_name} not sent)"
        )
        self.account = account
        self.rate_class = rate_class
        self.tl_name = tl_name
        self.retry_after_s = retry_after_s
        self.reason: Literal["flood", "budget"] = reason


# --- faults the connection layer detects (raised by mtpoold._wire, read by classify) ----------


class ConnectPhase(enum.Enum):
    """How far one connection got; decides who is blamed for its failure.

    See the table "Connection phases and blame" in ``docs/ARCHITECTURE.md``.
    """

    #: TCP connect to the proxy (to the DC itself on the direct lane)
    PROXY_TCP = "proxy_tcp"
    #: SOCKS5/SOCKS4/HTTP CONNECT handshake, or the MTProxy obfuscation header
    PROXY_HANDSHAKE = "proxy_handshake"
    #: the tunnel is up and the first MTProto bytes went out; the DC has not answered yet
    DC_FIRST_BYTES = "dc_first_bytes"
    #: the DC has answered on this connection: auth key, initConnection, calls
    DC_ANSWERED = "dc_answered"


class StartMissed(Exception):
    """A connect would open its TCP connection later than its start slot allows, so it did not:
    nothing was sent through the proxy.

    Raised by the monitored connection just before the socket opens when
    `WireMonitor.open_by` has passed (cluster mode: the start's window,
    `mtpoold._startwindow`, after the earliest instant its Redis slot can have been; a busy
    or frozen node reaches the socket late, and the relay would count its first bytes too
    close to the next node's start). Not a
    failure of the account or the proxy: the account takes another slot
    (`mtpoold._account`).

    Args:
        late_s: How far past ``open_by`` the open would have gone, seconds.
    """

    def __init__(self, late_s: float) -> None:
        super().__init__(f"connect reached the socket {late_s * 1000:.1f} ms past its start slot")
        self.late_s = late_s


class ProxyUnavailable(ConnectionError):
    """A connection failed before the DC ever answered on it: the proxy's fault.

    Classified PROXY_UNAVAILABLE (proxy cooldown with backoff; the account is not blamed).

    Args:
        proxy: The proxy's name, or None for the direct lane (the host's own address: the
            failure is its network's or the DC address's, still not the account's); never a
            secret.
        phase: The phase the connection was in (never `ConnectPhase.DC_ANSWERED`).
        detail: What happened, one redacted sentence fragment, e.g. ``"closed the connection
            after 64 bytes"``.
    """

    def __init__(self, proxy: str | None, phase: ConnectPhase, detail: str) -> None:
        self.proxy = proxy
        self.phase = phase
        self.detail = detail
        who = f"proxy {proxy}" if proxy is not None else "the DC's address (direct, no proxy)"
        super().__init__(f"{who} {detail} ({phase.value}, before the DC answered)")


class ProtocolViolation(ConnectionError):
    """The MTProto stream of one connection misbehaved: classified PROTOCOL_ERROR.

    Raised by the wire governor (more messages on the wire than its ceilings allow, e.g.
    ``"412 messages in 1 s after bad_server_salt"``) and when Telethon reports a security or
    decryption error for the connection.

    Args:
        detail: What happened, redacted, one line.
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions of ``exc`` with every exception group flattened (``[exc]`` for a plain
    one), in order: what a nursery's ``ExceptionGroup`` really carries."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


# --- redaction ------------------------------------------------------------------------------------

REDACTED: Final = "[redacted]"  # what a secret is replaced with
MAX_MESSAGE_CHARS: Final = 300  # characters kept of an exception's text in a Failure
MIN_SECRET_CHARS: Final = 4  # shorter "secrets" can't be told apart from ordinary text
_MIN_HEX_TOKEN_CHARS: Final = 32  # an api_hash is 32 hex digits
_MIN_B64_TOKEN_CHARS: Final = 40  # a StringSession is ~350 chars, an auth key 344
# A maximal run of base64/base64url alphabet characters plus optional padding. Whether a run is
# a secret is decided in _looks_secret, so that long identifiers and paths are left alone.
_TOKEN_RE: Final = re.compile(rf"[A-Za-z0-9+/_-]{{{_MIN_HEX_TOKEN_CHARS},}}={{0,2}}")
_HEX_RE: Final = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")


# A bytes repr, ``b'...'`` / ``b"..."`` (also inside ``bytearray(...)``), possibly cut off at the
# end of the text. Reply bytes are a TL-serialized answer: names, phone numbers, message text.
_BYTES_REPR_RE: Final = re.compile(
    r"""(?<![A-Za-z0-9_])[bB]'(?:[^'\\]|\\.)*(?:'(?![A-Za-z0-9_])|\\?$)"""
    r"""|(?<![A-Za-z0-9_])[bB]"(?:[^"\\]|\\.)*(?:"(?![A-Za-z0-9_])|\\?$)""",
    re.DOTALL,
)


def _bytes_placeholder(match: re.Match[str]) -> str:
    try:
        value = ast.literal_eval(match.group())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return "<bytes>"  # cut off: the length is unknown
    return f"<{len(value)} bytes>" if isinstance(value, bytes) else "<bytes>"


def _looks_secret(token: str) -> bool:
    core = token.rstrip("=")
    if _HEX_RE.fullmatch(core):
        digits = core[2:] if core[:2] in ("0x", "0X") else core
        return len(digits) >= _MIN_HEX_TOKEN_CHARS
    if len(core) < _MIN_B64_TOKEN_CHARS:
        return False
    # Random base64 mixes cases and digits; identifiers, words and most paths do not.
    return (
        any(c.isdigit() for c in core)
        and any(c.isupper() for c in core)
        and any(c.islower() for c in core)
    )


def redact(
    text: str, secrets: Iterable[str | None] = (), *, limit: int | None = MAX_MESSAGE_CHARS
) -> str:
    """Replace secrets in ``text`` with ``"[redacted]"``, make it one line and shorten it.

    Three passes: first every known secret (longest first, so one secret containing another is
    removed whole; None, and strings shorter than `MIN_SECRET_CHARS`, are skipped); then every
    bytes repr (``b'...'``, ``b"..."``, also one cut off at the end) becomes ``<N bytes>``
    (``<bytes>`` when cut off): raw bytes in an exception's text are usually a Telegram reply,
    i.e. personal data (names, phone numbers, message text); then anything that looks like key
    material even if nobody named it: runs of at least 32 hex digits (optionally
    ``0x``-prefixed: api_hash, MTProxy secrets) and runs of at least 40 base64/base64url
    characters that mix upper case, lower case and digits (session strings, auth keys,
    tokens). Long identifiers, words and paths are left alone.

    Args:
        text: Text that may contain secrets (an exception message, a log line).
        secrets: Known secret values: api_hash, proxy passwords, session strings.
        limit: Maximum length of the result in characters (ending in ``…`` when cut), or
            None for no limit.

    Returns:
        The redacted text, on one line.
    """
    known = sorted(
        {s for s in secrets if s is not None and len(s) >= MIN_SECRET_CHARS},
        key=len,
        reverse=True,
    )
    for secret in known:
        text = text.replace(secret, REDACTED)
    text = _BYTES_REPR_RE.sub(_bytes_placeholder, text)
    out = _TOKEN_RE.sub(lambda m: REDACTED if _looks_secret(m.group()) else m.group(), text)
    out = " ".join(out.split())  # one line
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + "…"
    return out
