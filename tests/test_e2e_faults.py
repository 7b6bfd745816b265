"""End to end: faults on the wire, attributed by connection phase and bounded by the governor.

Pool -> real TelethonClient -> python-socks -> a misbehaving relay (`mtpoold.testing.open_relay`)
or a hand-made stand-in -> the loopback DC. Real sockets, so the real clock: small timeouts,
every wait on a condition with a timeout, no timed asserts (counts and classes are asserted).

Stuck asyncio calls are made by patching Telethon's ``_call`` for the test's duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from telethon.tl import types as tl_types

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold.testing import DC, MTProxy, open_dc, open_mtproxy
from mtpoold.testing import open_relay as _open_relay
from mtpoold.testing.dc import corrupt_reply, rpc_error, salt_storm, wrong_session

from _e2e import fleet_config, fleet_world, open_fleet, proxy_entry, wait_until

PHONE = "15550000001"
OTHER_PHONE = "15550000002"
#: Seconds by which two bursts at the relay may be closer than the interval (test_e2e.py).
WIRE_JITTER_S = 0.05
COOLDOWN_MIN_S = 30.0  # proxy_cooldown_min_s: long enough to see it while the test runs
#: interval_s of a proxy whose entry names none, seconds: small, so a test's second call does
#: not wait out the 2 s default.
INTERVAL_S = 0.1


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


def _config(
    tmp_path: Path,
    dc: DC,
    proxies: list[dict[str, Any]],
    policy: dict[str, Any] | None = None,
    **telegram: Any,
) -> Any:
    return fleet_config(
        tmp_path,
        dc,
        proxies=[{"interval_s": INTERVAL_S, **entry} for entry in proxies],
        accounts={"a1": (PHONE, "p1")},
        policy={"proxy_cooldown_min_s": COOLDOWN_MIN_S, "max_attempts": 1, **(policy or {})},
        telegram={"connect_timeout_s": 1.0, **telegram},
    )


async def _fails(call: Awaitable[Any]) -> JobFailed:
    with trio.fail_after(15), pytest.raises(JobFailed) as info:
        await call
    return info.value


def _assert_proxy_blamed(fleet: Any, failure: JobFailed, phase: str) -> None:
    assert failure.error_class is ErrorClass.PROXY_UNAVAILABLE, failure
    # when to try again: the proxy's cooldown
    assert failure.retry_after_s is not None and 0 < failure.retry_after_s <= COOLDOWN_MIN_S
    assert f"({phase}, before the DC answered)" in failure.message, failure.message
    assert failure.message.startswith("proxy p1 "), failure.message
    lane = fleet.lane("p1")
    assert lane.cooldown_remaining_s > 0
    assert lane.consecutive_failures == 1
    account = fleet.account("a1")
    assert account.cooldown_remaining_s == 0  # the account is not blamed
    assert account.errors_by_class == {"PROXY_UNAVAILABLE": 1}


# --- phases: the proxy's failures -----------------------------------------------------------------


async def test_proxy_closing_after_64_bytes_is_blamed_in_the_dc_first_bytes_phase(
    tmp_path: Path, dc: DC
) -> None:
    async with _open_relay() as relay:
        relay.close_after(64)
        config = _config(tmp_path, dc, [proxy_entry("p1", relay)])
        async with open_fleet(dc, config) as fleet:
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            _assert_proxy_blamed(fleet, failure, "dc_first_bytes")
            assert "closed the connection after" in failure.message
            assert dc.calls == []  # nothing reached the DC whole


async def test_blackholing_proxy_is_blamed_in_the_handshake_phase(tmp_path: Path, dc: DC) -> None:
    async with _open_relay() as relay:
        relay.blackhole()
        config = _config(tmp_path, dc, [proxy_entry("p1", relay)])
        async with open_fleet(dc, config) as fleet:
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            _assert_proxy_blamed(fleet, failure, "proxy_handshake")
            assert "did not answer within 1 s" in failure.message


async def test_refusing_proxy_is_blamed_in_the_tcp_phase(tmp_path: Path, dc: DC) -> None:
    async with _open_relay() as relay:
        relay.refuse()
        config = _config(tmp_path, dc, [proxy_entry("p1", relay)])
        async with open_fleet(dc, config) as fleet:
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            _assert_proxy_blamed(fleet, failure, "proxy_tcp")
            assert "refused the connection" in failure.message


async def test_proxy_that_cannot_reach_the_dc_is_blamed_in_the_handshake_phase(
    tmp_path: Path, dc: DC
) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on: the "unroutable DC"
        await sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()
    async with _open_relay(target=dead) as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay)])
        async with open_fleet(dc, config) as fleet:
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            _assert_proxy_blamed(fleet, failure, "proxy_handshake")


async def test_connect_cut_off_by_the_job_deadline_is_still_the_proxys_failure(
    tmp_path: Path, dc: DC
) -> None:
    async with _open_relay() as relay:
        relay.blackhole()
        config = _config(tmp_path, dc, [proxy_entry("p1", relay)], connect_timeout_s=10.0)
        async with open_fleet(dc, config) as fleet:
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}, deadline_s=1.5))
            assert failure.error_class is ErrorClass.DEADLINE_EXCEEDED
            # the answer names the cause, not only that time ran out
            assert "(last error: PROXY_UNAVAILABLE: proxy p1" in failure.message, failure.message
            lane = fleet.lane("p1")
            assert lane.consecutive_failures == 1
            assert lane.cooldown_remaining_s > 0
            account = fleet.account("a1")
            assert account.cooldown_remaining_s == 0
            assert account.errors_by_class == {"PROXY_UNAVAILABLE": 1}
            assert "connect cut off" in (account.last_error_message or "")


# --- after the DC answered: the account's (or the stream's) -------------------------------------


async def test_salt_storm_is_cut_by_the_wire_governor(tmp_path: Path, dc: DC) -> None:
    async with _open_relay() as relay:
        config = _config(
            tmp_path,
            dc,
            [proxy_entry("p1", relay, interval_s=0.5)],
            policy={"protocol_error_cooldown_s": 0.5},
        )
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {})
            dc.faults.add(salt_storm(), user=PHONE, times=None)
            t0 = trio.current_time()
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            elapsed = trio.current_time() - t0
            on_wire = dc.wire_messages(PHONE, since=t0).count
            print(f"salt storm: {on_wire} messages at the DC, {elapsed:.2f} s, {failure.message}")
            assert failure.error_class is ErrorClass.PROTOCOL_ERROR, failure
            assert "bad_server_salt" in failure.message
            assert "telegram.wire_max_" in failure.message  # the ceiling that tripped
            assert on_wire <= 40  # the per-call ceiling is 32
            assert fleet.lane("p1").cooldown_remaining_s == 0  # the proxy is left alone
            assert fleet.lane("p1").consecutive_failures == 0
            assert fleet.account("a1").last_error_class == "PROTOCOL_ERROR"
            assert not fleet.account("a1").connected  # the connection was dropped
            assert 0 < fleet.account("a1").cooldown_remaining_s <= 0.5  # a short rest
            dc.faults.clear()
            # the next job waits out the rest; a fresh connection serves it
            await fleet.pool.invoke("help.getNearestDc", {})
            assert fleet.account("a1").connected


@pytest.mark.parametrize(
    ("action", "reason"),
    [(corrupt_reply, "msg_key"), (wrong_session, "wrong session ID")],
)
async def test_reply_failing_its_security_check_fails_the_call_with_the_reason(
    tmp_path: Path, dc: DC, action: Callable[[], Any], reason: str
) -> None:
    """Telethon logs 'Security error while unpacking' and drops such a reply; the call in
    flight fails at once instead of waiting for call_deadline_s."""
    async with _open_relay() as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay)])
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {})
            dc.faults.add(action(), user=PHONE, method="help.GetNearestDc")
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}, deadline_s=20))
            assert failure.error_class is ErrorClass.PROTOCOL_ERROR, failure
            assert "security error" in failure.message
            assert reason in failure.message
            assert fleet.account("a1").last_error_class == "PROTOCOL_ERROR"
            assert reason in (fleet.account("a1").last_error_message or "")
            assert not fleet.account("a1").connected
            assert fleet.lane("p1").consecutive_failures == 0


async def test_corrupted_stream_fails_the_call_with_the_reason(tmp_path: Path, dc: DC) -> None:
    async with _open_relay() as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay)])
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {})
            (conn,) = relay.open_connections
            relay.corrupt(after_bytes=conn.bytes_down + 30, n_bytes=1)
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}, deadline_s=20))
            assert failure.error_class is ErrorClass.PROTOCOL_ERROR, failure
            assert "checksum" in failure.message
            assert fleet.account("a1").last_error_class == "PROTOCOL_ERROR"
            assert fleet.lane("p1").consecutive_failures == 0


# --- the gate sees everything -----------------------------------------------------------------


@pytest.mark.alone
async def test_keepalive_and_reconnect_take_gate_slots(tmp_path: Path, dc: DC) -> None:
    interval_s = 0.5
    async with _open_relay() as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay, interval_s=interval_s)])
        async with open_fleet(dc, config) as fleet:
            worker = fleet.pool._accounts["a1"]
            worker.keepalive_interval_s = 0.3
            await fleet.pool.invoke("help.getNearestDc", {})
            await wait_until(
                lambda: dc.counters(PHONE)["PingDelayDisconnect"] >= 3,
                what="three keepalive pings",
            )
            dc.disconnect_all()
            await wait_until(lambda: not worker.connected, what="the client to see the drop")
            await fleet.pool.invoke("help.getNearestDc", {})  # reconnects through a slot
            await fleet.pool.invoke("help.getNearestDc", {})
            await wait_until(
                lambda: dc.counters(PHONE)["PingDelayDisconnect"] >= 4, what="one more ping"
            )
            spacings = relay.burst_spacings()
            print(f"bursts: {len(relay.bursts)}, spacings: {[round(s, 3) for s in spacings]}")
            assert len(relay.bursts) >= 8
            assert relay.accepted == 2
            # arrivals at the relay = gate starts + their own latency (see WIRE_JITTER_S in
            # test_e2e.py); a start the gate did not admit shows as a gap far below
            assert min(spacings) >= interval_s - WIRE_JITTER_S, spacings


async def test_a_busy_account_pings_before_its_next_call_so_the_dc_keeps_its_connection(
    tmp_path: Path, dc: DC, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DC closes a connection ``disconnect_delay`` s after its last ping_delay_disconnect,
    calls or not (as Telegram does): once the idle watcher's ping armed that timer, a busy
    account's due ping goes before its next call."""
    import mtpoold._client as client_module

    monkeypatch.setattr(client_module, "PING_DISCONNECT_DELAY_S", 1)
    async with _open_relay() as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay, interval_s=0.0)])
        async with open_fleet(dc, config) as fleet:
            worker = fleet.pool._accounts["a1"]
            worker.keepalive_interval_s = 0.3
            await fleet.pool.invoke("help.getNearestDc", {})
            await wait_until(
                lambda: dc.counters(PHONE)["PingDelayDisconnect"] >= 1, what="an idle ping"
            )
            busy_until = trio.current_time() + 2.5  # 2.5 disconnect delays of back-to-back calls
            while trio.current_time() < busy_until:
                await fleet.pool.invoke("help.getNearestDc", {})
            closed = [r.closed_by for r in dc.connection_log if r.closed_by is not None]
            assert "ping_delay_disconnect" not in closed, closed
            assert relay.accepted == 1
            assert dc.counters(PHONE)["PingDelayDisconnect"] >= 1 + 2


