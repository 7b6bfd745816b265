"""`mtpoold authorize` against the loopback DC: code, 2FA, wrong answers, locks, then the pool."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from telethon.sessions import StringSession

from mtpoold._authorize import AuthorizeFailed, Prompter, authorize_account
from mtpoold._cli import main
from mtpoold._compose import open_pool
from mtpoold._config import Config, parse_config
from mtpoold._sessionlock import SessionLock
from mtpoold.testing import DC, open_dc
from mtpoold.testing.dc import LOGIN_CODE

ALICE = "15550000001"
DAVE_2FA = "15550000004"  # password "hunter2" in the default world
DAVE_PASSWORD = "hunter2"


def make_config(
    dc: DC,
    tmp_path: Path,
    *,
    connect_timeout_s: float = 10.0,
    call_deadline_s: float = 30.0,
    **account: Any,
) -> Config:
    acc = {"id": "acc", "api_id": 4242, "api_hash": "0f" * 16, "session": "sessions/acc", **account}
    return parse_config(
        {
            "daemon": {"state_dir": str(tmp_path / "state")},
            "telegram": {
                "dc_id": dc.dc_id,
                "dc_host": dc.host,
                "dc_port": dc.port,
                "rsa_keys": [dc.public_key_pem],
                "connect_timeout_s": connect_timeout_s,
            },
            "policy": {"call_deadline_s": call_deadline_s},
            "accounts": [acc],
        },
        base_dir=tmp_path,
    )


def write_toml(config_path: Path, dc: DC, **account: str) -> None:
    pem = dc.public_key_pem.replace("\n", "\\n")
    extra = "".join(f'{k} = "{v}"\n' for k, v in account.items())
    config_path.write_text(
        f'[daemon]\nstate_dir = "state"\n\n'
        f'[telegram]\ndc_id = {dc.dc_id}\ndc_host = "{dc.host}"\ndc_port = {dc.port}\n'
        f'rsa_keys = ["{pem}"]\n\n'
        f'[[accounts]]\nid = "acc"\napi_id = 4242\napi_hash = "{"0f" * 16}"\n{extra}'
    )


def session_dir_listing(tmp_path: Path) -> list[str]:
    d = tmp_path / "sessions"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@asynccontextmanager
async def loop_and_dc() -> AsyncIterator[DC]:
    async with open_dc() as dc, trio_asyncio.open_loop():
        yield dc


async def test_authorize_with_code_then_the_pool_uses_the_session(tmp_path: Path) -> None:
    async with open_dc() as dc:
        config_path = tmp_path / "mtpoold.toml"
        write_toml(config_path, dc, session="sessions/acc", device_model="mtpoold test phone")
        code_file = tmp_path / "code"
        code_file.write_text(LOGIN_CODE + "\n")
        out = io.StringIO()
        args = ["authorize", "--config", str(config_path), "--phone", ALICE,
                "--code-from", str(code_file)]  # fmt: skip

        def run_cli() -> int:
            from contextlib import redirect_stdout

            with redirect_stdout(out):
                return main(args)

        old_umask = os.umask(0o022)
        try:
            with trio.fail_after(60):
                assert await trio.to_thread.run_sync(run_cli) == 0
        finally:
            os.umask(old_umask)
        session = config_path.parent / "sessions" / "acc.session"
        assert out.getvalue() == (
            f"account acc: authorized as @alice_test (id 1001); session written to {session}\n"
        )
        assert os.stat(session).st_mode & 0o777 == 0o600
        assert os.stat(session.parent).st_mode & 0o777 == 0o700
        sidecar = session.with_name("acc.session.device.json")
        assert os.stat(sidecar).st_mode & 0o777 == 0o600
        device = json.loads(sidecar.read_text())
        assert device["device_model"] == "mtpoold test phone"
        assert set(device) == {"device_model", "system_version", "app_version", "lang_code",
                               "system_lang_code"}  # fmt: skip
        assert session_dir_listing(tmp_path) == [
            "acc.session",
            "acc.session.device.json",
            "acc.session.lock",
        ]

        # the daemon's pool logs in with that file, presenting the recorded device
        config = make_config(dc, tmp_path, session=str(tmp_path / "sessions" / "acc"))
        with trio.fail_after(30):
            async with open_pool(config, lock_sessions=True) as pool:
                result = await pool.resolve("@bob_test", deadline_s=20)
        assert result.value["username"] == "bob_test"
        assert result.meta.account == "acc"
        assert dc.counters(ALICE)["contacts.ResolveUsername"] == 1


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (
            [],
            "no terminal to ask on (stdin is not one, /dev/tty cannot be opened); pass --phone"
            " and --code-from",
        ),
        (
            ["--phone", ALICE],
            "no terminal to ask the login code on (stdin is not one, /dev/tty cannot be"
            " opened); pass --code-from",
        ),
        (["--code-from", "-"], "stdin is not a terminal to ask the phone number on; pass --phone"),
    ],
)
async def test_authorize_without_a_terminal_refuses_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], reason: str
) -> None:
    """No terminal (cron, a pipe, ``< /dev/null``) and an answer to ask for: one line, exit 2,
    no prompt on stdout and no connection to the DC (a login code is never sent for nothing)."""
    from contextlib import redirect_stderr, redirect_stdout

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    monkeypatch.setattr("mtpoold._authorize._has_controlling_terminal", lambda: False)
    async with open_dc() as dc:
        config_path = tmp_path / "mtpoold.toml"
        write_toml(config_path, dc, session="sessions/acc")
        out, err = io.StringIO(), io.StringIO()

        def run_cli() -> int:
            with redirect_stdout(out), redirect_stderr(err):
                return main(["authorize", "--config", str(config_path), *options])

        with trio.fail_after(60):
            assert await trio.to_thread.run_sync(run_cli) == 2
        assert dc.statistics().connections_total == 0
    assert out.getvalue() == ""
    assert err.getvalue() == f'mtpoold authorize: account "acc": {reason}\n'


def test_authorize_asks_the_code_on_the_controlling_terminal_with_stdin_redirected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--phone P --password-from - < file`` from a shell: getpass asks the code on
    /dev/tty, so that is not refused; the phone number (``input``, stdin) still is."""
    monkeypatch.setattr("mtpoold._authorize._has_controlling_terminal", lambda: True)
    stdin = io.StringIO("hunter2\n")
    Prompter(phone=ALICE, password_from="-", stdin=stdin).check_answerable("acc")
    with pytest.raises(AuthorizeFailed, match="pass --phone$"):
        Prompter(stdin=stdin).check_answerable("acc")
    Prompter(stdin=stdin, ask=lambda _p, _s: "x").check_answerable("acc")  # injected: answers


