"""`mtpoold` CLI (main() in-process) and the daemon's composition root."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from mtpoold._authorize import write_session_file
from mtpoold._cli import main
from mtpoold._config import parse_config
from mtpoold._daemon import run_daemon
from mtpoold._pool import ReloadSummary
from mtpoold._rpcclient import parse_target
from mtpoold._server import RpcServer
from mtpoold.testing import DC

from _fakepool import FakePool

TOKEN = "cli-test-token-0123456789"


@pytest.fixture(autouse=True)
def _in_tmp_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./mtpoold.toml


@attrs.define
class Daemon:
    address: str
    token_file: Path
    pool: FakePool
    trio_token: Any = None

    def release(self) -> None:
        """Let the pool's ``"wait"`` jobs finish (from this, a non-Trio thread)."""
        trio.from_thread.run_sync(self.pool.release.set, trio_token=self.trio_token)

    @property
    def url(self) -> str:
        return f"ws://{self.address}/"

    def args(self) -> list[str]:
        return ["--url", self.url, "--token-file", str(self.token_file)]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """An RpcServer over a FakePool, running in its own thread's Trio run."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    ready: queue.Queue[Any] = queue.Queue()

    def runner() -> None:
        async def serve() -> None:
            pool = FakePool()
            server = RpcServer(pool, TOKEN, listen="127.0.0.1:0")
            async with trio.open_nursery() as nursery:
                address = await nursery.start(server.run)
                ready.put((address, pool, server, trio.lowlevel.current_trio_token()))

        trio.run(serve)

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    address, pool, server, trio_token = ready.get(timeout=10)
    yield Daemon(address, token_file, pool, trio_token)
    trio.from_thread.run_sync(server.request_shutdown, trio_token=trio_token)
    thread.join(10)
    assert not thread.is_alive()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- version, usage, check-config -----------------------------------------------------------------


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "mtpoold 0.1.0"


def test_main_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "a command is required" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in err
    assert "Traceback" not in err
    assert main(["status", "--watch", "nope"]) == 2


@pytest.mark.parametrize("seconds", ["nan", "inf", "0", "-1", "1e999", "nope"])
def test_status_watch_must_be_a_positive_finite_number(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--watch", seconds]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "mtpoold status: argument --watch: must be a positive finite number of seconds,"
        f" not {seconds!r}\n"
    )
    assert captured.out == ""


@pytest.mark.parametrize("seconds", ["1e-320", "0.05", "0.0999"])
def test_status_watch_has_a_minimum_interval(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--watch 1e-320` would refresh in a tight loop: below 0.1 s is a usage error."""
    assert main(["status", "--watch", seconds]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"mtpoold status: argument --watch: must be at least 0.1 s, not {seconds!r}\n"
    )
    assert captured.out == ""


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[daemon]\nlisten = "127.0.0.1:9999"\n')
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"{path}: ok: 0 accounts, 0 proxies, listen 127.0.0.1:9999, state_dir ")


def test_check_config_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[daemon]\nmax_in_flight = 0\nlisten = "nowhere"\n[bogus]\n')
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("max_in_flight" in line for line in lines)
    assert any("listen" in line for line in lines)
    assert any("bogus" in line for line in lines)
    assert captured.out == ""