# --- bounded cancellation of the asyncio side ---------------------------------------------------


def _stubborn_calls(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, bool], list[Any]]:
    """Make Telethon's ``_call`` ignore its cancellation (and return a value 3 s later) while
    ``armed["on"]``; the asyncio tasks it ran in are listed."""
    from telethon import TelegramClient

    armed = {"on": False}
    stuck: list[Any] = []
    original = TelegramClient._call

    async def stubborn(self: Any, sender: Any, request: Any, *args: Any, **kw: Any) -> Any:
        if not armed["on"]:
            return await original(self, sender, request, *args, **kw)
        stuck.append(asyncio.current_task())
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3.0)
        return tl_types.NearestDc("XX", 2, 2)  # the late value

    monkeypatch.setattr(TelegramClient, "_call", stubborn)
    return armed, stuck


async def _all_done(tasks: list[Any]) -> None:
    await wait_until(lambda: all(t.done() for t in tasks), what="the abandoned tasks to end")


async def test_late_value_after_the_deadline_is_never_a_success(
    tmp_path: Path, dc: DC, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed, stuck = _stubborn_calls(monkeypatch)
    async with _open_relay() as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay, interval_s=0.1)])
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {})
            armed["on"] = True
            t0 = trio.current_time()
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}, deadline_s=1.0))
            elapsed = trio.current_time() - t0
            print(f"stuck asyncio call: job answered after {elapsed:.2f} s: {failure}")
            assert failure.error_class is ErrorClass.DEADLINE_EXCEEDED
            (task,) = stuck
            assert not task.done()  # the job's answer did not wait for the asyncio side
            assert not fleet.account("a1").connected  # abandoned: rebuilt for the next call
            armed["on"] = False
            await _all_done(stuck)
            assert fleet.pool.statistics().jobs_ok == 1  # the late value was not counted
            await fleet.pool.invoke("help.getNearestDc", {})  # a new connection serves


