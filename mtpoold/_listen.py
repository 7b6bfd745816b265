"""``daemon.listen``: the one parser of listen addresses, and the check that one can be bound.

The config validator, the websocket server, the CLI's client side and ``check-config`` all
parse the address here, so an address the config accepts is one the server can listen on
(before, ``"::1:8765"`` passed the config's own parser and was refused by the server's).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path
from typing import Final

import attrs

__all__ = ["DEFAULT_LISTEN", "ListenAddress", "ListenAddressError", "bind_problem", "parse_listen"]

UNIX_PREFIX: Final = "unix:"
#: ``[daemon] listen`` when the config says nothing: loopback only.
DEFAULT_LISTEN: Final = "127.0.0.1:8765"
#: Said with an address in use: a running daemon takes a new config through reload.
_IN_USE_HINT: Final = " (a running mtpoold? `mtpoold reload` checks and applies a new config)"


class ListenAddressError(ValueError):
    """A listen address that is none of ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:/path``.

    Attributes:
        listen: The address as written.
        hint: What exactly is wrong (e.g. "write IPv6 hosts in brackets, [::1]:8765"), or
            None when it is not even shaped like an address.
    """

    def __init__(self, listen: str, hint: str | None, *, reason: str | None = None) -> None:
        reason = reason or hint or "expected HOST:PORT or unix:/path"
        super().__init__(f"listen address {listen!r}: {reason}")
        self.listen = listen
        self.hint = hint


@attrs.frozen
class ListenAddress:
    """A parsed ``daemon.listen`` value.

    Attributes:
        host: TCP host (an IP literal or name, IPv6 without brackets), or None for a unix
            socket.
        port: TCP port (0 = pick a free one), or None for a unix socket.
        path: Unix socket path, or None for TCP.
    """

    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"{UNIX_PREFIX}{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(listen: str, *, allow_port_zero: bool = True) -> ListenAddress:
    """Parse ``"HOST:PORT"``, ``"[IPv6]:PORT"`` or ``"unix:/path"``.

    Args:
        listen: The address as written in the config.
        allow_port_zero: Accept port 0 ("any free port": tests and embedders; the config
            file requires a real port, 1..65535).

    Returns:
        The address.

    Raises:
        ListenAddressError: (a ValueError) if it is none of these forms; the message quotes
            the address and says what is wrong.
    """
    if listen.startswith(UNIX_PREFIX):
        path = listen[len(UNIX_PREFIX) :]
        if not path:
            raise ListenAddressError(listen, None, reason="empty unix socket path")
        return ListenAddress(path=path)
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ListenAddressError(listen, None)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ListenAddressError(listen, "empty IPv6 host in brackets")
    elif ":" in host or "[" in host or "]" in host:
        raise ListenAddressError(listen, "write IPv6 hosts in brackets, [::1]:8765")
    if not port_text.isdigit():
        raise ListenAddressError(listen, f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ListenAddressError(listen, f"port must be in {low}..65535")
    return ListenAddress(host=host, port=port)


def bind_problem(address: ListenAddress) -> str | None:
    """Whether the daemon could listen on ``address`` now; a start-up check, sync.

    TCP: every address the host resolves to is bound (``SO_REUSEADDR``, as trio's listeners
    do) and closed again at once. A unix socket path is not created: its directory must
    exist and be writable, and a socket file with a live listener there is in use (a stale
    one is replaced at start).

    Args:
        address: A parsed address.

    Returns:
        None if it can be bound, else one sentence naming the address and the reason
        (``listen address 127.0.0.1:8765 cannot be bound: address already in use``).
    """
    if address.path is not None:
        return _unix_problem(address.path)
    shown = str(address)
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        return f"listen address {shown}: cannot resolve the host: {reason}"
    for family, type_, proto, _name, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
        except OSError as exc:
            hint = _IN_USE_HINT if exc.errno == errno.EADDRINUSE else ""
            return f"listen address {shown} cannot be bound: {_reason(exc)}{hint}"
        finally:
            sock.close()
    return None


def _reason(exc: OSError) -> str:
    text = exc.strerror or os.strerror(exc.errno or 0)
    return text[:1].lower() + text[1:]


def _unix_problem(path: str) -> str | None:
    p = Path(path)
    shown = f"{UNIX_PREFIX}{path}"
    try:
        st = p.lstat()
    except FileNotFoundError:
        parent = p.parent
        if not parent.is_dir():
            return f"listen address {shown}: directory {parent} does not exist"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"listen address {shown}: directory {parent} is not writable"
        return None
    except OSError as exc:
        return f"listen address {shown}: {_reason(exc)}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"listen address {shown}: {path} exists and is not a socket"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return None  # a stale socket file from an earlier run: replaced at start
        return f"listen address {shown}: {_reason(exc)}"
    finally:
        probe.close()
    return (
        f"listen address {shown} cannot be bound: another process is listening there{_IN_USE_HINT}"
    )
