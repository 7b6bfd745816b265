"""Scenario 2: mtpoold's warm pool vs a new Telethon client per job (the PHP system's way).

Both go through a real SOCKS5 proxy (``mtpoold.testing.open_proxy``: pproxy in its own
process) to the loopback DC (its own process), one job at a time, ``help.getConfig``.
**per-job**: for every job a new `TelethonClient` (mtpoold's own adapter, so the only
difference is warm vs cold): connect — TCP, SOCKS5 handshake, ``initConnection``, and the
requests Telethon sends on connect — one call, disconnect. **warm pool**: ``open_pool`` with
the real Telethon client factory and ``pool.invoke`` per job after a warm-up, configured
through the real knobs only: the proxy at ``interval_s = 0`` (an ungated lane: no start
jitter either), and for the ``direct`` rows ``[direct] interval_s = 0, capacity = 1``. The
shipped defaults (``interval_s = 2``) are measured too: there the gate, not latency, is the
point. CPU per job counts the client process (``time.process_time``) plus the pproxy process
(``/proc/PID/stat``); the DC's CPU is shown apart (the server side, Telegram's cost).
The only patch gives the per-job baseline TCP_NODELAY in the "fair" rows (see the analysis).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Final

from ._common import Report, cpu_seconds, ms, percentile, run_child

NAME: Final = "warm"
TITLE: Final = "2. Warm pool vs a new client per job"

API_ID: Final = 12345
API_HASH: Final = "0123456789abcdef0123456789abcdef"


def client_nodelay() -> None:
    """Bench-only diagnostic: TCP_NODELAY on the client's socket to the SOCKS5 proxy.

    python-socks creates that socket as ``socket.socket(family, SOCK_STREAM)`` (proto 0), and
    asyncio's transport sets TCP_NODELAY only when ``sock.proto == IPPROTO_TCP``, so Telethon's
    proxied connections keep Nagle on (its direct ones, opened by ``asyncio.open_connection``,
    do not). This sets it where mtpoold would have to.
    """
    import socket

    import python_socks.async_.asyncio._proxy as socks_proxy

    connect_tcp = socks_proxy.connect_tcp

    async def connect_nodelay(*args: Any, **kwargs: Any) -> socket.socket:
        sock = await connect_tcp(*args, **kwargs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    socks_proxy.connect_tcp = connect_nodelay  # type: ignore[assignment]


def probe(
    mode: str,
    via: str,
    nodelay: bool,
    jobs: int,
    max_s: float,
    dc_port: int,
    dc_pid: int,
    world_path: str,
    pem: str,
) -> dict[str, Any]:
    """Child: run ``jobs`` sequential jobs (at most ``max_s`` seconds) in one ``mode``."""
    import trio
    import trio_asyncio

    from mtpoold._client import telethon_client_factory
    from mtpoold._compose import open_pool
    from mtpoold._config import parse_config
    from mtpoold.testing import open_proxy

    from ._dc import session_strings

    if nodelay:
        client_nodelay()
    sessions = session_strings(world_path, dc_port, 1)
    # "pool_default": the shipped defaults (interval 2 s, capacity 1, 50–150 ms jitter);
    # "pool": the real knobs set for latency (interval 0: an ungated lane, no jitter).
    knobs = {} if mode == "pool_default" else {"interval_s": 0.0, "capacity": 1}
    out: dict[str, Any] = {"mode": mode, "via": via}

    async def main() -> None:
        async with open_proxy("socks5") as proxy:
            assert proxy._process is not None
            proxy_pid = proxy._process.pid
            account: dict[str, Any] = {
                "id": "a0",
                "api_id": API_ID,
                "api_hash": API_HASH,
                "session_string": sessions[0],
            }
            if via == "socks5":
                account["proxy"] = "px"
            with tempfile.TemporaryDirectory() as tmp:
                config = parse_config(
                    {
                        "telegram": {
                            "dc_id": 2,
                            "dc_host": "127.0.0.1",
                            "dc_port": dc_port,
                            "rsa_keys": [pem],
                        },
                        "proxies": [
                            {
                                "name": "px",
                                "type": "socks5",
                                "host": proxy.host,
                                "port": proxy.port,
                                **knobs,
                            }
                        ],
                        "direct": knobs,
                        "accounts": [account],
                    },
                    base_dir=Path(tmp),
                )
            lat: list[float] = []

            def begin() -> tuple[float, float, float, float]:
                return (
                    time.perf_counter(),
                    time.process_time(),
                    cpu_seconds(proxy_pid),
                    cpu_seconds(dc_pid),
                )

            def end(t: tuple[float, float, float, float]) -> None:
                n = len(lat)
                out.update(
                    jobs=n,
                    wall=time.perf_counter() - t[0],
                    jobs_per_s=n / (time.perf_counter() - t[0]),
                    client_cpu=(time.process_time() - t[1]) / n,
                    proxy_cpu=(cpu_seconds(proxy_pid) - t[2]) / n,
                    dc_cpu=(cpu_seconds(dc_pid) - t[3]) / n,
                    p50=percentile(lat, 50),
                    p99=percentile(lat, 99),
                )

            if mode == "per_job":
                factory = telethon_client_factory(config)
                async with trio_asyncio.open_loop():

                    async def job() -> None:
                        client = factory(config.accounts[0])
                        try:
                            await client.connect()
                            await client.call("help.GetConfig", {})
                        finally:
                            await client.disconnect()

                    for _ in range(3):
                        await job()
                    t = begin()
                    while len(lat) < jobs and time.perf_counter() - t[0] < max_s:
                        t1 = time.perf_counter()
                        await job()
                        lat.append(time.perf_counter() - t1)
                    end(t)
                return

            async with open_pool(config) as pool:
                for _ in range(1 if mode == "pool_default" else 5):
                    await pool.invoke("help.GetConfig", {})
                t = begin()
                while len(lat) < jobs and time.perf_counter() - t[0] < max_s:
                    t1 = time.perf_counter()
                    await pool.invoke("help.GetConfig", {})
                    lat.append(time.perf_counter() - t1)
                end(t)

    trio.run(main)
    return out


#: (label, mode, via, client TCP_NODELAY, jobs, max seconds)
PLAN: Final = (
    ("per-job client", "per_job", "socks5", False, 300, 10.0),
    ("warm pool (interval 0)", "pool", "socks5", False, 2000, 5.0),
    ("per-job client, client TCP_NODELAY", "per_job", "socks5", True, 300, 5.0),
    ("warm pool (interval 0), client TCP_NODELAY", "pool", "socks5", True, 2000, 5.0),
    ("warm pool, shipped defaults (interval 2 s)", "pool_default", "socks5", False, 5, 12.0),
    ("per-job client", "per_job", "direct", False, 300, 5.0),
    ("warm pool ([direct] interval 0)", "pool", "direct", False, 2000, 5.0),
)


def run(*, quick: bool) -> Report:
    from ._dc import dc_process

    report = Report(NAME, TITLE)
    scale = 0.3 if quick else 1.0
    res: dict[tuple[str, str, bool], dict[str, Any]] = {}
    with dc_process(1) as dc:
        for _, mode, via, nodelay, jobs, max_s in PLAN:
            res[(mode, via, nodelay)] = run_child(
                "bench.warm:probe",
                mode=mode,
                via=via,
                nodelay=nodelay,
                jobs=max(3, int(jobs * scale)),
                max_s=max_s * scale,
                dc_port=dc.port,
                dc_pid=dc.pid,
                world_path=dc.world_path,
                pem=dc.public_key_pem,
            )

    def cpu(r: dict[str, Any]) -> float:
        return r["client_cpu"] + r["proxy_cpu"]

    comparisons = (
        ("[socks5] {what}, warm pool (interval 0) vs per-job", "socks5", False),
        (
            "[socks5, per-job client given TCP_NODELAY too (fair)] {what}, warm pool vs per-job",
            "socks5",
            True,
        ),
        ("[direct] {what}, warm pool ([direct] interval 0) vs per-job", "direct", False),
    )
    for title, via, nodelay in comparisons:
        cold = res[("per_job", via, nodelay)]
        r = res[("pool", via, nodelay)]
        what = "CPU s/job (client + proxy)" if via == "socks5" else "CPU s/job (client)"
        report.row(
            title.format(what=what),
            ms(cpu(r), 3),
            ms(cpu(cold), 3),
            f"{cpu(cold) / cpu(r):.1f}x less",
            ">= 10x less",
            cpu(cold) / cpu(r) >= 10,
        )
        report.row(
            title.format(what="latency p50"),
            ms(r["p50"], 2),
            ms(cold["p50"], 2),
            f"{cold['p50'] / r['p50']:.2f}x lower",
            ">= 10x lower",
            cold["p50"] / r["p50"] >= 10,
        )
        report.row(
            title.format(what="latency p99 / jobs/s"),
            f"{ms(r['p99'], 2)} / {r['jobs_per_s']:,.1f}",
            f"{ms(cold['p99'], 2)} / {cold['jobs_per_s']:,.1f}",
            f"{r['jobs_per_s'] / cold['jobs_per_s']:.1f}x jobs/s",
        )
    cold = res[("per_job", "socks5", False)]
    r = res[("pool_default", "socks5", False)]
    report.row(
        "[socks5] latency p50 / jobs/s, warm pool at the shipped defaults (interval 2 s: "
        "the gate is the point) vs per-job",
        f"{ms(r['p50'], 0)} / {r['jobs_per_s']:,.2f}",
        f"{ms(cold['p50'], 2)} / {cold['jobs_per_s']:,.1f}",
        "",
        "one start per 2 s",
        None,
    )

    report.details += [
        "| path | mode | jobs | jobs/s | p50 | p99 | client CPU/job | pproxy CPU/job "
        "| DC CPU/job |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, mode, via, nodelay, _, _ in PLAN:
        r = res[(mode, via, nodelay)]
        report.details.append(
            f"| {via} | {label} | {r['jobs']} | {r['jobs_per_s']:,.1f} | {ms(r['p50'], 2)} "
            f"| {ms(r['p99'], 2)} | {ms(r['client_cpu'], 3)} "
            f"| {ms(r['proxy_cpu'], 3) if via == 'socks5' else '—'} | {ms(r['dc_cpu'], 3)} |"
        )
    report.details.append("")
    report.notes += [
        "CPU from /proc is counted in clock ticks (10 ms): pproxy and DC figures are "
        "totals over the run divided by jobs, so they are exact only to ±10 ms / jobs.",
        "`direct` runs the same jobs without the proxy (`[direct] interval_s = 0, "
        "capacity = 1`); `client TCP_NODELAY` rows patch only the client's socket to the "
        "proxy (both per-job and pool), the fix mtpoold would need (see the analysis).",
        f"The shipped-defaults row makes {res[('pool_default', 'socks5', False)]['jobs']} jobs: "
        "each waits for the proxy's shipped interval since the previous start, so its latency "
        "is the interval minus the call, by design.",
    ]

    def per(key: tuple[str, str, bool]) -> dict[str, Any]:
        return res[key]

    fair_cold, fair_warm = per(("per_job", "socks5", True)), per(("pool", "socks5", True))
    d_cold, d_warm = per(("per_job", "direct", False)), per(("pool", "direct", False))
    plain_cold = per(("per_job", "socks5", False))
    report.values.update(
        per_job_p50_nagle=ms(plain_cold["p50"], 1),
        per_job_p50_nodelay=ms(fair_cold["p50"], 1),
        warm_p50=ms(per(("pool", "socks5", False))["p50"], 2),
        fair_cpu_ratio=f"{cpu(fair_cold) / cpu(fair_warm):.1f}x",
        fair_p50_ratio=f"{fair_cold['p50'] / fair_warm['p50']:.1f}x",
        direct_cpu_ratio=f"{cpu(d_cold) / cpu(d_warm):.1f}x",
        direct_p50_ratio=f"{d_cold['p50'] / d_warm['p50']:.1f}x",
        shipped_cpu_ratio=f"{cpu(plain_cold) / cpu(per(('pool', 'socks5', False))):.1f}x",
        warm_cpu=ms(cpu(d_warm), 3),
        verdict=(
            "met"
            if min(cpu(fair_cold) / cpu(fair_warm), cpu(d_cold) / cpu(d_warm)) >= 10
            else "missed"
        ),
    )
    return report


ANALYSIS: Final = """
- **The stall a per-job client pays through the proxy is Telethon's socket, not pproxy.**
  Telethon opens a proxied connection with python-socks, whose `connect_tcp`
  (python_socks/async_/asyncio/_connect.py) creates the socket as
  `socket.socket(family, SOCK_STREAM)` — `proto` zero — and asyncio's transport sets
  TCP_NODELAY only if `sock.proto == IPPROTO_TCP` (`_set_nodelay` in asyncio/base_events.py).
  So every Telethon connection through a proxy keeps Nagle on, while direct ones and both of
  pproxy's sockets have it off: a small write behind an unacknowledged one waits for the
  proxy's delayed ACK. In this run a per-job client's p50 through the proxy is
  {per_job_p50_nagle} as Telethon ships and {per_job_p50_nodelay} with TCP_NODELAY set on
  that one socket, pproxy unchanged. mtpoold sets it after every connect
  (`_set_nodelay` in mtpoold/_client.py; tests/test_client_nodelay.py), so its warm p50
  through the proxy is {warm_p50}; the per-job baseline (plain Telethon) has it only in the
  `per-job client given TCP_NODELAY too (fair)` rows, the fair comparison through the proxy,
  with the `direct` rows.
- **Fairly measured, the goal of ten times less CPU is {verdict}.** Through the proxy, both
  sides with TCP_NODELAY: {fair_cpu_ratio} less CPU, {fair_p50_ratio} lower p50; direct:
  {direct_cpu_ratio} / {direct_p50_ratio}. mtpoold as shipped against a plain per-job
  Telethon through the proxy: {shipped_cpu_ratio} less CPU. What limits the ratio on loopback
  is the baseline, not mtpoold: a per-job client with a pre-authorized key does no DH
  exchange, and its extra round trips (TCP, SOCKS5, initConnection, the requests Telethon sends
  on connect) cost little on loopback. Against Telegram every avoided round trip costs the
  network RTT, and a session without a key also pays the RSA and DH exchange — loopback cannot
  show that.
- **The warm call** costs {warm_cpu} of client CPU per job on the direct lane: the trio →
  asyncio → trio hop per call, Telethon's MTProto path and mtpoold's own layers (profile with
  `python -m bench --only warm` under pyinstrument or py-spy to see the split on a given run).
- **Shipped defaults.** At the default `interval_s` a sequential job waits for the previous
  start plus the interval, so its latency is the interval by design: that row shows the gate
  doing its job, not latency, and is not judged against the goals.
"""
