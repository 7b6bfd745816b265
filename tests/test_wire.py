"""The connection layer's pieces on their own: the wire governor, phase blame, the bounded
asyncio bridge, MTProxy transport choice."""

from __future__ import annotations

import attrs
import pytest
from telethon.network.connection import (
    ConnectionTcpMTProxyIntermediate,
    ConnectionTcpMTProxyRandomizedIntermediate,
)
from telethon.tl import functions as tl_functions
from telethon.tl import types as tl_types

from mtpoold._classify import classify
from mtpoold._config import ProxyConfig
from mtpoold._errors import ConfigError, ConnectPhase, ErrorClass
from mtpoold._startup import telethon_proxy
from mtpoold._wire import WireMonitor, message_kind


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


REQUEST = bytes(tl_functions.InvokeWithoutUpdatesRequest(tl_functions.help.GetNearestDcRequest()))
PING = bytes(
    tl_functions.InvokeWithoutUpdatesRequest(tl_functions.PingDelayDisconnectRequest(1, 75))
)
ACK = bytes(tl_types.MsgsAck([1, 2]))


def test_message_kind() -> None:
    assert message_kind(REQUEST) == "request"
    assert message_kind(PING) == "ping"
    assert message_kind(ACK) == "ack"
    assert message_kind(b"\xdc\xf8\xf1\x73\x02\x00\x00\x00") == "container"


def test_governor_cuts_a_resend_storm_at_the_per_call_ceiling() -> None:
    clock = FakeClock()
    monitor = WireMonitor(proxy="p1", max_messages_per_call=32, clock=clock)
    monitor.begin_call()
    sent = 0
    while monitor.fault is None:
        monitor.note("bad_server_salt")
        monitor.count(REQUEST)
        sent += 1
        clock.now += 0.1  # slow enough for the per-second ceiling: only the per-call one
    assert sent == 33
    text = str(monitor.fault)
    assert text.startswith(
        "33 messages on the wire for one call (32 resends after 33 bad_server_salt)"
    )
    assert "telegram.wire_max_messages_per_call = 32" in text
    assert classify(monitor.fault).error_class is ErrorClass.PROTOCOL_ERROR


def test_governor_per_second_ceiling_counts_what_no_call_explains() -> None:
    clock = FakeClock()
    monitor = WireMonitor(proxy="p1", max_extra_messages_per_s=20, clock=clock)
    for _ in range(20):  # pings and acks with no call: Telethon's own traffic
        monitor.count(PING)
        clock.now += 0.01
    assert monitor.fault is None  # 20 extra in 1 s: at the ceiling
    monitor.count(ACK)  # the 21st
    assert monitor.fault is not None
    assert "telegram.wire_max_extra_messages_per_s = 20" in str(monitor.fault)


def test_governor_lets_a_warm_loop_of_hundreds_of_calls_per_second_through() -> None:
    clock = FakeClock()
    monitor = WireMonitor(proxy=None, clock=clock)
    for i in range(2000):  # 500 calls/s for 4 s, each a request and the previous call's ack
        monitor.begin_call()
        monitor.count(REQUEST + i.to_bytes(4, "little"))
        monitor.count(ACK)
        monitor.end_call()
        clock.now += 0.002
    assert monitor.fault is None
    assert monitor.messages == {"request": 2000, "ack": 2000}


def test_governor_lets_calls_of_several_requests_each_through() -> None:
    """A login step (auth.checkPassword after account.getPassword), a resolve
    (resolveUsername + getFullChannel): one call, several new requests and their acks — none
    of it is Telethon's own traffic. Found by `mtpoold authorize` with 2FA tripping it."""
    clock = FakeClock()
    monitor = WireMonitor(proxy=None, clock=clock)
    serial = 0
    for _ in range(6):  # 6 calls in 0.6 s, 4 requests and 4 acks each
        monitor.begin_call()
        for _ in range(4):
            serial += 1
            monitor.count(REQUEST + serial.to_bytes(4, "little"))
            monitor.count(ACK)
        monitor.end_call()
        clock.now += 0.1
    assert monitor.fault is None
    # the same traffic resent is not new requests: each resend counts against the ceiling
    for _ in range(21):
        monitor.count(REQUEST + serial.to_bytes(4, "little"))
    assert monitor.fault is not None
    assert "21 resends" in str(monitor.fault)


