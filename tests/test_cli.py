"""`mtpoold` CLI (main() in-process) and the daemon's composition root."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from mtpoold._cli import main
from mtpoold._config import parse_config
from mtpoold._daemon import LogfmtFormatter, run_daemon
from mtpoold._rpcclient import parse_target, target_from_listen
from mtpoold._server import RpcServer
from mtpoold._statusview import format_duration

from _fakepool import FakePool

TOKEN = "cli-test-token-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "MTPOOLD_CONFIG",
        "MTPOOLD_URL",
        "MTPOOLD_TOKEN_FILE",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./mtpoold.toml


@attrs.define
class Daemon:
    address: str
    token_file: Path
    pool: FakePool

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
    yield Daemon(address, token_file, pool)
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


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- status ---------------------------------------------------------------------------------------


def test_status_renders_tables(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", *daemon.args()]) == 0
    out = capsys.readouterr().out
    for needle in [
        "Proxies",
        "0123456789abcdef",
        "proxy-one",
        "socks5",
        "1/2",
        "1.2s",  # next slot
        "FLOOD_WAIT 2, STREAM_CLOSED 1",
        "Accounts",
        "a1",
        "a2",
        "ready",
        "12.0s",  # cooldown of a2
        "FLOOD_WAIT: FLOOD_WAIT_37 (420)",
        "uptime 1h 02m 05s",
    ]:
        assert needle in out, needle


def test_status_json(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", *daemon.args()]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["accounts_total"] == 2
    assert stats["proxies"][0]["name"] == "proxy-one"


def test_status_watch(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", "--watch", "0.01", "--watch-count", "2", *daemon.args()]) == 0
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
    assert "params.ids[0]: expected an integer, got string" in capsys.readouterr().err
    assert main(["call", "ping", "--account", "a1", *daemon.args()]) == 2
    assert main(["call", "x", "--deadline-ms", "0", *daemon.args()]) == 2


# --- accounts, proxies, reload --------------------------------------------------------------------


def test_accounts_list_table_and_json(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["accounts", "list", *daemon.args()]) == 0
    out = capsys.readouterr().out
    for needle in [
        "Accounts",
        "a1",
        "a2",
        "proxy-one",
        "10/1",
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


def test_targets() -> None:
    assert str(target_from_listen("0.0.0.0:8765")) == "ws://127.0.0.1:8765/"
    assert str(target_from_listen("[::]:8765")) == "ws://[::1]:8765/"
    assert str(target_from_listen("unix:/run/m.sock")) == "unix:/run/m.sock"
    assert parse_target("127.0.0.1:5").port == 5
    with pytest.raises(ValueError, match="only ws:// and unix:"):
        parse_target("http://x:1/")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, None, 12.5, 65, 3725, 90061)] == [
        "-",
        "-",
        "12.5s",
        "1m 05s",
        "1h 02m 05s",
        "1d 01h 01m",
    ]


def test_logfmt_formatter() -> None:
    import logging

    record = logging.LogRecord("mtpoold.x", logging.INFO, __file__, 1, "event a=%s", ("1",), None)
    assert LogfmtFormatter().format(record).endswith(" level=info logger=mtpoold.x event a=1")
    record = logging.LogRecord("other", logging.WARNING, __file__, 1, 'say "hi"\nthere', (), None)
    assert LogfmtFormatter().format(record).endswith(' msg="say \\"hi\\"\\nthere"')


# --- the daemon -----------------------------------------------------------------------------------


@attrs.define(eq=False)
class ReloadablePool(FakePool):
    reloads: list[Any] = attrs.field(factory=list)

    def reload(self, config: Any) -> None:
        self.reloads.append(config)


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
    while not predicate():
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
def test_run_reports_bind_failure_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "mtpoold.toml"
        config.write_text(f'[daemon]\nlisten = "127.0.0.1:{port}"\nstate_dir = "state"\n')
        assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("daemon failed: [Errno 98]")
    assert "Traceback" not in err
    assert stat_mode(tmp_path / "state" / "token") == 0o600