async def test_authorize_2fa_user_with_code_and_password_from_stdin(tmp_path: Path) -> None:
    async with loop_and_dc() as dc:
        config = make_config(dc, tmp_path)
        stdin = io.StringIO(f"{LOGIN_CODE}\n{DAVE_PASSWORD}\n")
        prompter = Prompter(phone=DAVE_2FA, code_from="-", password_from="-", stdin=stdin)
        with trio.fail_after(60):
            done = await authorize_account(config, config.accounts[0], prompter)
        assert (done.user_id, done.username) == (1004, "dave_2fa")
        assert done.session_path == tmp_path / "sessions" / "acc.session"
        assert done.session_path.exists()


async def test_authorize_asks_without_echo_for_code_and_password(tmp_path: Path) -> None:
    asked: list[tuple[str, bool]] = []
    answers = iter([DAVE_2FA, LOGIN_CODE, DAVE_PASSWORD])

    def ask(prompt: str, secret: bool) -> str:
        asked.append((prompt, secret))
        return next(answers)

    async with loop_and_dc() as dc:
        config = make_config(dc, tmp_path)
        with trio.fail_after(60):
            await authorize_account(config, config.accounts[0], Prompter(ask=ask))
    assert asked == [
        ("Phone number for account acc (international format): ", False),
        (f"Login code sent to {DAVE_2FA} (account acc): ", True),
        ("2FA password of account acc: ", True),
    ]


