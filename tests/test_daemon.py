"""The daemon as a process (`mtpoold run`): session locks, a broken state store, live reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from mtpoold._authorize import write_session_file
from mtpoold._cli import main
from mtpoold._compose import open_pool
from mtpoold._config import load_config
from mtpoold._daemon import run_daemon
from mtpoold._rpc import RpcError
from mtpoold._rpcclient import call, parse_target
from mtpoold.testing import DC, open_dc
from mtpoold.testing.dc import blackhole

from _daemonproc import async_daemon, daemon_process, free_port
from _fakeclient import Sleep, World


def write_config(tmp_path: Path, *, listen: str | None = None, accounts: str | None = None) -> Path:
    """A config with a file-session account and a string-session account (no DC needed: the
    locks are taken at start, before any connection)."""
    session = DC(port=1).session_string("15550000001")
    path = tmp_path / "mtpoold.toml"
    if accounts is None:
        # the daemon refuses a session file that does not exist (`mtpoold authorize` makes it)
        bob = DC(port=1).session_string("15550000002")
        write_session_file(tmp_path / "sessions" / "file-acc", bob, {})
        accounts = (
            f'[[accounts]]\nid = "file-acc"\napi_id = 1\napi_hash = "{"ab" * 16}"\n'
            f'session = "{tmp_path}/sessions/file-acc.session"\n\n'
            f'[[accounts]]\nid = "string-acc"\napi_id = 2\napi_hash = "{"cd" * 16}"\n'
            f'session_string = "{session}"\n'
        )
    path.write_text(
        f'[daemon]\nlisten = "{listen or f"127.0.0.1:{free_port()}"}"\n'
        f'state_dir = "{tmp_path}/state"\n\n'
        f'[telegram]\ndc_host = "127.0.0.1"\ndc_port = 1\n\n{accounts}'
    )
    return path


def another_listen(config: Path, out: Path | None = None) -> Path:
    """A copy of ``config`` (or ``config`` itself, as ``out``) listening on another free port:
    a second daemon must meet the first one's session locks, not its listening socket."""
    out = out or config.with_name(f"other-{config.name}")
    text = config.read_text()
    listen = next(line for line in text.splitlines() if line.startswith("listen = "))
    out.write_text(text.replace(listen, f'listen = "127.0.0.1:{free_port()}"'))
    return out


