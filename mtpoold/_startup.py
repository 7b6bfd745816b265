"""What an account needs before it connects, checked once at start-up.

The configuration turned into ``TelegramClient`` arguments — the proxy (`telethon_proxy`:
python-socks dicts, the MTProxy transport chosen by its secret) and the server
(`server_address`: Telegram's published DC addresses unless ``dc_host`` is set) — and
`startup_problems`, which `mtpoold._client.telethon_client_factory` runs for every account of
a config generation so a broken account fails at start-up (or at the reload), not at its
first job.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from telethon.network.connection import (
    ConnectionTcpFull,
    ConnectionTcpMTProxyIntermediate,
    ConnectionTcpMTProxyRandomizedIntermediate,
)
from telethon.network.connection.connection import Connection
from telethon.sessions.abstract import Session

from ._errors import ConfigError
from ._rsakeys import register_rsa_keys
from ._sessionid import session_problems
from ._sessionlock import lock_dir_problem

if TYPE_CHECKING:
    from ._config import Config, ProxyConfig, TelegramConfig

__all__ = [
    "PRODUCTION_DCS",
    "TEST_DCS",
    "check_server",
    "server_address",
    "startup_problems",
    "telethon_proxy",
]

# Telegram's published data-centre addresses (IPv4), used when the config names a DC id but
# no host and the session does not know its DC yet.
PRODUCTION_DCS: Final[Mapping[int, str]] = {
    1: "149.154.175.53",
    2: "149.154.167.51",
    3: "149.154.175.100",
    4: "149.154.167.91",
    5: "91.108.56.130",
}
TEST_DCS: Final[Mapping[int, str]] = {
    1: "149.154.175.10",
    2: "149.154.167.40",
    3: "149.154.175.117",
}


def telethon_proxy(proxy: ProxyConfig | None) -> tuple[type[Connection], Any]:
    """The ``(connection, proxy)`` arguments of ``TelegramClient`` for a proxy config.

    Args:
        proxy: The account's proxy, or None for a direct connection.

    Returns:
        ``(ConnectionTcpFull, dict(proxy_type=..., addr=..., port=..., rdns=..., username=...,
        password=...))`` for socks5/socks4/http (python-socks), ``(ConnectionTcpFull, None)``
        without a proxy; for an MTProxy, as MTProxy clients do: a plain 32-hex secret uses
        the classic intermediate transport (``ConnectionTcpMTProxyIntermediate``,
        ``(host, port, secret)``), a ``dd`` secret the padded one
        (``ConnectionTcpMTProxyRandomizedIntermediate``, ``(host, port, "dd" + secret)``).
        The secret is passed in lower case: Telethon's ``dd`` prefix test is case-sensitive
        (shared cases 004 and 005).

    Raises:
        ConfigError: for an MTProxy without a secret, with a fake-TLS (``ee…``) secret,
            which Telethon cannot speak, or with a secret that is not 32 hex characters
            (optionally prefixed ``dd``); or an unknown proxy type.
    """
    if proxy is None:
        return ConnectionTcpFull, None
    if proxy.type in ("socks5", "socks4", "http"):
        return ConnectionTcpFull, {
            "proxy_type": proxy.type,
            "addr": proxy.host,
            "port": proxy.port,
            "rdns": proxy.rdns,
            "username": proxy.username,
            "password": proxy.password,
        }
    if proxy.type == "mtproxy":
        where = f"proxies.{proxy.name}.secret"
        secret = (proxy.secret or "").strip().lower()
        if not secret:
            raise ConfigError([f"{where}: an MTProxy needs a secret"])
        if secret[:2] == "ee" and len(secret) > 34:  # ee + 32 hex + the domain's hex
            raise ConfigError([f"{where}: fake-TLS (ee…) MTProxy secrets are not supported"])
        padded = len(secret) == 34 and secret[:2] == "dd"
        key = secret[2:] if padded else secret
        if len(key) != 32 or any(c not in string.hexdigits for c in key):
            raise ConfigError(
                [f"{where}: must be 32 hex characters, optionally prefixed dd (padded transport)"]
            )
        # Telethon strips a leading "dd"/"ee" before reading the hex, so a plain key that
        # happens to start with those letters (1 in 128) would lose a byte: always hand it
        # "dd" + key and let the connection class alone choose the transport.
        transport = (
            ConnectionTcpMTProxyRandomizedIntermediate
            if padded
            else (ConnectionTcpMTProxyIntermediate)
        )
        return transport, (proxy.host, proxy.port, "dd" + key)
    raise ConfigError([f"proxies.{proxy.name}.type: unknown proxy type {proxy.type!r}"])


def server_address(telegram: TelegramConfig, session: Session) -> tuple[int, str, int] | None:
    """The ``(dc_id, host, port)`` to put into the session, or None to keep the session's."""
    if telegram.dc_host:
        return telegram.dc_id, telegram.dc_host, telegram.dc_port
    if telegram.test_mode:
        dc_id = session.dc_id if session.server_address else telegram.dc_id
        return dc_id, TEST_DCS[dc_id], telegram.dc_port
    if not session.server_address:
        return telegram.dc_id, PRODUCTION_DCS[telegram.dc_id], telegram.dc_port
    return None


