"""systemd's sd_notify in plain stdlib (gunicorn's ``systemd.py`` habit).

Nothing happens when ``NOTIFY_SOCKET`` is unset; ``@`` at its start means the abstract
namespace; failures are logged at debug level and never raised. ``RELOADING=1`` always goes
out with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC now, µs), as sd_notify(3) requires: systemd
(``Type=notify-reload``, and ``Type=notify`` since v253) uses it to tell this reload from an
earlier one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from ._errors import redact
from ._logformat import log_event

__all__ = ["monotonic_usec", "sd_notify", "watchdog_interval_s"]

_log = logging.getLogger("mtpoold.sdnotify")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC now, in whole microseconds (the clock systemd reads
    ``MONOTONIC_USEC=`` on)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def sd_notify(state: str, *, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to systemd.

    A state with ``RELOADING=1`` and no ``MONOTONIC_USEC=`` gets ``MONOTONIC_USEC=``
    (`monotonic_usec`) appended: sd_notify(3) says RELOADING=1 "must" carry it.

    Args:
        state: Newline-separated ``KEY=value`` assignments.
        env: Environment to read ``NOTIFY_SOCKET`` from (default ``os.environ``).

    Returns:
        True if the datagram was sent, False if there is no socket or sending failed.
    """
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not addr:
        return False
    lines = state.split("\n")
    if "RELOADING=1" in lines and not any(x.startswith("MONOTONIC_USEC=") for x in lines):
        state = f"{state}\nMONOTONIC_USEC={monotonic_usec()}"
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log_event(
            _log,
            logging.DEBUG,
            "sd_notify_failed",
            state=state.split("\n", 1)[0],
            error=redact(str(exc)),
        )
        return False
    return True


def watchdog_interval_s(*, env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None if unset.

    ``$WATCHDOG_PID``, when set, must be this process, as sd_watchdog_enabled(3) requires.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1e6
