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


async def _measure(
    invoke: Any, sequential: int, seconds: float, *, other_cpu: Any = None
) -> dict[str, Any]:
    """Warm-up, the latency phase, then the throughput phase; CPU per job is this process's
    over the throughput phase (and ``other_cpu()``'s, seconds, another process's: the
    daemon's, over the same phase)."""
    import trio

    await _warm_up(invoke)
    lat = []
    for _ in range(sequential):
        t = time.perf_counter()
        await invoke()
        lat.append(time.perf_counter() - t)
    done = shared = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done, shared
        while time.perf_counter() < stop:
            # answered by another job's flight (meta.shared); awaited before the sum: an
            # `x += await f()` reads x before the await and loses the other tasks' updates
            was_shared = bool(await invoke())
            shared += was_shared
            done += 1

    o0 = other_cpu() if other_cpu is not None else 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(IN_FLIGHT):
            nursery.start_soon(loop)
    wall = time.perf_counter() - t0
    out = {
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "jobs_per_s": done / wall,
        "cpu_per_job": (time.process_time() - c0) / done,
        "shared": shared / done,
    }
    if other_cpu is not None:
        out["other_cpu_per_job"] = (other_cpu() - o0) / done
    return out


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

            async def invoke() -> bool:
                return (await pool.invoke(JOB["method"], JOB["args"])).meta.shared

            out.update(await _measure(invoke, sequential, seconds))

    trio.run(main)
    return out


def ws_client(
    url: str, token: str, sequential: int, seconds: float, daemon_pid: int | None = None
) -> dict[str, Any]:
    """Child: the same jobs as JSON-RPC over one websocket, replies matched by id; with
    ``daemon_pid``, the daemon's CPU over the throughput phase too (``other_cpu_per_job``)."""
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

            async def invoke() -> bool:
                rid = next(ids)
                event = waiting[rid] = trio.Event()
                await ws.send_message(
                    json.dumps({"jsonrpc": "2.0", "id": rid, "method": "invoke", "params": JOB})
                )
                await event.wait()
                reply = replies.pop(rid)
                if "error" in reply:
                    raise RuntimeError(f"job failed: {reply['error']}")
                return bool(reply["result"]["meta"].get("shared"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                other_cpu = None if daemon_pid is None else lambda: _cpu(daemon_pid)
                out.update(await _measure(invoke, sequential, seconds, other_cpu=other_cpu))
                nursery.cancel_scope.cancel()

    trio.run(main)
    return out


#: A reply's size class for the websocket parts: a JSON-RPC answer of about 1 KiB.
WS_REPLY: Final = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "value": {
                "_": "Config",
                "dc_options": [{"id": i, "ip": "127.0.0.1"} for i in range(24)],
            },
            "meta": {"account": "a1", "proxy_key": "p1", "attempts": 1, "elapsed_ms": 1.0},
        },
    }
)
WS_WINDOW: Final = 64  # messages in flight in the websocket parts


