"""A running daemon and the client commands meet a config whose plain [[proxies]] entry holds
an integer too large for a float (``interval_s = 1000…``, 400 digits; ``tomllib`` reads it).

Before the config quick path (`mtpoold._config._quick_entry`) such a value went through the
full path, which reports ``proxies[0].interval_s: invalid (OverflowError)`` as a ConfigError:
SIGHUP / ``mtpoold reload`` rejects the file and the daemon keeps its config (as it still
does for the same value in ``[direct]``). Today `Structurer.quick_fields`' float check
(``float(v)``, outside ``_quick_entry``'s ``try``) raises OverflowError out of
``parse_config``: SIGHUP kills the daemon (``internal error: ExceptionGroup``), and every
client command reading the file (``reload``, ``call``, ``status``) exits 1 with ``internal
error: OverflowError`` instead of the note the README promises for a config with problems.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from mtpoold.testing import open_dc

from _daemonproc import async_daemon, free_port

HUGE_PROXY = (
    '\n[[proxies]]\nname = "p1"\ntype = "socks5"\nhost = "127.0.0.1"\nport = 1080\n'
    f"interval_s = 1{'0' * 400}\n"
)


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtpoold", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_reload_of_a_huge_interval_s_is_rejected_and_the_daemon_lives(
    tmp_path: Path,
) -> None:
    import json

    async with open_dc() as dc:
        config = tmp_path / "mtpoold.toml"
        good = (
            f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'state_dir = "{tmp_path}/state"\nshutdown_grace_s = 2\n\n'
            f'[telegram]\ndc_host = "{dc.host}"\ndc_port = {dc.port}\n'
            f"rsa_keys = [{json.dumps(dc.public_key_pem)}]\n\n"
            f'[[accounts]]\nid = "acc"\napi_id = 1\napi_hash = "{"ab" * 16}"\n'
            f'session_string = "{dc.session_string("15550000001")}"\n'
        )
        await trio.Path(config).write_text(good)
        await trio.Path(config).chmod(0o600)
        async with async_daemon(config, tmp_path / "daemon.log") as proc:
            await _check(config, tmp_path, good, proc)


async def _check(config: Path, tmp_path: Path, good: str, proc: trio.Process) -> None:
    await trio.Path(config).write_text(good + HUGE_PROXY)
    reload = await trio.to_thread.run_sync(_cli, config, "reload")
    assert "internal error" not in reload.stderr, reload.stderr
    assert reload.returncode == 2, reload.stderr  # reload failed; keeps its config
    assert "proxies[0].interval_s" in reload.stderr
    status = await trio.to_thread.run_sync(_cli, config, "status", "--json")
    assert status.returncode == 0, status.stderr

    log_path = trio.Path(tmp_path / "daemon.log")
    before = (await log_path.read_text()).count("event=reload_rejected")
    proc.send_signal(signal.SIGHUP)  # systemctl reload
    with trio.move_on_after(3):
        await proc.wait()  # a daemon that lives through the reload is not waited for long
    log = await log_path.read_text()
    assert proc.returncode is None, log[-2000:]  # today: the daemon died on SIGHUP
    assert "internal error" not in log, log[-2000:]
    assert log.count("event=reload_rejected") == before + 1, log[-2000:]
    await trio.Path(config).write_text(good)
    status = await trio.to_thread.run_sync(_cli, config, "status", "--json")
    assert status.returncode == 0, status.stderr
