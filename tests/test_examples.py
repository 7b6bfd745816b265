"""The README's first command and the examples run end to end (real processes, real sockets)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_quickstart_runs_jobs_through_the_daemon_and_shows_status(tmp_path: Path) -> None:
    proc = run_example("quickstart.py", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(
        r"resolve @example_news .*-> ok via demo-\w+ .*title='Example News' members=4200", out
    )
    assert re.search(
        r"get_messages @example_news .*#1: views=1500, #2: views=800, #3: missing, #999: missing",
        out,
    )
    assert "error -32001 PEER_NOT_FOUND" in out
    assert "6/7 jobs succeeded" in out
    assert "Proxies" in out and "Accounts" in out and "local-socks" in out
    assert "daemon exited with 0" in out
    config = tmp_path / "quickstart" / "mtpoold.toml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "quickstart" / "daemon.log").stat().st_mode & 0o777 == 0o600
    # the daemon's log never carries a session string or the api_hash
    log = (tmp_path / "quickstart" / "daemon.log").read_text()
    secrets = re.findall(r'session_string = "([^"]+)"', config.read_text())
    assert secrets and not any(s in log or s in out for s in secrets)
    assert "0123456789abcdef0123456789abcdef" not in log


def test_embed_in_trio_example(tmp_path: Path) -> None:
    proc = run_example("embed_in_trio.py", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"@example_news\s+channel\s+Example News\s+via acc-\d", proc.stdout)
    assert re.search(r"@nobody_xyz\s+PEER_NOT_FOUND: USERNAME_NOT_OCCUPIED", proc.stdout)
    assert "4 ok, 1 failed" in proc.stdout


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...), from ``ps``."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        ps = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True, check=False
        )
        for child in map(int, ps.stdout.split()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has finished; only its exit status is left


def test_quickstart_keep_running_stops_everything_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--keep-running"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        out = ""
        deadline = time.monotonic() + 120
        while "daemon listening on" not in out:
            assert time.monotonic() < deadline, out
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"quickstart exited {proc.wait()}: {out}"
                out += chunk.decode(errors="replace")
        children = _descendants(proc.pid)
        # the daemon and the SOCKS5 proxy, at least
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
        assert any(b"mtpoold\0run" in c for c in commands), commands
        assert any(b"pproxy" in c for c in commands), commands
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
        out += rest.decode(errors="replace")
        assert proc.returncode == 128 + signal.SIGTERM, out
        assert "daemon exited with 0" in out
        deadline = time.monotonic() + 5
        while survivors := {pid for pid in children if _alive(pid)}:
            assert time.monotonic() < deadline, f"still running: {survivors}"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:  # pragma: no cover - a hang is a bug: don't leak it
            proc.kill()
            proc.wait()


async def test_submit_jobs_is_a_user_of_mtpoold_client(tmp_path: Path) -> None:
    """examples/submit_jobs.py against a real daemon on a unix socket, with a job file: one
    batch through `mtpoold.client`, replies in job order, errors as RpcError."""
    import json

    import trio

    from _daemonproc import dc_daemon

    source = (ROOT / "examples" / "submit_jobs.py").read_text()
    assert "from mtpoold.client import" in source and "trio_websocket" not in source
    jobs = tmp_path / "jobs.json"
    jobs.write_text(
        json.dumps(
            [
                {"method": "resolve", "params": {"link_or_username": "@mtpoold_news"}},
                {"method": "get_messages", "params": {"peer": "@mtpoold_news", "ids": [1, 99]}},
                {"method": "invoke", "params": {"method": "help.GetConfig"}},
                {"method": "resolve", "params": {"link_or_username": "@nobody_by_that_name"}},
            ]
        )
    )
    with trio.fail_after(60):
        async with dc_daemon(tmp_path, listen=f"unix:{tmp_path}/d.sock") as (config, _dc):
            proc = await trio.run_process(
                [sys.executable, str(ROOT / "examples" / "submit_jobs.py"), "--config",
                 str(config), "--job-file", str(jobs)],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    lines = out.splitlines()
    assert re.search(r"resolve @mtpoold_news .*-> ok via acc .*title='mtpoold News'", lines[0])
    assert re.search(r"get_messages @mtpoold_news .*#1: views=1000, #99: missing", lines[1])
    assert re.search(r"invoke help.GetConfig .*-> ok via acc .*: Config", lines[2])
    assert "error -32001 PEER_NOT_FOUND" in lines[3]
    assert lines[4].startswith("3/4 jobs succeeded in ")