async def _windowed_echo_cpu(ws: Any, messages: int, warm_windows: int = 4) -> float:
    """Process CPU seconds (both ends: one process) for ``messages`` sent on the websocket
    ``ws`` and echoed back, ``WS_WINDOW`` in flight, after ``warm_windows`` windows of
    warm-up."""
    c0 = time.process_time()
    for round_ in range(warm_windows + messages // WS_WINDOW):
        if round_ == warm_windows:
            c0 = time.process_time()
        for _ in range(WS_WINDOW):
            await ws.send_message(WS_REPLY)
        for _ in range(WS_WINDOW):
            await ws.get_message()
    return time.process_time() - c0


def ws_parts(messages: int) -> dict[str, Any]:
    """Child: where trio-websocket's time per message goes, as parts measured in one process
    (client CPU and server CPU together, ``time.process_time``), per message (one side sends
    it, the other receives it), ``WS_WINDOW`` in flight:

    * ``ws``: an echo over loopback TCP with trio-websocket on both ends (what the daemon and
      `mtpoold.client` use);
    * ``raw``: the same bytes over the same kind of trio TCP stream, one ``send_all`` per
      message and ``receive_some`` as it comes (the stream and the scheduler alone);
    * ``frames``: wsproto alone, in memory: the client's masked frame built and parsed by the
      server's `WSConnection`, and the reply's frame back (the framing alone, no I/O).

    trio-websocket's own share is what ``ws`` costs over the other two: its reader task, the
    memory channel each received message goes through, the send lock, the events.

    And the daemon's way of replying (``tasks_*``): the server side is mtpoold's own
    websocket (`mtpoold._server._WebSocket`), and every message read is answered from a task
    of its own, as the server answers each job; the server reads a window of ``WS_WINDOW``
    messages and then starts their reply tasks together (replies ready in the same pass of
    the run loop, as jobs that end together: the daemon's replies follow the DC's answers,
    which come several to a read):

    * ``tasks_each``: each task sends its reply with trio-websocket's ``send_message`` (one
      write of the stream, one system call, per reply: the server before coalescing);
    * ``tasks_coalesced``: with ``_WebSocket.send_text`` (what the server does now: replies
      that come while a write holds the stream go out together in one write).
    """
    import trio
    from trio_websocket import ConnectionClosed, open_websocket_url, serve_websocket
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Message, Request, TextMessage

    payload = WS_REPLY.encode()
    out: dict[str, Any] = {"messages": messages, "bytes": len(payload), "window": WS_WINDOW}

    async def ws_echo() -> float:
        async def handler(request: Any) -> None:
            ws = await request.accept()
            try:
                while True:
                    await ws.send_message(await ws.get_message())
            except ConnectionClosed:
                pass

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            port = listeners.port
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                cpu = await _windowed_echo_cpu(ws, messages)
            nursery.cancel_scope.cancel()
        return cpu

    async def raw_echo() -> float:
        async def handler(stream: trio.SocketStream) -> None:
            try:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, handler, 0)
            port = listeners[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            want = WS_WINDOW * len(payload)
            c0 = time.process_time()
            for _ in range(messages // WS_WINDOW):
                for _ in range(WS_WINDOW):
                    await stream.send_all(payload)
                got = 0
                while got < want:
                    got += len(await stream.receive_some(65536))
            cpu = time.process_time() - c0
            await stream.aclose()
            nursery.cancel_scope.cancel()
        return cpu

    async def tasks_echo(coalesced: bool) -> float:
        from mtpoold._server import _wrap_server_stream

        async def handler(stream: trio.SocketStream) -> None:
            async with trio.open_nursery() as nursery:
                request = await _wrap_server_stream(nursery, stream, max_message_size=2**24)
                ws = await request.accept()
                send = ws.send_text if coalesced else ws.send_message
                try:
                    async with trio.open_nursery() as replies:
                        while True:  # a window's replies ready at once, as jobs that end
                            window = [await ws.get_message() for _ in range(WS_WINDOW)]
                            for message in window:  # together (one read of the DC's answers)
                                replies.start_soon(send, message)
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, handler, 0)
            port = listeners[0].socket.getsockname()[1]
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                cpu = await _windowed_echo_cpu(ws, messages)
            nursery.cancel_scope.cancel()
        return cpu

    def frames() -> float:
        client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
        server.receive_data(client.send(Request(host="localhost", target="/")))
        for event in server.events():
            assert isinstance(event, Request)
            client.receive_data(server.send(AcceptConnection()))
        for event in client.events():
            assert isinstance(event, AcceptConnection)
        c0 = time.process_time()
        for _ in range(messages // 2):
            server.receive_data(client.send(Message(data=WS_REPLY)))
            for event in server.events():
                assert isinstance(event, TextMessage)
                client.receive_data(server.send(Message(data=event.data)))
            for event in client.events():
                assert isinstance(event, TextMessage)
        return time.process_time() - c0

    sent = messages // WS_WINDOW * WS_WINDOW * 2  # each echo round is two messages
    rounds = []
    for _ in range(3):  # interleaved; the median round's figures
        rounds.append(
            (
                trio.run(ws_echo) / sent,
                trio.run(raw_echo) / sent,
                frames() / (messages // 2 * 2),
                trio.run(tasks_echo, False) / sent,
                trio.run(tasks_echo, True) / sent,
            )
        )
    for i, key in enumerate(("ws", "raw", "frames", "tasks_each", "tasks_coalesced")):
        out[key] = sorted(r[i] for r in rounds)[1]
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
                daemon_pid=daemon.pid,
            )
            daemon_cpu = _cpu(daemon.pid) - d_cpu0
        finally:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            log.close()
    parts = run_child("bench.daemon:ws_parts", messages=2048 if quick else 8192)
    added50, added99 = ws["p50"] - base["p50"], ws["p99"] - base["p99"]
    # the daemon's CPU over the throughput phase, the phase the in-process figure covers
    per_job_daemon = ws["other_cpu_per_job"]
    whole_run_daemon = daemon_cpu / max(1.0, ws["jobs_per_s"] * seconds + sequential)
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
    ratio_cpu = per_job_daemon / base["cpu_per_job"]
    report.row(
        "daemon CPU per job (websocket) vs the in-process pool's",
        ms(per_job_daemon, 3),
        ms(base["cpu_per_job"], 3),
        f"{ratio_cpu:.2f}x",
        "<= 2x",
        ratio_cpu <= 2,
    )
    own = parts["ws"] - parts["raw"] - parts["frames"]
    report.row(
        f"websocket CPU per message ({parts['bytes']:,} B, trio-websocket both ends) vs the "
        "same bytes on a bare trio stream",
        f"{parts['ws'] * 1e6:.1f} µs",
        f"{parts['raw'] * 1e6:.1f} µs",
        f"{parts['ws'] / parts['raw']:.1f}x",
    )
    report.row(
        "  of which wsproto framing (in memory) / trio-websocket's own (the rest)",
        f"{parts['frames'] * 1e6:.1f} µs / {own * 1e6:.1f} µs",
    )
    report.row(
        f"websocket CPU per message, the daemon's way (a task per reply, {WS_WINDOW} ready at "
        "once): replies coalesced (`_WebSocket.send_text`) vs one write each (`send_message`)",
        f"{parts['tasks_coalesced'] * 1e6:.1f} µs",
        f"{parts['tasks_each'] * 1e6:.1f} µs",
        f"{parts['tasks_coalesced'] / parts['tasks_each']:.2f}x",
    )
    report.values.update(
        ws_tasks_each=f"{parts['tasks_each'] * 1e6:.1f} µs",
        ws_tasks_coalesced=f"{parts['tasks_coalesced'] * 1e6:.1f} µs",
        ws_message=f"{parts['ws'] * 1e6:.1f} µs",
        ws_raw=f"{parts['raw'] * 1e6:.1f} µs",
        ws_frames=f"{parts['frames'] * 1e6:.1f} µs",
        ws_own=f"{own * 1e6:.1f} µs",
        ws_bytes=f"{parts['bytes']:,} B",
        ws_window=str(WS_WINDOW),
        daemon_ratio=f"{ratio_cpu:.2f}x",
        shared_inprocess=f"{base['shared'] * 100:.0f} %",
        shared_ws=f"{ws['shared'] * 100:.0f} %",
    )
    report.details += [
        f"Sequential latency over {sequential} jobs; throughput over {seconds:g} s with "
        f"{IN_FLIGHT} jobs in flight on one websocket connection.",
        "",
        f"CPU per job: in-process {ms(base['cpu_per_job'], 3)}; over the websocket "
        f"the client process {ms(ws['cpu_per_job'], 3)} and the daemon process "
        f"{ms(per_job_daemon, 3)}, each over the throughput phase (the daemon's over the "
        f"whole client run, warm-up and latency phase included, divided by the jobs: about "
        f"{ms(whole_run_daemon, 3)}; its latency-phase jobs run one at a time and share "
        "no call).",
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
process with py-spy during the run to see the split on a given machine. The daemon's CPU per
job is {daemon_ratio} the in-process pool's (goal: at most two). Jobs that rode in another
job's flight (`meta.shared`): {shared_inprocess} in-process, {shared_ws} through the daemon,
so sharing does not explain the gap. The in-process run keeps its calls in flight at several
times the daemon's rate ({inprocess_jobs_per_s} against {jobs_per_s} jobs/s), which spreads
each pass of Trio's and the asyncio loop's machinery over more calls: an inference from the
rates, not a measurement of this run.

**Where a websocket message's time goes** (`ws_parts`, one process, client and server CPU
together, a reply of {ws_bytes}): {ws_message} per message with trio-websocket on both ends,
against {ws_raw} for the same bytes on a bare trio TCP stream (one `send_all` per message;
the stream, the system calls and the scheduler) and {ws_frames} for wsproto's framing alone
in memory (build, mask, parse, `UTF-8`). The rest, {ws_own}, is trio-websocket's own: its
reader task per connection, the memory channel every received message crosses (a task
switch per message), the send lock and the event objects. What our side holds is how the
replies go out: the server answers each job from its own task, and each reply sent with
trio-websocket's `send_message` is one write of the stream, one system call. The server now
sends through `_WebSocket.send_text` (mtpoold/_server.py), which coalesces: replies that come
while a write holds the stream go out together in one write, each sender still returning
once its reply is written (the same internals `send_message` uses: the wsproto connection,
the stream and its lock). The daemon's way of replying, a task per reply and {ws_window}
replies ready at once: {ws_tasks_each} per message with one write each, {ws_tasks_coalesced}
coalesced. Replies that are ready one at a time still go out one write each: coalescing
saves only where replies end together, which is where the daemon's throughput is made. On
the way in, the server takes each message from trio-websocket's reader task as it is parsed
(`_WebSocket.on_message`), not through the memory channel above, which passed one message
per pass of the run loop and so capped the requests a loaded daemon took in.
"""
