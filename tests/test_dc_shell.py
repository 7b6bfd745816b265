"""The loopback DC from the shell: faults on the command line of ``python -m
mtpoold.testing.dc`` and at run time on its control channels (a unix socket, stdin), against
a real Telethon client; and the control language itself (`DCShell`) in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_asyncio
from telethon import errors, functions, types

from mtpoold._errors import JobFailed
from mtpoold.testing.dc import DC, DEFAULT_SEED, open_dc, open_telethon_client
from mtpoold.testing.dc._shell import MAX_LINE_BYTES, DCShell, serve_control_socket

from _e2e import fleet_config, open_fleet, wait_until

aio = trio_asyncio.aio_as_trio
ALICE = "15550000001"
BOB = "15550000002"
NEWS = types.InputPeerChannel(2001, 0x2001AA)
#: Seconds a test waits for the subprocess to print its banner (Python + Telethon import).
START_TIMEOUT_S = 30.0
#: Seconds a blackholed call is given to (not) be answered.
BLACKHOLE_WAIT_S = 0.5


def _history() -> functions.messages.GetHistoryRequest:
    return functions.messages.GetHistoryRequest(NEWS, 0, None, 0, 2, 0, 0, 0)


class _ShellDC:
    """A ``python -m mtpoold.testing.dc`` subprocess, its stdout lines and its stdin."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        assert process.stdout is not None
        self._stdout = process.stdout

    async def line(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._stdout.receive_some(65536)
            if not data:
                raise AssertionError(f"the DC exited: {self._buffer!r}")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def send(self, line: str) -> str:
        """One command on stdin, its answer from stdout."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all((line + "\n").encode())
        return await self.line()


@asynccontextmanager
async def _shell_dc(*args: str) -> AsyncIterator[tuple[_ShellDC, DC]]:
    """Start the DC subprocess with ``args``; yield it and a (not serving) `DC` mirror of it
    with the same world, seed and port (its session strings and RSA key are the child's)."""
    cmd = [sys.executable, "-m", "mtpoold.testing.dc", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    child = _ShellDC(process)
    try:
        with trio.fail_after(START_TIMEOUT_S):
            first = await child.line()
            while not (await child.line()).startswith("Login code"):
                pass
        assert first.startswith("loopback DC 2 listening on 127.0.0.1:"), first
        mirror = DC(port=int(first.rsplit(":", 1)[1]), seed=DEFAULT_SEED)
        yield child, mirror
    finally:
        process.terminate()  # SIGTERM: the DC stops, removes its socket and exits 0
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await stream.aclose()


async def _control(path: Path, *lines: str) -> list[str]:
    """Send ``lines`` on one connection to the control socket; their answers."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await stream.send_all("".join(line + "\n" for line in lines).encode())
        data = b""
        while data.count(b"\n") < len(lines):
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
    return data.decode().splitlines()


async def test_shell_dc_faults_from_the_command_line_and_the_control_socket(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "dc.sock"
    async with _shell_dc(
        "--flood", "messages.GetHistory=30",
        "--flood", "contacts.ResolveUsername=86400:a0",
        "--control", str(sock), "--control", "-",
    ) as (child, dc):  # fmt: skip
        await _telethon_against_the_shell_dc(child, dc, sock)
        await _pool_against_the_shell_dc(tmp_path, dc, sock)
    assert child.process.returncode == 0
    assert not sock.exists()


async def _telethon_against_the_shell_dc(child: _ShellDC, dc: DC, sock: Path) -> None:
    async with (
        trio_asyncio.open_loop(),
        open_telethon_client(dc, ALICE) as alice,
        open_telethon_client(dc, BOB) as bob,
    ):
        assert os.stat(sock).st_mode & 0o777 == 0o600
        # stdin: the same language, answers on stdout
        assert (await child.send("help")).startswith("ok commands: flood METHOD SECONDS")
        assert (await child.send("counters")).startswith('ok {"')
        assert (await child.send("drop 1.5")).startswith("error P must be a probability")
        assert (await child.send("# a comment")) == "ok"
        assert (await child.send("x" * (MAX_LINE_BYTES + 10))).startswith("error line longer")
        # the command line's floods: every account on GetHistory, only a0 (alice) on resolve
        with pytest.raises(errors.FloodWaitError) as flooded:
            await aio(alice)(_history())
        assert 25 <= flooded.value.seconds <= 30
        with pytest.raises(errors.FloodWaitError) as day:
            await aio(alice)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))
        assert day.value.seconds > 80000
        resolved = await aio(bob)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))
        assert resolved.peer == types.PeerChannel(2001)

        # run time: unflood / flood / bad commands, each answered, the DC unharmed
        answers = await _control(
            sock,
            "unflood messages.getHistory a0",
            "flood users.GetFullUser 45 @bob_test",
            "flood messages.NoSuchMethod 5",
            "frobnicate",
            "revoke a99",
        )
        assert answers[0] == "ok unflood messages.GetHistory on 1 account(s)"
        assert answers[1] == "ok flood users.GetFullUser 45 s on 1 account(s)"
        assert answers[2].startswith("error flood: not a TL function name")
        assert answers[3].startswith("error unknown command 'frobnicate'")
        assert answers[4].startswith("error revoke: no account")
        history = await aio(alice)(_history())
        assert [m.id for m in history.messages] == [5, 4]
        with pytest.raises(errors.FloodWaitError) as bob_flood:
            await aio(bob)(functions.users.GetFullUserRequest(types.InputUserSelf()))
        assert 40 <= bob_flood.value.seconds <= 45
        with pytest.raises(errors.FloodWaitError):  # bob's GetHistory flood is still on
            await aio(bob)(_history())

        # counters: JSON of dc.total_counters() — every call above, refused ones too
        [counters] = await _control(sock, "counters")
        assert counters.startswith("ok {")
        counts = json.loads(counters.removeprefix("ok "))
        assert counts["messages.GetHistory"] == 3
        assert counts["contacts.ResolveUsername"] == 2
        assert counts["users.GetFullUser"] == 1

        # blackhole: nothing answered; off again: answered
        assert await _control(sock, "blackhole on") == ["ok blackhole on"]
        with trio.move_on_after(BLACKHOLE_WAIT_S) as waited:
            await aio(alice)(_history())
        assert waited.cancelled_caught
        [status] = await _control(sock, "status")
        assert json.loads(status.removeprefix("ok "))["blackhole"] is True
        assert await _control(sock, "blackhole off") == ["ok blackhole off"]
        assert (await aio(alice)(_history())).messages[0].id == 5

        # revoke: the key is logged out, Telegram's 401
        assert await _control(sock, "revoke a0") == ["ok revoke 1 key(s)"]
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await aio(alice)(_history())


async def _pool_against_the_shell_dc(tmp_path: Path, dc: DC, sock: Path) -> None:
    """An mtpoold job against the same DC subprocess: a flood set on the control socket
    reaches the pool as Telegram's FLOOD_WAIT, and `unflood` lets the next job through."""
    config = fleet_config(tmp_path, dc, proxies=[], accounts={"acc-1": (BOB, None)})
    async with open_fleet(dc, config) as fleet:
        assert await _control(sock, "flood contacts.resolveUsername 600 @bob_test") == [
            "ok flood contacts.ResolveUsername 600 s on 1 account(s)"
        ]
        with pytest.raises(JobFailed) as flooded:
            await fleet.pool.resolve("@mtpoold_news", deadline_s=5)
        assert "FLOOD_WAIT" in str(flooded.value)
        [resolve] = [c for c in fleet.account("acc-1").rate_classes if c.rate_class == "resolve"]
        assert 500 < resolve.cooldown_remaining_s <= 600  # the pool took the DC's 600 s
        assert await _control(sock, "unflood contacts.ResolveUsername") == [
            "ok unflood contacts.ResolveUsername on 6 account(s)"
        ]
        fleet.pool.clear_cooldown("acc-1")
        news = await fleet.pool.resolve("@mtpoold_news", deadline_s=5)
        assert news.value["username"] == "mtpoold_news"


def test_shell_dc_refuses_a_bad_fault_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mtpoold.testing.dc.__main__ import main

    assert main(["--flood", "messages.Nope=3"]) == 2
    assert "--flood messages.Nope=3: flood: not a TL function name" in capsys.readouterr().err
    assert main(["--flood", "messages.GetHistory=3:a42"]) == 2
    assert "no account 'a42'" in capsys.readouterr().err
    assert main(["--limit", "messages.GetHistory=3"]) == 2  # no /WINDOW_S: before binding
    assert "expected METHOD=REQUESTS/WINDOW_S" in capsys.readouterr().err


# --- the control language in-process ------------------------------------------------------------


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc() as dc, trio_asyncio.open_loop():
        yield dc


async def test_DCShell_drop_delay_revoke_error_clear(dc: DC) -> None:
    shell = DCShell(dc)
    assert shell.execute("error users.getFullUser 400 USER_ID_INVALID a1") == (
        "ok error users.GetFullUser 400 USER_ID_INVALID"
    )
    assert shell.execute("limit messages.GetHistory 1 60 a0") == (
        "ok limit messages.GetHistory 1 per 60 s"
    )
    async with open_telethon_client(dc, ALICE) as alice, open_telethon_client(dc, BOB) as bob:
        with pytest.raises(errors.UserIdInvalidError):
            await aio(bob)(functions.users.GetFullUserRequest(types.InputUserSelf()))
        await aio(alice)(_history())
        with pytest.raises(errors.FloodWaitError):
            await aio(alice)(_history())
        assert json.loads(shell.execute("refused a0").removeprefix("ok ")) == {
            "messages.GetHistory": 1
        }
        assert shell.execute("delay 50") == "ok delay 50 ms"
        with pytest.raises(errors.FloodWaitError):  # the latency keeps the limits
            await aio(alice)(_history())
        assert shell.execute("clear") == "ok clear"
        assert (await aio(alice)(_history())).messages[0].id == 5
        [key_id] = dc.auth_key_ids(BOB)
        assert shell.execute(f"revoke {key_id:#x}") == "ok revoke 1 key(s)"
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await aio(bob)(_history())
        # drop 1: every call hangs up the connection; Telethon reconnects and resends until
        # the drops stop
        before = dc.statistics().connections_total
        assert shell.execute("drop 1") == "ok drop 1"
        answers: list[object] = []

        async def read() -> None:
            answers.append(await aio(alice)(_history()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await wait_until(
                lambda: dc.statistics().connections_total >= before + 2, what="two drops"
            )
            assert shell.execute("drop 0") == "ok drop 0"
        [history] = answers
        assert history.messages[0].id == 5  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "line",
    [
        "flood", "flood messages.GetHistory", "flood messages.GetHistory -3",
        "flood messages.GetHistory nan", "flood messages.GetHistory 3 nobody",
        "unflood", "limit messages.GetHistory 0 5", "slowmode @nochannel 3",
        "slowmode 2002 x", "error messages.GetHistory x Y", "drop", "drop -1", "delay -5",
        "delay inf", "blackhole maybe", "refuse", "disconnect now", "revoke", "revoke 'a 0'",
        "counters a0 a1", "refused", "status", "clear x", "\x00", "flood 'x",
    ],
)  # fmt: skip
async def test_DCShell_bad_input_is_answered_never_raised(dc: DC, line: str) -> None:
    answer = DCShell(dc).execute(line)
    assert "\n" not in answer
    if line != "status":
        assert answer.startswith("error "), answer
    assert dc.faults.pending() == [] and dc.limits.budgets() == []


async def test_DCShell_slowmode_of_an_unknown_channel_names_what_is_wrong(dc: DC) -> None:
    shell = DCShell(dc)
    assert shell.execute("slowmode @nochannel 3") == (
        "error slowmode: no channel '@nochannel' in the world (channel id or @username)"
    )  # was "error slowmode: @nochannel"
    assert shell.execute("slowmode 99 3").startswith("error slowmode: no channel '99'")


async def test_control_socket_answers_a_last_line_without_a_newline(dc: DC, tmp_path: Path) -> None:
    """A client that sends ``status`` and shuts its side (``printf status | socat``) got
    nothing: the unterminated last line was dropped at EOF (stdin answered it)."""
    path = tmp_path / "ctl"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control_socket, DCShell(dc), str(path))
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(b"drop 0\nstatus")
            await stream.send_eof()
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        nursery.cancel_scope.cancel()
    first, second = data.decode().splitlines()
    assert first == "ok drop 0" and second.startswith("ok {"), data


async def test_DCShell_accounts(dc: DC) -> None:
    shell = DCShell(dc)
    assert [shell.account(a) for a in ("a0", "15550000002", "+15550000003", "1004")] == [
        1001, 1002, 1003, 1004,
    ]  # fmt: skip
    assert shell.account("@mtpoold_test_bot") == 1006
    for bad in ("a6", "@mtpoold_news", "+1001", "99", "b1"):
        with pytest.raises(KeyError):
            shell.account(bad)
