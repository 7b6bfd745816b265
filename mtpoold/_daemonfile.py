"""``<state_dir>/daemon.json``: where the running daemon listens, for the client commands.

The daemon writes it once it listens and removes it when it stops (`write_daemon_file`,
`remove_daemon_file`); the client commands read it (`running_daemon_address`) so that they
reach the daemon where it listens *now*, not where an edited config file says it will
listen after a restart (``daemon.listen`` applies at start only). Contents::

    {"address": "127.0.0.1:8765", "pid": 4242, "started_at_unix": 1764640000.0}

``address`` is the bound address as `mtpoold._server.RpcServer` reports it
(``"HOST:PORT"``, ``"[IPv6]:PORT"`` or ``"unix:/path"``). The file is 0600 (it names no
secret, but the state directory is private) and written atomically (a temporary file
renamed over it). A file left by a daemon that died (SIGKILL, a crash) names a pid that is
no longer alive, and is ignored.

`daemon_location` is how every client (the CLI, `mtpoold.client`) finds the daemon of a
config file: its ``daemon.listen`` and ``state_dir`` (read leniently when the file does not
validate), the address in ``daemon.json`` winning while its daemon runs.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from pathlib import Path
from typing import Final

import attrs

from ._config import DaemonConfig, load_config
from ._errors import ConfigError

__all__ = [
    "DaemonLocation",
    "daemon_location",
    "DAEMON_FILE_NAME",
    "daemon_file_path",
    "remove_daemon_file",
    "running_daemon_address",
    "write_daemon_file",
]

DAEMON_FILE_NAME: Final = "daemon.json"


def daemon_file_path(state_dir: Path) -> Path:
    """``<state_dir>/daemon.json``."""
    return Path(state_dir) / DAEMON_FILE_NAME


def write_daemon_file(state_dir: Path, address: str, *, pid: int | None = None) -> Path:
    """Record that this process (or ``pid``) listens on ``address``.

    Raises:
        OSError: if the file cannot be written.
    """
    path = daemon_file_path(state_dir)
    own = os.getpid() if pid is None else pid
    text = json.dumps({"address": address, "pid": own, "started_at_unix": time.time()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_daemon_file(state_dir: Path, *, pid: int | None = None) -> None:
    """Remove the file if it still names this process (or ``pid``): a daemon that took over
    the state directory since keeps its own. Never raises."""
    path = daemon_file_path(state_dir)
    try:
        if _read(path)[1] == (os.getpid() if pid is None else pid):
            path.unlink()
    except (OSError, ValueError):
        pass


def running_daemon_address(state_dir: Path) -> str | None:
    """The address of the daemon running on ``state_dir``, or None (no file, an unreadable
    or malformed one, or its pid is not alive)."""
    try:
        address, pid = _read(daemon_file_path(state_dir))
    except (OSError, ValueError):
        return None
    return address if _alive(pid) else None


def _read(path: Path) -> tuple[str, int]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not an object")
    address, pid = data.get("address"), data.get("pid")
    if not isinstance(address, str) or not address:
        raise ValueError("no address")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError("no pid")
    return address, pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


@attrs.frozen
class DaemonLocation:
    """Where a config file's daemon is.

    Attributes:
        listen: The address to reach it at: ``daemon.json``'s while its daemon runs, else the
            config's ``daemon.listen``.
        state_dir: The config's ``daemon.state_dir``, absolute (its token is there).
        problems: Why the file does not validate (its two keys were read leniently), or
            None for a valid config.
    """

    listen: str
    state_dir: Path
    problems: ConfigError | None = None


def daemon_location(path: Path) -> DaemonLocation:
    """The daemon of the config file at ``path``.

    A config that does not validate (the operator is editing it, and will ask the running
    daemon to ``reload`` it) still names its daemon: ``daemon.listen`` and ``state_dir`` are
    read from the raw TOML, ``state_dir`` made absolute against the config's directory as
    `load_config` does, and the problems are handed back.

    Raises:
        ConfigError: every problem, when not even those two keys can be read.
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        failure = exc
    else:
        state_dir = Path(config.daemon.state_dir)
        return DaemonLocation(running_daemon_address(state_dir) or config.daemon.listen, state_dir)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise failure from None
    daemon = raw.get("daemon", {})
    if not isinstance(daemon, dict):
        raise failure
    defaults = DaemonConfig()
    listen = daemon.get("listen", defaults.listen)
    state = daemon.get("state_dir", defaults.state_dir)
    if not isinstance(listen, str) or not isinstance(state, str) or not state.strip():
        raise failure
    state_dir = path.resolve().parent / Path(state).expanduser()
    return DaemonLocation(running_daemon_address(state_dir) or listen, state_dir, failure)
