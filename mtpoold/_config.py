"""The daemon's configuration: a TOML file loaded into frozen attrs classes.

Loading is ``tomllib`` -> cattrs (`cattrs.preconf.tomllib`, ``forbid_extra_keys=True``, detailed
validation) -> attrs validators -> cross-checks between tables. A large file is read by
``rtoml`` first (`parse_toml`), which is about 7x faster; whatever it refuses is read again
by ``tomllib``, so the document and every error message are tomllib's. Every problem found
is reported, not only the first, as one line ``"key.path: reason"`` in `ConfigError.problems`:

    proxies[0].port: expected an integer 1..65535, got "80a"
    accounts[0].apihash: unknown key
    accounts[1].api_hash: missing
    accounts[2].proxy: no proxy named "nl-2"

Secrets (``api_hash``, ``password``, ``secret``, ``session_string``) never appear in a repr, a
str or a problem line: problems describe them (``got a string of 7 characters``).

Relative paths (``session``, PEM files in ``rsa_keys``, ``daemon.state_dir``) are relative to
the directory of the config file; `parse_config` makes them absolute.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args

import attrs
import cattrs.preconf.tomllib

from ._errors import ConfigError
from ._gcpause import gc_paused
from ._listen import DEFAULT_LISTEN, ListenAddressError, parse_listen
from ._sessionfiles import SESSION_SUFFIX, session_file_path
from ._validation import EXPECT as _EXPECT
from ._validation import FAILED as _FAILED
from ._validation import SECRET as _SECRET
from ._validation import TOML, Structurer, did_you_mean, in_document_order
from ._validation import FieldProblem as _FieldProblem
from ._validation import attrs_class_of as _attrs_class_of
from ._validation import join as _join

__all__ = [
    "AccountConfig",
    "ClusterConfig",
    "Config",
    "DaemonConfig",
    "MetricsConfig",
    "PolicyConfig",
    "ProxyConfig",
    "ProxyType",
    "TelegramConfig",
    "TelegramOverrides",
    "load_config",
    "parse_config",
    "proxy_key",
]

ProxyType = Literal["socks5", "socks4", "http", "mtproxy"]
#: `proxy_key` of the direct lane (accounts with no proxy).
NO_PROXY: Final = "no_proxy"
SESSION_SOURCES: Final = ("session", "session_string", "session_string_env", "session_credential")

# The problem-path engine (`mtpoold._validation`) in the config file's dialect. The names
# below are the ones this module's validators and structuring use (and other modules' config
# classes may import): field metadata `_SECRET` (never echoed) and `_EXPECT` (what a type
# error says was expected), `_FieldProblem` raised by validators, `_show` for a value.
_DOCUMENT: Final = Structurer(TOML, cattrs.preconf.tomllib.make_converter)
converter: Final = _DOCUMENT.converter
"""The cattrs converter of the config classes (strict types, unknown keys refused)."""
_problems_from: Final = _DOCUMENT.problems_from
_validation_problems: Final = _DOCUMENT.validation_problems


def _show(value: object, *, secret: bool = False) -> str:
    """Describe a TOML value for a problem line (strings JSON-quoted; secrets never shown)."""
    return TOML.show(value, secret=secret)


# --- validators (invariants of the classes; messages are the problem lines) -----------------------


def _at_least(
    minimum: float, *, integer: bool = False
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    what = "an integer" if integer else "a number"

    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise _FieldProblem(
                attr.name, f"expected a finite number >= {minimum:g}, got {_show(value)}"
            )
        if value < minimum:
            raise _FieldProblem(attr.name, f"expected {what} >= {minimum:g}, got {_show(value)}")

    return check


def _positive(_inst: Any, attr: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, float) and math.isinf(value):  # TOML's inf: no deadline, no timeout
        raise _FieldProblem(attr.name, f"expected a finite number > 0, got {_show(value)}")
    if not value > 0:  # NaN too
        raise _FieldProblem(attr.name, f"expected a number > 0, got {_show(value)}")


def _port(_inst: Any, attr: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 65535:
        raise _FieldProblem(attr.name, f"expected an integer 1..65535, got {_show(value)}")


_LABEL: Final = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
#: A DNS name (RFC 1123 labels; "_" too, as in container names), an optional final dot.
_HOST_NAME_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")  # fullmatch


def _host_problem(value: str) -> str | None:
    """Why ``value`` is not a host name or IP address, or None if it is one."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    try:
        ascii_name = value.encode("idna").decode("ascii") if not value.isascii() else value
    except UnicodeError:
        ascii_name = ""
    last = ascii_name.rstrip(".").rsplit(".", 1)[-1]
    if len(ascii_name) <= 253 and _HOST_NAME_RE.fullmatch(ascii_name) and not last.isdigit():
        return None
    hint = ""
    if "://" in value:
        hint = " (the host alone: no scheme)"
    elif value.startswith("[") and value.endswith("]"):
        hint = " (an IPv6 address without brackets)"
    elif re.fullmatch(r"[^:\s]+:[0-9]+", value):
        hint = " (the port goes in port)"
    return f"expected a host name or an IP address, got {_show(value)}{hint}"


