"""No secret and no personal data ever reaches a log line or the CLI's output, across a
realistic run.

The daemon runs as its own process (``mtpoold run --log-level DEBUG``) against the loopback
DC, through a real SOCKS5 proxy that demands a username and password, with calls that succeed
and calls that fail (FLOOD_WAIT, AUTH_KEY_UNREGISTERED, a proxy refusing a wrong password, an
unknown peer, bad arguments, an invalid reload). Every secret of the config — api_hash values,
session strings, proxy passwords, the bearer token — and every 16-character piece of one is
then looked for in the daemon's log and in everything the CLI printed; so is the PHP
system's old proxy key (an unsalted SHA-1 over the proxy's password, which used to name the
lane everywhere). The personal data of the fixture world — every phone number and first name —
is looked for in the log, in ``status --json`` and the other listings, and in every error
reply (a job's successful result is the caller's data and may hold a first name).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from mtpoold._config import ProxyConfig
from mtpoold._daemon import _php_proxy_key
from mtpoold.testing import open_dc, open_proxy
from mtpoold.testing.dc import default_world, rpc_error, unparseable_reply

PIECE_CHARS = 16  # any run this long taken from a secret counts as a leak
# one auth key per account: two accounts on one session are refused at start
#: The proxies' fields besides address and password, as the config below writes them.
PROXY = ProxyConfig(name="x", type="socks5", host="h", port=1, username="pool-user")
USERS = {"a1": "15550000001", "a2": "15550000002", "a3": "15550000003", "a4": "15550000004"}


def toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def pieces(secret: str) -> set[str]:
    if len(secret) <= PIECE_CHARS:
        return {secret}
    return {secret[i : i + PIECE_CHARS] for i in range(len(secret) - PIECE_CHARS + 1)}


async def mtpoold(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "mtpoold", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_no_secret_in_logs_or_cli_output_across_a_realistic_run(tmp_path: Path) -> None:
    proxy_user, proxy_password = "pool-user", "Pr0xy-" + secrets.token_urlsafe(18)
    wrong_password = "Wr0ng-" + secrets.token_urlsafe(18)
    async with (
        open_dc() as dc,
        open_proxy("socks5", username=proxy_user, password=proxy_password) as proxy,
    ):
        sessions = {acc: dc.session_string(phone) for acc, phone in USERS.items()}
        api_hashes = {acc: secrets.token_hex(16) for acc in USERS}
        proxies = [("good", proxy_password), ("badpass", wrong_password)]
        text = (
            f'[daemon]\nlisten = "unix:{tmp_path}/d.sock"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[telegram]\ndc_id = {dc.dc_id}\ndc_host = "{dc.host}"\ndc_port = {dc.port}\n'
            f"rsa_keys = [{toml_str(dc.public_key_pem)}]\nconnect_timeout_s = 5.0\n\n"
            "[policy]\nmax_attempts = 2\nbackoff_s = [1]\n\n"
        )
        for name, password in proxies:
            text += (
                f'[[proxies]]\nname = "{name}"\ntype = "socks5"\nhost = "{proxy.host}"\n'
                f'port = {proxy.port}\nusername = "{proxy_user}"\npassword = "{password}"\n'
                "interval_s = 0.2\ncapacity = 4\n\n"
            )
        for n, acc in enumerate(USERS):
            text += (
                f'[[accounts]]\nid = "{acc}"\napi_id = {1000 + n}\napi_hash = "{api_hashes[acc]}"\n'
                f"session_string = {toml_str(sessions[acc])}\n"
                f'proxy = "{"badpass" if acc == "a4" else "good"}"\n\n'
            )
        config = tmp_path / "mtpoold.toml"
        config.write_text(text)
        os.chmod(config, 0o600)
        log_path = tmp_path / "daemon.log"
        outputs: list[str] = []
        results: set[int] = set()  # outputs that are a job's successful result

        async def cli(*args: str, result: bool = False) -> subprocess.CompletedProcess[bytes]:
            done = await mtpoold("--config", str(config), *args)
            if result:
                assert done.returncode == 0, done.stderr
                results.add(len(outputs))
            outputs.append(done.stdout.decode() + done.stderr.decode())
            return done

        with log_path.open("wb") as log:
            daemon = subprocess.Popen(  # noqa: ASYNC220 - starts it; the test polls it
                [
                    sys.executable,
                    "-m",
                    "mtpoold",
                    "run",
                    "--config",
                    str(config),
                    "--log-level",
                    "DEBUG",
                ],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            with trio.fail_after(120):
                while "event=daemon_ready" not in log_path.read_text():
                    assert daemon.poll() is None, log_path.read_text()
                    await trio.sleep(0.05)
                await cli("call", "resolve", '{"link_or_username": "@bob_test"}', result=True)
                dc.faults.add(rpc_error(420, "FLOOD_WAIT_30"), user=USERS["a1"])
                r = await cli(
                    "call", "help.GetConfig", "{}", "--account", "a1", "--deadline-ms", "3000"
                )
                assert r.returncode == 1, outputs[-1]
                dc.faults.add(rpc_error(401, "AUTH_KEY_UNREGISTERED"), user=USERS["a2"])
                r = await cli(
                    "call", "help.GetConfig", "{}", "--account", "a2", "--deadline-ms", "3000"
                )
                assert r.returncode == 1, outputs[-1]
                r = await cli(
                    "call", "help.GetConfig", "{}", "--account", "a4", "--deadline-ms", "3000"
                )
                assert r.returncode == 1, outputs[-1]
                r = await cli("call", "resolve", '{"link_or_username": "@nobody_here_at_all"}')
                assert r.returncode == 1 and b"PEER_NOT_FOUND" in r.stdout, outputs[-1]
                r = await cli("call", "messages.GetHistory", '{"peer": 5}', "--account", "a3")
                assert r.returncode in (1, 2), outputs[-1]
                for args in (["status"], ["status", "--json"], ["accounts", "list"],
                             ["accounts", "list", "--json"], ["proxies", "list"],
                             ["proxies", "list", "--json"]):  # fmt: skip
                    assert (await cli(*args)).returncode == 0, outputs[-1]
                # a reload the daemon rejects: its problems are printed and logged
                config.write_text(text.replace("capacity = 4", "capacity = 0"))
                r = await cli("reload", "--url", f"unix:{tmp_path}/d.sock",
                              "--token-file", f"{tmp_path}/state/token")  # fmt: skip
                assert r.returncode == 2 and b"capacity" in r.stderr, outputs[-1]
                config.write_text(text)
                assert (await cli("reload")).returncode == 0, outputs[-1]
                # while the daemon listens, check-config names its address as in use
                r = await cli("check-config", str(config))
                assert r.returncode == 2 and b"d.sock cannot be bound" in r.stderr, outputs[-1]
        finally:
            daemon.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                while daemon.poll() is None:  # noqa: ASYNC110 - a child process (Popen)
                    await trio.sleep(0.05)
        assert daemon.returncode == 0
    log_text = log_path.read_text()
    assert "event=call" in log_text and "outcome=FLOOD_WAIT" in log_text
    assert "outcome=SESSION_REVOKED" in log_text and "outcome=PROXY_UNAVAILABLE" in log_text
    token = (tmp_path / "state" / "token").read_text().strip()
    named = {
        **{f"api_hash of {a}": h for a, h in api_hashes.items()},
        **{f"session string of {a}": s for a, s in sessions.items()},
        "proxy password": proxy_password,
        "wrong proxy password": wrong_password,
        "bearer token": token,
        **{
            f"old proxy key of {name} (SHA-1 over its password)": _php_proxy_key(
                attrs.evolve(PROXY, host=proxy.host, port=proxy.port, password=password)
            )
            for name, password in proxies
        },
    }
    personal = {
        **{f"phone of {u.first_name}": u.phone for u in default_world().users if u.phone},
        **{f"first name {u.first_name}": u.first_name for u in default_world().users},
    }
    leaks = []
    for what, secret in named.items():
        for where, blob in [
            ("daemon log", log_text),
            *((f"cli output #{i}", o) for i, o in enumerate(outputs)),
        ]:
            hits = [p for p in pieces(secret) if p in blob]
            if hits:
                line = next(ln for ln in blob.splitlines() if hits[0] in ln)
                leaks.append(f"{what} in {where}: {line[:300]}")
    for what, needle in personal.items():
        for where, blob in [
            ("daemon log", log_text),
            *((f"cli output #{i}", o) for i, o in enumerate(outputs) if i not in results),
        ]:
            if needle in blob:
                line = next(ln for ln in blob.splitlines() if needle in ln)
                leaks.append(f"{what} in {where}: {line[:300]}")
    assert not leaks, "\n".join(leaks)


async def test_an_unparseable_reply_never_puts_personal_data_in_errors_logs_or_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The DC answers with a constructor Telethon does not know, followed by the caller's
    phone and first name (`unparseable_reply`): none of it reaches the job's error, the log or
    the account's status."""
    import json
    import logging

    from mtpoold._compose import open_pool
    from mtpoold._config import parse_config
    from mtpoold._errors import JobFailed

    caplog.set_level(logging.DEBUG)
    async with open_dc() as dc:
        carol = dc.world.user(USERS["a3"])
        config = parse_config(
            {
                "daemon": {"state_dir": str(tmp_path / "state")},
                "telegram": {"dc_id": dc.dc_id, "dc_host": dc.host, "dc_port": dc.port,
                             "rsa_keys": [dc.public_key_pem], "connect_timeout_s": 5.0},
                "policy": {"max_attempts": 2, "backoff_s": [0.1]},
                "accounts": [{"id": "a3", "api_id": 1, "api_hash": "ab" * 16,
                              "session_string": dc.session_string(carol.id)}],
            },
            base_dir=tmp_path,
        )  # fmt: skip
        dc.faults.add(unparseable_reply(), method="help.GetNearestDc", times=None)
        errors: list[str] = []
        with trio.fail_after(30):
            async with open_pool(config) as pool:
                try:
                    await pool.invoke("help.GetNearestDc", {}, deadline_s=5)
                except JobFailed as exc:
                    errors.append(str(exc))
                    errors.append(json.dumps(exc.to_object()) if hasattr(exc, "to_object") else "")
                status = json.dumps(attrs.asdict(pool.statistics()), default=str)
    blobs = {"error": "\n".join(errors), "status": status, "log": caplog.text}
    found = [
        f"{what} in {where}"
        for what, needle in (("phone", carol.phone or ""), ("first name", carol.first_name))
        for where, blob in blobs.items()
        if needle in blob
    ]
    assert not found, found