def check_server(telegram: TelegramConfig, where: str) -> list[str]:
    """Problems with a ``[telegram]`` server setting: a DC id without ``dc_host`` that is not
    in `PRODUCTION_DCS` / `TEST_DCS` (``"<where>.dc_id: no known DC 9; set dc_host"``)."""
    if telegram.dc_host:
        return []
    table = TEST_DCS if telegram.test_mode else PRODUCTION_DCS
    if telegram.dc_id not in table:
        return [f"{where}.dc_id: no known {'test ' if telegram.test_mode else ''}DC "
                f"{telegram.dc_id}; set dc_host"]  # fmt: skip
    return []


def startup_problems(config: Config) -> list[str]:
    """Every reason an account of ``config`` could not be connected, found without a network.

    For every account: its session source can be loaded and holds one auth key
    (`mtpoold._sessionid.session_problems`), its server is known (`check_server`), its
    extra RSA keys load (and are registered with Telethon, `register_rsa_keys`), and its
    proxy can be expressed to Telethon (`telethon_proxy`, once per proxy); with
    ``[cluster]``, the Redis password file can be read.

    Args:
        config: The daemon's config.

    Returns:
        The problems, ``"<key path>: <why>"``, each once; empty when every account is usable.
    """
    problems: list[str] = []
    seen_proxies: set[str] = set()
    problems += session_problems(config.accounts)  # readable, one auth key per account
    if config.accounts and (lock_dir := lock_dir_problem()) is not None:
        problems.append(lock_dir)  # where the daemon takes its session locks
    for account in config.accounts:
        telegram = config.telegram_for(account)
        where = f"accounts.{account.id}.telegram" if account.telegram else "telegram"
        problems += check_server(telegram, where)
        try:
            register_rsa_keys(telegram.rsa_keys, where=f"{where}.rsa_keys")
        except ConfigError as exc:
            problems += [p for p in exc.problems if p not in problems]
        proxy = config.proxy_for(account)
        if proxy is not None and proxy.name not in seen_proxies:
            seen_proxies.add(proxy.name)
            try:
                telethon_proxy(proxy)
            except ConfigError as exc:
                problems += exc.problems
    problems += _cluster_problems(config)
    return problems


def _cluster_problems(config: Config) -> list[str]:
    """``[cluster]``: its Redis password file can be read (never shown). Whether Redis
    answers is not a start-up problem: the node starts and waits for it (its accounts stay
    out of scheduling until their leases are confirmed)."""
    cluster = config.cluster
    if cluster is None or cluster.password_file is None:
        return []
    from ._clusterrun import read_password_file

    try:
        read_password_file(cluster.password_file)
    except ConfigError as exc:
        return list(exc.problems)
    return []
