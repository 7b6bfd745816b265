"""mtpoold end to end on this machine, no Telegram account needed.

    python examples/quickstart.py [--keep-running]

1. starts the loopback MTProto DC from ``mtpoold.testing`` with ``examples/world.toml``;
2. starts a real local SOCKS5 proxy (pproxy, a subprocess);
3. writes a config (``quickstart/mtpoold.toml``, mode 0600) with three demo accounts —
   two behind the proxy, one direct — pointed at the DC by the ``[telegram]`` keys;
4. starts the daemon as its own process: ``mtpoold run --config quickstart/mtpoold.toml``;
5. submits real jobs with ``mtpoold.client`` over HTTP POST (``examples/submit_jobs.py``);
6. shows ``mtpoold status``, then stops the daemon with SIGTERM (graceful shutdown).

Every step is a command you can run yourself; the script prints each one.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
from functools import partial
from pathlib import Path

import trio

from mtpoold.testing import load_world, open_dc, open_proxy

HERE = Path(__file__).resolve().parent
WORK = Path.cwd() / "quickstart"
DEMO_USERS = {"ada": "15551230001", "grace": "15551230002", "second": "15551230003"}


class QuickstartFailed(Exception):
    """A step of the quickstart failed; the message says which."""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def write_config(
    dc_host: str, dc_port: int, pem: str, proxy_port: int, sessions: dict[str, str], listen: str
) -> Path:
    """Write the demo config; return its path. Session strings are secrets: file is 0600."""
    accounts = []
    for i, (name, session) in enumerate(sessions.items()):
        proxy = 'proxy = "local-socks"\n' if i < 2 else ""
        accounts.append(
            f'[[accounts]]\nid = "demo-{name}"\napi_id = {100000 + i}\n'
            f'api_hash = "{"0123456789abcdef" * 2}"\nsession_string = {_toml_str(session)}\n'
            f'{proxy}device_model = "mtpoold quickstart"\ntags = ["demo"]\n'
        )
    text = (
        "# Written by examples/quickstart.py: a demo fleet on the loopback DC.\n"
        "[daemon]\n"
        f'listen = "{listen}"\n'
        f"state_dir = {_toml_str(str(WORK / 'state'))}\n\n"
        "[telegram]\n"
        f'dc_id = 2\ndc_host = "{dc_host}"\ndc_port = {dc_port}\n'
        f"rsa_keys = [{_toml_str(pem)}]\nconnect_timeout_s = 10.0\n\n"
        "[policy]\ncall_deadline_s = 10.0\njob_deadline_s = 30.0\n\n"
        '[[proxies]]\nname = "local-socks"\ntype = "socks5"\n'
        f'host = "127.0.0.1"\nport = {proxy_port}\ncapacity = 2\ninterval_s = 0.5\n\n'
        + "\n".join(accounts)
    )
    WORK.mkdir(mode=0o700, exist_ok=True)
    path = WORK / "mtpoold.toml"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _show(cmd: list[str]) -> list[str]:
    print(f"\n$ {' '.join(c if ' ' not in c else repr(c) for c in cmd)}", flush=True)
    return cmd


def _log_tail(log_path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of the daemon's log, indented (why it exited)."""
    try:
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n  {line}" for line in tail)


async def _wait_ready(config: Path, daemon: trio.Process, log_path: Path) -> None:
    """Poll ``mtpoold call ping`` until the daemon answers (it exits 3 while unreachable)."""
    for _ in range(200):
        if daemon.returncode is not None:
            raise QuickstartFailed(
                f"the daemon exited with {daemon.returncode}; {log_path} ends:"
                + _log_tail(log_path)
            )
        proc = await trio.run_process(
            [sys.executable, "-m", "mtpoold", "--config", str(config), "call", "ping", "{}"],
            check=False,
            capture_stdout=True,
            capture_stderr=True,
        )
        if proc.returncode == 0:
            return
        await trio.sleep(0.1)
    raise QuickstartFailed("the daemon did not come up within 20 s")


