"""Scenario 5: Telethon through trio-asyncio vs native asyncio, with and without cryptg.

One account, one call at a time (as the pool runs an account), ``help.getConfig`` against the
loopback DC (its own process, the same for every variant). Three clients, each in a fresh
interpreter: **native** — ``asyncio.run`` and ``await client(GetConfigRequest())``;
**bridge** — the same Telethon call from Trio through ``trio_asyncio.aio_as_trio`` inside
``trio_asyncio.open_loop()`` (what `TelethonClient` does, without the JSON layer);
**mtpoold** — ``TelethonClient.call("help.GetConfig", {})``, i.e. the bridge plus building the
request from JSON and turning the result into JSON. Crypto: ``cryptg`` (installed),
``libssl`` (Telethon's ctypes OpenSSL fallback: ``telethon.crypto.aes.cryptg = None``) and pure
Python ``pyaes`` (also ``libssl.encrypt_ige/decrypt_ige = None``), patched in the client process
only. Variants run interleaved, three rounds; the figure is the median round.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from ._common import Report, percentile, run_child

NAME: Final = "bridge"
TITLE: Final = "5. Telethon bridge: trio-asyncio vs native asyncio, cryptg on/off"

API_ID: Final = 12345
API_HASH: Final = "0123456789abcdef0123456789abcdef"


def _set_crypto(crypto: str) -> None:
    from telethon.crypto import aes, libssl

    if crypto in ("libssl", "python"):
        aes.cryptg = None
    if crypto == "python":
        libssl.encrypt_ige = None
        libssl.decrypt_ige = None


def _telethon_client(session: str) -> Any:
    from telethon import TelegramClient
    from telethon.sessions import StringSession

    return TelegramClient(
        StringSession(session),
        API_ID,
        API_HASH,
        flood_sleep_threshold=0,
        request_retries=1,
        connection_retries=0,
        retry_delay=0,
        auto_reconnect=False,
        receive_updates=False,
        raise_last_call_error=True,
    )


def probe(
    mode: str, crypto: str, seconds: float, port: int, world_path: str, pem: str
) -> dict[str, Any]:
    """Child: sequential help.getConfig for ``seconds``; calls/s and CPU per call."""
    from telethon.crypto import rsa
    from telethon.tl.functions.help import GetConfigRequest

    from ._dc import session_strings

    _set_crypto(crypto)
    rsa.add_key(pem, old=False)
    session = session_strings(world_path, port, 1)[0]
    out: dict[str, Any] = {"mode": mode, "crypto": crypto}

    def measure_start() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def measure_end(t: tuple[float, float], n: int) -> None:
        wall, cpu = time.perf_counter() - t[0], time.process_time() - t[1]
        out.update(calls=n, calls_per_s=n / wall, cpu_per_call=cpu / n)

    if mode == "native":

        async def native() -> None:
            client = _telethon_client(session)
            await client.connect()
            for _ in range(50):
                await client(GetConfigRequest())
            t, n = measure_start(), 0
            while time.perf_counter() - t[0] < seconds:
                await client(GetConfigRequest())
                n += 1
            measure_end(t, n)
            await client.disconnect()

        asyncio.run(native())
        return out

    import trio
    import trio_asyncio

    from mtpoold._client import telethon_client_factory
    from mtpoold._config import parse_config

    async def bridged() -> None:
        async with trio_asyncio.open_loop():
            if mode == "bridge":
                client = _telethon_client(session)
                await trio_asyncio.aio_as_trio(client.connect)()
                call = trio_asyncio.aio_as_trio(client)

                async def one() -> Any:
                    return await call(GetConfigRequest())
            else:
                import tempfile
                from pathlib import Path

                with tempfile.TemporaryDirectory() as tmp:
                    config = parse_config(
                        {
                            "telegram": {
                                "dc_id": 2,
                                "dc_host": "127.0.0.1",
                                "dc_port": port,
                                "rsa_keys": [pem],
                            },
                            "accounts": [
                                {
                                    "id": "a",
                                    "api_id": API_ID,
                                    "api_hash": API_HASH,
                                    "session_string": session,
                                }
                            ],
                        },
                        base_dir=Path(tmp),
                    )
                client = telethon_client_factory(config)(config.accounts[0])
                await client.connect()

                async def one() -> Any:
                    return await client.call("help.GetConfig", {})

            for _ in range(50):
                await one()
            t, n = measure_start(), 0
            while time.perf_counter() - t[0] < seconds:
                await one()
                n += 1
            measure_end(t, n)
            if mode == "bridge":
                await trio_asyncio.aio_as_trio(client.disconnect)()
            else:
                await client.disconnect()

    trio.run(bridged)
    return out


MODES: Final = ("native", "bridge", "mtpoold")
CRYPTO: Final = ("cryptg", "libssl", "python")


def run(*, quick: bool) -> Report:
    from ._dc import dc_process

    report = Report(NAME, TITLE)
    seconds, rounds = (2.0, 1) if quick else (3.0, 3)
    res: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with dc_process(1) as dc:
        for _ in range(rounds):
            for crypto in CRYPTO:
                for mode in MODES:
                    r = run_child(
                        "bench.bridge:probe",
                        mode=mode,
                        crypto=crypto,
                        seconds=seconds,
                        port=dc.port,
                        world_path=dc.world_path,
                        pem=dc.public_key_pem,
                    )
                    res.setdefault((mode, crypto), []).append(r)

    def rate(mode: str, crypto: str) -> float:
        return percentile([r["calls_per_s"] for r in res[(mode, crypto)]], 50)

    def cpu(mode: str, crypto: str) -> float:
        rs = res[(mode, crypto)]
        return sum(r["cpu_per_call"] for r in rs) / len(rs)

    for crypto in CRYPTO:
        native = rate("native", crypto)
        ours = rate("mtpoold", crypto)
        bridge = rate("bridge", crypto)
        goal = crypto == "cryptg"
        report.row(
            f"help.getConfig calls/s, TelethonClient.call vs native ({crypto})",
            f"{ours:,.0f}/s",
            f"{native:,.0f}/s",
            f"{ours / native:.2f}",
            ">= 0.85 of native" if goal else "",
            (ours / native >= 0.85) if goal else None,
        )
        report.row(
            f"  bridge only (aio_as_trio, no JSON) vs native ({crypto})",
            f"{bridge:,.0f}/s",
            f"{native:,.0f}/s",
            f"{bridge / native:.2f}",
        )
    for mode in MODES:
        with_c, without = rate(mode, "cryptg"), rate(mode, "libssl")
        report.row(
            f"cryptg speed-up over libssl / pure Python ({mode})",
            f"{with_c:,.0f}/s",
            f"{without:,.0f}/s / {rate(mode, 'python'):,.0f}/s",
            f"{with_c / without:.2f}x / {with_c / rate(mode, 'python'):.2f}x",
        )

    report.details += [
        "| client | crypto | calls/s (per round) | client CPU per call |",
        "|---|---|---|---|",
    ]
    for crypto in CRYPTO:
        for mode in MODES:
            rs = res[(mode, crypto)]
            report.details.append(
                f"| {mode} | {crypto} | "
                + ", ".join(f"{r['calls_per_s']:,.0f}" for r in rs)
                + f" | {cpu(mode, crypto) * 1e6:,.0f} µs |"
            )
    report.details.append("")
    report.notes.append(
        "Calls/s is round-trip bound: client CPU + loopback DC CPU (another process; it uses "
        "cryptg in every variant) + two loopback hops. CPU per call is the client process only "
        "(time.process_time)."
    )
    return report


ANALYSIS: Final = """
**Goal met, narrowly: 0.85 of native with cryptg (1,569 vs 1,837 calls/s, median rounds).**
Calls/s is round-trip bound and noisy on this 2-vCPU VM (the DC process shares the cores;
the rounds of one variant spread by ±15 %), so the client CPU per call is the steadier
figure: native 396 µs, bridge 456 µs (+60 µs), mtpoold 516 µs (+60 µs more). The bridge
(`aio_as_trio` around the same Telethon call) crosses trio → asyncio → trio on every call:
a new asyncio task per call, scheduled through `TrioEventLoop.call_soon` /
`_main_loop_one` in trio_asyncio/_base.py, plus `mtpoold/_aiolog.py:task_factory` naming
the task. `TelethonClient.call` (mtpoold/_client.py) adds the JSON layer: `build_request`
and `to_json` (mtpoold/_tljson.py) over the large `Config` result — after the `to_json`
fast paths the JSON layer is still ~50–60 µs per call (it was ~48 µs in the previous run:
within the noise, so the fast paths did not move this figure measurably; in the scenario 2
profile `to_json` is ~3 % of a warm call). The ratio rests on the 0.85 line: a 5 % noisier
round flips it, and the bridge hop costs as much as the JSON layer. cryptg vs Telethon's
libssl fallback changes little for these small messages (both are C); against pure-Python
`pyaes` cryptg is ~3x faster, so a host without cryptg *and* libssl is the case to avoid.
"""