def mtpoold(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtpoold", *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_second_daemon_on_the_same_sessions_exits_2_naming_account_path_and_pid(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    second_config = another_listen(config)
    with daemon_process(config, tmp_path / "first.log") as first:
        second = mtpoold("run", "--config", str(second_config))
        assert second.returncode == 2, second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last == (
            f'mtpoold run: account "file-acc": session {tmp_path}/sessions/file-acc.session'
            f" is in use by PID {first.pid}"
        )
        assert "Traceback" not in second.stderr
        # the first one keeps serving
        ping = mtpoold("--config", str(config), "call", "ping")
        assert ping.returncode == 0, ping.stderr
        assert json.loads(ping.stdout)["pong"] is True
        assert first.poll() is None
    assert first.returncode == 0
    # the lock files are private and outlive the daemon (never unlinked), the PID is cleared:
    # one file lock beside the session file, one key lock per auth key in the lock directory
    locks = Path(os.environ["XDG_RUNTIME_DIR"]) / "mtpoold" / "locks"
    keys = sorted(locks.glob("key-*.lock"))
    assert len(keys) == 2
    for lock in [*keys, tmp_path / "sessions" / "file-acc.session.lock"]:
        assert os.stat(lock).st_mode & 0o777 == 0o600
        assert lock.read_text() == ""


def test_refused_second_daemon_writes_nothing_to_its_fresh_state_dir(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    other_state = tmp_path / "other-state"
    second_config = tmp_path / "second.toml"
    text = config.read_text()
    second_config.write_text(text.replace(f'"{tmp_path}/state"', f'"{other_state}"'))
    another_listen(second_config, second_config)
    with daemon_process(config, tmp_path / "first.log"):
        second = mtpoold("run", "--config", str(second_config))
        assert second.returncode == 2, second.stderr
        assert "is in use by PID" in second.stderr
    assert not (other_state / "token").exists()
    assert not (other_state / "state.sqlite3").exists()
    # file-acc's lock (beside its session file) refused it before anything was written
    assert list(other_state.rglob("*")) == []


def test_daemon_warns_about_readable_config_and_session_files(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    os.chmod(config, 0o644)
    session = tmp_path / "sessions" / "file-acc.session"
    os.chmod(session, 0o640)
    log = tmp_path / "daemon.log"
    with daemon_process(config, log):
        pass
    text = log.read_text()
    assert f'event=secrets_exposed what="config file" path={config} mode=0644' in text
    assert f'event=secrets_exposed what="session file" path={session} mode=0640' in text
    # nothing the daemon created is readable by others
    for path in [tmp_path / "state", *(tmp_path / "state").rglob("*")]:
        assert os.stat(path).st_mode & 0o077 == 0, path


def test_corrupt_state_file_is_moved_aside_and_the_daemon_starts_clean(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    garbage = b"this is not a database, it is a shopping list\n" * 100
    (state / "state.sqlite3").write_bytes(garbage)
    log = tmp_path / "daemon.log"
    with daemon_process(config, log):
        status = mtpoold("--config", str(config), "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["accounts_total"] == 2
    text = log.read_text()
    assert "level=warning" in text and "event=state_store_reset" in text
    moved = list(state.glob("state.sqlite3.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == garbage
    assert f"moved_to={moved[0]}" in text
    # the fresh store is ours now: a second start does not move anything
    with daemon_process(config, tmp_path / "again.log"):
        pass
    assert "event=state_store_reset" not in (tmp_path / "again.log").read_text()
    assert len(list(state.glob("state.sqlite3.corrupt-*"))) == 1


# --- live reload (in-process daemon, fake clients) ------------------------------------------------


ACCOUNT = 'api_id = {n}\napi_hash = "{h}"\nsession_string = "fake-{id}"\n'


def fake_accounts(*ids: str) -> str:
    return "".join(
        f'[[accounts]]\nid = "{i}"\n' + ACCOUNT.format(n=n + 1, h=f"{n:032x}", id=i) + "\n"
        for n, i in enumerate(ids)
    )


@asynccontextmanager
async def in_process_daemon(config_path: Path, world: World) -> AsyncIterator[tuple[Any, str]]:
    """run_daemon on the config file with fake clients; yields (target, token)."""
    config = load_config(config_path)

    def factory(cfg: Any, *, store: Any) -> Any:
        return open_pool(cfg, client_factory=world.factory(), store=store, lock_sessions=True)

    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            partial(run_daemon, config, config_path=config_path, pool_factory=factory)
        )
        token = (Path(config.daemon.state_dir) / "token").read_text().strip()
        yield parse_target(address), token
        os.kill(os.getpid(), signal.SIGTERM)


async def test_reload_with_an_invalid_config_changes_nothing_and_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, accounts=fake_accounts("a1", "a2"))
    good = config_path.read_text()
    with trio.fail_after(30):
        async with in_process_daemon(config_path, World()) as (target, token):
            before = await call(target, token, "status")
            assert before["config_generation"] == 1
            config_path.write_text(
                good.replace("[telegram]", "[policy]\nmax_attempts = 0\n\n[telegram]")
                + '[[accounts]]\nid = "a3"\napi_id = 3\napi_hash = "x"\nproxy = "nowhere"\n'
                + 'session_string = "s"\n'
            )
            with pytest.raises(RpcError) as info:
                await call(target, token, "reload")
            err = info.value
            assert err.code == -32006 and err.error_class == "CONFIG_INVALID"
            assert len(err.problems) >= 2, err.problems
            assert any("max_attempts" in p for p in err.problems)
            assert any("nowhere" in p for p in err.problems)
            assert err.message.startswith("config not reloaded (")
            after = await call(target, token, "status")
            assert after["config_generation"] == 1
            assert after["config_loaded_at"] == before["config_loaded_at"]
            assert [a["id"] for a in after["accounts"]] == ["a1", "a2"]
            # the same through `mtpoold reload`: every problem on its own line, exit 2
            token_file = str(tmp_path / "state" / "token")
            args = ["reload", "--url", str(target), "--token-file", token_file]
            assert await trio.to_thread.run_sync(main, args) == 2
            err = capsys.readouterr().err.splitlines()
            assert err[0] == "mtpoold: reload failed; the daemon keeps its current config:"
            assert len(err) == 1 + len(info.value.problems)
            # through the broken file itself: the CLI still finds the daemon and its token
            # (daemon.listen and state_dir read leniently) and shows the daemon's verdict
            args = ["reload", "--config", str(config_path)]
            assert await trio.to_thread.run_sync(main, args) == 2
            out = capsys.readouterr()
            assert out.err.splitlines() == err
            assert await trio.to_thread.run_sync(main, [*args, "--json"]) == 2
            out = capsys.readouterr()
            shown = json.loads(out.out)["error"]
            assert shown["code"] == -32006
            assert shown["data"]["problems"] == list(info.value.problems)
            # a good config again: generation 2
            config_path.write_text(good)
            summary = await call(target, token, "reload")
            assert summary["generation"] == 2
            assert summary["config_path"] == str(config_path)
            assert (
                await trio.to_thread.run_sync(main, ["reload", "--config", str(config_path)]) == 0
            )
            assert capsys.readouterr().out == (
                f"reloaded {config_path}: config #3; added -; removed -; reconnected -\n"
            )
            assert (await call(target, token, "status"))["config_generation"] == 3


async def test_reload_renaming_an_account_names_the_account_holding_its_session(
    tmp_path: Path,
) -> None:
    """A rename in one reload would run the new id on the session the old one still holds:
    refused, naming the old account and how to rename, not "in use by PID <the daemon>"."""
    config_path = write_config(tmp_path, accounts=fake_accounts("a1", "a2"))
    with trio.fail_after(30):
        async with in_process_daemon(config_path, World()) as (target, token):
            config_path.write_text(config_path.read_text().replace('id = "a2"', 'id = "a2-new"'))
            with pytest.raises(RpcError) as info:
                await call(target, token, "reload")
            [problem] = info.value.problems
            assert problem.startswith('account "a2-new": string session (lock ')
            assert problem.endswith(
                f') is in use by account "a2" of this daemon (PID {os.getpid()}); to rename an'
                " account, remove it in one reload and add it with its new id in the next"
            )


async def test_reload_removing_an_account_lets_its_call_finish_and_reply(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, accounts=fake_accounts("a1", "a2"))
    world = World()
    world.script("a2", Sleep(1.0, {"slow": "done"}))
    with trio.fail_after(30):
        async with in_process_daemon(config_path, world) as (target, token):
            replies: list[Any] = []

            async def slow_call() -> None:
                params = {"method": "help.GetConfig", "args": {}, "options": {"account": "a2"}}
                replies.append(await call(target, token, "invoke", params))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                while world.active["a2"] == 0:  # noqa: ASYNC110 - the fake world has no event
                    await trio.sleep(0.01)
                config_path.write_text(config_path.read_text().split('[[accounts]]\nid = "a2"')[0])
                summary = await call(target, token, "reload")
                assert summary["removed"] == ["a2"] and summary["generation"] == 2
                assert world.active["a2"] == 1  # still running
            assert replies[0]["result"] == {"slow": "done"}
            assert replies[0]["meta"]["account"] == "a2"
            status = await call(target, token, "status")
            assert [a["id"] for a in status["accounts"]] == ["a1"]
            assert status["config_generation"] == 2


# --- signals during shutdown (real process, loopback DC) ------------------------------------------


async def test_sigterm_sigint_sighup_answer_running_jobs_and_exit_0(tmp_path: Path) -> None:
    async with open_dc() as dc:
        config = tmp_path / "mtpoold.toml"
        config.write_text(
            f'[daemon]\nlisten = "127.0.0.1:{free_port()}"\nstate_dir = "{tmp_path}/state"\n'
            "shutdown_grace_s = 60\n\n"
            f'[telegram]\ndc_host = "{dc.host}"\ndc_port = {dc.port}\n'
            f"rsa_keys = [{json.dumps(dc.public_key_pem)}]\n\n"
            f'[[accounts]]\nid = "acc"\napi_id = 1\napi_hash = "{"ab" * 16}"\n'
            f'session_string = "{dc.session_string("15550000001")}"\n'
        )
        config.chmod(0o600)
        rule = dc.faults.add(blackhole(), method="help.GetNearestDc")
        log = tmp_path / "daemon.log"
        async with async_daemon(config, log) as proc, trio.open_nursery() as nursery:
            calls: list[trio.CompletedProcess[bytes]] = []

            async def slow_call() -> None:
                calls.append(
                    await trio.run_process(
                        [sys.executable, "-m", "mtpoold", "--config", str(config), "call"]
                        + ["help.GetNearestDc", "{}"],
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
                )

            nursery.start_soon(slow_call)
            with trio.fail_after(30):
                while rule.remaining != 0:  # noqa: ASYNC110 - the child's call reaches the DC: it has no event
                    await trio.sleep(0.05)
            with trio.fail_after(20):  # well within the 60 s grace
                proc.send_signal(signal.SIGTERM)
                while "event=daemon_stopping " not in await trio.Path(log).read_text():  # noqa: ASYNC110 - the child process's log
                    await trio.sleep(0.01)
                # pending together, the kernel hands them out SIGHUP first
                proc.send_signal(signal.SIGINT)
                proc.send_signal(signal.SIGHUP)
                await proc.wait()
        assert proc.returncode == 0, log.read_text()
        text = log.read_text()
        assert "event=daemon_stopping_now signal=SIGINT" in text
        assert "event=daemon_signal_ignored signal=SIGHUP reason=stopping" in text
        assert "event=daemon_stopped" in text
        [reply] = calls
        assert reply.returncode == 1, reply.stdout + reply.stderr
        error = json.loads(reply.stdout)["error"]
        assert error["code"] == -32003 and error["data"]["class"] == "SHUTTING_DOWN"


def test_check_config_on_the_running_daemons_own_config_is_ok(tmp_path: Path) -> None:
    """The operator checks the config of the daemon that runs on it before `mtpoold reload`:
    its listen address is that daemon's own, not a conflict; another config on the same
    address (a different state_dir, so a different daemon) is still refused."""
    config = write_config(tmp_path)
    with daemon_process(config, tmp_path / "daemon.log"):
        checked = mtpoold("check-config", str(config))
        assert checked.returncode == 0, checked.stderr
        assert "in use by the running mtpoold of this state_dir" in checked.stdout
        other = tmp_path / "other.toml"
        other.write_text(config.read_text().replace(f'"{tmp_path}/state"', f'"{tmp_path}/o"'))
        refused = mtpoold("check-config", str(other))
        assert refused.returncode == 2
        assert "address already in use" in refused.stderr


async def test_a_reload_whose_config_read_breaks_is_refused_and_the_daemon_keeps_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a ConfigError from reading the file (a bug, an input nobody foresaw): the reload
    is refused with the cause, as a config problem, and SIGHUP's caller lives on."""
    import mtpoold._daemon as daemon_module
    from mtpoold._config import load_config
    from mtpoold._daemon import Reloader
    from mtpoold._errors import ConfigError

    class Pool:
        reloads = 0

        async def reload(self, config: object) -> object:
            self.reloads += 1
            raise AssertionError("not reached")

    path = tmp_path / "mtpoold.toml"
    path.write_text("")
    config = load_config(path)
    reloader = Reloader(Pool(), config, path)  # type: ignore[arg-type]

    def broken(_path: object) -> object:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(daemon_module, "load_config", broken)
    with pytest.raises(ConfigError) as caught:
        await reloader()
    assert list(caught.value.problems) == [
        "reload failed reading the config: OverflowError: int too large to convert to float"
    ]
    assert reloader.config is config and reloader.pool.reloads == 0  # type: ignore[attr-defined]
    assert "event=reload_failed" in caplog.text
