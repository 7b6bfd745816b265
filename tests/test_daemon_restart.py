"""A FLOOD_WAIT survives a SIGKILL of the daemon: the real process, the loopback DC, restart."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import trio

from mtpoold.testing import open_dc
from mtpoold.testing.dc import rpc_error

from _daemonproc import async_daemon, free_port

FLOODED = "15550000001"  # a user of the loopback DC's default world


async def mtpoold(config: Path, *args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "mtpoold", "--config", str(config), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_flood_wait_cooldown_survives_sigkill_with_the_remaining_time(
    tmp_path: Path,
) -> None:
    async with open_dc() as dc:
        config = tmp_path / "mtpoold.toml"
        accounts = "".join(
            f'[[accounts]]\nid = "{name}"\napi_id = {i + 1}\napi_hash = "{"ab" * 16}"\n'
            f'session_string = "{dc.session_string(phone)}"\n\n'
            for i, (name, phone) in enumerate([("flooded", FLOODED), ("other", "15550000002")])
        )
        config.write_text(
            f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[telegram]\ndc_host = "{dc.host}"\ndc_port = {dc.port}\n'
            f"rsa_keys = [{json.dumps(dc.public_key_pem)}]\n\n"
            f"[direct]\ninterval_s = 0\ncapacity = 4\n\n{accounts}"
        )
        config.chmod(0o600)
        dc.faults.add(rpc_error(420, "FLOOD_WAIT_300"), user=FLOODED, method="help.GetNearestDc")
        async with async_daemon(config, tmp_path / "first.log") as first:
            reply = await mtpoold(config, "call", "help.GetNearestDc", "{}", "--account", "flooded")
            assert reply.returncode == 1, reply.stdout + reply.stderr
            assert b"FLOOD_WAIT" in reply.stdout + reply.stderr
            verdict_at = trio.current_time()
            first.send_signal(signal.SIGKILL)  # no shutdown, no flush: only what was written
            await first.wait()

        async with async_daemon(config, tmp_path / "second.log"):
            status = await mtpoold(config, "status", "--json")
            assert status.returncode == 0, status.stderr
            stats = json.loads(status.stdout)
            flooded = next(a for a in stats["accounts"] if a["id"] == "flooded")
            elapsed = trio.current_time() - verdict_at
            # a FLOOD_WAIT cools the (account, rate class) of its request: help.* is "other"
            assert flooded["cooldown_remaining_s"] == 0
            (other,) = [c for c in flooded["rate_classes"] if c["rate_class"] == "other"]
            assert other["cooldown_remaining_s"] == pytest.approx(300 - elapsed, abs=2)
            assert flooded["errors_by_class"] == {"FLOOD_WAIT": 1}
            # the other account serves; the flooded one is out of scheduling for that class
            for _ in range(3):
                ok = await mtpoold(config, "call", "help.GetNearestDc", "{}")
                assert ok.returncode == 0, ok.stderr
                assert json.loads(ok.stdout)["meta"]["account"] == "other"
            # the operator sees the class cooldown and lifts it over the websocket
            shown = await mtpoold(config, "accounts", "cooldowns", "flooded", "--json")
            assert shown.returncode == 0, shown.stderr
            by_class = {c["rate_class"]: c for c in json.loads(shown.stdout)["rate_classes"]}
            assert by_class["other"]["cooldown_remaining_s"] > 200
            assert by_class["read"]["cooldown_remaining_s"] == 0
            cleared = await mtpoold(
                config, "accounts", "clear-cooldown", "flooded", "--class", "other"
            )
            assert cleared.returncode == 0, cleared.stderr
            assert cleared.stdout == b"account flooded: cleared other\n"
            ok = await mtpoold(config, "call", "help.GetNearestDc", "{}", "--account", "flooded")
            assert ok.returncode == 0, ok.stderr
        # and the lifted cooldown stays lifted in the store
        async with async_daemon(config, tmp_path / "third.log"):
            status = json.loads((await mtpoold(config, "status", "--json")).stdout)
            flooded = next(a for a in status["accounts"] if a["id"] == "flooded")
            assert flooded["rate_classes"] == []
