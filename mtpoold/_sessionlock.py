"""One process per Telegram session: an exclusive lock held while the daemon uses it.

Two processes using the same auth key at once get each other's updates, trip
``AUTH_KEY_DUPLICATED`` and can get the session revoked. `SessionLock` prevents that with an
exclusive, non-blocking ``flock`` on a lock file next to the session (``<session>.lock``) or,
for string sessions that have no file, on ``<state_dir>/locks/<account_id>.lock`` *and* on a
lock named by the session text's hash in a per-user, machine-wide runtime directory
(`runtime_lock_dir`: ``$XDG_RUNTIME_DIR/mtpoold/locks``, else
``<tempdir>/mtpoold-<uid>/locks``), so two daemons with different state directories still
cannot run one string session. The kernel drops the lock when the holder dies, however it
dies, so there is no stale-lock cleanup.

The holder writes its PID into the lock file so the next one can say who holds it. The lock
file is never deleted (unlinking a flock'ed file lets two processes lock two different files).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, final

import attrs

from ._errors import MtpooldError
from ._secrets import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, ensure_private_dir

__all__ = ["SessionLock", "SessionLocked", "runtime_lock_dir", "session_text_key"]

LOCK_SUFFIX: Final = ".lock"
LOCKS_DIR_NAME: Final = "locks"  # under the state directory, for string sessions
RUNTIME_DIR_NAME: Final = "mtpoold"  # under $XDG_RUNTIME_DIR
SESSION_KEY_HEX: Final = 32  # hex characters of sha256(session text) naming a runtime lock
_MAX_PID_BYTES: Final = 32


class SessionLocked(MtpooldError):
    """Another process (or another lock in this process) holds the account's session.

    Attributes:
        account_id: The account whose session is locked.
        session_path: The session file, or None for a string session.
        holder_pid: PID written by the holder, or None if it could not be read (the holder
            had only just taken the lock, or the file was edited).
        lock_path: The lock file.
    """

    def __init__(
        self,
        account_id: str,
        session_path: Path | None,
        holder_pid: int | None,
        *,
        lock_path: Path,
    ) -> None:
        self.account_id = account_id
        self.session_path = session_path
        self.holder_pid = holder_pid
        self.lock_path = lock_path
        what = (
            f"session {session_path}"
            if session_path is not None
            else f"string session (lock {lock_path})"
        )  # the lock's name is a hash, never the session text
        who = f"PID {holder_pid}" if holder_pid is not None else "another process (PID unknown)"
        super().__init__(f'account "{account_id}": {what} is in use by {who}')

    def __reduce__(self) -> tuple[Callable[..., SessionLocked], tuple[object, ...]]:
        return (_rebuild, (self.account_id, self.session_path, self.holder_pid, self.lock_path))


def _rebuild(
    account_id: str, session_path: Path | None, holder_pid: int | None, lock_path: Path
) -> SessionLocked:
    return SessionLocked(account_id, session_path, holder_pid, lock_path=lock_path)


def session_text_key(session_text: str) -> str:
    """The name of a string session's machine-wide lock: sha256 of the text, first 32 hex.

    Surrounding whitespace is ignored (the session loaders strip it too).
    """
    digest = hashlib.sha256(session_text.strip().encode("utf-8")).hexdigest()
    return digest[:SESSION_KEY_HEX]


def runtime_lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """This user's machine-wide directory of string-session locks, created 0700.

    ``$XDG_RUNTIME_DIR/mtpoold/locks`` when ``XDG_RUNTIME_DIR`` is set, else
    ``<tempfile.gettempdir()>/mtpoold-<uid>/locks``. Every directory mtpoold creates on that
    path is made 0700 and must belong to this user: in a shared temporary directory another
    user could have created it first to watch or steal the locks.

    Args:
        environ: The environment (default `os.environ`).

    Returns:
        The directory (it exists).

    Raises:
        PermissionError: a directory on the path belongs to another user, or is a symlink.
        OSError: a directory cannot be created.
    """
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        top = Path(runtime) / RUNTIME_DIR_NAME
    else:
        top = Path(tempfile.gettempdir()) / f"mtpoold-{os.getuid()}"
    locks = top / LOCKS_DIR_NAME
    for directory in (top, locks):
        _ensure_own_private_dir(directory)
    return locks


def _ensure_own_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        pass
    else:
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(
            f"session lock directory {path} is not a directory (or is a symlink); refusing it"
        )
    if info.st_uid != os.getuid():
        raise PermissionError(
            f"session lock directory {path} belongs to uid {info.st_uid}, not to this user"
            f" (uid {os.getuid()}); refusing it: remove it, or set XDG_RUNTIME_DIR"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, PRIVATE_DIR_MODE)


def _check_account_id(account_id: str) -> None:
    if not account_id or account_id in (".", "..") or "/" in account_id or "\0" in account_id:
        raise ValueError(f"account id {account_id!r} cannot name a lock file")


@final
@attrs.define(eq=False, repr=False)
class SessionLock:
    """Exclusive lock on one account's session, held while the daemon uses the session.

    Build one with `for_session_file` or `for_string_session`, then `acquire` it (or use it
    as a context manager). It does not block and does no I/O beyond one small file, so it is
    sync and may be called from the trio thread.

    Resource handling:
        While held, one file descriptor is open (close-on-exec, so spawned processes don't
        inherit the lock). `release` closes it; so does process exit.

    Attributes:
        account_id: The account.
        lock_path: The file that is locked.
        session_path: The session file this lock guards, or None for a string session.
    """

    account_id: str
    lock_path: Path
    session_path: Path | None = None
    _fd: int | None = attrs.field(init=False, default=None)

    @classmethod
    def for_session_file(cls, account_id: str, session_path: str | os.PathLike[str]) -> SessionLock:
        """Lock for a Telethon ``.session`` file: the sibling ``<session path>.lock``.

        Args:
            account_id: The account, named in errors.
            session_path: The session file (it need not exist yet).

        Returns:
            An unheld lock.
        """
        sp = Path(session_path)
        return cls(account_id, sp.with_name(sp.name + LOCK_SUFFIX), sp)

    @classmethod
    def for_string_session(cls, account_id: str, state_dir: str | os.PathLike[str]) -> SessionLock:
        """Lock for a string session: ``<state_dir>/locks/<account_id>.lock``.

        Args:
            account_id: The account; it names the lock file.
            state_dir: The daemon's state directory.

        Returns:
            An unheld lock.

        Raises:
            ValueError: if `account_id` cannot be a file name (empty, ``.``, ``..``, or
                containing ``/`` or NUL).
        """
        _check_account_id(account_id)
        return cls(account_id, Path(state_dir) / LOCKS_DIR_NAME / (account_id + LOCK_SUFFIX))

    @classmethod
    def for_session_text(
        cls, account_id: str, session_text: str, *, lock_dir: str | os.PathLike[str] | None = None
    ) -> SessionLock:
        """Machine-wide lock of a string session: ``<runtime_lock_dir>/<sha256[:32]>.lock``.

        Whatever state directory, config file or account id a process uses, two processes of
        this user holding the same session text meet on this one file. The file name is a
        hash; the session text is never written anywhere.

        Args:
            account_id: The account, named in errors.
            session_text: The StringSession text.
            lock_dir: The directory (default: `runtime_lock_dir`, created 0700 here).

        Returns:
            An unheld lock.

        Raises:
            PermissionError: the runtime directory belongs to another user.
        """
        directory = Path(lock_dir) if lock_dir is not None else runtime_lock_dir()
        return cls(account_id, directory / (session_text_key(session_text) + LOCK_SUFFIX))

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now, or fail at once.

        Creates the lock file (0600) if needed (for string sessions also the ``locks``
        directory, for session files a missing session directory, both 0700), takes
        ``flock(LOCK_EX | LOCK_NB)`` and writes this process's PID.

        Raises:
            SessionLocked: if another open lock holds it — another process, or another
                `SessionLock` on the same file in this process (two accounts configured with
                the same session).
            RuntimeError: if this object already holds the lock.
            OSError: if the lock file cannot be created or opened.
        """
        if self._fd is not None:
            raise RuntimeError(f'account "{self.account_id}": session lock already held')
        if self.session_path is None or not self.lock_path.parent.exists():
            # A session directory that does not exist yet is created private (0700); an
            # existing one belongs to the operator and is left as it is.
            ensure_private_dir(self.lock_path.parent)
        fd = os.open(
            self.lock_path,
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            PRIVATE_FILE_MODE,
        )
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                raise SessionLocked(
                    self.account_id, self.session_path, holder, lock_path=self.lock_path
                ) from None
            try:
                os.fchmod(fd, PRIVATE_FILE_MODE)
            except OSError:
                pass  # not ours to change; the lock works all the same
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Drop the lock. Does nothing if it is not held.

        The PID is cleared from the file first; the file itself stays.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> SessionLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "free"
        return f"<SessionLock account={self.account_id!r} {self.lock_path} {state}>"


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, _MAX_PID_BYTES, 0)
    except OSError:
        return None
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