async def test_authorize_wrong_code_writes_nothing(tmp_path: Path) -> None:
    async with loop_and_dc() as dc:
        config = make_config(dc, tmp_path)
        prompter = Prompter(phone=ALICE, code_from="-", stdin=io.StringIO("54321\n"))
        with trio.fail_after(60), pytest.raises(AuthorizeFailed) as info:
            await authorize_account(config, config.accounts[0], prompter)
    assert str(info.value) == (
        'account "acc": wrong login code; nothing was written (run it again for a new code)'
    )
    assert info.value.exit_code == 2  # Telegram's refusal, not a failure to get an answer
    assert session_dir_listing(tmp_path) == ["acc.session.lock"]


async def test_authorize_wrong_password_writes_nothing(tmp_path: Path) -> None:
    async with loop_and_dc() as dc:
        config = make_config(dc, tmp_path)
        stdin = io.StringIO(f"{LOGIN_CODE}\nnot-the-password\n")
        prompter = Prompter(phone=DAVE_2FA, code_from="-", password_from="-", stdin=stdin)
        with trio.fail_after(60), pytest.raises(AuthorizeFailed) as info:
            await authorize_account(config, config.accounts[0], prompter)
    assert str(info.value) == (
        'account "acc": wrong 2FA password; nothing was written (run it again to retry)'
    )
    assert info.value.exit_code == 2
    assert "not-the-password" not in str(info.value)
    assert session_dir_listing(tmp_path) == ["acc.session.lock"]


async def test_authorize_refused_while_the_session_is_locked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_dc() as dc:
        config_path = tmp_path / "mtpoold.toml"
        write_toml(config_path, dc, session="sessions/acc")
        lock = SessionLock.for_session_file("acc", tmp_path / "sessions" / "acc")
        with lock:
            args = ["authorize", "--config", str(config_path), "--phone", ALICE, "--code-from", "-"]
            assert await trio.to_thread.run_sync(main, args) == 2
        err = capsys.readouterr().err
        assert err == (
            f'mtpoold authorize: account "acc": session {tmp_path}/sessions/acc.session is in'
            f" use by PID {os.getpid()}; stop the daemon first\n"
        )
        assert dc.statistics().connections_total == 0  # refused before any connection
        assert session_dir_listing(tmp_path) == ["acc.session.lock"]


async def test_authorize_string_session_account_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dc = DC(port=1)
    config_path = tmp_path / "mtpoold.toml"
    write_toml(config_path, dc, session_string=dc.session_string(ALICE))
    assert await trio.to_thread.run_sync(main, ["authorize", "--config", str(config_path)]) == 2
    assert capsys.readouterr().err.startswith("mtpoold authorize: no account has a session file")
    args = ["authorize", "acc", "--config", str(config_path)]
    assert await trio.to_thread.run_sync(main, args) == 2
    assert capsys.readouterr().err == (
        'mtpoold authorize: account "acc": uses a string session; only accounts with a session'
        ' file (session = "path") can be authorized\n'
    )


async def test_client_presents_the_recorded_device_where_the_config_is_silent(
    tmp_path: Path,
) -> None:
    from mtpoold._client import TelethonClient
    from mtpoold._sessionfiles import device_sidecar_path

    dc = DC(port=1)
    recorded = {"device_model": "Recorded Phone", "system_version": "Android 14",
                "app_version": "10.1", "lang_code": "de", "system_lang_code": "de-DE"}  # fmt: skip
    config = make_config(dc, tmp_path, app_version="11.0")
    account = config.accounts[0]
    sidecar = device_sidecar_path(account.session or "")
    sidecar.parent.mkdir()
    sidecar.write_text(json.dumps(recorded))
    async with trio_asyncio.open_loop():
        tg = TelethonClient(account, config.telegram_for(account), None)._build(StringSession())
    init = tg._init_request
    assert (init.device_model, init.system_version, init.lang_code) == (
        "Recorded Phone",
        "Android 14",
        "de",
    )
    assert init.app_version == "11.0"  # the config wins where it says something


