"""Start-up checks: the configuration turned into Telethon's proxy and server arguments."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from telethon.network.connection import (
    ConnectionTcpFull,
    ConnectionTcpMTProxyRandomizedIntermediate,
)
from telethon.sessions import StringSession

from mtpoold._config import ProxyConfig, TelegramConfig
from mtpoold._errors import ConfigError
from mtpoold._startup import PRODUCTION_DCS, check_server, server_address, telethon_proxy


def _socks5(port: int, **kw: Any) -> ProxyConfig:
    return ProxyConfig(name="p1", type="socks5", host="127.0.0.1", port=port, **kw)


def test_telethon_proxy_socks5() -> None:
    conn, proxy = telethon_proxy(_socks5(1080, username="u", password="pw", rdns=False))
    assert conn is ConnectionTcpFull
    assert proxy == {
        "proxy_type": "socks5",
        "addr": "127.0.0.1",
        "port": 1080,
        "rdns": False,
        "username": "u",
        "password": "pw",
    }


def test_telethon_proxy_none_and_mtproxy() -> None:
    assert telethon_proxy(None) == (ConnectionTcpFull, None)
    secret = "dd" + "ab" * 16
    mt = ProxyConfig(name="m", type="mtproxy", host="h", port=443, secret=secret)
    assert telethon_proxy(mt) == (
        ConnectionTcpMTProxyRandomizedIntermediate,
        ("h", 443, secret),
    )


def test_telethon_proxy_rejects_fake_tls_secret() -> None:
    with attrs.validators.disabled():  # the config refuses it already; this is the last guard
        mt = ProxyConfig(
            name="m",
            type="mtproxy",
            host="h",
            port=443,
            secret="ee" + "ab" * 16 + b"example.com".hex(),
        )
    with pytest.raises(ConfigError, match=r"fake-TLS"):
        telethon_proxy(mt)


def test_server_address_and_check_server() -> None:
    fresh = StringSession()
    assert server_address(TelegramConfig(dc_id=2), fresh) == (2, PRODUCTION_DCS[2], 443)
    assert server_address(TelegramConfig(dc_host="10.0.0.1", dc_port=8443), fresh)[1:] == (
        "10.0.0.1",
        8443,
    )
    fresh.set_dc(4, "1.2.3.4", 443)
    assert server_address(TelegramConfig(dc_id=2), fresh) is None  # the session's own DC
    assert check_server(TelegramConfig(dc_id=2), "telegram") == []
    with attrs.validators.disabled():
        bad = TelegramConfig(dc_id=9)
    assert check_server(bad, "telegram") == ["telegram.dc_id: no known DC 9; set dc_host"]