async def test_cancelling_a_stuck_call_is_bounded(
    tmp_path: Path, dc: DC, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What shutdown does past shutdown_grace_s: cancel the jobs. They end within the bound
    even when the asyncio side does not."""
    armed, stuck = _stubborn_calls(monkeypatch)
    async with _open_relay() as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay, interval_s=0.1)])
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {})
            armed["on"] = True
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fleet.pool.invoke, "help.getNearestDc", {})
                    await wait_until(lambda: len(stuck) == 1, what="the call to get stuck")
                    nursery.cancel_scope.cancel()
            (task,) = stuck
            assert not task.done()
            armed["on"] = False
            await _all_done(stuck)


async def test_telethon_never_switches_dc_on_its_own(tmp_path: Path, dc: DC) -> None:
    """On USER_MIGRATE Telethon would reconnect to another DC by itself; the error is raised
    instead (no new connection the gate did not admit)."""
    async with _open_relay() as relay:
        config = _config(tmp_path, dc, [proxy_entry("p1", relay, interval_s=0.1)])
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {})
            dc.faults.add(rpc_error(303, "USER_MIGRATE_4"), method="help.GetNearestDc")
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            assert "USER_MIGRATE_4" in failure.message, failure
            assert relay.accepted == 1
            assert dc.statistics().connections_total == 1


# --- MTProxy: the transport by secret, and its failures ---------------------------------------


def _mtproxy_entry(proxy: MTProxy, secret: str) -> dict[str, Any]:
    return {"name": "p1", "type": "mtproxy", "host": proxy.host, "port": proxy.port,
            "secret": secret, "interval_s": 0.1}  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "secret"),
    [
        ("classic", lambda p: p.secret_hex),  # plain secret: the classic intermediate transport
        ("secure", lambda p: p.dd_secret_hex.upper()),  # dd, any case: the padded transport
    ],
)
async def test_mtproxy_transport_follows_the_secret(
    tmp_path: Path, dc: DC, mode: str, secret: Callable[[MTProxy], str]
) -> None:
    async with open_mtproxy({dc.dc_id: (dc.host, dc.port)}, mode=mode) as proxy:  # type: ignore[arg-type]
        config = _config(tmp_path, dc, [_mtproxy_entry(proxy, secret(proxy))], connect_timeout_s=5)
        async with open_fleet(dc, config) as fleet:
            result = await fleet.pool.invoke("help.getNearestDc", {})
            assert result.value["_"] == "NearestDc"
            (conn,) = proxy.connections
            assert conn.transport == ("intermediate" if mode == "classic" else "padded")


async def test_mtproxy_wrong_secret_refused_and_unroutable_dc_are_the_proxys(
    tmp_path: Path, dc: DC
) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on: the "unroutable DC"
        await sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()
    async with (
        open_mtproxy({dc.dc_id: (dc.host, dc.port)}) as good,
        open_mtproxy({dc.dc_id: dead}) as unroutable,
    ):
        cases = [
            (good, "cd" * 16, "proxy_handshake", "MTProxy header"),  # wrong secret
            (unroutable, unroutable.secret_hex, "proxy_handshake", "MTProxy header"),
            (good, good.secret_hex, "proxy_tcp", "refused the connection"),  # after refuse()
        ]
        for proxy, secret, phase, text in cases:
            if phase == "proxy_tcp":
                proxy.refuse()
            config = _config(tmp_path, dc, [_mtproxy_entry(proxy, secret)], connect_timeout_s=5)
            async with open_fleet(dc, config) as fleet:
                failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
                _assert_proxy_blamed(fleet, failure, phase)
                assert text in failure.message
