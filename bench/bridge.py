"""Scenario 5: Telethon through trio-asyncio vs native asyncio, with and without cryptg.

One account, one call at a time (as the pool runs an account), ``help.getConfig`` against the
loopback DC (its own process, the same for every variant). Three clients, each in a fresh
interpreter: **native** — ``asyncio.run`` and ``await client(GetConfigRequest())``, in a process
that never imports trio, trio-asyncio or mtpoold; **bridge** — the same Telethon call from Trio
through ``trio_asyncio.aio_as_trio`` inside trio-asyncio's stock ``trio_asyncio.open_loop()``;
**mtpoold** — ``TelethonClient.call("help.GetConfig", {})`` on the loop the daemon opens
(`mtpoold._aioloop.open_aio_loop`: callbacks in batches), i.e. the bridge plus building the
request from JSON and turning the result into JSON. Crypto: ``cryptg`` (installed), ``libssl``
(Telethon's ctypes OpenSSL fallback: ``telethon.crypto.aes.cryptg = None``) and pure Python
``pyaes`` (also ``libssl.encrypt_ige/decrypt_ige = None``), patched in the client process only.
Variants run interleaved, three rounds; the figure is the median round.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Final

from ._common import Report, percentile, run_child

NAME: Final = "bridge"
TITLE: Final = "5. Telethon bridge: trio-asyncio vs native asyncio, cryptg on/off"

#: Calls over which the loop's steps per call are counted (after the timed run).
STEP_CALLS: Final = 200

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


#: Modules whose presence makes an asyncio baseline not native: trio-asyncio replaces the
#: event loop policy on import, so ``asyncio.run`` then runs on its ``SyncTrioEventLoop``.
FOREIGN_PREFIXES: Final = ("trio_asyncio", "trio", "mtpoold")


def foreign_modules() -> list[str]:
    """The modules of `FOREIGN_PREFIXES` this process has imported (sorted)."""
    return sorted(
        m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in FOREIGN_PREFIXES)
    )


def probe(
    mode: str, crypto: str, seconds: float, port: int, session: str, pem: str
) -> dict[str, Any]:
    """Child: sequential help.getConfig for ``seconds``; calls/s and CPU per call.

    ``session`` is a Telethon StringSession made by the parent (`bench._dc.session_strings`
    imports mtpoold, so the native child must not call it). The result carries
    ``foreign_modules``: for ``mode="native"`` it must be empty, else the baseline is not
    native asyncio (checked by tests/test_bench_bridge.py and in the report).
    """
    from telethon.crypto import rsa
    from telethon.tl.functions.help import GetConfigRequest

    _set_crypto(crypto)
    rsa.add_key(pem, old=False)
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
        out["foreign_modules"] = foreign_modules()
        return out

    import trio
    import trio_asyncio

    from mtpoold._aioloop import open_aio_loop
    from mtpoold._client import telethon_client_factory
    from mtpoold._config import parse_config

    raw = mode in ("bridge", "bridge_batched")

    class LoopSteps(trio.abc.Instrument):
        """Steps Trio gives the trio-asyncio loop's ``_main_loop`` task (one per callback on
        the stock loop, one per batch on mtpoold's)."""

        steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task.name.endswith("_main_loop"):
                self.steps += 1

    async def bridged() -> None:
        # "bridge" is trio-asyncio as shipped; the others run on the loop the daemon opens
        async with trio_asyncio.open_loop() if mode == "bridge" else open_aio_loop():
            if raw:
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
            # Counted after the timed run, not during it: an instrument makes Trio call it
            # around every step of every task, CPU the daemon does not spend.
            steps = LoopSteps()
            trio.lowlevel.add_instrument(steps)
            for _ in range(STEP_CALLS):
                await one()
            trio.lowlevel.remove_instrument(steps)
            out["loop_steps_per_call"] = steps.steps / STEP_CALLS
            if raw:
                await trio_asyncio.aio_as_trio(client.disconnect)()
            else:
                await client.disconnect()

    trio.run(bridged)
    out["foreign_modules"] = foreign_modules()
    return out


MODES: Final = ("native", "bridge", "bridge_batched", "mtpoold")
#: Issue 14's goal: `TelethonClient.call` CPU per request at most this many times native
#: asyncio Telethon's, each in its own process.
CPU_GOAL: Final = 2.0


