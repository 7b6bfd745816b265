"""Secrets on disk and in text: private files, string sessions, redaction.

Everything here is synchronous and small. The daemon keeps three kinds of secret: Telethon
sessions (an auth key is a full login), `api_hash` values and proxy passwords. This module
makes sure the files holding them are private to the daemon's user, resolves string sessions
from wherever the config says they live (inline, an environment variable, or a systemd
credential). The one function that strips secrets out of text before it reaches a log line, an
error frame or the state store, `redact`, lives in `mtpoold._errors` (which needs it and which
this module builds on) and is re-exported here.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol

from ._errors import MIN_SECRET_CHARS as MIN_SECRET_CHARS
from ._errors import REDACTED as REDACTED
from ._errors import MtpooldError
from ._errors import redact as redact  # the one redaction; re-exported for this module's users
from ._logformat import log_event

__all__ = [
    "MIN_SECRET_CHARS",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "REDACTED",
    "SecretUnavailable",
    "StringSessionSource",
    "create_private_file",
    "ensure_private_dir",
    "ensure_private_file",
    "load_string_session",
    "redact",
    "warn_if_exposed",
]

logger = logging.getLogger(__name__)

PRIVATE_DIR_MODE: Final = 0o700  # rwx for the owner only
PRIVATE_FILE_MODE: Final = 0o600  # rw for the owner only
_GROUP_OTHER_BITS: Final = 0o077


class SecretUnavailable(MtpooldError):
    """A configured secret could not be loaded.

    The message names the account and where the secret was expected (variable name, file
    path), never the secret itself.

    Attributes:
        account_id: The account whose secret is missing.
        problem: The message without the account (for a line that names it by key path).
    """

    def __init__(self, account_id: str, message: str) -> None:
        super().__init__(f'account "{account_id}": {message}')
        self.account_id = account_id
        self.problem = message


class StringSessionSource(Protocol):
    """The fields of `AccountConfig` that `load_string_session` reads."""

    @property
    def id(self) -> str: ...
    @property
    def session_string(self) -> str | None: ...
    @property
    def session_string_env(self) -> str | None: ...
    @property
    def session_credential(self) -> str | None: ...


def _is_exposed(mode: int) -> bool:
    return bool(stat.S_IMODE(mode) & _GROUP_OTHER_BITS)


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Make sure `path` is a directory only its owner can enter.

    A missing directory is created with mode 0700 (missing parents with the default mode).
    An existing one that is group/world-accessible is tightened to drop those bits, with a
    warning; a sticky world-writable directory such as /tmp is never changed (only warned
    about), and a failed chmod (not the owner) is logged, not raised.

    Args:
        path: The directory.

    Returns:
        `path` as a `Path`.

    Raises:
        NotADirectoryError: if `path` exists and is not a directory.
        OSError: if the directory cannot be created.
    """
    p = Path(path)
    try:
        p.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    except FileExistsError:
        if not p.is_dir():
            raise NotADirectoryError(f"{p} exists and is not a directory") from None
    else:
        os.chmod(p, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
        return p
    mode = p.stat().st_mode
    if _is_exposed(mode):
        if mode & stat.S_ISVTX:
            log_event(
                logger,
                logging.WARNING,
                "directory_shared",
                path=str(p),
                mode=f"{stat.S_IMODE(mode):04o}",
                note="sticky: not tightening it; use a private directory for mtpoold's state",
            )
            return p
        new_mode = stat.S_IMODE(mode) & ~_GROUP_OTHER_BITS
        try:
            os.chmod(p, new_mode)
        except OSError as exc:
            log_event(
                logger,
                logging.WARNING,
                "directory_exposed",
                path=str(p),
                mode=f"{stat.S_IMODE(mode):04o}",
                tightened=False,
                error=exc.strerror,
            )
        else:
            log_event(
                logger,
                logging.WARNING,
                "directory_exposed",
                path=str(p),
                mode=f"{stat.S_IMODE(mode):04o}",
                tightened=True,
                new_mode=f"{new_mode:04o}",
            )
    return p


def ensure_private_file(path: str | os.PathLike[str], what: str) -> bool:
    """Tighten an existing file to 0600 if group/others can access it, with a warning.

    Args:
        path: The file. A missing file is not an error.
        what: What the file is, for the log line ("state store", "session file").

    Returns:
        True if the file was exposed (whether or not the chmod succeeded).
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return False
    if not _is_exposed(mode):
        return False
    error: str | None = None
    try:
        os.chmod(p, PRIVATE_FILE_MODE)
    except OSError as exc:
        error = exc.strerror or type(exc).__name__
    log_event(  # a None field is left out of the line
        logger,
        logging.WARNING,
        "file_exposed",
        what=what,
        path=str(p),
        mode=f"{stat.S_IMODE(mode):04o}",
        tightened=error is None,
        new_mode="0600" if error is None else None,
        error=error,
    )
    return True


def create_private_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Create a new file readable and writable by its owner only, and write `data` to it.

    The file is created with ``O_CREAT | O_EXCL`` and mode 0600 (so it is never visible with
    wider permissions, and a symlink or existing file at `path` is refused), in a directory
    made private with `ensure_private_dir`. The data is fsynced before returning.

    Args:
        path: The new file.
        data: Its contents.

    Returns:
        `path` as a `Path`.

    Raises:
        FileExistsError: if something already exists at `path`.
        OSError: on any other filesystem error; a partly written file is removed.
    """
    p = Path(path)
    ensure_private_dir(p.parent)
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # in case the umask removed owner bits
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        p.unlink(missing_ok=True)
        raise
    os.close(fd)
    return p


def warn_if_exposed(
    path: str | os.PathLike[str], what: str, *, allow_own_group: bool = False
) -> bool:
    """Log a warning if a file holding secrets can be read or written by group/others.

    Used for session files and config files that contain `api_hash`, session strings or
    proxy passwords. The file is not changed: it belongs to the operator.

    Args:
        path: The file. A missing file is not an error.
        what: What the file is, for the log line ("session file", "config file").
        allow_own_group: Accept access by the process's own group (a root-owned config
            installed ``-m 0640 -g mtpoold`` for the service, see systemd/mtpoold.service).

    Returns:
        True if a warning was logged.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return False
    mode = st.st_mode
    # Group access is the packaged way to hand a root-owned config to the service's own
    # group (``install -m 0640 -g mtpoold``): only another group, or others, is exposure.
    own_group = allow_own_group and st.st_gid == os.getegid() and not stat.S_IMODE(mode) & 0o007
    if not _is_exposed(mode) or own_group:
        return False
    log_event(
        logger,
        logging.WARNING,
        "secrets_exposed",
        what=what,
        path=str(p),
        mode=f"{stat.S_IMODE(mode):04o}",
        fix=f"chmod 600 {p}",
    )
    return True


def load_string_session(
    account: StringSessionSource, *, environ: Mapping[str, str] = os.environ
) -> str | None:
    """Resolve an account's Telethon StringSession text from wherever the config puts it.

    Sources, of which at most one may be set: `session_string` (inline), `session_string_env`
    (the name of an environment variable), `session_credential` (the name of a file in
    ``$CREDENTIALS_DIRECTORY``, as set up by systemd's ``LoadCredential=``). Surrounding
    whitespace is stripped.

    Args:
        account: The account's config (an `AccountConfig`).
        environ: The environment to read variables from.

    Returns:
        The session string, or None if the account has no string session configured (it uses
        a session file).

    Raises:
        SecretUnavailable: if more than one source is set, the variable is unset or empty,
            ``$CREDENTIALS_DIRECTORY`` is unset or not a directory, the credential name is
            not a plain file name, or the credential file is missing, unreadable or empty.
            The message names the account and the variable or path, never the value.
    """
    aid = account.id
    sources = [
        name
        for name, value in (
            ("session_string", account.session_string),
            ("session_string_env", account.session_string_env),
            ("session_credential", account.session_credential),
        )
        if value is not None
    ]
    if len(sources) > 1:
        raise SecretUnavailable(aid, f"set only one of {', '.join(sources)}")
    if account.session_string is not None:
        text = account.session_string.strip()
        if not text:
            raise SecretUnavailable(aid, "session_string is empty")
        return text
    if account.session_string_env is not None:
        var = account.session_string_env
        value = environ.get(var)
        if value is None:
            raise SecretUnavailable(
                aid, f"environment variable {var} (session_string_env) is not set"
            )
        if not value.strip():
            raise SecretUnavailable(
                aid, f"environment variable {var} (session_string_env) is empty"
            )
        return value.strip()
    if account.session_credential is not None:
        return _load_credential(aid, account.session_credential, environ)
    return None


def _load_credential(aid: str, name: str, environ: Mapping[str, str]) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise SecretUnavailable(
            aid, f"session_credential {name!r} must be a plain file name (no '/')"
        )
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if not cred_dir:
        raise SecretUnavailable(
            aid,
            f"session_credential {name!r} needs $CREDENTIALS_DIRECTORY, which is not set "
            f"(use LoadCredential={name}:/path/to/file in the systemd unit)",
        )
    if not Path(cred_dir).is_dir():
        raise SecretUnavailable(aid, f"$CREDENTIALS_DIRECTORY {cred_dir} is not a directory")
    path = Path(cred_dir) / name
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretUnavailable(aid, f"credential file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretUnavailable(aid, f"credential file {path} is unreadable: {reason}") from None
    if not text:
        raise SecretUnavailable(aid, f"credential file {path} is empty")
    return text
