"""One auth key, one holder: real processes on spellings, symlinks and copies of one session.

Measured before: a daemon with ``session = "sessions/acc"`` and a second one with
``"sessions/acc.session"`` both served on one auth key (two lock files), and ``mtpoold
authorize acc --force`` from the second config overwrote the first daemon's session file.
Now every session is identified by its DC id and auth key, and the lock is keyed by that.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtpoold._authorize import write_session_file
from mtpoold.testing import DC

from _daemonproc import daemon_process, free_port

ALICE = "15550000001"
BOB = "15550000002"


def account(acc_id: str, source: str) -> str:
    return f'[[accounts]]\nid = "{acc_id}"\napi_id = 1\napi_hash = "{"ab" * 16}"\n{source}\n\n'


def write_config(path: Path, *accounts: str) -> Path:
    """A config of its own (listen port, state dir) around ``accounts``; no DC is needed:
    the locks are taken at start, before any connection."""
    path.write_text(
        f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\nstate_dir = "{path.stem}-state"\n\n'
        f'[telegram]\ndc_host = "127.0.0.1"\ndc_port = 1\n\n{"".join(accounts)}'
    )
    return path


def mtpoold(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtpoold", *args], capture_output=True, text=True, timeout=60, **kw
    )


@contextmanager
def daemon(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    with daemon_process(config, config.with_suffix(".log")) as proc:
        yield proc


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_second_daemon_on_any_spelling_link_copy_or_string_of_a_session_exits_2(
    tmp_path: Path,
) -> None:
    dc = DC(port=1)
    sessions = tmp_path / "sessions"
    write_session_file(sessions / "acc", dc.session_string(ALICE), {})
    first = write_config(tmp_path / "a.toml", account("acc", 'session = "sessions/acc"'))
    (tmp_path / "link.session").symlink_to(sessions / "acc.session")
    (tmp_path / "copy").mkdir()
    shutil.copy(sessions / "acc.session", tmp_path / "copy" / "acc.session")
    real = sessions / "acc.session"
    with daemon(first) as holder:
        pid = holder.pid
        cases = {
            # another spelling of the same file: its file lock (Telethon's name, resolved)
            "spelling": ('session = "sessions/acc.session"', f"session {real}"),
            # a symlink to it: resolved to the same file lock
            "symlink": ('session = "link.session"', f"session {real}"),
            # a copy: another file, the same auth key
            "copy": (
                'session = "copy/acc"',
                f"the auth key of session file {tmp_path}/copy/acc.session",
            ),
            # the same key as a string session, under another account id
            "string": (f'session_string = "{dc.session_string(ALICE)}"', "the auth key of"),
        }
        for name, (source, what) in cases.items():
            acc_id = "acc" if name != "string" else "other-id"
            config = write_config(tmp_path / f"{name}.toml", account(acc_id, source))
            second = mtpoold("run", "--config", str(config))
            assert second.returncode == 2, (name, second.stderr)
            line = last_line(second)
            assert line.startswith(f'mtpoold run: account "{acc_id}": {what}'), (name, line)
            assert line.endswith(f"is in use by PID {pid}"), (name, line)
            assert dc.session_string(ALICE) not in second.stderr
            assert not (tmp_path / f"{name}-state" / "token").exists()  # nothing was started
        assert holder.poll() is None  # the first one keeps serving
        ping = mtpoold("--config", str(first), "call", "ping")
        assert ping.returncode == 0, ping.stderr
    # another key in another daemon at the same time: no conflict
    write_session_file(tmp_path / "bob", dc.session_string(BOB), {})
    other = write_config(tmp_path / "bob.toml", account("acc", 'session = "bob"'))
    with daemon(first), daemon(other):
        pass


def test_authorize_never_replaces_a_session_a_daemon_holds_even_with_force(
    tmp_path: Path,
) -> None:
    dc = DC(port=1)
    sessions = tmp_path / "sessions"
    write_session_file(sessions / "acc", dc.session_string(ALICE), {})
    (tmp_path / "copy").mkdir()
    shutil.copy(sessions / "acc.session", tmp_path / "copy" / "acc.session")
    before = (sessions / "acc.session").read_bytes()
    first = write_config(tmp_path / "a.toml", account("acc", 'session = "sessions/acc"'))
    with daemon(first) as holder:
        for name, source in [
            ("spelling", 'session = "sessions/acc.session"'),
            ("copy", 'session = "copy/acc.session"'),
        ]:
            config = write_config(tmp_path / f"{name}.toml", account("acc", source))
            # --phone/--code-from would let it log in: it must be refused before connecting
            result = mtpoold(
                "authorize", "acc", "--force", "--config", str(config), "--phone", ALICE,
                "--code-from", "-", input="12345\n",
            )  # fmt: skip
            assert result.returncode == 2, (name, result.stderr)
            line = last_line(result)
            assert f"is in use by PID {holder.pid}; stop the daemon first" in line, line
            assert "connecting" not in result.stderr  # refused before any connection
    assert (sessions / "acc.session").read_bytes() == before


def test_one_config_two_accounts_on_one_auth_key_is_a_problem_naming_both(
    tmp_path: Path,
) -> None:
    dc = DC(port=1)
    write_session_file(tmp_path / "a", dc.session_string(ALICE), {})
    shutil.copy(tmp_path / "a.session", tmp_path / "b.session")
    config = write_config(
        tmp_path / "c.toml",
        account("first", 'session = "a"'),
        account("second", 'session = "b"'),
        account("third", f'session_string = "{dc.session_string(ALICE)}"'),
    )
    for command in (["check-config", str(config)], ["run", "--config", str(config)]):
        result = mtpoold(*command)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f'{config}: accounts[1] ("second"): session file {tmp_path}/b.session holds the same'
            f' auth key as accounts[0] ("first"), session file {tmp_path}/a.session; one auth'
            " key must never be used by two accounts",
            f'{config}: accounts[2] ("third"): session_string holds the same auth key as'
            f' accounts[0] ("first"), session file {tmp_path}/a.session; one auth key must'
            " never be used by two accounts",
        ]


async def test_a_session_file_that_turns_unreadable_at_run_time_disables_its_account(
    tmp_path: Path,
) -> None:
    """Measured before: jobs failed GENERIC DatabaseError after 100 s of backoff and the
    account was never disabled."""
    import pytest
    import trio

    from mtpoold._compose import open_pool
    from mtpoold._config import parse_config
    from mtpoold._errors import JobFailed
    from mtpoold.testing import open_dc

    async with open_dc() as dc:
        session = tmp_path / "sessions" / "acc"
        write_session_file(session, dc.session_string(ALICE), {})
        config = parse_config(
            {
                "daemon": {"state_dir": str(tmp_path / "state")},
                "telegram": {"dc_id": dc.dc_id, "dc_host": dc.host, "dc_port": dc.port,
                             "rsa_keys": [dc.public_key_pem], "connect_timeout_s": 5.0},
                "accounts": [{"id": "acc", "api_id": 1, "api_hash": "ab" * 16,
                              "session": str(session)}],
            },
            base_dir=tmp_path,
        )  # fmt: skip
        with trio.fail_after(30):
            async with open_pool(config, lock_sessions=True) as pool:
                # after the start-up checks, before Telethon opens it (at the first connect)
                (tmp_path / "sessions" / "acc.session").write_text("not a database any more\n")
                with pytest.raises(JobFailed) as info:
                    await pool.resolve("@bob_test", deadline_s=10)
                stats = pool.statistics().accounts[0]
    assert info.value.error_class.value in ("SESSION_REVOKED", "NO_ACCOUNT_AVAILABLE")
    assert stats.last_error_class == "SESSION_REVOKED"
    assert stats.state == "disabled", stats
    assert stats.disabled_reason is not None
    assert stats.disabled_reason.startswith("SESSION_REVOKED: "), stats.disabled_reason
    assert stats.last_error_message is not None
    assert stats.last_error_message.startswith(
        "the session file cannot be used any more (DatabaseError: file is not a database)"
    ), stats.last_error_message
