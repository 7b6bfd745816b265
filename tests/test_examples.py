"""The README's first command and the examples run end to end (real processes, real sockets)."""

from __future__ import annotations

import re
import subprocess
import sys
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
