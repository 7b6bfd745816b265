"""A Prometheus scrape of a running daemon (`mtpoold run`, real Telethon, the loopback DC, a
relay that refuses): after a scripted run — N jobs, one FLOOD_WAIT, one proxy failure — the
exposition parses with prometheus_client's own parser and says what happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from mtpoold._rpc import RpcError
from mtpoold._rpcclient import call, parse_target
from mtpoold.testing import open_dc, open_relay
from mtpoold.testing.dc import rpc_error

from _daemonproc import async_daemon, free_port
from _e2e import PHONES

FLOODED, HEALTHY, BEHIND_DEAD_PROXY = PHONES[0], PHONES[1], PHONES[2]
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def scrape(address: str) -> tuple[str, Samples]:
    """``GET /metrics`` over a plain socket; the body parsed by prometheus_client."""
    host, port = address.rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        raw = b""
        while chunk := await stream.receive_some(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert f"Content-Type: {CONTENT_TYPE_LATEST}".encode() in head
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return body.decode("utf-8"), out


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def write_config(tmp_path: Path, dc: Any, relay: Any, *, listen: str, metrics: str) -> Path:
    accounts = "".join(
        f'[[accounts]]\nid = "{name}"\napi_id = {i + 1}\napi_hash = "{"ab" * 16}"\n'
        f'session_string = "{dc.session_string(phone)}"\n{extra}\n'
        for i, (name, phone, extra) in enumerate(
            [
                ("flooded", FLOODED, ""),
                ("healthy", HEALTHY, ""),
                ("behind-dead", BEHIND_DEAD_PROXY, 'proxy = "dead"\n'),
            ]
        )
    )
    config = tmp_path / "mtpoold.toml"
    config.write_text(
        f'[daemon]\nlisten = "{listen}"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[metrics]\nlisten = "{metrics}"\n\n'
        f'[telegram]\ndc_host = "{dc.host}"\ndc_port = {dc.port}\nconnect_timeout_s = 3.0\n'
        f"rsa_keys = [{json.dumps(dc.public_key_pem)}]\n\n"
        # one attempt per job, and a proxy cooldown no job outlives: each fault is one answer
        "[policy]\nmax_attempts = 1\nproxy_cooldown_min_s = 600\n\n"
        "[direct]\ninterval_s = 0\ncapacity = 4\n\n"
        f'[[proxies]]\nname = "dead"\ntype = "socks5"\nhost = "{relay.host}"\n'
        f"port = {relay.port}\ninterval_s = 0\n\n{accounts}"
    )
    config.chmod(0o600)
    return config


async def test_scrape_after_jobs_a_flood_wait_and_a_proxy_failure(tmp_path: Path) -> None:
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    async with open_dc() as dc, open_relay() as relay:
        relay.refuse()  # the proxy is down: its account's connect is refused
        config = write_config(tmp_path, dc, relay, listen=listen, metrics=metrics)
        log = tmp_path / "daemon.log"
        with trio.fail_after(60):
            async with async_daemon(config, log):
                assert f"event=metrics_listening address={metrics}" in log.read_text()
                token = (tmp_path / "state" / "token").read_text().strip()
                target = parse_target(listen)

                async def job(method: str, params: dict[str, Any]) -> str:
                    try:
                        await call(target, token, method, params, timeout_s=20)
                    except RpcError as exc:
                        return exc.error_class
                    return "OK"

                _, before = await scrape(metrics)
                assert "mtpoold_jobs_total" not in before  # no job answered yet
                outcomes: list[tuple[str, str]] = []
                # N = 5 jobs that work: three of class "other", two resolves
                for account in ("flooded", "healthy", "healthy"):
                    ok = {"method": "help.getNearestDc", "options": {"account": account}}
                    outcomes.append(("other", await job("invoke", ok)))
                for peer in ("@alice_test", "@bob_test"):
                    options = {"account": "healthy"}
                    outcomes.append(
                        (
                            "resolve",
                            await job("resolve", {"link_or_username": peer, "options": options}),
                        )
                    )
                # one FLOOD_WAIT: the DC floods the account's next ResolveUsername
                dc.faults.add(
                    rpc_error(420, "FLOOD_WAIT_300"),
                    user=FLOODED,
                    method="contacts.ResolveUsername",
                )
                flood = {"link_or_username": "@dave_2fa", "options": {"account": "flooded"}}
                outcomes.append(("resolve", await job("resolve", flood)))
                # one proxy failure: the account behind the refusing relay
                dead = {"method": "help.getNearestDc", "options": {"account": "behind-dead"}}
                outcomes.append(("other", await job("invoke", dead)))
                status = await call(target, token, "status")
                text, s = await scrape(metrics)
    print(outcomes, text, sep="\n")
    assert [o for _, o in outcomes] == ["OK"] * 5 + ["FLOOD_WAIT", "PROXY_UNAVAILABLE"]
    n_jobs = len(outcomes)

    # jobs by class and outcome: every job counted once, as its answer said
    expected: dict[tuple[tuple[str, str], ...], float] = {}
    for rate_class, outcome in outcomes:
        key = (("outcome", outcome), ("rate_class", rate_class))
        expected[key] = expected.get(key, 0) + 1
    assert s["mtpoold_jobs_total"] == expected
    assert (
        sum(s["mtpoold_jobs_total"].values()) == n_jobs == status["jobs_ok"] + status["jobs_failed"]
    )
    assert one(s, "mtpoold_jobs_in_flight") == 0

    # the proxy failure: the lane's error, its cooldown, its account held back
    assert one(s, "mtpoold_lane_errors_total", proxy="dead", error_class="PROXY_UNAVAILABLE") == 1
    assert 500 < one(s, "mtpoold_lane_cooldown_seconds", proxy="dead") <= 600
    assert one(s, "mtpoold_lane_consecutive_failures", proxy="dead") == 1
    assert one(s, "mtpoold_lane_capacity", proxy="dead", type="socks5") == 1
    assert one(s, "mtpoold_accounts", state="cooldown") == 1  # behind the cooling proxy
    assert one(s, "mtpoold_accounts_cooling") == 1

    # the FLOOD_WAIT: the flooded account's resolve class cools for 300 s
    assert one(s, "mtpoold_class_cooldowns", rate_class="resolve") == 1
    assert 250 < one(s, "mtpoold_class_cooldown_seconds_max", rate_class="resolve") <= 300
    assert one(s, "mtpoold_account_cooldown_seconds_max") == 0  # not the whole account
    assert one(s, "mtpoold_lane_errors_total", proxy="no_proxy", error_class="FLOOD_WAIT") == 1

    # lanes as status shows them, and one histogram observation per started slot
    lanes = {p["name"]: p for p in status["proxies"]}
    for name, lane in lanes.items():
        calls = one(s, "mtpoold_lane_calls_total", proxy=name)
        assert calls == lane["calls"], name
        assert one(s, "mtpoold_gate_wait_seconds_count", proxy=name) == calls
        assert one(s, "mtpoold_gate_wait_seconds_bucket", proxy=name, le="+Inf") == calls
        assert one(s, "mtpoold_call_duration_seconds_count", proxy=name) == calls
    assert lanes["no_proxy"]["calls"] >= 6  # the jobs' calls and the connects
    assert lanes["dead"]["calls"] == 1  # the refused connect took its slot
    states = {st: 0 for st in ("idle", "connecting", "ready", "busy", "cooldown", "disabled")}
    for acc in status["accounts"]:
        states[acc["state"]] += 1
    for state, n in states.items():
        assert one(s, "mtpoold_accounts", state=state) == n, state

    # budgets: every ResolveUsername the DC saw was counted against the resolve budget
    sent = sum(dc.counters(p).get("contacts.ResolveUsername", 0) for p in PHONES[:3])
    assert dc.counters(FLOODED)["contacts.ResolveUsername"] == 1  # the flooded one counts
    assert sent >= 2
    assert one(s, "mtpoold_budget_spent", rate_class="resolve", window="per_hour") == sent
    # 3 accounts, 50 an hour each, halved by the warm-up of a brand-new account
    assert one(s, "mtpoold_budget_limit", rate_class="resolve", window="per_hour") == 75

    # the websocket server, the process
    assert one(s, "mtpoold_ws_requests_total") >= n_jobs + 1
    assert one(s, "mtpoold_ws_rejected_handshakes_total") == 0
    assert one(s, "mtpoold_config_generation") == 1
    assert one(s, "mtpoold_uptime_seconds") > 0
    (build,) = s["mtpoold_build_info"]
    assert dict(build)["telethon"].startswith("1.")

    # ids and counts only: no phone, no session, no api_hash, no proxy address
    for secret in (*PHONES[:3], dc.session_string(FLOODED), "ab" * 16, relay.url):
        assert secret not in text