def res_for(mode: str, res: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every round of ``mode``, over all crypto variants."""
    return [r for (m, _), rs in res.items() if m == mode for r in rs]


CRYPTO: Final = ("cryptg", "libssl", "python")


def run(*, quick: bool) -> Report:
    from ._dc import dc_process

    report = Report(NAME, TITLE)
    seconds, rounds = (2.0, 1) if quick else (3.0, 3)
    res: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with dc_process(1) as dc:
        session = dc.session_strings(1)[0]
        for _ in range(rounds):
            for crypto in CRYPTO:
                for mode in MODES:
                    r = run_child(
                        "bench.bridge:probe",
                        mode=mode,
                        crypto=crypto,
                        seconds=seconds,
                        port=dc.port,
                        session=session,
                        pem=dc.public_key_pem,
                    )
                    res.setdefault((mode, crypto), []).append(r)

    def rate(mode: str, crypto: str) -> float:
        return percentile([r["calls_per_s"] for r in res[(mode, crypto)]], 50)

    def steps(mode: str, crypto: str) -> float:
        """Steps of the asyncio loop's Trio task per call (mean over the rounds)."""
        rs = res[(mode, crypto)]
        return sum(r.get("loop_steps_per_call", 0.0) for r in rs) / len(rs)

    def cpu(mode: str, crypto: str) -> float:
        """Client CPU per call (s), the median round (as the module docstring says)."""
        return percentile([r["cpu_per_call"] for r in res[(mode, crypto)]], 50)

    native_foreign = sorted({m for r in res_for("native", res) for m in r["foreign_modules"]})
    report.row(
        "native baseline's process imports no trio, trio-asyncio or mtpoold",
        "yes" if not native_foreign else "NO: " + ", ".join(native_foreign[:4]),
        goal="yes",
        met=not native_foreign,
    )
    for crypto in CRYPTO:
        native_cpu, ours_cpu, bridge_cpu = (cpu(m, crypto) for m in ("native", "mtpoold", "bridge"))
        goal = crypto == "cryptg"
        report.row(
            f"client CPU per help.getConfig, TelethonClient.call vs native asyncio ({crypto})",
            f"{ours_cpu * 1e6:,.0f} µs",
            f"{native_cpu * 1e6:,.0f} µs",
            f"{ours_cpu / native_cpu:.2f}x",
            f"<= {CPU_GOAL:g}x native" if goal else "",
            (ours_cpu / native_cpu <= CPU_GOAL) if goal else None,
        )
        report.row(
            f"  bridge only (aio_as_trio, no JSON) vs native ({crypto})",
            f"{bridge_cpu * 1e6:,.0f} µs",
            f"{native_cpu * 1e6:,.0f} µs",
            f"{bridge_cpu / native_cpu:.2f}x",
        )
        if goal:
            batched_cpu = cpu("bridge_batched", crypto)
            report.row(
                f"  bridge on mtpoold's batching loop vs trio-asyncio's stock loop ({crypto})",
                f"{batched_cpu * 1e6:,.0f} µs, {steps('bridge_batched', crypto):.1f} steps",
                f"{bridge_cpu * 1e6:,.0f} µs, {steps('bridge', crypto):.1f} steps",
                f"{batched_cpu / bridge_cpu:.2f}x",
            )
        report.row(
            f"  calls/s, TelethonClient.call vs native ({crypto})",
            f"{rate('mtpoold', crypto):,.0f}/s",
            f"{rate('native', crypto):,.0f}/s",
            f"{rate('mtpoold', crypto) / rate('native', crypto):.2f}",
        )
    for mode in MODES:
        with_c, without = rate(mode, "cryptg"), rate(mode, "libssl")
        report.row(
            f"cryptg speed-up over libssl / pure Python ({mode})",
            f"{with_c:,.0f}/s",
            f"{without:,.0f}/s / {rate(mode, 'python'):,.0f}/s",
            f"{with_c / without:.2f}x / {with_c / rate(mode, 'python'):.2f}x",
        )
    us = {m: cpu(m, "cryptg") * 1e6 for m in MODES}
    report.values.update(
        native_us=f"{us['native']:,.0f} µs",
        bridge_us=f"{us['bridge']:,.0f} µs",
        mtpoold_us=f"{us['mtpoold']:,.0f} µs",
        bridge_extra_us=f"{us['bridge'] - us['native']:+,.0f} µs",
        batched_us=f"{us['bridge_batched']:,.0f} µs",
        batched_saving=f"{(1 - us['bridge_batched'] / us['bridge']) * 100:.0f} %",
        stock_steps=f"{steps('bridge', 'cryptg'):.1f}",
        batched_steps=f"{steps('bridge_batched', 'cryptg'):.1f}",
        json_extra_us=f"{us['mtpoold'] - us['bridge_batched']:+,.0f} µs",
        ratio=f"{us['mtpoold'] / us['native']:.2f}x",
        goal=f"{CPU_GOAL:g}x",
        verdict="met" if us["mtpoold"] / us["native"] <= CPU_GOAL else "missed",
        python_speedup=f"{rate('mtpoold', 'cryptg') / rate('mtpoold', 'python'):.1f}x",
    )

    report.details += [
        "| client | crypto | calls/s (per round) | client CPU per call | loop steps per call |",
        "|---|---|---|---|---|",
    ]
    for crypto in CRYPTO:
        for mode in MODES:
            rs = res[(mode, crypto)]
            report.details.append(
                f"| {mode} | {crypto} | "
                + ", ".join(f"{r['calls_per_s']:,.0f}" for r in rs)
                + f" | {cpu(mode, crypto) * 1e6:,.0f} µs"
                + (f" | {steps(mode, crypto):.1f} |" if mode != "native" else " | — |")
            )
    report.details.append("")
    report.notes.append(
        "Calls/s is round-trip bound: client CPU + loopback DC CPU (another process; it uses "
        "cryptg in every variant) + two loopback hops. CPU per call is the client process only "
        "(time.process_time)."
    )
    return report


ANALYSIS: Final = """
**Goal {verdict}: `TelethonClient.call` costs {ratio} the client CPU of native asyncio Telethon
per `help.getConfig` with cryptg (goal: at most {goal}).** Native: {native_us} per call, in a
process that never imports trio, trio-asyncio or mtpoold (the first row checks its
`sys.modules`; trio-asyncio installs its own event loop policy on import, so an `asyncio.run`
after that import would run on trio-asyncio's `SyncTrioEventLoop` and flatter the ratio).
The bridge alone on trio-asyncio as shipped (`aio_as_trio` around the same call) costs
{bridge_us} ({bridge_extra_us} over native): every call crosses trio → asyncio → trio, and
trio-asyncio's `_main_loop_one` (trio_asyncio/_base.py) runs one asyncio callback per trip
through Trio's scheduler (a `move_on_after` scope and a `receive` checkpoint each) where a
native loop runs every ready callback in one tick: {stock_steps} steps of the loop's Trio task
per call. mtpoold's loop (`mtpoold/_aioloop.py`, docs/TRIO_ASYNCIO.md) runs the queued
callbacks in batches, one step of its task per batch, schedules them without trio-asyncio's
`inspect`-based `_check_callback` (asyncio checks only in debug mode), runs what a batch queues
from a deque instead of the memory channel, and lets the reader task skip its `synchronize()`
after each read once the loop has emptied its queue: {batched_steps} steps per call,
{batched_us} for the same bridge ({batched_saving} less CPU than the stock loop). What remains
over native is the design's floor of four Trio task steps per request (the caller, the loop
task for the send and for the reply, the reader task, each a trip through Trio's run loop and
the reader's an `epoll_ctl` to re-arm its descriptor), the one asyncio task per call and the
two hand-offs through the memory channel that cross tasks. `TelethonClient.call` adds the JSON
layer (`build_request` and `to_json` in mtpoold/_tljson.py over the `Config` result), the wire
monitor (`WireMonitor.count` for every message, the counting reader and writer) and the
gated client's own wrappers: {json_extra_us} over the batched bridge. Calls/s is round-trip bound
and shares the cores with the DC process, so the CPU rows are the steadier comparison. cryptg
against pure-Python `pyaes`: {python_speedup} the calls/s through `TelethonClient.call`.
"""
