"""Session identity: which auth key an account's session holds, read before it is used.

Two processes, or two accounts, on one auth key get each other's updates, trip
``AUTH_KEY_DUPLICATED`` and can get the key revoked. Whether two sessions are "the same" is
therefore decided by what they hold, not by how the config names them: a file under two
spellings (``sessions/acc`` and ``sessions/acc.session``), a symlink, a copy, an inline
string and an environment variable holding its text, a string session and a file with the
same key — all are one session. `SessionIdentity.key_id` is a hash of the DC id and the
auth key, read at start-up: from a Telethon SQLite session file (its ``sessions`` table) or
from a ``StringSession``. The session locks (`mtpoold._sessionlock`) are named by it.

Reading a session is also the start-up check that it is usable: a file that is not a
Telethon session (a text file, an empty file), that holds no auth key, or that cannot be read
is a problem naming the account, reported by `session_problems` (``check-config`` and
``run`` exit 2) instead of failing every job later.

Nothing here reveals a secret: `key_id` is a one-way hash (SHA-256 of a domain tag, the DC
id and the 256-byte key; 128 bits shown), and the messages name the account and where the
session lives (path, variable, credential name), never its contents.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from ._config import AccountConfig
from ._errors import MtpooldError
from ._secrets import SecretUnavailable, load_string_session

__all__ = [
    "SessionIdentity",
    "SessionUnusable",
    "file_session_key",
    "key_id_of",
    "session_identity",
    "session_problems",
]

KEY_ID_HEX: Final = 32  # hex characters of the identity hash shown in lock file names
_DOMAIN: Final = b"mtpoold session identity\x00"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
AUTH_KEY_BYTES: Final = 256  # MTProto 2.0 auth keys are 2048 bits


class SessionUnusable(MtpooldError):
    """An account's session cannot be used: no file, not a Telethon session, no auth key,
    unreadable.

    Attributes:
        account_id: The account.
        problem: One line naming the account's session (path or source) and the reason,
            never the session's contents.
    """

    def __init__(self, account_id: str, problem: str) -> None:
        super().__init__(f'account "{account_id}": {problem}')
        self.account_id = account_id
        self.problem = problem


@attrs.frozen
class SessionIdentity:
    """Which auth key an account's session holds.

    Attributes:
        account_id: The account.
        key_id: `key_id_of` its DC id and auth key: 32 hex characters, equal for every
            spelling, link or copy of one session.
        dc_id: The DC the key belongs to.
        source: Where the session lives, for messages: ``session file /abs/acc.session``,
            ``session_string``, ``session_string_env NAME``, ``session_credential NAME``.
        path: The session file with symlinks resolved, or None for a string session.
    """

    account_id: str
    key_id: str
    dc_id: int
    source: str
    path: Path | None = None


def key_id_of(dc_id: int, auth_key: bytes) -> str:
    """The identity of an auth key: SHA-256 over a domain tag, the DC id (4 bytes, big
    endian) and the key; the first `KEY_ID_HEX` hex characters.

    One-way: it cannot be turned back into the key (unlike Telegram's own 64-bit
    ``auth_key_id`` it is not sent anywhere, and it is longer).
    """
    digest = hashlib.sha256(_DOMAIN + dc_id.to_bytes(4, "big", signed=True) + auth_key)
    return digest.hexdigest()[:KEY_ID_HEX]


def file_session_key(path: str | os.PathLike[str]) -> tuple[int, bytes] | None:
    """Read the DC id and auth key out of a Telethon SQLite session file, read-only.

    Args:
        path: The session file (the real name, ``.session`` included).

    Returns:
        ``(dc_id, auth_key)``, or None if the file is a Telethon session without an auth key
        (never logged in, or logged out).

    Raises:
        FileNotFoundError: there is no file.
        ValueError: it is not a Telethon session file (not SQLite, no ``sessions`` table,
            empty); the message says which, never the contents.
        OSError: it cannot be read (permissions, a directory).
    """
    p = Path(path)
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)  # FileNotFoundError / PermissionError here
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        header = os.pread(fd, len(_SQLITE_MAGIC), 0)
    finally:
        os.close(fd)
    if not header:
        raise ValueError("it is an empty file, not a Telethon session")
    if header != _SQLITE_MAGIC:
        raise ValueError("it is not a Telethon session file (not an SQLite database)")
    try:
        db = sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT dc_id, auth_key FROM sessions").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            raise ValueError(
                "it is an SQLite database but not a Telethon session (no sessions table)"
            ) from None
        raise ValueError(f"it cannot be read as a Telethon session ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"it is not a usable Telethon session file ({exc})") from None
    for dc_id, key in rows:
        if isinstance(key, bytes) and key and isinstance(dc_id, int):
            return dc_id, key
    return None


def _string_source(account: AccountConfig) -> str:
    if account.session_string_env is not None:
        return f"session_string_env {account.session_string_env}"
    if account.session_credential is not None:
        return f"session_credential {account.session_credential}"
    return "session_string"


def _source_key(index: int, account: AccountConfig) -> str:
    """The key path of the session source of ``accounts[index]``: ``accounts[2].session``,
    ``accounts[2].session_credential`` ...; ``accounts[2]`` when none or several are set."""
    fields = ("session", "session_string", "session_string_env", "session_credential")
    present = [name for name in fields if getattr(account, name) is not None]
    return f"accounts[{index}].{present[0]}" if len(present) == 1 else f"accounts[{index}]"


def session_identity(
    account: AccountConfig, *, environ: Mapping[str, str] = os.environ
) -> SessionIdentity:
    """Read which auth key an account's session holds.

    Args:
        account: The account (exactly one session source set; see `AccountConfig`).
        environ: Where ``session_string_env`` variables and ``$CREDENTIALS_DIRECTORY`` come
            from.

    Returns:
        The identity.

    Raises:
        SessionUnusable: no session file, not a Telethon session, no auth key, unreadable,
            an invalid string session, no source configured.
        SecretUnavailable: the string session's variable or credential is missing.
    """
    from ._sessionfiles import session_file_path  # the one place Telethon's file naming lives

    aid = account.id
    if account.session is not None:
        configured = session_file_path(account.session)
        path = Path(os.path.realpath(configured))
        source = f"session file {configured.absolute()}"
        try:
            found = file_session_key(path)
        except FileNotFoundError:
            raise SessionUnusable(
                aid,
                f"no session file at {configured.absolute()}; log the account in with:"
                f" mtpoold authorize {aid}",
            ) from None
        except ValueError as exc:
            raise SessionUnusable(aid, f"{source}: {exc}") from None
        except OSError as exc:
            raise SessionUnusable(
                aid, f"{source} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
        if found is None:
            raise SessionUnusable(
                aid,
                f"{source} holds no auth key (not logged in); log the account in with:"
                f" mtpoold authorize {aid}",
            )
        return SessionIdentity(aid, key_id_of(*found), found[0], source, path)
    text = load_string_session(account, environ=environ)
    if text is None:
        raise SessionUnusable(
            aid,
            "no session configured (session, session_string, session_string_env or"
            " session_credential)",
        )
    # Lazy: Telethon costs ~500 ms, and `mtpoold status` reaches this module (session locks).
    from telethon.sessions import StringSession

    source = _string_source(account)
    try:
        session = StringSession(text)
    except Exception:  # noqa: BLE001 - Telethon raises ValueError/binascii.Error/struct.error
        raise SessionUnusable(
            aid, f"{source}: the string session is not a valid Telethon StringSession"
        ) from None
    key = session.auth_key.key if session.auth_key is not None else None
    if not key:
        raise SessionUnusable(aid, f"{source}: the string session holds no auth key")
    return SessionIdentity(aid, key_id_of(session.dc_id, key), session.dc_id, source)


def session_problems(
    accounts: Sequence[AccountConfig], *, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """The start-up checks of every account's session: readable, and one auth key each.

    Run by `mtpoold._startup.startup_problems`, so by ``check-config``, ``run`` and
    ``reload`` alike.

    Args:
        accounts: The config's accounts, in config order.
        environ: As for `session_identity`.

    Returns:
        One line per problem, in config order: ``accounts[i].session: ...`` (or the
        string source's key) for a session that cannot be used, and, for two accounts whose
        sessions hold one auth key (copies of one file, a file and a string, two spellings),
        a line naming both accounts and both sources. Empty if all is well.
    """
    problems: list[str] = []
    seen: dict[str, tuple[int, SessionIdentity]] = {}
    for index, account in enumerate(accounts):
        if account.session is not None and any(
            v is not None
            for v in (
                account.session_string,
                account.session_string_env,
                account.session_credential,
            )
        ):
            problems.append(
                f"accounts[{index}]: set either session (a file) or a string session, not both"
            )
            continue
        try:
            identity = session_identity(account, environ=environ)
        except (SecretUnavailable, SessionUnusable) as exc:
            problems.append(f"{_source_key(index, account)}: {exc.problem}")
            continue
        first = seen.setdefault(identity.key_id, (index, identity))
        if first[0] != index:
            other = first[1]
            problems.append(
                f'accounts[{index}] ("{account.id}"): {identity.source} holds the same auth key'
                f' as accounts[{first[0]}] ("{other.account_id}"), {other.source}; one auth key'
                " must never be used by two accounts"
            )
    return problems
