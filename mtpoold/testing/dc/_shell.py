"""The loopback DC's control language: one line in, one line out, for the shell and tests.

:class:`DCShell` runs one command line against a :class:`~mtpoold.testing.dc.DC` and answers
one line, ``ok …`` or ``error …``; it never raises for bad input. ``python -m
mtpoold.testing.dc`` feeds it the faults of its command line (``--flood``, ``--drop``, …) at
start and, at run time, every line read from ``--control -`` (stdin) or a ``--control PATH``
unix socket (:func:`serve_control_socket`, :func:`serve_control_stdin`).

Accounts (``ACCOUNT``) are world users: ``aN`` (the N-th user of the world, 0-based, as the
start-up listing shows), a phone (``15550000001`` or ``+15550000001``), a user id
(``1001``) or a username (``@alice_test``). Commands (``help`` lists them):

========================================  ====================================================
``flood METHOD SECONDS [ACCOUNT]``        FLOOD_WAIT on METHOD for SECONDS (every account if
                                          none named): ``dc.limits.flood``
``unflood METHOD|* [ACCOUNT]``            end those floods: ``dc.limits.unflood``
``limit METHOD REQUESTS WINDOW_S [ACC]``  a budget: ``dc.limits.add``
``slowmode CHANNEL SECONDS``              ``dc.limits.set_slowmode`` (id or @username)
``error METHOD CODE NAME [ACCOUNT]``      answer every call of METHOD ``rpc_error(CODE,
                                          NAME)``: ``dc.faults.add`` (``times=None``)
``drop P``                                close the connection instead of answering, per
                                          call with probability P: ``dc.set_drop_rate``
``delay MS``                              every answer MS milliseconds late:
                                          ``dc.set_latency``
``blackhole on|off``                      answer nothing at all: ``dc.blackhole_all``
``refuse on|off``                         close new connections: ``dc.refuse_connections``
``disconnect``                            close every connection: ``dc.disconnect_all``
``revoke ACCOUNT|AUTH_KEY_ID``            log keys out (401 AUTH_KEY_UNREGISTERED):
                                          ``dc.revoke``
``counters [ACCOUNT]``                    JSON of ``dc.total_counters()`` (or one
                                          account's ``dc.counters``)
``refused ACCOUNT``                       JSON of ``dc.limits.refused``
``status``                                JSON: connections, calls, the knobs above
``clear``                                 every fault, budget, flood and knob off
``help``                                  the command list
========================================  ====================================================

METHOD is a TL function in Telegram's or Telethon's spelling (``messages.getHistory``,
``messages.GetHistory``). ``#`` starts a comment; blank lines are answered ``ok``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from collections.abc import Callable
from typing import Final, final

import trio

from ._faults import rpc_error
from ._limits import method_spelling
from ._server import DC
from ._world import User

__all__ = ["MAX_LINE_BYTES", "DCShell", "serve_control_socket", "serve_control_stdin"]

#: A control line longer than this (bytes) is answered ``error`` and skipped.
MAX_LINE_BYTES: Final = 4096

_HELP: Final = (
    "commands: flood METHOD SECONDS [ACCOUNT] | unflood METHOD|* [ACCOUNT]"
    " | limit METHOD REQUESTS WINDOW_S [ACCOUNT] | slowmode CHANNEL SECONDS"
    " | error METHOD CODE NAME [ACCOUNT] | drop P | delay MS | blackhole on|off"
    " | refuse on|off | disconnect | revoke ACCOUNT|AUTH_KEY_ID | counters [ACCOUNT]"
    " | refused ACCOUNT | status | clear | help;"
    " ACCOUNT = aN | phone | user id | @username"
)


class _Usage(Exception):
    """A bad command: answered ``error <message>``."""


def _number(text: str, what: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Usage(f"{what} must be a number: {text!r}") from None
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise _Usage(f"{what} must be a number {op} {minimum:g}: {text!r}")
    return value


def _integer(text: str, what: str, *, minimum: int = 0) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise _Usage(f"{what} must be an integer: {text!r}") from None
    if value < minimum:
        raise _Usage(f"{what} must be an integer >= {minimum}: {text!r}")
    return value


def _switch(args: list[str], command: str) -> bool:
    if len(args) != 1 or args[0].lower() not in ("on", "off"):
        raise _Usage(f"usage: {command} on|off")
    return args[0].lower() == "on"


@final
class DCShell:
    """Runs control commands (the module docstring lists them) against one DC.

    Use from the DC's Trio thread (floods count from ``trio.current_time()``).

    Args:
        dc: the DC it controls.
    """

    def __init__(self, dc: DC) -> None:
        self.dc = dc
        self._commands: dict[str, Callable[[list[str]], str]] = {
            "help": self._help,
            "flood": self._flood,
            "unflood": self._unflood,
            "limit": self._limit,
            "slowmode": self._slowmode,
            "error": self._error,
            "drop": self._drop,
            "delay": self._delay,
            "blackhole": self._blackhole,
            "refuse": self._refuse,
            "disconnect": self._disconnect,
            "revoke": self._revoke,
            "counters": self._counters,
            "refused": self._refused,
            "status": self._status,
            "clear": self._clear,
        }

    def execute(self, line: str) -> str:
        """Run one command line; the answer is one line, ``"ok …"`` or ``"error …"``.

        Never raises for bad input: an unknown command, bad arguments or an account not in the
        world are answered ``error`` and change nothing.
        """
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            return f"error cannot parse the line: {exc}"
        if not words:
            return "ok"
        name, args = words[0].lower(), words[1:]
        command = self._commands.get(name)
        if command is None:
            return f"error unknown command {name[:40]!r} (try: help)"
        try:
            answer = command(args)
        except _Usage as exc:
            return f"error {exc}"
        except (KeyError, ValueError, TypeError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            return f"error {name}: {text}".replace("\n", " ")
        return f"ok {answer}" if answer else "ok"

    # -- arguments ---------------------------------------------------------------------------

    def account(self, text: str) -> int:
        """The user id an ``ACCOUNT`` argument names (``aN``, phone, user id, ``@username``).

        Raises:
            KeyError: if it names no user of the world.
        """
        world = self.dc.world
        if len(text) > 1 and text[0] in "aA" and text[1:].isdigit():
            index = int(text[1:])
            if index < len(world.users):
                return world.users[index].id
            raise KeyError(f"no account {text!r}: the world has {len(world.users)} users")
        if text.startswith("@"):
            found = world.by_username(text)
            if isinstance(found, User):
                return found.id
            raise KeyError(f"no user {text!r} in the world")
        digits = text.removeprefix("+")
        if digits.isascii() and digits.isdigit():
            user = world.user_by_phone(digits)
            if user is not None:
                return user.id
            if not text.startswith("+") and world.user_by_id(int(digits)) is not None:
                return int(digits)
        raise KeyError(f"no account {text!r} in the world (aN, phone, user id or @username)")

    def _accounts(self, args: list[str], at: int) -> list[int]:
        """The account named at ``args[at]``, or every user of the world."""
        if len(args) > at:
            return [self.account(args[at])]
        return [u.id for u in self.dc.world.users]

    @staticmethod
    def _method(text: str) -> str:
        return method_spelling(text)

    # -- commands ----------------------------------------------------------------------------

    def _help(self, args: list[str]) -> str:
        return _HELP

    def _flood(self, args: list[str]) -> str:
        if len(args) not in (2, 3):
            raise _Usage("usage: flood METHOD SECONDS [ACCOUNT]")
        method = self._method(args[0])
        seconds = _number(args[1], "SECONDS", strict=True)
        users = self._accounts(args, 2)
        for user in users:
            self.dc.limits.flood(user, method, seconds)
        return f"flood {method} {seconds:g} s on {len(users)} account(s)"

    def _unflood(self, args: list[str]) -> str:
        if len(args) not in (1, 2):
            raise _Usage("usage: unflood METHOD|* [ACCOUNT]")
        method = None if args[0] == "*" else self._method(args[0])
        users = self._accounts(args, 1)
        for user in users:
            self.dc.limits.unflood(user, method)
        return f"unflood {method or '*'} on {len(users)} account(s)"

    def _limit(self, args: list[str]) -> str:
        if len(args) not in (3, 4):
            raise _Usage("usage: limit METHOD REQUESTS WINDOW_S [ACCOUNT]")
        requests = _integer(args[1], "REQUESTS", minimum=1)
        window_s = _number(args[2], "WINDOW_S", strict=True)
        user = self.account(args[3]) if len(args) == 4 else None
        limit = self.dc.limits.add(args[0], requests, window_s, user=user)
        return f"limit {limit.method} {requests} per {window_s:g} s"

    def _slowmode(self, args: list[str]) -> str:
        if len(args) != 2:
            raise _Usage("usage: slowmode CHANNEL SECONDS")
        channel: int | str = int(args[0]) if args[0].isdigit() else args[0]
        seconds = _integer(args[1], "SECONDS")
        try:
            self.dc.limits.set_slowmode(channel, seconds)
        except KeyError:
            raise _Usage(
                f"slowmode: no channel {args[0]!r} in the world (channel id or @username)"
            ) from None
        return f"slowmode {args[0]} {seconds} s"

    def _error(self, args: list[str]) -> str:
        if len(args) not in (3, 4):
            raise _Usage("usage: error METHOD CODE NAME [ACCOUNT]")
        method = self._method(args[0])
        code = _integer(args[1], "CODE", minimum=-1000)
        user = self.account(args[3]) if len(args) == 4 else None
        self.dc.faults.add(rpc_error(code, args[2]), user=user, method=method, times=None)
        return f"error {method} {code} {args[2]}"

    def _drop(self, args: list[str]) -> str:
        if len(args) != 1:
            raise _Usage("usage: drop P (probability 0..1)")
        probability = _number(args[0], "P")
        if probability > 1:
            raise _Usage(f"P must be a probability 0..1: {args[0]!r}")
        self.dc.set_drop_rate(probability)
        return f"drop {probability:g}"

    def _delay(self, args: list[str]) -> str:
        if len(args) != 1:
            raise _Usage("usage: delay MS")
        ms = _number(args[0], "MS")
        self.dc.set_latency(ms)
        return f"delay {ms:g} ms"

    def _blackhole(self, args: list[str]) -> str:
        on = _switch(args, "blackhole")
        self.dc.blackhole_all(on)
        return f"blackhole {'on' if on else 'off'}"

    def _refuse(self, args: list[str]) -> str:
        on = _switch(args, "refuse")
        self.dc.refuse_connections(on)
        return f"refuse {'on' if on else 'off'}"

    def _disconnect(self, args: list[str]) -> str:
        if args:
            raise _Usage("usage: disconnect")
        count = self.dc.statistics().connections
        self.dc.disconnect_all()
        return f"disconnect {count} connection(s)"

    def _revoke(self, args: list[str]) -> str:
        if len(args) != 1:
            raise _Usage("usage: revoke ACCOUNT|AUTH_KEY_ID")
        try:
            user = self.account(args[0])
        except KeyError:
            try:
                key_id = int(args[0], 0)
            except ValueError:
                raise KeyError(f"no account or auth key {args[0]!r}") from None
            try:
                count = self.dc.revoke(auth_key_id=key_id)
            except KeyError:
                raise KeyError(f"no account or auth key {args[0]!r}") from None
            return f"revoke {count} key(s)"
        return f"revoke {self.dc.revoke(user)} key(s)"

    def _counters(self, args: list[str]) -> str:
        if len(args) > 1:
            raise _Usage("usage: counters [ACCOUNT]")
        counts = self.dc.counters(self.account(args[0])) if args else self.dc.total_counters()
        return json.dumps(dict(sorted(counts.items())), separators=(",", ":"))

    def _refused(self, args: list[str]) -> str:
        if len(args) != 1:
            raise _Usage("usage: refused ACCOUNT")
        counts = self.dc.limits.refused(self.account(args[0]))
        return json.dumps(dict(sorted(counts.items())), separators=(",", ":"))

    def _status(self, args: list[str]) -> str:
        stats = self.dc.statistics()
        return json.dumps(
            {
                "connections": stats.connections,
                "connections_total": stats.connections_total,
                "auth_keys": stats.auth_keys,
                "authorized_keys": stats.authorized_keys,
                "calls": stats.calls,
                "delay_ms": self.dc.latency_ms,
                "drop": self.dc.drop_rate,
                "blackhole": self.dc.blackholing,
                "refuse": self.dc.refusing,
                "fault_rules": len(self.dc.faults.pending()),
                "budgets": len(self.dc.limits.budgets()),
            },
            separators=(",", ":"),
        )

    def _clear(self, args: list[str]) -> str:
        if args:
            raise _Usage("usage: clear")
        self.dc.faults.clear()
        self.dc.limits.clear()
        self.dc.set_latency(0)
        self.dc.set_drop_rate(0)
        self.dc.blackhole_all(False)
        self.dc.refuse_connections(False)
        return "clear"


# -- control channels --------------------------------------------------------------------------


class _LineReader:
    """Lines of at most :data:`MAX_LINE_BYTES` from a byte source; longer ones become None."""

    def __init__(self) -> None:
        self._buffer = b""
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        self._buffer += data
        lines: list[bytes | None] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_BYTES:
                    if not self._skipping:
                        lines.append(None)
                    self._skipping = True
                    self._buffer = b""
                return lines
            line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if self._skipping:
                self._skipping = False
                continue
            lines.append(None if len(line) > MAX_LINE_BYTES else line)

    def flush(self) -> list[bytes | None]:
        """The last line when the source ended without a newline."""
        return self.feed(b"\n") if self._buffer or self._skipping else []


def _answer(shell: DCShell, line: bytes | None) -> str:
    if line is None:
        return f"error line longer than {MAX_LINE_BYTES} bytes"
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "error the line is not UTF-8"
    return shell.execute(text)


async def _serve_connection(shell: DCShell, stream: trio.SocketStream) -> None:
    reader = _LineReader()
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                for line in reader.feed(data):
                    await stream.send_all((_answer(shell, line) + "\n").encode())
            for line in reader.flush():  # ``printf status | socat - UNIX:...``: no newline
                await stream.send_all((_answer(shell, line) + "\n").encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def serve_control_socket(
    shell: DCShell, path: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer control lines on a unix stream socket at ``path`` until cancelled.

    Each connection may send many lines; each gets its one answer line, in order. The socket
    file is created 0600 (only this user may control the DC) and removed on the way out; a
    stale socket left at ``path`` is replaced (any other file there is an error).

    Raises:
        OSError: if ``path`` cannot be bound (``task_status.started`` is not called then).
    """
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        if await trio.Path(path).is_socket():  # a stale socket of an earlier run
            await trio.Path(path).unlink()
        old_umask = os.umask(0o177)
        try:
            await sock.bind(path)
        finally:
            os.umask(old_umask)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            async with listener:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(_serve_connection, shell, stream)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


async def serve_control_stdin(shell: DCShell, out: Callable[[str], None]) -> None:
    """Answer control lines read from stdin until it ends (then return) or cancelled.

    Each answer goes to ``out`` (one line, no newline). stdin is read with ``os.read`` in a
    worker thread abandoned on cancellation: a terminal's stdin is never switched to
    non-blocking mode (as ``trio.lowlevel.FdStream`` would, for the shell too), and no
    Python-level lock is held by the thread when the interpreter exits.
    """
    reader = _LineReader()
    fd = sys.stdin.fileno()
    while True:
        data = await trio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
        for line in reader.feed(data) if data else reader.flush():
            out(_answer(shell, line))
        if not data:
            return
