"""The daemon's log of a scripted run: every line one event, valid logfmt (or JSON).

A real ``mtpoold run`` subprocess (`_daemonproc.async_daemon`) on the loopback DC, real
Telethon, one account behind a SOCKS5 relay with a password (`mtpoold.testing.open_relay`):
jobs over the websocket, a FLOOD_WAIT (a DC fault, as `_e2e.flood_resolve` makes one), a
disable with a reason holding spaces, a relay that drops the account's connection (a
reconnect), ``mtpoold status`` (no INFO line). Then the log is read back line by line with
the strict parser of `test_logformat`, or as JSON with ``--log-format json``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from test_daemon_stuck_shutdown import websocket
from test_logformat import parse_logfmt
from trio_websocket import WebSocketConnection

from mtpoold._errors import JobFailed
from mtpoold._logformat import LogEvent
from mtpoold.testing import open_dc, open_relay
from mtpoold.testing.dc import rpc_error

from _daemonproc import async_daemon, free_port
from _e2e import fleet_config, fleet_world, open_fleet, proxy_entry

FLOODED = "15550000001"  # users of the loopback DC's default world
BEHIND = "15550000002"
SPARE = "15550000003"
PROXY_PASSWORD = "relay-pass-7f3a9c"  # a proxy password: never in a line
API_HASH = "ab" * 16
REASON = "flagged by panel, see ticket #12"


class Rpc:
    """JSON-RPC over one websocket, one request at a time."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.lock = trio.Lock()

    async def __call__(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        async with self.lock:
            self.next_id += 1
            request = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
            await self.ws.send_message(json.dumps(request))
            reply: dict[str, Any] = json.loads(await self.ws.get_message())
            assert reply["id"] == self.next_id, reply
            return reply

    async def invoke(self, method: str, account: str) -> dict[str, Any]:
        params = {"method": method, "args": {}, "options": {"account": account}}
        return await self("invoke", params)


async def mtpoold(config: Path, *args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "mtpoold", "--config", str(config), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def parse(line: str, log_format: str) -> dict[str, str]:
    """One line as ``{key: text}``; JSON values as logfmt would write them."""
    if log_format == "logfmt":
        return parse_logfmt(line)
    obj = json.loads(line)
    assert isinstance(obj, dict), line
    return {k: _as_text(v) for k, v in obj.items()}


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_log(path: Path, log_format: str) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    assert lines
    events = [parse(line, log_format) for line in lines]
    for line, event in zip(lines, events, strict=True):
        # no keyless line: every line is the head and an event name at least
        assert {"ts", "level", "logger", "event"} <= set(event), line
        assert event["level"] in ("debug", "info", "warning", "error", "critical"), line
    return events


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(("log_format", "level"), [("logfmt", "DEBUG"), ("json", "INFO")])
async def test_every_line_of_a_scripted_run_is_one_parseable_event(
    tmp_path: Path, log_format: str, level: str
) -> None:
    async with (
        open_dc() as dc,
        open_relay(username="relay", password=PROXY_PASSWORD) as relay,
    ):
        sessions = {p: dc.session_string(p) for p in (FLOODED, BEHIND, SPARE)}
        accounts = "".join(
            f'[[accounts]]\nid = "{name}"\napi_id = {i + 1}\napi_hash = "{API_HASH}"\n'
            f'session_string = "{sessions[phone]}"\n{extra}\n'
            for i, (name, phone, extra) in enumerate(
                [
                    ("flooded", FLOODED, ""),
                    ("behind", BEHIND, 'proxy = "relay-1"\n'),
                    ("spare", SPARE, ""),
                ]
            )
        )
        config = tmp_path / "mtpoold.toml"
        port = free_port()
        config.write_text(
            f'[daemon]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[telegram]\ndc_host = "{dc.host}"\ndc_port = {dc.port}\n'
            f"rsa_keys = [{json.dumps(dc.public_key_pem)}]\nconnect_timeout_s = 5\n\n"
            "[policy]\ncall_deadline_s = 5\njob_deadline_s = 15\nstream_closed_cooldown_s = 1\n"
            "proxy_cooldown_min_s = 0.2\nproxy_cooldown_max_s = 0.5\n\n"
            "[direct]\ninterval_s = 0\ncapacity = 4\n\n"
            f'[[proxies]]\nname = "relay-1"\ntype = "socks5"\nhost = "{relay.host}"\n'
            f'port = {relay.port}\nusername = "relay"\npassword = "{PROXY_PASSWORD}"\n'
            f"interval_s = 0\n\n{accounts}"
        )
        config.chmod(0o600)
        log = tmp_path / "daemon.log"
        run_args = ("--log-format", log_format, "--log-level", level)
        async with async_daemon(config, log, *run_args) as proc:
            token = (tmp_path / "state" / "token").read_text().strip()
            async with websocket(port, token) as ws:
                rpc = Rpc(ws)
                # jobs: one per account (connects, one through the relay)
                for account in ("flooded", "behind", "spare"):
                    assert "result" in await rpc.invoke("help.GetNearestDc", account)
                # a FLOOD_WAIT of 37 s on the flooded account
                fault = rpc_error(420, "FLOOD_WAIT_37")
                dc.faults.add(fault, user=FLOODED, method="help.GetConfig")
                flood = await rpc.invoke("help.GetConfig", "flooded")
                assert flood["error"]["data"]["class"] == "FLOOD_WAIT", flood
                # a disable with a reason holding spaces
                off = await rpc("accounts.disable", {"id": "spare", "reason": REASON})
                assert off["result"]["disabled"] is True, off
                # the relay drops the connection of the account behind it at the next job's
                # request; it passes again before the job's retry, which reconnects
                assert relay.open_connections
                relay.close_after(0)
                async with trio.open_nursery() as nursery:
                    replies: list[dict[str, Any]] = []

                    async def job() -> None:
                        replies.append(await rpc.invoke("help.GetNearestDc", "behind"))

                    nursery.start_soon(job)
                    with trio.fail_after(20):
                        while relay.open_connections:  # noqa: ASYNC110 - the daemon's
                            await trio.sleep(0.02)
                    relay.pass_through()
                (again,) = replies
                assert "result" in again, again
            # status: the lines it adds are DEBUG at most
            before = len(log.read_text().splitlines())
            status = await mtpoold(config, "status")
            assert status.returncode == 0, status.stderr
            await trio.sleep(0.2)  # let the daemon log the websocket's close
            during = read_log(log, log_format)[before:]
            proc.terminate()
            await proc.wait()
            assert proc.returncode == 0

    events = read_log(log, log_format)
    text = log.read_text()
    assert [e for e in during if e["level"] != "debug"] == []
    if level == "DEBUG":
        assert {"connection_open", "connection_closed"} <= {e["event"] for e in during}

    def named(name: str) -> list[dict[str, str]]:
        return [e for e in events if e["event"] == name]

    assert len(named("daemon_ready")) == 1 and len(named("daemon_stopped")) == 1
    # the calls, one line each
    calls = named("call")
    assert {(c["account"], c["outcome"]) for c in calls} >= {
        ("flooded", "OK"),
        ("behind", "OK"),
        ("spare", "OK"),
        ("flooded", "FLOOD_WAIT"),
    }
    assert all(float(c["elapsed_ms"]) >= 0 and c["method"] for c in calls)
    # the FLOOD_WAIT: its seconds and the end of the cooldown
    (flood_line,) = named("flood_wait")
    assert flood_line["account"] == "flooded" and flood_line["seconds"] == "37"
    assert (
        flood_line["rpc_error"] == "FLOOD_WAIT_37"
        and flood_line["request"] == "help.GetConfigRequest"
    )
    until = _utc(flood_line["until"]) - _utc(flood_line["ts"])
    assert dt.timedelta(seconds=35) <= until <= dt.timedelta(seconds=38)
    # the disable, once (the server does not log it again), its reason whole
    (disabled,) = named("account_disabled")
    assert (disabled["account"], disabled["reason"], disabled["by"]) == (
        "spare",
        REASON,
        "operator",
    )
    if log_format == "logfmt":
        assert f'reason="{REASON}"' in text
    # connects: phase and elapsed_ms; the relay's account through its proxy
    connects = named("connect")
    assert {c["account"] for c in connects} == {"flooded", "behind", "spare"}
    for c in connects:
        assert c["phase"] == "dc_answered" and c["outcome"] == "ok" and float(c["elapsed_ms"]) > 0
    (behind_connect,) = [c for c in connects if c["account"] == "behind"]
    assert behind_connect["proxy"] == "relay-1"
    assert {c["proxy"] for c in connects if c["account"] != "behind"} == {"no_proxy"}
    # the drop: a disconnect the relay caused, then a reconnect through the relay
    dropped = [d for d in named("disconnect") if d["account"] == "behind"]
    assert dropped and dropped[0]["dropped"] == "true", dropped
    reconnects = [r for r in named("reconnect") if r["outcome"] == "ok"]
    assert [(r["account"], r["proxy"], r["phase"]) for r in reconnects] == [
        ("behind", "relay-1", "dc_answered")
    ]
    assert float(reconnects[0]["elapsed_ms"]) > 0
    # Telethon's own lines carry the account and proxy of the call they belong to
    telethon = [e for e in events if e["logger"].startswith("telethon")]
    assert telethon, "the relay's drop makes Telethon log a warning"
    for e in telethon:
        assert (e["event"], e["account"], e["proxy"]) == ("log", "behind", "relay-1"), e
        assert e["msg"]
    # secrets and personal data never in a line
    for secret in (PROXY_PASSWORD, API_HASH, FLOODED, BEHIND, SPARE, *sessions.values()):
        assert secret not in text


# --- a failed connect: the phase it got to -------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "phase", "outcome"),
    [
        ("refuse", "proxy_tcp", "ProxyUnavailable"),
        # cut off by connect_timeout_s: the worker blames the proxy (the cooldown below)
        ("blackhole", "proxy_handshake", "cancelled"),
        ("close_after", "dc_first_bytes", "ProxyUnavailable"),
    ],
)
async def test_a_failed_connect_logs_the_phase_it_got_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str, phase: str, outcome: str
) -> None:
    caplog.set_level(logging.INFO)
    async with open_dc(fleet_world()) as dc, open_relay() as relay:
        if fault == "close_after":
            relay.close_after(64)
        else:
            getattr(relay, fault)()
        config = fleet_config(
            tmp_path,
            dc,
            proxies=[proxy_entry("p1", relay, interval_s=0.1)],
            accounts={"a1": (FLOODED, "p1")},
            policy={"max_attempts": 1},
            telegram={"connect_timeout_s": 1.0},
        )
        async with open_fleet(dc, config) as fleet:
            with trio.fail_after(15), pytest.raises(JobFailed):
                await fleet.pool.invoke("help.getNearestDc", {})
    events = [r.msg for r in caplog.records if isinstance(r.msg, LogEvent)]
    (connect,) = [e for e in events if e.name == "connect"]
    assert connect.fields["account"] == "a1" and connect.fields["proxy"] == "p1"
    assert connect.fields["phase"] == phase and connect.fields["outcome"] == outcome
    assert isinstance(connect.fields["elapsed_ms"], float) and connect.fields["elapsed_ms"] >= 0
    (cooldown,) = [e for e in events if e.name == "cooldown"]
    assert (cooldown.fields["scope"], cooldown.fields["proxy"]) == ("proxy", "p1")
    assert cooldown.fields["cause"] == "PROXY_UNAVAILABLE"
    for event in events:  # each one renders as a line the strict parser reads
        parse_logfmt(str(event))
