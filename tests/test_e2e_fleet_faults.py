"""Fault combinations on the real stack (Telethon -> relay/MTProxy -> loopback DC): one account
storming beside a healthy one, faults at connect vs mid-call, a DC dying behind an MTProxy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
import trio

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold.testing import DC, open_dc, open_mtproxy, open_relay
from mtpoold.testing.dc import rpc_error, salt_storm, unparseable_reply

from _e2e import fleet_config, fleet_world, open_fleet, proxy_entry, wait_until

A1, A2 = "15550000001", "15550000002"


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


async def _fails(call: Awaitable[Any], timeout_s: float = 20) -> JobFailed:
    with trio.fail_after(timeout_s), pytest.raises(JobFailed) as info:
        await call
    return info.value


async def test_one_account_storming_leaves_its_neighbour_on_the_proxy_alone(
    tmp_path: Path, dc: DC
) -> None:
    async with open_relay() as relay:
        config = fleet_config(
            tmp_path, dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.1, capacity=2)],
            accounts={"a1": (A1, "p1"), "a2": (A2, "p1")},
            policy={"max_attempts": 1, "protocol_error_cooldown_s": 30},
            telegram={"connect_timeout_s": 2.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {}, account="a1")
            await fleet.pool.invoke("help.getNearestDc", {}, account="a2")
            dc.faults.add(salt_storm(), user=A1, times=None)
            results: dict[str, Any] = {}

            async def run(acc: str) -> None:
                try:
                    results[acc] = await fleet.pool.invoke("help.getNearestDc", {}, account=acc)
                except JobFailed as exc:
                    results[acc] = exc

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run, "a1")
                    nursery.start_soon(run, "a2")
            dc.faults.clear()
            print(results)
            assert isinstance(results["a1"], JobFailed)
            assert results["a1"].error_class is ErrorClass.PROTOCOL_ERROR
            assert not isinstance(results["a2"], JobFailed)
            assert fleet.lane("p1").cooldown_remaining_s == 0
            assert fleet.account("a2").cooldown_remaining_s == 0
            assert fleet.account("a2").connected


async def test_salt_storm_from_the_first_connect_is_protocol_error_not_the_proxys(
    tmp_path: Path, dc: DC
) -> None:
    dc.faults.add(salt_storm(), user=A1, times=None)
    async with open_relay() as relay:
        config = fleet_config(
            tmp_path, dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.1)],
            accounts={"a1": (A1, "p1")},
            policy={"max_attempts": 1},
            telegram={"connect_timeout_s": 2.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            t0 = trio.current_time()
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            dc.faults.clear()
            on_wire = dc.wire_messages(A1, since=t0).count
            print(failure, on_wire)
            assert failure.error_class is ErrorClass.PROTOCOL_ERROR, failure
            assert on_wire <= 40
            assert fleet.lane("p1").consecutive_failures == 0


async def test_wrong_proxy_password_is_the_proxys_and_never_shown(
    tmp_path: Path, dc: DC, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Pa55-w0rd-XYZZY"
    async with open_relay(username="fleetuser", password="the-right-one") as relay:
        entry = proxy_entry("p1", relay, interval_s=0.1)
        entry["password"] = secret
        config = fleet_config(
            tmp_path, dc, proxies=[entry], accounts={"a1": (A1, "p1")},
            policy={"max_attempts": 1}, telegram={"connect_timeout_s": 2.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            stats = repr(fleet.pool.statistics())
            print(failure.message)
            assert failure.error_class is ErrorClass.PROXY_UNAVAILABLE, failure
            assert "proxy_handshake" in failure.message
            assert secret not in failure.message
            assert secret not in stats
            assert secret not in caplog.text


async def test_mtproxy_whose_dc_dies_after_answering_is_the_proxys_on_reconnect(
    tmp_path: Path, dc: DC
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()
    routes = {dc.dc_id: (dc.host, dc.port)}
    async with open_mtproxy(routes) as proxy:
        entry = {"name": "p1", "type": "mtproxy", "host": proxy.host, "port": proxy.port,
                 "secret": proxy.secret_hex, "interval_s": 0.1}  # fmt: skip
        config = fleet_config(
            tmp_path, dc, proxies=[entry], accounts={"a1": (A1, "p1")},
            policy={"max_attempts": 1, "proxy_cooldown_min_s": 30},
            telegram={"connect_timeout_s": 5.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {})
            proxy.dcs[dc.dc_id] = dead  # the DC behind the proxy is gone
            dc.disconnect_all()
            await wait_until(lambda: not fleet.account("a1").connected, what="the drop")
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            print(failure.message, [c.error for c in proxy.connections])
            assert failure.error_class is ErrorClass.PROXY_UNAVAILABLE, failure
            assert fleet.account("a1").cooldown_remaining_s == 0
            assert fleet.lane("p1").cooldown_remaining_s > 0


async def test_proxy_that_goes_silent_mid_call(tmp_path: Path, dc: DC) -> None:
    async with open_relay() as relay:
        config = fleet_config(
            tmp_path, dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.1)],
            accounts={"a1": (A1, "p1"), "a2": (A2, None)},
            policy={"max_attempts": 2, "call_deadline_s": 2.0},
            telegram={"connect_timeout_s": 2.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            await fleet.pool.invoke("help.getNearestDc", {}, account="a1")
            relay.blackhole()
            failure = await _fails(
                fleet.pool.invoke("help.getNearestDc", {}, account="a1", deadline_s=5)
            )
            print(failure.message, fleet.account("a1"), fleet.lane("p1"))
            # the call times out (call_deadline_s), the retry's reconnect meets the silent proxy
            assert failure.error_class is ErrorClass.PROXY_UNAVAILABLE, failure
            assert fleet.lane("p1").cooldown_remaining_s > 0


async def test_frozen_account_is_disabled_and_the_job_served_by_another(
    tmp_path: Path, dc: DC
) -> None:
    async with open_relay() as relay:
        config = fleet_config(
            tmp_path, dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.1, capacity=2)],
            accounts={"a1": (A1, "p1"), "a2": (A2, "p1")},
            telegram={"connect_timeout_s": 2.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            dc.faults.add(rpc_error(420, "FROZEN_METHOD_INVALID"), user=A1, times=None)
            for _ in range(3):
                result = await fleet.pool.invoke("help.getNearestDc", {})
                assert result.meta.account == "a2"
            a1 = fleet.account("a1")
            print(a1)
            assert a1.state == "disabled" or a1.disabled_reason is not None


@pytest.mark.parametrize("error", ["PHONE_MIGRATE_4", "NETWORK_MIGRATE_3", "FILE_MIGRATE_5"])
async def test_migrate_errors_are_wrong_dc(tmp_path: Path, dc: DC, error: str) -> None:
    async with open_relay() as relay:
        config = fleet_config(
            tmp_path, dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.1)],
            accounts={"a1": (A1, "p1")},
            policy={"max_attempts": 1},
            telegram={"connect_timeout_s": 2.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            dc.faults.add(rpc_error(303, error), user=A1)
            failure = await _fails(fleet.pool.invoke("help.getNearestDc", {}))
            print(failure, fleet.account("a1"))
            assert failure.error_class is ErrorClass.WRONG_DC
            assert relay.accepted == 1


async def test_unparseable_reply_on_resolve_and_get_messages_leaks_nothing(
    tmp_path: Path, dc: DC, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_relay() as relay:
        config = fleet_config(
            tmp_path, dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.1)],
            accounts={"a1": (A1, "p1"), "a2": (A2, "p1")},
            telegram={"connect_timeout_s": 2.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            dc.faults.add(unparseable_reply(), times=None)
            f1 = await _fails(fleet.pool.resolve("@example_news"))
            f2 = await _fails(fleet.pool.get_messages("@example_news", [1, 2]))
            dc.faults.clear()
            user = next(u for u in dc.world.users if u.phone in (A1, A2))
            texts = [f1.message, f2.message, repr(fleet.pool.statistics()), caplog.text]
            print(f1, f2)
            for phone in (A1, A2):
                assert all(phone not in t for t in texts), phone
            names = [u.first_name for u in dc.world.users if u.phone in (A1, A2)]
            for name in names:
                assert all(name not in t for t in texts), name
            assert f1.error_class is ErrorClass.UNSUPPORTED_REPLY
            assert f2.error_class is ErrorClass.UNSUPPORTED_REPLY
            assert f1.attempts == 1 and f2.attempts == 1
            del user


async def test_blackholing_proxy_is_connected_to_once_not_once_per_queued_job(
    tmp_path: Path, dc: DC
) -> None:
    # Four accounts on one proxy (capacity 1) that swallows every connection; four jobs at
    # once. The first connect times out (1 s): PROXY_UNAVAILABLE, the proxy cools 30 s. The
    # other three jobs cannot start before their 10 s deadline: they should be answered then,
    # without three more connections (and 3 s more) spent on the dead proxy.
    async with open_relay() as relay:
        relay.blackhole()
        config = fleet_config(
            tmp_path, dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.0, capacity=1)],
            accounts={f"a{i}": (phone, "p1") for i, phone in enumerate((A1, A2, "15550000003",
                                                                         "15550000004"))},
            policy={"max_attempts": 1, "proxy_cooldown_min_s": 30},
            telegram={"connect_timeout_s": 1.0},
        )  # fmt: skip
        async with open_fleet(dc, config) as fleet:
            answers: list[str] = []

            async def job() -> None:
                try:
                    await fleet.pool.invoke("help.getNearestDc", {}, deadline_s=10)
                    answers.append("ok")
                except JobFailed as exc:
                    answers.append(exc.error_class.value)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(job)
            lane = fleet.lane("p1")
            print(answers, relay.accepted, lane)
            assert relay.accepted == 1, relay.accepted  # before the fix: 4
            assert lane.consecutive_failures == 1