async def test_authorize_refuses_a_session_file_that_holds_a_login_unless_forced(
    tmp_path: Path,
) -> None:
    from mtpoold._authorize import write_session_file

    async with loop_and_dc() as dc:
        config = make_config(dc, tmp_path)
        account = config.accounts[0]
        assert account.session is not None
        first = write_session_file(account.session, dc.session_string(ALICE), {})
        before = first.read_bytes()
        never = Prompter(ask=lambda _p, _s: pytest.fail("asked before refusing"))
        with trio.fail_after(60), pytest.raises(AuthorizeFailed) as info:
            await authorize_account(config, account, never)
        assert str(info.value) == (
            f'account "acc": session file {first} already holds a login; pass --force to'
            " log in again and replace it"
        )
        assert info.value.exit_code == 2
        assert first.read_bytes() == before
        # --force logs in again and replaces it
        prompter = Prompter(phone=ALICE, code_from="-", stdin=io.StringIO(f"{LOGIN_CODE}\n"))
        with trio.fail_after(60):
            result = await authorize_account(config, account, prompter, force=True)
        assert result.session_path == first


# --- bounded, one line per step, Telegram's refusals as sentences -----------------------------


async def test_authorize_prints_each_step_on_stderr(tmp_path: Path) -> None:
    async with loop_and_dc() as dc:
        config = make_config(dc, tmp_path)
        err = io.StringIO()
        prompter = Prompter(phone=ALICE, code_from="-", stdin=io.StringIO(f"{LOGIN_CODE}\n"))
        with trio.fail_after(60):
            await authorize_account(config, config.accounts[0], prompter, err=err)
    assert err.getvalue().splitlines() == [
        f"account acc: connecting to DC {dc.dc_id} at {dc.host}:{dc.port}, directly (no proxy)",
        "account acc: connected",
        f"account acc: login code sent to {ALICE}; waiting for the code",
        "account acc: signing in",
        "account acc: signed in",
    ]


async def test_authorize_unregistered_number_is_one_sentence_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtpoold.testing.dc import rpc_error

    async with open_dc() as dc:
        # Telegram answers sign_in for a number without an account: sign up first
        dc.faults.add(rpc_error(400, "PHONE_NUMBER_UNOCCUPIED"), method="auth.SignIn")
        config_path = tmp_path / "mtpoold.toml"
        write_toml(config_path, dc, session="sessions/acc")
        code = tmp_path / "code"
        code.write_text(LOGIN_CODE)
        args = ["authorize", "acc", "--config", str(config_path), "--phone", ALICE,
                "--code-from", str(code)]  # fmt: skip
        with trio.fail_after(60):
            assert await trio.to_thread.run_sync(main, args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f'mtpoold authorize: account "acc": no Telegram account uses the phone number {ALICE};'
        " sign it up in an official Telegram app first"
    )
    assert "internal error" not in "\n".join(err)
    assert session_dir_listing(tmp_path) == ["acc.session.lock"]


