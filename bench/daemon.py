"""Scenario 3: the daemon's overhead — jobs over the websocket vs in-process ``pool.invoke``.

The daemon is mtpoold's own (`mtpoold._cli.main(["run", ...])`, i.e. ``mtpoold run``, INFO
logging to a file) in its own process; the client is another process speaking JSON-RPC over
one websocket (trio-websocket). The baseline is the same pool, same config, same jobs, called
in-process with ``pool.invoke`` (also logging at INFO to a file). Jobs: ``invoke
help.GetConfig`` on 32 direct accounts against the loopback DC (its own process).
Latency: one job in flight, sequential. Throughput: 256 jobs kept in flight for a fixed
time. No patches: the config sets ``[direct] capacity = 1000, interval_s = 0`` (an ungated
lane, no start jitter), since the shipped default (one direct start per 2 s) would hide a
sub-millisecond overhead.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from ._common import ROOT, Report, child_command, ms, percentile, run_child

NAME: Final = "daemon"
TITLE: Final = "3. Daemon overhead: websocket vs in-process pool.invoke"

ACCOUNTS: Final = 32
IN_FLIGHT: Final = 256
API_HASH: Final = "0123456789abcdef0123456789abcdef"
JOB: Final = {"method": "help.GetConfig", "args": {}}


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def write_config(
    path: Path, *, port: int, dc_port: int, pem: str, sessions: list[str], state_dir: Path
) -> None:
    lines = [
        "[daemon]",
        f'listen = "127.0.0.1:{port}"',
        f"state_dir = {_toml_str(str(state_dir))}",
        "max_in_flight = 1000",
        "",
        "[telegram]",
        "dc_id = 2",
        'dc_host = "127.0.0.1"',
        f"dc_port = {dc_port}",
        f"rsa_keys = [{_toml_str(pem)}]",
        "",
        "[direct]",  # the no-proxy lane ungated: measure the daemon, not the rate gate
        "capacity = 1000",
        "interval_s = 0",
        "",
    ]
    for i, s in enumerate(sessions):
        lines += [
            "[[accounts]]",
            f'id = "a{i}"',
            "api_id = 12345",
            f'api_hash = "{API_HASH}"',
            f"session_string = {_toml_str(s)}",
            "",
        ]
    path.write_text("\n".join(lines))


def daemon_host(config_path: str) -> int:
    """Child: ``mtpoold run --config PATH``."""
    from mtpoold._cli import main

    return main(["run", "--config", config_path])


async def _warm_up(invoke: Any) -> None:
    import trio

    async with trio.open_nursery() as nursery:  # connect every account
        for _ in range(ACCOUNTS * 2):
            nursery.start_soon(invoke)


async def _measure(invoke: Any, sequential: int, seconds: float) -> dict[str, Any]:
    import trio

    await _warm_up(invoke)
    lat = []
    for _ in range(sequential):
        t = time.perf_counter()
        await invoke()
        lat.append(time.perf_counter() - t)
    done = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await invoke()
            done += 1

    c0, t0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(IN_FLIGHT):
            nursery.start_soon(loop)
    wall = time.perf_counter() - t0
    return {
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "jobs_per_s": done / wall,
        "cpu_per_job": (time.process_time() - c0) / done,
    }


def inprocess(config_path: str, sequential: int, seconds: float) -> dict[str, Any]:
    """Child: the baseline — the same jobs through ``pool.invoke`` in this process."""
    import trio

    from mtpoold._compose import open_pool
    from mtpoold._config import load_config
    from mtpoold._logformat import configure_logging

    configure_logging("INFO")
    config = load_config(Path(config_path))
    out: dict[str, Any] = {}

    async def main() -> None:
        async with open_pool(config) as pool:

            async def invoke() -> None:
                await pool.invoke(JOB["method"], JOB["args"])

            out.update(await _measure(invoke, sequential, seconds))

    trio.run(main)
    return out


def ws_client(url: str, token: str, sequential: int, seconds: float) -> dict[str, Any]:
    """Child: the same jobs as JSON-RPC over one websocket, replies matched by id."""
    import itertools

    import trio
    from trio_websocket import open_websocket_url

    out: dict[str, Any] = {}
    ids = itertools.count(1)

    async def main() -> None:
        async with open_websocket_url(
            url,
            extra_headers=[(b"Authorization", b"Bearer " + token.encode())],
            max_message_size=2**24,
        ) as ws:
            waiting: dict[int, trio.Event] = {}
            replies: dict[int, Any] = {}

            async def reader() -> None:
                while True:
                    reply = json.loads(await ws.get_message())
                    replies[reply["id"]] = reply
                    waiting.pop(reply["id"]).set()

            async def invoke() -> None:
                rid = next(ids)
                event = waiting[rid] = trio.Event()
                await ws.send_message(
                    json.dumps({"jsonrpc": "2.0", "id": rid, "method": "invoke", "params": JOB})
                )
                await event.wait()
                reply = replies.pop(rid)
                if "error" in reply:
                    raise RuntimeError(f"job failed: {reply['error']}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                out.update(await _measure(invoke, sequential, seconds))
                nursery.cancel_scope.cancel()

    trio.run(main)
    return out


def run(*, quick: bool) -> Report:
    from ._dc import dc_process
    from .gate import _free_port

    report = Report(NAME, TITLE)
    sequential, seconds = (500, 3.0) if quick else (3000, 8.0)
    with dc_process(ACCOUNTS) as dc, tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        config = Path(tmp) / "mtpoold.toml"
        write_config(
            config,
            port=port,
            dc_port=dc.port,
            pem=dc.public_key_pem,
            sessions=dc.session_strings(),
            state_dir=Path(tmp) / "state",
        )
        base = run_child(
            "bench.daemon:inprocess",
            config_path=str(config),
            sequential=sequential,
            seconds=seconds,
        )
        log = open(Path(tmp) / "daemon.log", "w+b")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(
            child_command("bench.daemon:daemon_host", config_path=str(config)),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 60
            while not _listening(port, Path(tmp) / "state" / "token"):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "daemon did not start: " + Path(log.name).read_text()[-2000:]
                    )
                time.sleep(0.1)
            token = (Path(tmp) / "state" / "token").read_text().strip()
            d_cpu0 = _cpu(daemon.pid)
            ws = run_child(
                "bench.daemon:ws_client",
                url=f"ws://127.0.0.1:{port}/",
                token=token,
                sequential=sequential,
                seconds=seconds,
            )
            daemon_cpu = _cpu(daemon.pid) - d_cpu0
        finally:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            log.close()
    added50, added99 = ws["p50"] - base["p50"], ws["p99"] - base["p99"]
    per_job_daemon = daemon_cpu / max(1.0, ws["jobs_per_s"] * seconds + sequential)
    report.values.update(
        added_p50=f"+{ms(added50, 3)}",
        latency_verdict="met" if added50 <= 0.0005 else "missed",
        jobs_per_s=f"{ws['jobs_per_s']:,.0f}",
        inprocess_jobs_per_s=f"{base['jobs_per_s']:,.0f}",
        throughput_verdict="met" if ws["jobs_per_s"] >= 3000 else "missed",
        throughput_shortfall=f"{3000 / ws['jobs_per_s']:.1f}x",
        daemon_cpu_per_job=ms(per_job_daemon, 3),
        client_cpu_per_job=ms(ws["cpu_per_job"], 3),
        inprocess_cpu_per_job=ms(base["cpu_per_job"], 3),
    )
    report.row(
        "latency p50, websocket vs in-process",
        ms(ws["p50"], 3),
        ms(base["p50"], 3),
        f"+{ms(added50, 3)}",
        "added <= 0.5 ms",
        added50 <= 0.0005,
    )
    report.row(
        "latency p99, websocket vs in-process",
        ms(ws["p99"], 3),
        ms(base["p99"], 3),
        f"+{ms(added99, 3)}",
    )
    report.row(
        f"sustained jobs/s ({IN_FLIGHT} in flight), websocket vs in-process",
        f"{ws['jobs_per_s']:,.0f}",
        f"{base['jobs_per_s']:,.0f}",
        f"{ws['jobs_per_s'] / base['jobs_per_s']:.2f}",
        ">= 3,000 jobs/s through one daemon",
        ws["jobs_per_s"] >= 3000,
    )
    report.details += [
        f"Sequential latency over {sequential} jobs; throughput over {seconds:g} s with "
        f"{IN_FLIGHT} jobs in flight on one websocket connection.",
        "",
        f"CPU per job: in-process {ms(base['cpu_per_job'], 3)}; over the websocket "
        f"the client process {ms(ws['cpu_per_job'], 3)} and the daemon process about "
        f"{ms(daemon_cpu / max(1.0, ws['jobs_per_s'] * seconds + sequential), 3)} "
        "(daemon CPU over the whole client run, warm-up and latency phase included, divided by "
        "the jobs).",
        "",
    ]
    return report


def _listening(port: int, token: Path) -> bool:
    """The daemon is up: its token exists and its port takes a TCP connection (no reliance on
    the wording of its log lines)."""
    import socket

    if not token.exists():
        return False
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _cpu(pid: int) -> float:
    from ._common import cpu_seconds

    return cpu_seconds(pid)


ANALYSIS: Final = """
**Latency goal {latency_verdict} ({added_p50} added at p50 over the in-process pool);
throughput goal {throughput_verdict}: {jobs_per_s} jobs/s through the daemon against the goal
of three thousand ({throughput_shortfall} short when below it; in-process {inprocess_jobs_per_s}).**
No patches: the config sets `[direct] capacity` high and `interval_s = 0`. CPU per job in this
run: in-process {inprocess_cpu_per_job}; over the websocket the daemon {daemon_cpu_per_job}
and the client {client_cpu_per_job}. The client, the DC and the daemon share the machine's
cores, so throughput is CPU-bound: the daemon's CPU per job, the client's and the DC's add up
to what the cores give. The daemon's share goes to trio's scheduler and cancel scopes, the
trio-asyncio loop (`_main_loop_one` / `call_soon`), Telethon's MTProto path
(`MTProtoSender._send_loop/_recv_loop`, `encrypt/decrypt_message_data`, `Config.from_reader`),
mtpoold's own layers (`AccountWorker.run`, `Pool._attempt`, `to_json` in mtpoold/_tljson.py),
the reply's JSON (`_rpc.encode_result`) and trio-websocket's framing; profile the daemon
process with py-spy during the run to see the split on a given machine.
"""