async def _stop_on_sigterm(scope: trio.CancelScope) -> None:
    """SIGTERM stops the quickstart like Ctrl-C: ``scope`` is cancelled, so the daemon gets
    its SIGTERM and the proxy and the DC stop. Later ones are ignored until the end (the
    receiver stays open: an unread SIGTERM would kill us mid-cleanup)."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            if not scope.cancel_called:
                print("\nSIGTERM: stopping", flush=True)
                scope.cancel()


async def main(keep_running: bool) -> int:
    """Run the demo; SIGTERM (like Ctrl-C) stops it and everything it started.

    Returns:
        0 if the daemon exited cleanly, 1 if not, 143 (128 + SIGTERM) after a SIGTERM.
    """
    async with trio.open_nursery() as nursery:
        demo = trio.CancelScope()
        nursery.start_soon(_stop_on_sigterm, demo)
        code = 1
        with demo:
            code = await _demo(keep_running)
        nursery.cancel_scope.cancel()
    return 128 + signal.SIGTERM if demo.cancelled_caught else code


async def _demo(keep_running: bool) -> int:
    world = load_world(HERE / "world.toml")
    # A fresh seed gives this run auth keys of its own: session locks are machine-wide, and
    # every DC on the default seed (another quickstart, `python -m mtpoold.testing.dc`)
    # hands out the same keys, which a second daemon would refuse as "in use".
    async with open_dc(world, seed=secrets.token_hex(8)) as dc, open_proxy("socks5") as proxy:
        print(
            f"loopback DC {dc.host}:{dc.port} (dc {dc.dc_id}), "
            f"SOCKS5 proxy {proxy.host}:{proxy.port}"
        )
        sessions = {name: dc.session_string(phone) for name, phone in DEMO_USERS.items()}
        listen = f"127.0.0.1:{_free_port()}"
        config = write_config(dc.host, dc.port, dc.public_key_pem, proxy.port, sessions, listen)
        print(f"config written to {config} (0600: it holds session strings)")
        cmd = _show([sys.executable, "-m", "mtpoold", "run", "--config", str(config)])
        log_path = WORK / "daemon.log"
        print(f"(the daemon's log lines go to {log_path})")
        async with trio.open_nursery() as nursery:
            # 0600 like everything else the daemon writes: its log names accounts and proxies
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)  # an older, looser file is tightened too
            with os.fdopen(fd, "ab") as log_file:
                daemon: trio.Process = await nursery.start(
                    partial(trio.run_process, cmd, check=False, stderr=log_file)
                )
            try:
                await _wait_ready(config, daemon, log_path)
                await trio.run_process(
                    _show([sys.executable, str(HERE / "submit_jobs.py"), "--config", str(config)]),
                    check=False,
                )
                await trio.run_process(
                    _show([sys.executable, "-m", "mtpoold", "--config", str(config), "status"]),
                    check=False,
                )
                if keep_running:
                    print(
                        f"\ndaemon listening on ws://{listen}/ — Ctrl-C or SIGTERM to stop",
                        flush=True,
                    )
                    await trio.sleep_forever()
            finally:
                print("\nstopping the daemon (SIGTERM: graceful shutdown)", flush=True)
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGTERM)
                with trio.move_on_after(15, shield=True) as waited:
                    await daemon.wait()
                if waited.cancelled_caught:
                    daemon.kill()
                    with trio.CancelScope(shield=True):
                        await daemon.wait()
                print(f"daemon exited with {daemon.returncode}", flush=True)
        return 0 if daemon.returncode == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the daemon up after the demo jobs (Ctrl-C or SIGTERM to stop)",
    )
    args = parser.parse_args()
    code = 1
    try:
        code = trio.run(main, args.keep_running)
    except* KeyboardInterrupt:
        code = 130
    except* QuickstartFailed as group:
        # nested nurseries nest the groups: print the failures, not the groups
        def _leaves(exc: BaseException) -> list[BaseException]:
            if isinstance(exc, BaseExceptionGroup):
                return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
            return [exc]

        for exc in _leaves(group):
            print(f"quickstart failed: {exc}", file=sys.stderr)
    sys.exit(code)