def test_governor_takes_the_same_request_in_a_new_call_for_a_new_request() -> None:
    """An account that knows a busy channel reads the same message again and again (routing
    by knowledge sends it all that channel's reads): identical bodies, one per call, are not
    Telethon's resends. Found by the economy benchmark, whose fast lanes tripped the
    per-second ceiling with 20+ identical reads a second."""
    clock = FakeClock()
    monitor = WireMonitor(proxy=None, clock=clock)
    for _ in range(200):  # 100 identical calls/s for 2 s
        monitor.begin_call()
        monitor.count(REQUEST)
        monitor.count(ACK)
        monitor.end_call()
        clock.now += 0.01
    assert monitor.fault is None
    assert monitor.reasons["resend"] == 0


def test_blame_on_the_direct_lane_names_the_dcs_address_not_a_proxy() -> None:
    blamed = WireMonitor(proxy=None).blame("refused the connection")
    assert str(blamed) == (
        "the DC's address (direct, no proxy) refused the connection (proxy_tcp, before the DC"
        " answered)"
    )


def test_blame_names_the_phase_until_the_dc_answers() -> None:
    monitor = WireMonitor(proxy="de-1")
    blamed = monitor.blame("refused the connection")
    assert blamed is not None and blamed.phase is ConnectPhase.PROXY_TCP
    assert str(blamed) == "proxy de-1 refused the connection (proxy_tcp, before the DC answered)"
    monitor.advance(ConnectPhase.DC_FIRST_BYTES)
    monitor.bytes_sent = 64
    blamed = monitor.blame("closed the connection")
    assert str(blamed) == (
        "proxy de-1 closed the connection after 64 bytes sent, 0 received"
        " (dc_first_bytes, before the DC answered)"
    )
    assert classify(blamed).error_class is ErrorClass.PROXY_UNAVAILABLE
    monitor.advance(ConnectPhase.DC_ANSWERED)
    assert monitor.blame("closed the connection") is None
    monitor.advance(ConnectPhase.PROXY_TCP)  # never backwards
    assert monitor.answered
    monitor.new_connection()
    assert monitor.phase is ConnectPhase.PROXY_TCP


# --- the bridge ---------------------------------------------------------------------------------


# --- MTProxy transport by secret (shared cases 004 and 005) -------------------------------------


def _mtproxy(secret: str) -> ProxyConfig:
    # The config validates and normalises secrets already; telethon_proxy is the last guard
    # for a ProxyConfig built without it (Python embedding), so build them unchecked here.
    with attrs.validators.disabled():
        return ProxyConfig(name="m", type="mtproxy", host="h", port=443, secret=secret)


def test_plain_mtproxy_secret_uses_the_classic_intermediate_transport() -> None:
    assert telethon_proxy(_mtproxy("AB" * 16)) == (
        ConnectionTcpMTProxyIntermediate,
        ("h", 443, "dd" + "ab" * 16),  # the dd is for Telethon's prefix strip only
    )


@pytest.mark.parametrize("plain", ["dd" + "ab" * 15, "ee" + "ab" * 15, "DD" + "0f" * 15])
def test_plain_mtproxy_secret_starting_with_dd_or_ee_keeps_all_16_bytes(plain: str) -> None:
    """Telethon strips a leading dd/ee before reading the hex: 1 plain secret in 128 would
    lose its first byte (a wrong key, every connect hangs up) unless handed over prefixed."""
    connection, (_, _, secret) = telethon_proxy(_mtproxy(plain))
    assert connection is ConnectionTcpMTProxyIntermediate
    assert ConnectionTcpMTProxyIntermediate.normalize_secret(secret) == bytes.fromhex(plain)


def test_dd_mtproxy_secret_uses_the_padded_transport_in_lower_case() -> None:
    assert telethon_proxy(_mtproxy(" DD" + "Ab" * 16 + " ")) == (
        ConnectionTcpMTProxyRandomizedIntermediate,
        ("h", 443, "dd" + "ab" * 16),
    )


@pytest.mark.parametrize("secret", ["abcd", "0x" + "ab" * 16, "zz" * 16, "dd" + "ab" * 17])
def test_malformed_mtproxy_secret_is_refused_by_rule(secret: str) -> None:
    with pytest.raises(ConfigError, match=r"proxies\.m\.secret: must be 32 hex characters"):
        telethon_proxy(_mtproxy(secret))
