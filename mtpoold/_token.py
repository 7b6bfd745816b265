"""The bearer token that guards the websocket API: one file in the state directory.

The daemon creates it at first start (`ensure_token`), the CLI reads it (`read_token`).
The token never appears in a log line or an error message.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "TOKEN_BYTES",
    "TOKEN_FILE_NAME",
    "TokenError",
    "ensure_token",
    "is_private",
    "read_token",
    "token_path",
]

TOKEN_FILE_NAME: Final = "token"
TOKEN_BYTES: Final = 32  # bytes of randomness, 43 characters of urlsafe base64
#: Bytes of a token file read at most: a token is one short line (``--token-file /dev/zero``
#: or a huge file must not be read forever).
MAX_TOKEN_FILE_BYTES: Final = 4096


class TokenError(Exception):
    """The token file is missing, empty, unreadable or could not be created."""


def token_path(state_dir: Path) -> Path:
    """Where the token lives in ``state_dir``."""
    return state_dir / TOKEN_FILE_NAME


def read_token(path: Path) -> str:
    """Read a bearer token.

    Args:
        path: The token file.

    Returns:
        The token, surrounding whitespace stripped.

    Raises:
        TokenError: if the file cannot be read or holds no token (empty, more than
            `MAX_TOKEN_FILE_BYTES` bytes, a space or an unprintable character inside: it
            goes into an HTTP header). The message names the path, never the content.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
        text = "" if len(data) > MAX_TOKEN_FILE_BYTES else data.decode("utf-8")
    except FileNotFoundError:
        raise TokenError(
            f"token file {path} does not exist (has the daemon started once?)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise TokenError(f"cannot read token file {path}: {reason}") from None
    token = text.strip()
    if not token or not token.isprintable() or " " in token:
        raise TokenError(f"token file {path} does not hold a token (one line, no spaces)")
    return token


def ensure_token(path: Path) -> tuple[str, bool]:
    """Return the token at ``path``, creating a fresh random one first if there is none.

    Creation is atomic and private: ``os.open(O_CREAT | O_EXCL, 0o600)``, so an existing file
    is never overwritten and a concurrent creator loses cleanly (its token is then read).

    Args:
        path: The token file, normally ``state_dir / "token"``.

    Returns:
        ``(token, created)``.

    Raises:
        TokenError: if the file exists but is unusable, or cannot be created.
    """
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return read_token(path), False
    except OSError as exc:
        raise TokenError(f"cannot create token file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise TokenError(f"cannot write token file {path}: {exc.strerror}") from None
    return token, True


def is_private(path: Path) -> bool:
    """Whether ``path`` is unreadable by group and others (mode ``0o600`` or stricter)."""
    return not stat.S_IMODE(path.stat().st_mode) & 0o077