@pytest.mark.parametrize("how", ["global", "after", "env"])
def test_check_config_without_path_uses_config_option_or_env(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('[daemon]\nlisten = "127.0.0.1:9999"\n')
    argv = {
        "global": ["--config", str(path), "check-config"],
        "after": ["check-config", "--config", str(path)],
        "env": ["check-config"],
    }[how]
    if how == "env":
        monkeypatch.setenv("MTPOOLD_CONFIG", str(path))
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{path}: ok: 0 accounts")
    # no --config, no variable: ./mtpoold.toml, like the other commands
    monkeypatch.delenv("MTPOOLD_CONFIG", raising=False)
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err == (
        "no config file: ./mtpoold.toml does not exist (give --config or set $MTPOOLD_CONFIG)\n"
    )


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- status ---------------------------------------------------------------------------------------


def test_status_renders_tables(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["status", *daemon.args()]) == 0
    out = capsys.readouterr().out
    for needle in [
        "mtpoold up 1h02m",
        "accounts 2: ready 2",  # by state, adding up to the total
        "Proxies",
        "proxy-one",
        "socks5",
        "1/2",
        "1.2s",  # next slot
        "FLOOD_WAIT 2 +1",  # the largest error class, and how many more
        "Accounts needing attention (1 of 2)",
        "a2",
        "cooling 12s",  # cooldown of a2
        "FLOOD_WAIT: FLOOD_WAIT_37",  # one line, cut to fit
    ]:
        assert needle in out, needle
    assert "0123456789abcdef" not in out  # no key column in the narrow view
    assert max(map(len, out.splitlines())) <= 80  # piped: 80 columns
    assert main(["status", "--wide", *daemon.args()]) == 0
    wide = capsys.readouterr().out
    for needle in ["0123456789abcdef", "Accounts (2)", "a1", "main", "3.5s ago"]:
        assert needle in wide, needle


def test_status_filters_and_summary(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["status", "--state", "ready", "--sort", "id", *daemon.args()]) == 0
    out = capsys.readouterr().out
    assert "Accounts matching (2 of 2)" in out
    assert out.index("\na1 ") < out.index("\na2 ")
    assert max(map(len, out.splitlines())) <= 100  # $COLUMNS when piped
    assert main(["status", "--tag", "nope", *daemon.args()]) == 0
    assert "Accounts matching (0 of 2)" in capsys.readouterr().out
    assert main(["status", "--proxy", "other", *daemon.args()]) == 0
    assert "proxy-one" not in capsys.readouterr().out
    assert main(["status", "--state", "cooling", *daemon.args()]) == 2
    assert "invalid choice: 'cooling'" in capsys.readouterr().err
    assert main(["status", "--summary", *daemon.args()]) == 0
    assert "accounts 2: ready 2" in capsys.readouterr().out


def test_status_json(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", *daemon.args()]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["accounts_total"] == 2
    assert stats["proxies"][0]["name"] == "proxy-one"


def test_status_watch(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", "--watch", "0.1", "--watch-count", "2", *daemon.args()]) == 0
    out = capsys.readouterr().out
    assert out.count('"accounts_total": 2') == 2


def test_status_finds_daemon_through_config(
    daemon: Daemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "token").write_text(TOKEN)
    config = tmp_path / "elsewhere.toml"
    config.write_text(f'[daemon]\nlisten = "{daemon.address}"\nstate_dir = "state"\n')
    assert main(["status", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["accounts_total"] == 2
    monkeypatch.setenv("MTPOOLD_CONFIG", str(config))
    assert main(["call", "ping"]) == 0
    assert json.loads(capsys.readouterr().out)["pong"] is True


def test_status_unreachable_daemon_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    url = f"ws://127.0.0.1:{_free_port()}/"
    assert main(["status", "--url", url, "--token-file", str(token)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"daemon unreachable: cannot connect to {url}")
    assert err.count("\n") == 1
    assert (
        main(["call", "ping", "--url", f"unix:{tmp_path}/none.sock", "--token-file", str(token)])
        == 3
    )


def test_wrong_token_exit_2(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token")
    assert main(["status", "--url", daemon.url, "--token-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "--token-file" in err
    assert "not-the-token" not in err


def test_missing_token_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "ws://127.0.0.1:1/", "--token-file", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- call -----------------------------------------------------------------------------------------


def test_call_tl_function_is_invoke(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "call",
            "help.GetConfig",
            '{"x": 1}',
            "--deadline-ms",
            "1500",
            "--account",
            "a2",
            *daemon.args(),
        ]
    )
    assert rc == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["result"] == {"_": "help.GetConfig", "args": {"x": 1}}
    assert reply["meta"]["account"] == "a1"
    assert daemon.pool.calls[-1] == (
        "invoke",
        ("help.GetConfig", {"x": 1}),
        {"deadline_s": 1.5, "account": "a2", "tags": ()},
    )


def test_call_named_methods(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "call",
                "resolve",
                '{"link_or_username": "t.me/durov"}',
                "--account",
                "a1",
                *daemon.args(),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["result"]["_"] == "resolve"
    assert daemon.pool.calls[-1][2]["account"] == "a1"
    assert main(["call", "get_messages", '{"peer": "durov", "ids": [1]}', *daemon.args()]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["args"] == ["durov", [1]]
    assert main(["call", "status", *daemon.args()]) == 0
    assert json.loads(capsys.readouterr().out)["uptime_s"] == 3725.0
    assert main(["call", "accounts.disable", '{"id": "a1", "reason": "test"}', *daemon.args()]) == 0
    assert daemon.pool.disabled["a1"] == "test"


def test_call_job_failed_exit_1(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "fail:FLOOD_WAIT", *daemon.args()]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["data"]["class"] == "FLOOD_WAIT"
    assert captured.err == "fail:FLOOD_WAIT failed: FLOOD_WAIT (-32001): fake FLOOD_WAIT\n"


def test_call_usage_errors_exit_2(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "x", "{nope", *daemon.args()]) == 2
    assert "ARGS_JSON is not valid JSON" in capsys.readouterr().err
    assert main(["call", "x", "[1]", *daemon.args()]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
    assert main(["call", "get_messages", '{"peer": "p", "ids": ["x"]}', *daemon.args()]) == 2
    assert "params.ids[0]: expected an integer, got a string" in capsys.readouterr().err
    assert main(["call", "ping", "--account", "a1", *daemon.args()]) == 2
    assert main(["call", "x", "--deadline-ms", "0", *daemon.args()]) == 2


def test_call_numbers_of_any_size_are_usage_errors_not_crashes(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # shared case 002's kind at the CLI door: a 400-digit --deadline-ms is the daemon's
    # INVALID_ARGUMENT naming options.deadline_ms (exit 2), as 1e12 ms is; an integer past
    # Python's 4300-digit limit, or a number JSON cannot carry (1e400, NaN), in ARGS_JSON is
    # a usage error naming ARGS_JSON, not an internal error nor "daemon unreachable".
    huge = "1" + "0" * 400
    assert main(["call", "help.GetConfig", "--deadline-ms", huge, *daemon.args()]) == 2
    err = capsys.readouterr().err
    assert "params.options.deadline_ms: expected at most 2**53" in err, err
    assert "internal error" not in err
    for args_json in ('{"limit": 1' + "0" * 5000 + "}", '{"limit": 1e400}', '{"limit": NaN}'):
        assert main(["call", "messages.GetHistory", args_json, *daemon.args()]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ARGS_JSON "), err
        assert "internal error" not in err and "unreachable" not in err, err


# --- accounts, proxies, reload --------------------------------------------------------------------


@pytest.mark.parametrize("columns", [None, "80"])
def test_accounts_list_table_and_json(
    daemon: Daemon,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    columns: str | None,
) -> None:
    if columns is not None:  # every column, never cut to the terminal (like status --wide)
        monkeypatch.setenv("COLUMNS", columns)
    assert main(["accounts", "list", *daemon.args()]) == 0
    out = capsys.readouterr().out
    for needle in [
        "Accounts",
        "a1",
        "a2",
        "proxy-one",
        "main",
        "FLOOD_WAIT: FLOOD_WAIT_37 (420)",
        "orphaned in the state store (not in the config): old-1",
        "mtpoold accounts forget ID",
    ]:
        assert needle in out, needle
    assert "Proxies" not in out
    assert main(["accounts", "list", "--json", *daemon.args()]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in listed["accounts"]] == ["a1", "a2"]
    assert listed["orphaned_accounts"] == ["old-1"]


def test_accounts_cooldowns_and_clear_cooldown(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["accounts", "cooldowns", "a1", *daemon.args()]) == 0
    out = capsys.readouterr().out
    for needle in ("Cooldowns of a1", "resolve", "23h53m", "FLOOD_WAIT_86400", "25/hour"):
        assert needle in out, needle
    assert main(["accounts", "cooldowns", "a1", "--json", *daemon.args()]) == 0
    assert json.loads(capsys.readouterr().out)["rate_classes"][0]["rate_class"] == "resolve"
    assert main(["accounts", "clear-cooldown", "a1", "--class", "resolve", *daemon.args()]) == 0
    assert capsys.readouterr().out == "account a1: cleared resolve\n"
    assert main(["accounts", "clear-cooldown", "a2", *daemon.args()]) == 0
    assert daemon.pool.cleared == [("a1", "resolve"), ("a2", None)]
    capsys.readouterr()
    assert main(["accounts", "clear-cooldown", "a2", "--class", "read", *daemon.args()]) == 0
    assert capsys.readouterr().out == (  # was "account a2: cleared nothing was cooling down"
        "account a2: nothing to clear (no cooldown of its own or of a rate class;"
        " a proxy's cooldown is the proxy's)\n"
    )
    assert main(["accounts", "clear-cooldown", "a1", "--class", "x", *daemon.args()]) == 2
    assert "no rate class 'x'" in capsys.readouterr().err


def test_accounts_disable_enable_forget(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accounts", "disable", "a2", "--reason", "spam check", *daemon.args()]) == 0
    assert capsys.readouterr().out == "account a2 disabled: spam check\n"
    assert daemon.pool.disabled["a2"] == "spam check"
    assert main(["accounts", "disable", "a1", *daemon.args()]) == 0
    assert daemon.pool.disabled["a1"] == "disabled by operator"
    capsys.readouterr()
    assert main(["accounts", "enable", "a2", "--json", *daemon.args()]) == 0
    assert json.loads(capsys.readouterr().out) == {"account": "a2", "disabled": False}
    assert main(["accounts", "enable", "nope", *daemon.args()]) == 2
    assert capsys.readouterr().err == (
        "mtpoold: accounts.enable failed: params.id: unknown account 'nope'\n"
    )
    # forget: only orphans
    assert main(["accounts", "forget", "a1", *daemon.args()]) == 2
    err = capsys.readouterr().err
    assert "'a1' is in the config; remove it from the config first" in err
    assert main(["accounts", "forget", "old-1", *daemon.args()]) == 0
    assert "account old-1 forgotten" in capsys.readouterr().out
    assert daemon.pool.orphaned == []
    assert main(["accounts", "forget", "old-1", *daemon.args()]) == 2
    assert "no account 'old-1' in the state store" in capsys.readouterr().err
    assert main(["accounts", *daemon.args()]) == 2  # an action is required


def test_proxies_list_table_and_json(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxies", "list", *daemon.args()]) == 0
    out = capsys.readouterr().out
    for needle in ["Proxies", "0123456789abcdef", "proxy-one", "socks5", "1/2", "FLOOD_WAIT 2"]:
        assert needle in out, needle
    assert "Accounts" not in out
    assert main(["proxies", "list", "--json", *daemon.args()]) == 0
    assert json.loads(capsys.readouterr().out)["proxies"][0]["name"] == "proxy-one"


def test_reload_without_a_reloader_exit_2(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reload", *daemon.args()]) == 2
    assert "reload is not available" in capsys.readouterr().err


# --- small pieces ---------------------------------------------------------------------------------


# --- the daemon -----------------------------------------------------------------------------------


@attrs.define(eq=False)
class ReloadablePool(FakePool):
    reloads: list[Any] = attrs.field(factory=list)

    async def reload(self, config: Any) -> ReloadSummary:
        self.reloads.append(config)
        return ReloadSummary(generation=1 + len(self.reloads), added=(), removed=(), reconnected=())


async def test_run_daemon_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notify = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(notify))
    rx.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    state = tmp_path / "state"
    config_path = tmp_path / "mtpoold.toml"
    listen = f"unix:{tmp_path}/mtpoold.sock"
    config_path.write_text(f'[daemon]\nlisten = "{listen}"\nstate_dir = "{state}"\n')
    config = parse_config(
        {"daemon": {"listen": listen, "state_dir": str(state)}}, base_dir=tmp_path
    )
    pool = ReloadablePool()
    pool_args: list[Any] = []

    @asynccontextmanager
    async def factory(cfg: Any, *, store: Any) -> AsyncIterator[FakePool]:
        pool_args.append((cfg, store))
        yield pool

    def messages() -> list[str]:
        out = []
        while True:
            try:
                out.append(rx.recv(4096).decode())
            except BlockingIOError:
                return out

    done = trio.Event()

    async def run(*, task_status: trio.TaskStatus[str]) -> None:
        await run_daemon(
            config, config_path=config_path, pool_factory=factory, task_status=task_status
        )
        done.set()

    with rx, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(run)
            assert address == listen
            assert stat_mode(state) == 0o700
            assert stat_mode(state / "token") == 0o600
            assert pool_args[0][1] is not None  # the state store was opened
            sent: list[str] = []
            periodic = "STATUS=2/2 accounts ready"  # sent at once, then every 10 s
            await wait_for(
                lambda: sent.extend(messages()) or any(m.startswith(periodic) for m in sent)
            )
            assert sent[0].startswith("READY=1\nSTATUS=2/2 accounts ready")

            token = (state / "token").read_text().strip()
            from mtpoold._rpcclient import call

            assert (await call(parse_target(address), token, "ping"))["pong"] is True

            # SIGHUP with a broken config: logged, kept running; then a good one: reloaded
            config_path.write_text("[daemon]\nmax_in_flight = 0\n")
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_for(lambda: "READY=1" in messages())  # after RELOADING=1
            assert pool.reloads == []
            config_path.write_text(f'[daemon]\nlisten = "{listen}"\nstate_dir = "{state}"\n')
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_for(lambda: bool(pool.reloads))

            # the watchdog pings at half of WATCHDOG_USEC
            await wait_for(lambda: "WATCHDOG=1" in messages())

            os.kill(os.getpid(), signal.SIGTERM)
            await done.wait()
        assert "STOPPING=1" in messages()


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


async def wait_for(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 - sd_notify datagrams and the fake pool's reloads have no event
        await trio.sleep(0.01)


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("_restore_logging")
def test_check_config_and_run_refuse_a_listen_address_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "mtpoold.toml"
        config.write_text(f'[daemon]\nlisten = "127.0.0.1:{port}"\nstate_dir = "state"\n')
        expected = (
            f"{config}: daemon.listen: listen address 127.0.0.1:{port} cannot be bound:"
            " address already in use (a running mtpoold? `mtpoold reload` checks and applies"
            " a new config)\n"
        )
        assert main(["check-config", str(config)]) == 2
        assert capsys.readouterr().err == expected
        assert main(["run", "--config", str(config)]) == 2
        assert capsys.readouterr().err == expected
    assert not (tmp_path / "state").exists()  # refused before anything was created


# --- start-up checks, broken configs, pipes, authorize input ---------------------------------


def _config_with_missing_session_file(tmp_path: Path) -> Path:
    path = tmp_path / "mtpoold.toml"
    accounts = "".join(
        f'[[accounts]]\nid = "a{n}"\napi_id = {n}\napi_hash = "{"ab" * 16}"\n'
        f'session = "sessions/a{n}"\n\n'
        for n in (1, 2, 3)
    )
    path.write_text(f'[daemon]\nstate_dir = "state"\n\n{accounts}')
    for n in (1, 2):
        write_session_file(tmp_path / "sessions" / f"a{n}", DC(port=1).session_string(n + 1000), {})
    return path


@pytest.mark.usefixtures("_restore_logging")
def test_check_config_and_run_refuse_a_missing_session_file_authorize_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_with_missing_session_file(tmp_path)
    expected = (
        f"{path}: accounts[2].session: no session file at {tmp_path}/sessions/a3.session;"
        " log the account in with: mtpoold authorize a3\n"
    )
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == expected
    assert main(["run", "--config", str(path)]) == 2
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "state").exists()  # nothing started, nothing created
    # authorize is how the file comes to exist: it is not refused for it (here it stops at
    # the malformed phone number, before connecting anywhere)
    assert main(["--config", str(path), "authorize", "a3", "--phone", "abc;rm"]) == 2
    assert capsys.readouterr().err == (
        'mtpoold authorize: account "a3": invalid phone number "abc;rm": expected'
        " international format, digits with an optional leading + (e.g. +15551234567)\n"
    )


def test_check_config_and_run_refuse_a_lock_directory_that_cannot_be_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """$MTPOOLD_LOCK_DIR whose parent is missing: a start-up problem of check-config and run
    (exit 2, nothing started), not "daemon failed: [Errno 2] ..." from run alone."""
    locks = tmp_path / "missing" / "locks"
    monkeypatch.setenv("MTPOOLD_LOCK_DIR", str(locks))
    path = tmp_path / "mtpoold.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n\n[[accounts]]\nid = "a1"\napi_id = 1\n'
        f'api_hash = "{"ab" * 16}"\nsession_string = "{DC(port=1).session_string("15550000001")}"\n'
    )
    expected = (
        f"{path}: session lock directory {locks} ($MTPOOLD_LOCK_DIR; its parent must exist)"
        " cannot be created: No such file or directory\n"
    )
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == expected
    assert main(["run", "--config", str(path)]) == 2
    assert capsys.readouterr().err.endswith(expected.removeprefix(f"{path}: "))
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            'session_string_env = "MTPOOLD_TEST_UNSET_VAR"',
            "accounts[0].session_string_env: environment variable MTPOOLD_TEST_UNSET_VAR"
            " (session_string_env) is not set",
        ),
        (
            'session_credential = "acc"',
            "accounts[0].session_credential: session_credential 'acc' needs"
            " $CREDENTIALS_DIRECTORY, which is not set",
        ),
        (
            'session_string = "not a session"',
            "accounts[0].session_string: session_string: the string session is not a valid"
            " Telethon StringSession",
        ),
    ],
)
def test_check_config_runs_the_daemons_session_source_checks(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    problem: str,
) -> None:
    monkeypatch.delenv("MTPOOLD_TEST_UNSET_VAR", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "mtpoold.toml"
    path.write_text(f'[[accounts]]\nid = "a1"\napi_id = 1\napi_hash = "{"ab" * 16}"\n{source}\n')
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{path}: {problem}")  # named by key path, like the rest


def test_client_commands_find_the_daemon_through_a_broken_config(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # relative state_dir, resolved against the config's directory as load_config does
    (tmp_path / "cfg" / "st").mkdir(parents=True)
    (tmp_path / "cfg" / "st" / "token").write_text(daemon.token_file.read_text())
    path = tmp_path / "cfg" / "mtpoold.toml"
    path.write_text(f'[daemon]\nlisten = "{daemon.address}"\nstate_dir = "st"\nmax_in_flight = 0\n')
    os.chdir(tmp_path)  # not the config's directory
    assert main(["--config", str(path), "call", "ping"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["pong"] is True
    assert captured.err.startswith(f"mtpoold: note: {path} has 1 problem")
    # not even [daemon] readable: exit 2 with the config problems
    path.write_text("[daemon\n")
    assert main(["--config", str(path), "call", "ping"]) == 2
    assert capsys.readouterr().err.startswith(f"{path}: invalid TOML")
    path.write_text("[daemon]\nlisten = 8765\n")
    assert main(["--config", str(path), "call", "ping"]) == 2
    assert "daemon.listen" in capsys.readouterr().err


def test_output_into_a_closed_pipe_exits_quietly(daemon: Daemon, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = "import sys\nfrom mtpoold._cli import main\nsys.exit(main(sys.argv[1:]))\n"
    args = [sys.executable, "-c", script, "status", "--json", *daemon.args()]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
        err = proc.stderr.read().decode()
        code = proc.wait(30)
    assert err == ""
    assert code == 141


@pytest.mark.parametrize(
    "command",
    [["status", "--watch", "0.1"], ["status"], ["accounts", "list"], ["proxies", "list"]],
)
def test_rich_output_into_a_pipe_closed_midway_exits_141(
    daemon: Daemon, command: list[str]
) -> None:
    """`mtpoold status --watch 0.5 | head -1`: rich's own broken-pipe exit (1) is not ours."""
    import subprocess
    import sys

    script = "import sys\nfrom mtpoold._cli import main\nsys.exit(main(sys.argv[1:]))\n"
    args = [sys.executable, "-c", script, *command, *daemon.args()]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        if command[-1] == "0.1":
            assert proc.stdout.read(1)  # the first screen arrived; the reader leaves
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(30)
    assert err == ""
    assert code == 141


def test_authorize_without_a_terminal_or_input_is_a_clean_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from mtpoold._authorize import AuthorizeFailed, Prompter

    def eof(_prompt: str, _secret: bool) -> str:
        raise EOFError

    for get in (
        lambda p: p.get_phone("a1"),
        lambda p: p.get_code("a1", "+15550000001"),
        lambda p: p.get_password("a1"),
    ):
        with pytest.raises(AuthorizeFailed) as info:
            get(Prompter(ask=eof))
        assert info.value.exit_code == 2
        assert "stdin ended (not a terminal?)" in str(info.value)
    # the real terminal prompt on a closed stdin, through the CLI
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    from mtpoold._authorize import Prompter as _P

    with pytest.raises(AuthorizeFailed, match=r'^account "a1": no phone number: stdin ended'):
        _P().get_phone("a1")
    assert _P(phone=" +1 (555) 000-0001 ").get_phone("a1") == "+15550000001"
    for bad in ("abc;rm", "", "+", "12", "+1234567890123456", "555 000 0001; reboot"):
        with pytest.raises(AuthorizeFailed, match=r'^account "a1": invalid phone number '):
            _P(phone=bad).get_phone("a1")


# --- every start-up check of `run` in `check-config` too --------------------------------------


def _one_file_account(tmp_path: Path, daemon: str = 'state_dir = "state"') -> Path:
    path = tmp_path / "mtpoold.toml"
    path.write_text(
        f"[daemon]\n{daemon}\n\n"
        f'[[accounts]]\nid = "acc"\napi_id = 1\napi_hash = "{"ab" * 16}"\n'
        'session = "sessions/acc"\n'
    )
    return path


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize(
    ("make", "problem"),
    [
        ("text", "it is not a Telethon session file (not an SQLite database)"),
        ("empty", "it is an empty file, not a Telethon session"),
        ("other_sqlite", "it is an SQLite database but not a Telethon session (no sessions table)"),
        ("no_key", "holds no auth key (not logged in); log the account in with: mtpoold"),
        ("unreadable", "cannot be read: Permission denied"),
        ("directory", "cannot be read: not a regular file"),
    ],
)
def test_check_config_and_run_refuse_a_session_file_that_is_no_usable_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str, problem: str
) -> None:
    import sqlite3

    if make == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = _one_file_account(tmp_path)
    session = tmp_path / "sessions" / "acc.session"
    write_session_file(tmp_path / "sessions" / "acc", DC(port=1).session_string(1001), {})
    if make == "text":
        session.write_text("this is a shopping list, not a session\n" * 20)
    elif make == "empty":
        session.write_bytes(b"")
    elif make == "other_sqlite":
        session.unlink()
        with sqlite3.connect(session) as db:
            db.execute("CREATE TABLE t (x)")
    elif make == "no_key":
        with sqlite3.connect(session) as db:
            db.execute("UPDATE sessions SET auth_key = NULL")
    elif make == "directory":
        session.unlink()
        session.mkdir()
    else:
        session.chmod(0)
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{path}: accounts[0].session: session file {session}"), err
        assert problem in err, err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "state").exists()  # nothing started


@pytest.mark.usefixtures("_restore_logging")
def test_check_config_and_run_refuse_a_state_dir_that_cannot_be_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("not a directory")
    path = tmp_path / "mtpoold.toml"
    path.write_text('[daemon]\nstate_dir = "afile/state"\n')
    expected = (
        f"{path}: daemon.state_dir {tmp_path}/afile/state cannot be created: {tmp_path}/afile"
        " is a file, not a directory\n"
    )
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        assert main(command) == 2  # run: exit 1 with an OSError before
        assert capsys.readouterr().err == expected


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("::1:8765", "write IPv6 hosts in brackets, [::1]:8765"),
        ("[::1]:x", "port 'x' is not a number"),
        ("unix:/nonexistent-dir/mtpoold.sock", "directory /nonexistent-dir does not exist"),
    ],
)
def test_check_config_uses_the_servers_listen_parser_and_checks_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listen: str, problem: str
) -> None:
    path = tmp_path / "mtpoold.toml"
    path.write_text(f'[daemon]\nlisten = "{listen}"\nstate_dir = "state"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert problem in err and "daemon.listen" in err, err
    assert len(err.splitlines()) == 1


def test_help_and_status_load_no_telethon(tmp_path: Path) -> None:
    """``mtpoold --help`` and a client command start without Telethon (~0.5 s of imports):
    the command line imports it only for ``run``, ``check-config`` and ``authorize``."""
    token = tmp_path / "token"
    token.write_text("t" * 43 + "\n")
    token.chmod(0o600)
    probe = (
        "import sys\n"
        "from mtpoold._cli import main\n"
        "main(['--help'])\n"
        f"main(['status', '--url', 'unix:{tmp_path}/none.sock', '--token-file', '{token}'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'telethon', 'trio_asyncio'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.splitlines()[-1] == "[]", out


# --- CLI manners (issue 13) -----------------------------------------------------------------------

NO_CONFIG = (
    "no config file: ./mtpoold.toml does not exist"
    " (give --config, set $MTPOOLD_CONFIG, or --url and --token-file)\n"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["call", "ping"],
        ["reload"],
        ["accounts", "list"],
        ["proxies", "list"],
        ["status", "--url", "ws://127.0.0.1:1/"],  # a token file is still needed
    ],
)
def test_client_command_without_a_config_file_says_so(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MTPOOLD_CONFIG", raising=False)
    monkeypatch.delenv("MTPOOLD_URL", raising=False)
    monkeypatch.delenv("MTPOOLD_TOKEN_FILE", raising=False)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", NO_CONFIG)


def test_run_and_authorize_without_a_config_file_say_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MTPOOLD_CONFIG", raising=False)
    for argv in (["run"], ["authorize"]):
        assert main(argv) == 2
        assert capsys.readouterr().err == (
            "no config file: ./mtpoold.toml does not exist (give --config or set $MTPOOLD_CONFIG)\n"
        )


def test_check_config_refuses_two_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[daemon]\nlisten = "127.0.0.1:9999"\n')
    b.write_text("[daemon]\nbogus = 1\n")
    for argv in (
        ["check-config", "--config", str(a), str(b)],
        ["--config", str(a), "check-config", str(b)],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"mtpoold check-config: two config paths (--config {a}, PATH {b}); give one\n"
        )
    assert main(["--config", str(a), "check-config", "--config", str(b)]) == 2
    assert capsys.readouterr().err == f"mtpoold: two config paths ({a}, {b}); give one\n"
    assert main(["check-config", "--config", str(a), str(a)]) == 0  # one path, said twice


def test_check_config_suggests_the_key_and_section_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[direct]\ncapacty = 2\n\n[[proxys]]\nname = 'x'\n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: proxys: unknown key; did you mean proxies?",
        f"{path}: direct.capacty: unknown key; did you mean capacity?",
    ]


def test_call_tags_reach_the_pool(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "help.GetConfig", "--tags", "ru,main", *daemon.args()]) == 0
    assert daemon.pool.calls[-1][2]["tags"] == ("ru", "main")
    args = '{"link_or_username": "@durov"}'
    assert main(["call", "resolve", args, "--tags", "ru", *daemon.args()]) == 0
    assert daemon.pool.calls[-1][0] == "resolve"
    assert daemon.pool.calls[-1][2]["tags"] == ("ru",)
    capsys.readouterr()
    assert main(["call", "ping", "--tags", "ru", *daemon.args()]) == 2
    assert capsys.readouterr().err == "--deadline-ms/--account/--tags do not apply to ping\n"
    assert main(["call", "help.GetConfig", "--tags", "ru,,x", *daemon.args()]) == 2
    assert "no empty tag" in capsys.readouterr().err


def test_call_does_not_offer_cancel(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "cancel", '{"id": 1}', *daemon.args()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtpoold call: cancel names a job of the same websocket connection")
    assert err.count("\n") == 1
    assert main(["call", "--help"]) == 0
    assert "cancel" not in capsys.readouterr().out
    assert daemon.pool.calls == []


def _call_that_waits(daemon: Daemon) -> int:
    """``mtpoold call wait`` while a thread releases the job 0.3 s after the pool has it."""

    def release_later() -> None:
        while daemon.pool.waiting == 0:
            threading.Event().wait(0.01)
        threading.Event().wait(0.3)
        daemon.release()

    releaser = threading.Thread(target=release_later, daemon=True)
    releaser.start()
    try:
        return main(["call", "wait", *daemon.args()])
    finally:
        releaser.join(10)


def test_call_shows_progress_on_a_terminal_only(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtpoold._cliprogress

    monkeypatch.setattr(mtpoold._cliprogress, "PROGRESS_AFTER_S", 0.01)
    monkeypatch.setattr(mtpoold._cliprogress, "PROGRESS_EVERY_S", 0.01)
    # captured stderr (a pipe, a file): nothing, however long the job waits
    assert _call_that_waits(daemon) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out)["result"]["_"] == "wait"
    # a terminal: "waiting N s…" rewritten in place, erased when the reply came
    daemon.pool.release = trio.Event()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _call_that_waits(daemon) == 0
    err = capsys.readouterr().err
    assert "\r\x1b[Kwaiting 0 s…" in err
    assert err.endswith("\r\x1b[K")  # cleared at the end


async def test_show_waiting_on_the_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    import io

    from mtpoold._cliprogress import show_waiting

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, expected in ((io.StringIO(), ""), (Terminal(), None)):
        with trio.move_on_after(4.5):
            await show_waiting(stream)
        text = stream.getvalue()
        if expected is not None:
            assert text == expected
        else:  # after 2 s, then every second, then erased
            erase = "\r\x1b[K"
            assert text == "".join(f"{erase}waiting {n} s…" for n in (2, 3, 4)) + erase
    with trio.move_on_after(1.5):  # a reply before 2 s: nothing written, nothing erased
        stream = Terminal()
        await show_waiting(stream)
    assert stream.getvalue() == ""


def test_accounts_disable_keeps_a_reason_enable_needs_force_for_deactivated(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["accounts", "disable", "a1", "--reason", "flagged by panel", *daemon.args()]) == 0
    assert capsys.readouterr().out == "account a1 disabled: flagged by panel\n"
    assert main(["accounts", "disable", "a1", *daemon.args()]) == 0
    assert capsys.readouterr().out == "account a1 disabled: flagged by panel\n"
    assert daemon.pool.disabled["a1"] == "flagged by panel"
    daemon.pool.disabled["a2"] = "USER_DEACTIVATED: the session no longer works"
    assert main(["accounts", "enable", "a2", *daemon.args()]) == 2
    assert capsys.readouterr().err == (
        "mtpoold: accounts.enable failed: params.force: account 'a2' was deactivated by Telegram\n"
    )
    assert daemon.pool.disabled["a2"] is not None
    assert main(["accounts", "enable", "a2", "--force", *daemon.args()]) == 0
    assert capsys.readouterr().out == "account a2 enabled\n"
    assert daemon.pool.disabled["a2"] is None


def test_call_get_messages_on_a_link_needs_no_ids(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    args = '{"peer": "https://t.me/durov/123"}'
    assert main(["call", "get_messages", args, *daemon.args()]) == 0
    assert daemon.pool.calls[-1][:2] == ("get_messages", ("https://t.me/durov/123", None))


def test_a_request_over_max_frame_bytes_says_so_not_daemon_lost(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon closes a too-large message with 1009; the client said only "connection
    lost" (as if the daemon had died)."""
    from mtpoold._server import MAX_FRAME_BYTES

    reason = "x" * (MAX_FRAME_BYTES + 1)
    assert main(["accounts", "disable", "a1", "--reason", reason, *daemon.args()]) == 3
    err = capsys.readouterr().err
    assert "closed the connection (1009) before a reply: a request larger than its" in err, err
    assert "daemon.max_frame_bytes" in err and "x" * 50 not in err