def _host(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    """A proxy's ``host``: an IPv4/IPv6 address (no brackets) or a DNS name, as the proxy
    clients (python-socks, Telethon's MTProxy) take it; a scheme, a port, brackets or spaces
    would only fail at connect time, as a cooling proxy (shared case 004's kind)."""
    if (problem := _host_problem(value)) is not None:
        raise _FieldProblem(attr.name, problem)


def _optional_port(inst: Any, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None:
        _port(inst, attr, value)


def _non_empty(_inst: Any, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.strip():
        raise _FieldProblem(attr.name, 'expected a non-empty string, got ""')


_positive_integer: Final = _at_least(1, integer=True)
#: Largest ``api_id``: MTProto's ``initConnection`` carries it as an ``int`` (32 bits).
API_ID_MAX: Final = 2**31 - 1


def _api_id(inst: Any, attr: attrs.Attribute[Any], value: int) -> None:
    _positive_integer(inst, attr, value)
    if value > API_ID_MAX:
        raise _FieldProblem(
            attr.name, f"expected an integer 1..{API_ID_MAX} (MTProto's int), got {_show(value)}"
        )


def _file_path(inst: Any, attr: attrs.Attribute[Any], value: str | None) -> None:
    _non_empty(inst, attr, value)
    if value is not None and "\x00" in value:  # valid TOML ("\u0000"), no file's name
        raise _FieldProblem(attr.name, "a path cannot hold a NUL character (\\u0000)")


_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]*")  # fullmatch


def _identifier(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    if not _ID_RE.fullmatch(value):
        raise _FieldProblem(
            attr.name,
            "expected letters, digits and _ . @ : - (not starting with a symbol),"
            f" got {_show(value)}",
        )


def _proxy_type(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    allowed = get_args(ProxyType)
    if value not in allowed:
        names = ", ".join(json.dumps(a) for a in allowed)
        raise _FieldProblem(attr.name, f"expected one of {names}, got {_show(value)}")


# An MTProxy secret is 16 bytes, written as 32 hex digits; a "dd" prefix asks for random
# padding (Telethon's ConnectionTcpMTProxyRandomizedIntermediate pads anyway). Telethon's
# TcpMTProxy.normalize_secret strips "ee"/"dd" case-sensitively and falls back to base64 for
# anything that is not hex, so "DD…", "0x…" or a short secret would silently become another
# secret: refuse them here (shared case 004-mtproxy-secret-validation).
_MTPROXY_SECRET_RE: Final = re.compile(r"(?:dd)?[0-9a-f]{32}", re.IGNORECASE)  # fullmatch
_MTPROXY_SECRET_RULE: Final = (
    'expected 32 hexadecimal characters, optionally prefixed "dd" (any case)'
)


def _lower(value: Any) -> Any:
    """Converter of `ProxyConfig.secret`: stored in lower case (hex is case-insensitive)."""
    return value.lower() if isinstance(value, str) else value


def _mtproxy_secret(inst: ProxyConfig, attr: attrs.Attribute[Any], value: str | None) -> None:
    if inst.type != "mtproxy":
        return
    if not value:
        raise _FieldProblem(attr.name, 'missing (required when type = "mtproxy")')
    if _MTPROXY_SECRET_RE.fullmatch(value):
        return
    got = _show(value, secret=True)
    lower = value.lower()
    if lower.startswith("ee") and len(lower) >= 34 and _HEX_DIGITS_RE.fullmatch(lower):
        raise _FieldProblem(
            attr.name,
            f"fake-TLS (ee…) MTProxy secrets are not supported: {_MTPROXY_SECRET_RULE}, got {got}",
        )
    if lower.startswith("0x"):
        got += ' starting with "0x" (write the hex digits alone)'
    raise _FieldProblem(attr.name, f"{_MTPROXY_SECRET_RULE}, got {got}")


_HEX_DIGITS_RE: Final = re.compile(r"[0-9a-f]+")  # fullmatch


_API_HASH_RE: Final = re.compile(r"[0-9a-fA-F]{32}")  # fullmatch


def _api_hash(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    if not _API_HASH_RE.fullmatch(value):
        raise _FieldProblem(
            attr.name,
            f"expected 32 hexadecimal characters, got {_show(value, secret=True)}",
        )


_ENV_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch


def _env_name(_inst: Any, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _ENV_RE.fullmatch(value):
        raise _FieldProblem(attr.name, f"expected an environment variable name, got {_show(value)}")


def _file_name(_inst: Any, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not value or "/" in value or value in (".", "..")):
        raise _FieldProblem(
            attr.name, f"expected a file name inside $CREDENTIALS_DIRECTORY, got {_show(value)}"
        )


def _one_session_source(inst: AccountConfig, attr: attrs.Attribute[Any], _value: Any) -> None:
    given = [name for name in SESSION_SOURCES if getattr(inst, name) is not None]
    if len(given) != 1:
        raise _FieldProblem(
            "",
            f"expected exactly one of {', '.join(SESSION_SOURCES)}, "
            f"got {', '.join(given) if given else 'none'}",
        )


def _listen(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    try:  # the server's own parser
        parse_listen(value, allow_port_zero=False)
    except ListenAddressError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        raise _FieldProblem(
            attr.name, f'expected "host:port" or "unix:/path", got {_show(value)}{hint}'
        ) from None


def _backoff(_inst: Any, attr: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    if not value:
        raise _FieldProblem(attr.name, "expected at least one delay, got an empty array")
    for i, v in enumerate(value):
        if isinstance(v, float) and not math.isfinite(v):
            raise _FieldProblem(
                f"{attr.name}[{i}]", f"expected a finite number >= 0, got {_show(v)}"
            )
        if v < 0:
            raise _FieldProblem(f"{attr.name}[{i}]", f"expected a number >= 0, got {_show(v)}")


def _not_below_min(inst: PolicyConfig, attr: attrs.Attribute[Any], value: float) -> None:
    if value < inst.proxy_cooldown_min_s:
        raise _FieldProblem(
            attr.name,
            f"expected a number >= proxy_cooldown_min_s ({inst.proxy_cooldown_min_s:g}),"
            f" got {_show(value)}",
        )


def _allow_methods(_inst: Any, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        return  # the default: nothing to look up, and a default config needs no Telethon
    from ._tljson import check_allow_methods  # imports Telethon's TL tables: only when used

    problems = check_allow_methods(value)
    if problems:
        index, _, reason = problems[0].partition(": ")
        raise _FieldProblem(f"{attr.name}{index}", reason)


def _secret_field(**kwargs: Any) -> Any:
    """A field whose value is never shown: not in repr, not in problems."""
    return attrs.field(repr=False, metadata={_SECRET: True}, **kwargs)


# --- config classes -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ProxyConfig:
    """One proxy, ``[[proxies]]``. Accounts refer to it by ``name``.

    Attributes:
        name: Unique name, referenced by `AccountConfig.proxy`.
        type: ``"socks5"``, ``"socks4"``, ``"http"`` or ``"mtproxy"``.
        host: Proxy host name or IP address (IPv6 without brackets; no scheme, no port).
        port: Proxy TCP port, 1..65535.
        username: Proxy user, if it needs authentication.
        password: Proxy password (secret: never shown).
        secret: MTProxy secret (secret: never shown); required for ``type = "mtproxy"``:
            exactly 32 hex digits, optionally prefixed ``dd``, in any case; stored in lower
            case. Anything else (``0x…``, base64, fake-TLS ``ee…``, the wrong length) is a
            config problem: Telethon would silently read another secret from it.
        rdns: Let the proxy resolve host names (SOCKS).
        capacity: Calls in flight through this proxy at once, >= 1.
        interval_s: Minimum time between two call starts on this proxy, in seconds, >= 0
            (kept exactly as written: 0.5 and 1.5 stay 0.5 and 1.5).
    """

    name: str = attrs.field(validator=[_non_empty, _identifier])
    type: ProxyType = attrs.field(validator=_proxy_type)
    host: str = attrs.field(validator=[_non_empty, _host])
    port: int = attrs.field(validator=_port, metadata={_EXPECT: "an integer 1..65535"})
    username: str | None = None
    password: str | None = _secret_field(default=None)
    secret: str | None = _secret_field(default=None, converter=_lower, validator=_mtproxy_secret)
    rdns: bool = True
    capacity: int = attrs.field(default=1, validator=_at_least(1, integer=True))
    interval_s: float = attrs.field(default=2.0, validator=_at_least(0))


@attrs.frozen(kw_only=True)
class TelegramConfig:
    """The Telegram server the accounts talk to: ``[telegram]``, overridable per account.

    Attributes:
        dc_id: Data-centre id of the first connection, >= 1.
        dc_host: Host (IP) of that DC; None for Telethon's built-in production/test address.
        dc_port: TCP port of that DC, 1..65535.
        test_mode: Use Telegram's test servers.
        rsa_keys: Extra server RSA public keys, PEM text. In the file an entry may also be the
            path of a PEM file (relative to the config file); `parse_config` reads it.
        connect_timeout_s: Timeout of one connect (TCP + proxy + handshake), seconds, > 0.
        idle_disconnect_s: Disconnect an account's client after this many idle seconds, > 0.
        wire_max_messages_per_call: The wire governor's per-call ceiling: MTProto messages
            one connection may put on the wire while one call is in flight (Telethon's
            resends, acks, pings and salt retries included), >= 1; past it the call fails
            PROTOCOL_ERROR and the connection is replaced.
        wire_max_extra_messages_per_s: The per-second ceiling: messages per second on one
            connection beyond the new requests and one ack for each (what Telethon sends on
            its own: resends, pings, service messages), >= 1.
    """

    dc_id: int = attrs.field(default=2, validator=_at_least(1, integer=True))
    dc_host: str | None = attrs.field(default=None, validator=_non_empty)
    dc_port: int = attrs.field(
        default=443, validator=_port, metadata={_EXPECT: "an integer 1..65535"}
    )
    test_mode: bool = False
    rsa_keys: tuple[str, ...] = ()
    connect_timeout_s: float = attrs.field(default=20.0, validator=_positive)
    idle_disconnect_s: float = attrs.field(default=300.0, validator=_positive)
    wire_max_messages_per_call: int = attrs.field(default=32, validator=_at_least(1, integer=True))
    wire_max_extra_messages_per_s: int = attrs.field(
        default=20, validator=_at_least(1, integer=True)
    )


@attrs.frozen(kw_only=True)
class TelegramOverrides:
    """Per-account ``[accounts.telegram]``: any `TelegramConfig` key; None = use the global one."""

    dc_id: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least(1, integer=True))
    )
    dc_host: str | None = attrs.field(default=None, validator=_non_empty)
    dc_port: int | None = attrs.field(
        default=None, validator=_optional_port, metadata={_EXPECT: "an integer 1..65535"}
    )
    test_mode: bool | None = None
    rsa_keys: tuple[str, ...] | None = None
    connect_timeout_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    idle_disconnect_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    wire_max_messages_per_call: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least(1, integer=True))
    )
    wire_max_extra_messages_per_s: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least(1, integer=True))
    )


@attrs.frozen(kw_only=True)
class AccountConfig:
    """One Telegram user account, ``[[accounts]]``.

    Exactly one of ``session``, ``session_string``, ``session_string_env``,
    ``session_credential`` must be given.

    Attributes:
        id: Unique account id (letters, digits, ``_ . @ : -``).
        api_id: Telegram API id, 1..`API_ID_MAX` (MTProto carries it as a 32-bit int).
        api_hash: Telegram API hash, 32 hex characters (secret: never shown).
        session: Path of a Telethon ``.session`` file (absolute after `parse_config`).
        session_string: Telethon StringSession text (secret: never shown).
        session_string_env: Name of an environment variable holding a StringSession.
        session_credential: File name in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``)
            holding a StringSession.
        proxy: `ProxyConfig.name` to connect through; None connects directly.
        device_model, system_version, app_version, lang_code, system_lang_code: initConnection
            parameters; None keeps Telethon's defaults.
        tags: Free labels; jobs may ask for accounts with given tags.
        telegram: Per-account overrides of ``[telegram]``.
    """

    id: str = attrs.field(validator=[_non_empty, _identifier])
    api_id: int = attrs.field(validator=_api_id)
    api_hash: str = _secret_field(validator=_api_hash)
    session: str | None = attrs.field(default=None, validator=_file_path)
    session_string: str | None = _secret_field(default=None, validator=_non_empty)
    session_string_env: str | None = attrs.field(default=None, validator=_env_name)
    session_credential: str | None = attrs.field(
        default=None, validator=[_file_name, _one_session_source]
    )
    proxy: str | None = None
    device_model: str | None = None
    system_version: str | None = None
    app_version: str | None = None
    lang_code: str | None = None
    system_lang_code: str | None = None
    tags: tuple[str, ...] = ()
    telegram: TelegramOverrides | None = None


@attrs.frozen(kw_only=True)
class PolicyConfig:
    """What to do about failures, ``[policy]`` (see `mtpoold._policy.decide`).

    Attributes:
        call_deadline_s: Deadline of one call on one account, seconds, > 0.
        job_deadline_s: Default deadline of a whole job (all attempts), seconds, > 0.
        max_attempts: Calls per job at most, >= 1.
        backoff_s: Delay before retry number n (GENERIC errors), seconds; the last entry
            repeats. Non-empty, each >= 0.
        stream_closed_cooldown_s: Account cooldown after a dropped connection, seconds.
        peer_flood_cooldown_s: Account cooldown after PEER_FLOOD, seconds (24 h).
        proxy_cooldown_min_s: First proxy cooldown when a proxy is unreachable, seconds;
            doubles per consecutive failure...
        proxy_cooldown_max_s: ...up to this, seconds (>= proxy_cooldown_min_s).
        generic_cooldown_s: Account cooldown after any other error, seconds.
        protocol_error_cooldown_s: Account rest after PROTOCOL_ERROR (its connection is
            replaced), seconds.
        allow_methods: TL functions to unblock for ``invoke`` (``["auth.LogOut"]``); each must
            be on the built-in block list of `mtpoold._tljson` (functions that can destroy or
            hand over the account or its sessions), which is refused otherwise.
    """

    call_deadline_s: float = attrs.field(default=30.0, validator=_positive)
    job_deadline_s: float = attrs.field(default=180.0, validator=_positive)
    max_attempts: int = attrs.field(default=5, validator=_at_least(1, integer=True))
    backoff_s: tuple[float, ...] = attrs.field(
        default=(10.0, 30.0, 60.0, 120.0, 300.0), validator=_backoff
    )
    stream_closed_cooldown_s: float = attrs.field(default=60.0, validator=_at_least(0))
    peer_flood_cooldown_s: float = attrs.field(default=86400.0, validator=_at_least(0))
    proxy_cooldown_min_s: float = attrs.field(default=10.0, validator=_at_least(0))
    proxy_cooldown_max_s: float = attrs.field(
        default=600.0, validator=[_at_least(0), _not_below_min]
    )
    generic_cooldown_s: float = attrs.field(default=0.0, validator=_at_least(0))
    protocol_error_cooldown_s: float = attrs.field(default=5.0, validator=_at_least(0))
    allow_methods: tuple[str, ...] = attrs.field(default=(), validator=_allow_methods)


@attrs.frozen(kw_only=True)
class DirectConfig:
    """The lane of accounts with no proxy (``[direct]``): the host's own address.

    Telegram rate-limits the host's address like a proxy's, so direct accounts share one
    lane, gated like a proxy. Attributes as in `ProxyConfig`:

    Attributes:
        capacity: Direct calls in flight at once, >= 1.
        interval_s: Minimum time between two direct call starts, in seconds, >= 0 (0: no
            gate and no jitter). Default 2.0 (provenance: docs/ARCHITECTURE.md, "Where the
            PHP system's numbers went").
    """

    capacity: int = attrs.field(default=1, validator=_at_least(1, integer=True))
    interval_s: float = attrs.field(default=2.0, validator=_at_least(0))


def _fraction(_inst: Any, attr: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= 1:
        raise _FieldProblem(attr.name, f"expected a number > 0 and <= 1, got {_show(value)}")


def _optional_limit(_inst: Any, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise _FieldProblem(
            attr.name, f"expected an integer >= 0 (0: no limit), got {_show(value)}"
        )


def _function_names(_inst: Any, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for i, name in enumerate(value):
        if not name.strip():
            raise _FieldProblem(f"{attr.name}[{i}]", 'expected a TL function name, got ""')


@attrs.frozen(kw_only=True)
class RateClassConfig:
    """One ``[rate_classes.NAME]`` table: changes a shipped rate class or adds one
    (`mtpoold._rateclass`; the shipped ones and their sources are listed there).

    Attributes:
        name: The class (the table's key): ``resolve``, ``read``, ``full_info``, ``join``,
            ``send``, ``other``, or a new one.
        functions: TL functions moved into this class, as ``invoke`` spells them
            (``"contacts.resolveUsername"``).
        per_minute: At most this many requests of the class per account per 60 s; 0: no
            limit; absent: the shipped limit.
        per_hour: The same per 3600 s.
        per_day: The same per 86400 s.
    """

    name: str = attrs.field(validator=_identifier)
    functions: tuple[str, ...] = attrs.field(default=(), validator=_function_names)
    per_minute: int | None = attrs.field(default=None, validator=_optional_limit)
    per_hour: int | None = attrs.field(default=None, validator=_optional_limit)
    per_day: int | None = attrs.field(default=None, validator=_optional_limit)


@attrs.frozen(kw_only=True)
class EconomyConfig:
    """How the pool saves Telegram requests and account standing, ``[economy]``.

    Each switch turned off gives the behaviour from before it existed, which is what the
    ``economy`` benchmark compares against (``bench/economy.py``).

    Attributes:
        flood_scopes: A FLOOD_WAIT cools the (account, rate class) it came from; off: it cools
            the whole account.
        budgets: Per-account, per-rate-class request budgets are enforced; off: none.
        warmup_days: An account new to the pool gets a fraction of each budget for this many
            days, growing linearly to all of it (0: no warm-up), >= 0. Default 3. When the
            pool first saw an account is kept in the state store (without one: since the
            pool opened).
        warmup_start: The fraction of each budget a brand-new account gets, > 0 and <= 1
            (budgets never drop below 1 request per window). Default 0.5.
        peer_memory: Every account's resolved peers (id, access hash, username) are kept in
            the state store and used instead of a look-up; off: only Telethon's session cache.
        route_by_knowledge: Among accounts that can serve a job now, prefer one that already
            knows its peer; off: least recently used only.
        knower_wait_s: With ``route_by_knowledge``: how long a job whose peer's knowers are
            all busy waits for one before it takes an account that must look the peer up,
            seconds, >= 0 (0: it never waits; a job whose deadline comes first does not
            wait). Default 2: one start of a shipped lane (``interval_s`` 2 s) — a busy
            knower is usually free again after its call, and a look-up spends
            ResolveUsername, the scarcest budget (50 an hour); a knower busy for longer is
            congested, and the peer spreads to a second account (one look-up, remembered).
        share_identical: Identical read-only jobs in flight share one Telegram call; off: each
            job makes its own.
        merge_get_messages: ``get_messages`` jobs for the same chat waiting for an account
            ride in one call (at most 100 ids); off: one call each.
    """

    flood_scopes: bool = True
    budgets: bool = True
    warmup_days: float = attrs.field(default=3.0, validator=_at_least(0))
    warmup_start: float = attrs.field(default=0.5, validator=_fraction)
    peer_memory: bool = True
    route_by_knowledge: bool = True
    knower_wait_s: float = attrs.field(default=2.0, validator=_at_least(0))
    share_identical: bool = True
    merge_get_messages: bool = True


@attrs.frozen(kw_only=True)
class DaemonConfig:
    """The daemon itself, ``[daemon]``.

    Attributes:
        listen: ``"host:port"`` (IPv6 as ``"[::1]:8765"``) or ``"unix:/path/to/socket"``.
        state_dir: Directory of the state database (absolute after `parse_config`).
        allowed_origins: Websocket Origin headers accepted; empty accepts clients that send none.
        max_frame_bytes: Largest websocket message accepted, bytes, >= 1.
        max_in_flight: Replies one connection may be owed, >= 1.

    ``max_frame_bytes`` and ``max_in_flight`` are the limits of one connection; the rules are
    `mtpoold._server`'s module docstring.
        shutdown_grace_s: Time running jobs get to finish on shutdown, seconds, >= 0.
    """

    listen: str = attrs.field(default=DEFAULT_LISTEN, validator=_listen)
    state_dir: str = attrs.field(default="./state", validator=_file_path)
    allowed_origins: tuple[str, ...] = ()
    max_frame_bytes: int = attrs.field(default=1048576, validator=_at_least(1, integer=True))
    max_in_flight: int = attrs.field(default=1000, validator=_at_least(1, integer=True))
    shutdown_grace_s: float = attrs.field(default=10.0, validator=_at_least(0))


def _tcp_listen(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    try:  # the same parser as daemon.listen; Prometheus scrapes TCP only
        parsed = parse_listen(value, allow_port_zero=False)
    except ListenAddressError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        raise _FieldProblem(attr.name, f'expected "host:port", got {_show(value)}{hint}') from None
    if parsed.path is not None:
        raise _FieldProblem(
            attr.name, f'expected "host:port" (Prometheus scrapes TCP), got {_show(value)}'
        )


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """The Prometheus endpoint, ``[metrics]``; absent: no endpoint. Applies at start (a reload
    that changes it says so and keeps the running one, like ``[daemon]``).

    ``GET /metrics`` on ``listen`` answers the text exposition of `mtpoold._metrics`; it takes
    no token (scrapers send none) and shows ids and counts only, never secrets, phones or
    names, so its default is loopback (`mtpoold._metrics`' module docstring says why).

    Attributes:
        listen: ``"host:port"`` (IPv6 as ``"[::1]:9464"``); a unix socket is refused. 9464 is
            the port OpenTelemetry's Prometheus exporter took in Prometheus' port list.
        per_account: Also export per-account series (state, cooldown, calls), one set per
            account: off by default, since a fleet of thousands of accounts makes thousands
            of series per family; the aggregates (by state, lane, class) are always there.
    """

    listen: str = attrs.field(default="127.0.0.1:9464", validator=_tcp_listen)
    per_account: bool = False


_REDIS_URL_RE: Final = re.compile(r"(?:redis|rediss)://[^/?#\s]+(?:/\d+)?|unix:///\S+")


def _redis_url(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _REDIS_URL_RE.fullmatch(value):
        raise _FieldProblem(
            attr.name,
            'expected "redis://host:port[/db]" or "unix:///path/to/redis.sock", got '
            + _show(value if "@" not in str(value) else "<a URL with credentials>"),
        )
    netloc = value.split("://", 1)[1].split("/", 1)[0]
    if "@" in netloc:
        raise _FieldProblem(
            attr.name,
            "a password in the URL is refused (it would show in logs and status): put it in"
            " password_file",
        )
    from ._redisurl import parse_redis_url  # pure: the link's own URL rules

    try:
        parse_redis_url(value)
    except ValueError as exc:  # what the link would refuse at start: a port out of range, ...
        raise _FieldProblem(attr.name, f"{exc}, got {_show(value)}") from None


def _node_name(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
        raise _FieldProblem(
            attr.name,
            "expected 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
            f", got {_show(value)}",
        )


def _default_node() -> str:
    import socket

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].strip("-.") or "node"
    return name if name[0].isalnum() else f"n{name}"[:63]


def _key_prefix(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise _FieldProblem(
            attr.name, f"expected a non-empty prefix without spaces, got {_show(value)}"
        )


def _php_prefix(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    if any(c.isspace() for c in value):
        raise _FieldProblem(attr.name, f"expected a prefix without spaces, got {_show(value)}")


def _lease_time(_inst: Any, attr: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 3 <= value <= 600:
        raise _FieldProblem(attr.name, f"expected seconds, 3..600, got {_show(value)}")


def _op_timeout(inst: Any, attr: attrs.Attribute[Any], value: float) -> None:
    lease_s = getattr(inst, "lease_s", None)
    if isinstance(lease_s, int | float) and isinstance(value, int | float):
        if value >= lease_s / 3:
            raise _FieldProblem(
                attr.name, f"expected less than lease_s / 3 ({lease_s / 3:g} s), got {_show(value)}"
            )


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """Several daemons sharing proxies, accounts and state through Redis, ``[cluster]``
    (issue 15; the design: ``docs/ARCHITECTURE.md``, "Cluster"). Absent: one node on SQLite,
    no Redis at all. Applies at start (a reload that changes it says so and keeps the
    running one, like ``[daemon]``).

    Attributes:
        redis_url: ``redis://host:port[/db]`` or ``unix:///path/to/redis.sock``; a password
            in the URL is refused (``password_file`` carries it).
        password_file: A file holding the Redis AUTH password (one line; a secret like a
            session file: tightened to 0600 with a warning if others can read it, never
            logged); absolute after `parse_config`. None: no AUTH.
        node: This node's name in the cluster (letters, digits, ``.``, ``_``, ``-``; at most
            63); default: the host name. Two live nodes must not share one.
        lease_s: Seconds an account lease lasts without a renew, 3..600 (renewed every
            ``lease_s / 3``). A killed node's accounts are served by others after at most
            ``lease_s`` (+ ``lease_s`` more if they were connected: the DC's
            ``ping_delay_disconnect``, which is ``lease_s`` too).
        key_prefix: Prefix of every Redis key (``"mtpoold:"``).
        php_keys: Migration mode: also honour the PHP system's ``tg:proxy:throttle:{proxy}``
            and ``tg:mtproto:lock:{account}`` keys.
        php_prefix: Prefix of the PHP keys (Laravel's cache prefix, e.g. ``"laravel_cache:"``).
        op_timeout_s: Seconds one Redis round trip may take before Redis counts as
            unreachable, > 0 (and below ``lease_s / 3``).
    """

    redis_url: str = attrs.field(validator=_redis_url)
    password_file: str | None = attrs.field(default=None, validator=_file_path)
    node: str = attrs.field(factory=_default_node, validator=_node_name)
    lease_s: float = attrs.field(default=15.0, validator=_lease_time)
    key_prefix: str = attrs.field(default="mtpoold:", validator=_key_prefix)
    php_keys: bool = False
    php_prefix: str = attrs.field(default="", validator=_php_prefix)
    op_timeout_s: float = attrs.field(default=1.0, validator=[_positive, _op_timeout])

    @property
    def renew_interval_s(self) -> float:
        """Seconds between the cluster task's heartbeat + renew rounds: ``lease_s / 3``."""
        return self.lease_s / 3

    @property
    def disconnect_delay_s(self) -> float:
        """The ``ping_delay_disconnect`` delay (s) the accounts' keepalive pings send: the DC
        closes a connection this long after its last ping; ``lease_s``."""
        return self.lease_s


def _cross_checks(inst: Config, attr: attrs.Attribute[Any], _value: Any) -> None:
    problems = _cross_problems(inst.proxies, inst.accounts)
    if problems:
        raise ConfigError(problems)


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration file.

    Invariants (checked on construction, reported by `parse_config`): proxy names and account
    ids are unique, no two accounts share a session file, an inline session string, a
    ``session_string_env`` variable or a ``session_credential``, every ``account.proxy`` names
    a proxy.
    """

    daemon: DaemonConfig = attrs.field(factory=DaemonConfig)
    telegram: TelegramConfig = attrs.field(factory=TelegramConfig)
    policy: PolicyConfig = attrs.field(factory=PolicyConfig)
    direct: DirectConfig = attrs.field(factory=DirectConfig)
    economy: EconomyConfig = attrs.field(factory=EconomyConfig)
    rate_classes: tuple[RateClassConfig, ...] = ()
    proxies: tuple[ProxyConfig, ...] = ()
    accounts: tuple[AccountConfig, ...] = attrs.field(default=(), validator=_cross_checks)
    #: ``[metrics]``, or None when the file has no such table (no endpoint).
    metrics: MetricsConfig | None = None
    #: ``[cluster]``, or None when the file has no such table (one node, no Redis).
    cluster: ClusterConfig | None = None
    #: ``proxies`` by name, built once (`proxy_for` is asked once per account: a scan would
    #: make start-up and reload accounts x proxies).
    _proxy_by_name: dict[str, ProxyConfig] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_proxy_by_name", {p.name: p for p in self.proxies})

    def proxy_for(self, account: AccountConfig) -> ProxyConfig | None:
        """The proxy ``account`` connects through, or None for a direct connection (a dict
        look-up).

        Raises:
            KeyError: if ``account.proxy`` names no proxy (impossible for a validated config
                and an account of it).
        """
        if account.proxy is None:
            return None
        return self._proxy_by_name[account.proxy]

    def telegram_for(self, account: AccountConfig) -> TelegramConfig:
        """The global ``[telegram]`` with ``account``'s ``[accounts.telegram]`` keys applied."""
        if account.telegram is None:
            return self.telegram
        changes = {
            f.name: getattr(account.telegram, f.name)
            for f in attrs.fields(TelegramOverrides)
            if getattr(account.telegram, f.name) is not None
        }
        return attrs.evolve(self.telegram, **changes)


def _session_file_key(
    session: str, base_dir: Path | None, real_dirs: dict[str, str] | None = None
) -> str:
    """The session file's real path (symbolic links resolved): two accounts naming one file
    by two paths share it. ``real_dirs`` remembers each directory's real path between calls
    (`_cross_problems` asks once per account: 100,000 full resolutions, one ``lstat`` per
    path component each, were most of a parse of session files)."""
    # "a" and "a.session" are one file (`session_file_path`)
    if real_dirs is not None and base_dir is not None and not session.startswith(("~", "//")):
        text = session if session.endswith(SESSION_SUFFIX) else session + SESSION_SUFFIX
        parent, name = os.path.split(os.path.join(str(base_dir), text))
        if name not in ("", ".", "..") and parent:
            real_parent = real_dirs.get(parent)
            if real_parent is None:
                real_parent = real_dirs[parent] = str(Path(parent).resolve(strict=False))
            candidate = os.path.join(real_parent, name)
            # what `os.path.realpath` does with the last component: a link is followed
            if not os.path.islink(candidate):
                return candidate
    full = session_file_path(session).expanduser()
    if base_dir is not None:
        full = base_dir / full
    return str(full.resolve(strict=False))


def _cross_problems(
    proxies: tuple[ProxyConfig, ...] | list[Any],
    accounts: tuple[AccountConfig, ...] | list[Any],
    *,
    base_dir: Path | None = None,
) -> list[str]:
    """Problems between entries: duplicates and dangling references. Entries may be None
    (unparseable) or raw dicts; names are taken from whatever is there."""
    problems: list[str] = []
    seen_proxy: dict[str, int] = {}
    for i, p in enumerate(proxies):
        name = _get(p, "name")
        if isinstance(name, str):
            if name in seen_proxy:
                problems.append(
                    f"proxies[{i}].name: duplicate proxy name {json.dumps(name)}"
                    f" (also proxies[{seen_proxy[name]}])"
                )
            else:
                seen_proxy[name] = i
    seen_id: dict[str, int] = {}
    seen_session: dict[str, int] = {}
    real_dirs: dict[str, str] = {}  # `_session_file_key`: a directory's real path, once
    seen_string_source: dict[str, dict[str, int]] = {
        "session_string": {},
        "session_string_env": {},
        "session_credential": {},
    }
    string_sources = tuple(seen_string_source.items())
    for i, a in enumerate(accounts):
        if type(a) is AccountConfig:  # most entries: attributes, no `_get` per key
            ident, session, proxy = a.id, a.session, a.proxy
            values: tuple[Any, ...] = (a.session_string, a.session_string_env, a.session_credential)
        else:
            ident, session, proxy = _get(a, "id"), _get(a, "session"), _get(a, "proxy")
            values = tuple(_get(a, source) for source, _ in string_sources)
        if isinstance(ident, str):
            if ident in seen_id:
                problems.append(
                    f"accounts[{i}].id: duplicate account id {json.dumps(ident)}"
                    f" (also accounts[{seen_id[ident]}])"
                )
            else:
                seen_id[ident] = i
        if isinstance(session, str) and session:
            key = _session_file_key(session, base_dir, real_dirs)
            if key in seen_session:
                problems.append(
                    f"accounts[{i}].session: same session file as accounts[{seen_session[key]}]"
                    f" ({key})"
                )
            else:
                seen_session[key] = i
        for (source, seen), value in zip(string_sources, values, strict=True):
            if value is None or not isinstance(value, str) or not value.strip():
                continue
            # One auth key, two accounts: Telegram revokes it (AUTH_KEY_DUPLICATED). The
            # value is compared, never shown (an inline session string is a secret).
            value = value.strip()
            if value in seen:
                what = {
                    "session_string": "the same session string",
                    "session_string_env": f"the same environment variable {value}",
                    "session_credential": f"the same credential {json.dumps(value)}",
                }[source]
                problems.append(
                    f"accounts[{i}].{source}: {what} as accounts[{seen[value]}].{source}"
                    " (one auth key must never be used by two accounts)"
                )
            else:
                seen[value] = i
        if isinstance(proxy, str) and proxy not in seen_proxy:
            problems.append(f"accounts[{i}].proxy: no proxy named {json.dumps(proxy)}")
    return problems


def _get(entry: Any, key: str) -> Any:
    kind = type(entry)
    if kind is dict:  # dict first, then an entry: no ABC check for either
        return entry.get(key)
    if kind is AccountConfig or kind is ProxyConfig or entry is None:
        return getattr(entry, key, None)
    if isinstance(entry, Mapping):
        return entry.get(key)
    return getattr(entry, key, None)


# --- proxy key ------------------------------------------------------------------------------------


def proxy_key(proxy: ProxyConfig | None) -> str:
    """A proxy lane's identity, as logs, status, metrics, job ``meta`` and the state store
    show it: the proxy's configured name.

    It holds no secret (unlike the PHP system's key: docs/ARCHITECTURE.md, "Where the PHP
    system's numbers went"), and it does not change when only the password, the MTProxy
    secret or the tuning changes, so the lane keeps its cooldown and statistics.

    Args:
        proxy: The proxy, or None for a direct connection.

    Returns:
        ``"no_proxy"`` for None; else ``proxy.name`` (a proxy itself named ``no_proxy`` is
        ``"no_proxy#proxy"``, so it never shares the direct lane).
    """
    if proxy is None:
        return NO_PROXY
    return proxy.name if proxy.name != NO_PROXY else f"{NO_PROXY}#proxy"


def _partial(
    value: Mapping[str, Any], cls: type, path: str, base_dir: Path, problems: list[str]
) -> Any:
    """A stand-in for an entry that did not structure: the fields that did, `_FAILED` for the
    rest. Nested tables that failed are treated the same way (their validators run too)."""
    fields: dict[str, Any] = {}
    for a in attrs.fields(cls):
        if a.name not in value:
            default = a.default
            if default is attrs.NOTHING:
                fields[a.name] = _FAILED
            elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                fields[a.name] = default.factory()
            else:
                fields[a.name] = default
            continue
        sub = _join(path, a.name)
        try:
            fields[a.name] = converter.structure(value[a.name], a.type)
        except Exception:
            fields[a.name] = _FAILED
            nested = _attrs_class_of(a.type)
            if nested is not None and isinstance(value[a.name], Mapping):
                inner = _partial(value[a.name], nested, sub, base_dir, problems)
                problems.extend(_validation_problems(inner, sub, nested))
        else:
            if attrs.has(type(fields[a.name])):
                fields[a.name] = _resolve_paths(fields[a.name], sub, base_dir, problems)
    if cls in (TelegramConfig, TelegramOverrides) and isinstance(fields.get("rsa_keys"), tuple):
        _read_pems(fields["rsa_keys"], _join(path, "rsa_keys"), base_dir, problems)
    return types.SimpleNamespace(**fields)


# --- loading --------------------------------------------------------------------------------------


#: Characters of TOML from which `parse_toml` tries ``rtoml`` first (a fleet of about 2,000
#: accounts); smaller documents take tomllib alone, in well under 100 ms.
RTOML_FROM_CHARS: Final = 256 * 1024


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, faster for a large document.

    A document of `RTOML_FROM_CHARS` or more is parsed by ``rtoml`` (Rust; 0.47 s against
    tomllib's 3.4 s for 100,000 accounts on 10,000 proxies, 15 MB). If rtoml raises
    anything, the text is parsed again by tomllib, so a document tomllib refuses is refused
    with tomllib's own error and nothing rtoml does differently reaches the config.

    Raises:
        tomllib.TOMLDecodeError: the text is not valid TOML.
    """
    if len(text) >= RTOML_FROM_CHARS:
        import rtoml  # only for a large document

        try:
            data = rtoml.loads(text)
        except Exception:  # noqa: BLE001 - tomllib says what is wrong, in its words
            pass
        else:
            if isinstance(data, dict):
                return data
    return tomllib.loads(text)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file.

    Args:
        path: The file. Relative paths inside it are relative to its directory.

    Returns:
        The validated `Config`, with relative paths made absolute.

    Raises:
        ConfigError: if the file cannot be read, is not valid TOML, or is not a valid config;
            ``problems`` lists every problem found.
    """
    path = Path(path)
    try:
        data = parse_toml(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror or type(e).__name__})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: invalid TOML ({e})"]) from None
    return parse_config(data, base_dir=path.resolve().parent)


_SECTIONS: Final = (
    "daemon",
    "telegram",
    "policy",
    "direct",
    "economy",
    "rate_classes",
    "proxies",
    "accounts",
    "metrics",
    "cluster",
)


@gc_paused()  # 100,000 entries: the cyclic collector would walk them again and again
def parse_config(data: Mapping[str, Any], *, base_dir: Path) -> Config:
    """Validate a parsed TOML document into a `Config`.

    Args:
        data: The document, as `tomllib` returns it.
        base_dir: Directory that relative paths (``session``, ``rsa_keys`` files,
            ``daemon.state_dir``) are relative to.

    Returns:
        The validated `Config`: relative paths made absolute, ``rsa_keys`` PEM files read
        into PEM text.

    Raises:
        ConfigError: with one ``"key.path: reason"`` line per problem, all of them, in the
            order of the sections and entries.
    """
    base_dir = Path(base_dir)
    if not isinstance(data, Mapping):
        raise ConfigError([f"<config>: expected a table, got {_show(data)}"])
    problems: list[str] = []
    for key in sorted(set(data) - set(_SECTIONS)):
        problems.append(f"{_join('', key)}: unknown key{did_you_mean(str(key), _SECTIONS)}")
    # Validators off while structuring: each entry is structured on its own and then all of its
    # validators run, so one broken key hides neither its siblings nor other entries.
    with attrs.validators.disabled():
        sections: dict[str, Any] = {}
        section_classes: tuple[tuple[str, type], ...] = (
            ("daemon", DaemonConfig),
            ("telegram", TelegramConfig),
            ("policy", PolicyConfig),
            ("direct", DirectConfig),
            ("economy", EconomyConfig),
        )
        for name, cls in section_classes:
            raw_section = data.get(name, {})  # absent: defaults (paths still resolved)
            sections[name] = _structure_part(raw_section, cls, name, base_dir, problems)
        if "metrics" in data:  # absent: no endpoint at all, not one with defaults
            sections["metrics"] = _structure_part(
                data["metrics"], MetricsConfig, "metrics", base_dir, problems
            )
        if "cluster" in data:  # absent: one node, no Redis
            sections["cluster"] = _structure_part(
                data["cluster"], ClusterConfig, "cluster", base_dir, problems
            )
        rate_classes: list[Any] = []
        raw_classes = data.get("rate_classes", {})
        if not isinstance(raw_classes, Mapping):
            problems.append(f"rate_classes: expected a table of tables, got {_show(raw_classes)}")
            raw_classes = {}
        for class_name, item in raw_classes.items():
            where = _join("rate_classes", str(class_name))
            if not isinstance(item, Mapping):
                problems.append(f"{where}: expected a table, got {_show(item)}")
                continue
            if "name" in item:
                problems.append(f"{_join(where, 'name')}: unknown key")
                continue
            rate_classes.append(
                _structure_part(
                    {**item, "name": class_name}, RateClassConfig, where, base_dir, problems
                )
            )
    entries: dict[str, list[Any]] = {}
    raw_entries: dict[str, list[Any]] = {}
    entry_classes: tuple[tuple[str, type], ...] = (
        ("proxies", ProxyConfig),
        ("accounts", AccountConfig),
    )
    for name, cls in entry_classes:
        raw = data.get(name, [])
        if not isinstance(raw, list):
            problems.append(f"{name}: expected an array of tables, got {_show(raw)}")
            raw = []
        raw_entries[name] = raw
        entries[name] = [
            _quick_entry(item, cls, base_dir)
            or _structure_entry(item, cls, f"{name}[{i}]", base_dir, problems)
            for i, item in enumerate(raw)
        ]
    # Between entries: where an entry did not structure, judge its raw names.
    problems.extend(
        _cross_problems(
            [
                p if p is not None else r
                for p, r in zip(entries["proxies"], raw_entries["proxies"], strict=True)
            ],
            [
                a if a is not None else r
                for a, r in zip(entries["accounts"], raw_entries["accounts"], strict=True)
            ],
            base_dir=base_dir,
        )
    )
    if problems:
        raise ConfigError(_in_document_order(problems))
    # Everything checked: build for real. Config's own validator (`_cross_checks`) would run
    # `_cross_problems` again, which found nothing just above: at 100,000 accounts a tenth of
    # the parse, so it is not run twice.
    with attrs.validators.disabled():
        return Config(
            **{k: v for k, v in sections.items() if v is not None},
            rate_classes=tuple(rate_classes),
            proxies=tuple(entries["proxies"]),
            accounts=tuple(entries["accounts"]),
        )


def _in_document_order(problems: list[str]) -> list[str]:
    """Deduplicate; sort by section then entry index, keeping the order within an entry."""
    return in_document_order(problems, _SECTIONS)


def _quick_entry(value: Any, cls: type, base_dir: Path) -> Any:
    """A ``[[proxies]]`` or ``[[accounts]]`` entry built at once, validators on, when it is
    of the plain kind (`Structurer.quick_fields`: known keys, values of their field's type;
    no ``[accounts.telegram]``) and every validator passes; None otherwise, and
    `_structure_entry` then finds every problem of it. The result is the one the full path
    gives: the same fields, the session path resolved before the validators run."""
    if attrs.validators.get_disabled():
        return None  # the caller turned validators off: nothing would be checked here
    fields = _DOCUMENT.quick_fields(value, cls)
    if fields is None:
        return None
    session = fields.get("session")
    if session:  # as `_resolve_paths`
        fields["session"] = _under(base_dir, session)
    try:
        return cls(**fields)  # every validator of the entry runs (and defaults apply)
    except Exception:
        return None  # a problem (or a missing key): the full path reports it


_NOT_PLAIN_PATH: Final = re.compile(r"^~|//|(?:^|/)\.(?:/|$)|/$")


def _under(base_dir: Path, path: str) -> str:
    """``str(base_dir / Path(path).expanduser())``: string joining when ``path`` is one that
    `pathlib` would keep as written (no ``~``, ``//``, ``.`` component or trailing ``/``),
    the `pathlib` way otherwise."""
    base = str(base_dir)
    if base != "." and _NOT_PLAIN_PATH.search(path) is None:  # pathlib drops a "." base
        return os.path.join(base, path)
    return str(base_dir / Path(path).expanduser())


def _structure_entry(value: Any, cls: type, path: str, base_dir: Path, problems: list[str]) -> Any:
    """`_structure_part` with validators disabled while structuring."""
    with attrs.validators.disabled():
        return _structure_part(value, cls, path, base_dir, problems)


def _structure_part(value: Any, cls: type, path: str, base_dir: Path, problems: list[str]) -> Any:
    """Structure one section/entry (validators must be disabled), resolve its paths, run all
    its validators; append problems; return the object, or None if it did not structure."""
    try:
        obj: Any = converter.structure(value, cls)
    except Exception as e:
        problems.extend(_problems_from(e, path))
        if isinstance(value, Mapping):
            partial = _partial(value, cls, path, base_dir, problems)
            problems.extend(_validation_problems(partial, path, cls))
        return None
    obj = _resolve_paths(obj, path, base_dir, problems)
    problems.extend(_validation_problems(obj, path))
    return obj


def _resolve_paths(obj: Any, path: str, base_dir: Path, problems: list[str]) -> Any:
    changes: dict[str, Any] = {}
    if isinstance(obj, DaemonConfig):
        changes["state_dir"] = str(base_dir / Path(obj.state_dir).expanduser())
    elif isinstance(obj, ClusterConfig) and obj.password_file:
        changes["password_file"] = str(base_dir / Path(obj.password_file).expanduser())
    elif isinstance(obj, AccountConfig):
        if obj.session:
            changes["session"] = str(base_dir / Path(obj.session).expanduser())
        if obj.telegram is not None:
            changes["telegram"] = _resolve_paths(
                obj.telegram, f"{path}.telegram", base_dir, problems
            )
    if isinstance(obj, TelegramConfig | TelegramOverrides) and obj.rsa_keys:
        changes["rsa_keys"] = _read_pems(obj.rsa_keys, f"{path}.rsa_keys", base_dir, problems)
    return attrs.evolve(obj, **changes) if changes else obj


def _read_pems(
    entries: tuple[str, ...], path: str, base_dir: Path, problems: list[str]
) -> tuple[str, ...]:
    return tuple(
        _read_pem(entry, f"{path}[{i}]", base_dir, problems) for i, entry in enumerate(entries)
    )


def _read_pem(entry: str, path: str, base_dir: Path, problems: list[str]) -> str:
    """PEM text stays; anything else is a path of a PEM file, read here."""
    if "-----BEGIN" in entry:
        return entry
    file = base_dir / Path(entry).expanduser()
    try:
        text = file.read_text(encoding="ascii")
    except OSError as e:
        problems.append(f"{path}: cannot read PEM file {file} ({e.strerror or type(e).__name__})")
        return entry
    except UnicodeDecodeError:
        problems.append(f"{path}: {file} is not a PEM file (not ASCII text)")
        return entry
    if "-----BEGIN" not in text:
        problems.append(f"{path}: {file} is not a PEM file (no -----BEGIN line)")
    return text