@pytest.mark.parametrize(
    ("rpc", "sentence"),
    [
        ("PHONE_CODE_EXPIRED", "the login code expired; nothing was written"),
        ("PHONE_NUMBER_BANNED", f"Telegram has banned the phone number {ALICE}"),
        ("FLOOD_WAIT_120", "Telegram refuses more login attempts for 120 s (flood wait)"),
    ],
)
async def test_authorize_telegram_refusals_exit_2(tmp_path: Path, rpc: str, sentence: str) -> None:
    from mtpoold.testing.dc import rpc_error

    async with loop_and_dc() as dc:
        code = 420 if rpc.startswith("FLOOD") else 400
        method = "auth.SendCode" if rpc != "PHONE_CODE_EXPIRED" else "auth.SignIn"
        dc.faults.add(rpc_error(code, rpc), method=method)
        config = make_config(dc, tmp_path)
        prompter = Prompter(phone=ALICE, code_from="-", stdin=io.StringIO(f"{LOGIN_CODE}\n"))
        with trio.fail_after(60), pytest.raises(AuthorizeFailed) as info:
            await authorize_account(config, config.accounts[0], prompter, err=io.StringIO())
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f'account "acc": {sentence}'), str(info.value)


async def test_authorize_wrong_2fa_password_typed_at_the_terminal_is_asked_again(
    tmp_path: Path,
) -> None:
    answers = iter([DAVE_2FA, LOGIN_CODE, "wrong", DAVE_PASSWORD])
    asked: list[str] = []

    def ask(prompt: str, secret: bool) -> str:
        asked.append(prompt)
        return next(answers)

    async with loop_and_dc() as dc:
        config = make_config(dc, tmp_path)
        err = io.StringIO()
        with trio.fail_after(60):
            done = await authorize_account(config, config.accounts[0], Prompter(ask=ask), err=err)
    assert done.user_id == 1004
    assert asked.count("2FA password of account acc: ") == 2
    assert "account acc: wrong 2FA password; try again (2 left)" in err.getvalue()
    assert "wrong" not in "".join(err.getvalue().split("wrong 2FA password"))  # never echoed


async def test_authorize_against_a_blackholing_dc_gives_up_after_connect_timeout_s(
    tmp_path: Path,
) -> None:
    async with loop_and_dc() as dc:
        dc.blackhole_all()
        config = make_config(dc, tmp_path, connect_timeout_s=0.5)
        never = Prompter(ask=lambda _p, _s: pytest.fail("asked without a connection"))
        with trio.fail_after(30), pytest.raises(AuthorizeFailed) as info:
            await authorize_account(config, config.accounts[0], never, err=io.StringIO())
    assert info.value.exit_code == 1
    assert str(info.value) == (
        f'account "acc": cannot connect to DC {dc.dc_id} at {dc.host}:{dc.port}, directly'
        " (no proxy): no answer within 0.5 s (connect_timeout_s)"
    )
    assert session_dir_listing(tmp_path) == ["acc.session.lock"]


async def test_authorize_call_that_never_answers_gives_up_after_call_deadline_s(
    tmp_path: Path,
) -> None:
    from mtpoold.testing.dc import blackhole

    async with loop_and_dc() as dc:
        dc.faults.add(blackhole(), method="auth.SendCode")
        config = make_config(dc, tmp_path, call_deadline_s=0.5)
        prompter = Prompter(phone=ALICE, code_from="-", stdin=io.StringIO(f"{LOGIN_CODE}\n"))
        with trio.fail_after(30), pytest.raises(AuthorizeFailed) as info:
            await authorize_account(config, config.accounts[0], prompter, err=io.StringIO())
    assert info.value.exit_code == 1
    assert str(info.value) == (
        'account "acc": sending the login code: Telegram did not answer within 0.5 s'
    )


async def test_authorize_without_ids_skips_accounts_already_logged_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtpoold._authorize import write_session_file

    dc = DC(port=1)  # nothing connects: the only account is logged in already
    config_path = tmp_path / "mtpoold.toml"
    write_toml(config_path, dc, session="sessions/acc")
    write_session_file(tmp_path / "sessions" / "acc", dc.session_string(ALICE), {})
    assert await trio.to_thread.run_sync(main, ["authorize", "--config", str(config_path)]) == 0
    out = capsys.readouterr()
    assert out.err == (
        f"account acc: already logged in ({tmp_path}/sessions/acc.session); skipped (name it,"
        " with --force, to log in again)\n"
    )
    assert out.out == ""
