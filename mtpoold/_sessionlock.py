"""One holder per auth key: exclusive locks held while a process uses a Telegram session.

Two processes using the same auth key at once get each other's updates, trip
``AUTH_KEY_DUPLICATED`` and can get the session revoked. The daemon (and ``mtpoold
authorize``) therefore hold, for every account, an exclusive, non-blocking ``flock`` on

- the **key lock** ``<lock dir>/key-<key id>.lock``, named by the session's identity (a hash
  of its DC id and auth key, `mtpoold._sessionid`): every spelling, symlink or copy of a
  session file, and a string session holding the same key, meet on this one file, whatever
  config, state directory or account id the process uses; and, for a session file,
- the **file lock** ``<session file, symlinks resolved>.lock`` next to it, so a file that
  holds no key yet (being authorized) or no longer (corrupted at run time) still has one
  holder.

The lock directory (`runtime_lock_dir`) is one every process of the service's user on the
host shares: ``$MTPOOLD_LOCK_DIR`` if set (the systemd unit sets ``/run/mtpoold/locks``),
else ``/run/mtpoold/locks`` when ``/run/mtpoold`` belongs to this user (the packaged
service user, also when the operator runs ``sudo -u mtpoold mtpoold authorize``), else
``$XDG_RUNTIME_DIR/mtpoold/locks``, else ``<tempdir>/mtpoold-<uid>/locks`` (a systemd
service with ``PrivateTmp=yes`` has a private tempdir: that is why the unit sets the
variable). The kernel drops a lock when its holder dies, however it dies, so there is no
stale-lock cleanup.

The holder writes its PID into the lock file so the next one can say who holds it. A lock
file is never deleted (unlinking a flock'ed file lets two processes lock two different
files). Lock file names are hashes; no secret is ever written.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, final

import attrs

from ._config import AccountConfig
from ._errors import MtpooldError
from ._secrets import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    SecretUnavailable,
    ensure_private_dir,
    load_string_session,
)
from ._sessionid import SessionIdentity, SessionUnusable, session_identity

__all__ = [
    "LOCK_DIR_ENV",
    "lock_dir_problem",
    "SYSTEM_RUNTIME_DIR",
    "SessionLock",
    "SessionLocked",
    "lock_sessions_of",
    "runtime_lock_dir",
    "session_text_key",
]

LOCK_SUFFIX: Final = ".lock"
LOCKS_DIR_NAME: Final = "locks"  # under the state directory, for string sessions
RUNTIME_DIR_NAME: Final = "mtpoold"  # under $XDG_RUNTIME_DIR
LOCK_DIR_ENV: Final = "MTPOOLD_LOCK_DIR"  # the lock directory itself, if set
SYSTEM_RUNTIME_DIR: Final = Path("/run/mtpoold")  # the service's RuntimeDirectory=
KEY_LOCK_PREFIX: Final = "key-"
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
        what: What is held, as the message says it (``session /x/acc.session``, ``the auth
            key of session_string_env NAME``); None: derived from `session_path`.
        holder: Who holds it, as the message says it when the PID is not the whole story
            (``account "acc-1" of this daemon (PID 4242)``); None: the PID.
    """

    def __init__(
        self,
        account_id: str,
        session_path: Path | None,
        holder_pid: int | None,
        *,
        lock_path: Path,
        what: str | None = None,
        holder: str | None = None,
    ) -> None:
        self.account_id = account_id
        self.session_path = session_path
        self.holder_pid = holder_pid
        self.lock_path = lock_path
        self.what = what
        self.holder = holder
        if what is None:
            what = (
                f"session {session_path}"
                if session_path is not None
                else f"string session (lock {lock_path})"
            )  # the lock's name is a hash, never the session text
        who = f"PID {holder_pid}" if holder_pid is not None else "another process (PID unknown)"
        if holder is not None:
            who = holder
        super().__init__(f'account "{account_id}": {what} is in use by {who}')

    def __reduce__(self) -> tuple[Callable[..., SessionLocked], tuple[object, ...]]:
        return (
            _rebuild,
            (
                self.account_id,
                self.session_path,
                self.holder_pid,
                self.lock_path,
                self.what,
                self.holder,
            ),
        )


def _rebuild(
    account_id: str,
    session_path: Path | None,
    holder_pid: int | None,
    lock_path: Path,
    what: str | None = None,
    holder: str | None = None,
) -> SessionLocked:
    return SessionLocked(
        account_id, session_path, holder_pid, lock_path=lock_path, what=what, holder=holder
    )


def session_text_key(session_text: str) -> str:
    """The name of a string session's machine-wide lock: sha256 of the text, first 32 hex.

    Surrounding whitespace is ignored (the session loaders strip it too).
    """
    digest = hashlib.sha256(session_text.strip().encode("utf-8")).hexdigest()
    return digest[:SESSION_KEY_HEX]


def runtime_lock_dir(
    environ: Mapping[str, str] | None = None, *, system_dir: Path = SYSTEM_RUNTIME_DIR
) -> Path:
    """The directory of machine-wide session locks, shared by every process of this user.

    In order: ``$MTPOOLD_LOCK_DIR`` (the directory itself; its parent must exist);
    ``<system_dir>/locks`` when `system_dir` (``/run/mtpoold``, the service's
    ``RuntimeDirectory=``) is a directory of this user; ``$XDG_RUNTIME_DIR/mtpoold/locks``;
    ``<tempfile.gettempdir()>/mtpoold-<uid>/locks``. Every directory mtpoold creates or
    uses as a lock directory is made 0700 and must belong to this user: in a shared
    temporary directory another user could have created it first to watch or steal the
    locks. (An existing ``/run/mtpoold`` keeps its mode: it may hold the group's socket.)

    Args:
        environ: The environment (default `os.environ`).
        system_dir: The packaged runtime directory (tests pass another).

    Returns:
        The directory (it exists).

    Raises:
        PermissionError: a directory on the path belongs to another user, or is a symlink.
        OSError: a directory cannot be created.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(LOCK_DIR_ENV)
    if explicit:
        locks = Path(explicit)
        _ensure_own_private_dir(locks)
        return locks
    try:
        info = os.lstat(system_dir)
    except OSError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
        locks = system_dir / LOCKS_DIR_NAME
        _ensure_own_private_dir(locks)
        return locks
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        top = Path(runtime) / RUNTIME_DIR_NAME
    else:
        top = Path(tempfile.gettempdir()) / f"mtpoold-{os.getuid()}"
    locks = top / LOCKS_DIR_NAME
    for directory in (top, locks):
        _ensure_own_private_dir(directory)
    return locks


def lock_dir_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why `runtime_lock_dir` cannot give the session lock directory, or None when it can
    (it is then created): a start-up check of ``run`` and ``check-config``.

    Args:
        environ: The environment (default `os.environ`).
    """
    env = os.environ if environ is None else environ
    try:
        runtime_lock_dir(env)
    except OSError as exc:
        if isinstance(exc, PermissionError) and exc.filename is None:
            return str(exc)  # ours: it names the directory and why
        source = f" (${LOCK_DIR_ENV}; its parent must exist)" if env.get(LOCK_DIR_ENV) else ""
        return (
            f"session lock directory {exc.filename}{source} cannot be created:"
            f" {exc.strerror or exc}"
        )
    return None


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
    _what: str | None = attrs.field(init=False, default=None)

    @classmethod
    def for_session_file(cls, account_id: str, session_path: str | os.PathLike[str]) -> SessionLock:
        """The file lock of a Telethon session file: ``<real file>.lock`` next to it.

        The configured path is spelled as Telethon does (``.session`` appended when
        missing) and symlinks are resolved, so ``sessions/acc``, ``sessions/acc.session``
        and a link to it lock one file.

        Args:
            account_id: The account, named in errors.
            session_path: The configured ``session`` path (the file need not exist yet).

        Returns:
            An unheld lock.
        """
        from ._sessionfiles import session_file_path

        real = Path(os.path.realpath(session_file_path(session_path)))
        return cls(account_id, real.with_name(real.name + LOCK_SUFFIX), real)

    @classmethod
    def for_session_key(
        cls,
        identity: SessionIdentity,
        *,
        account_id: str | None = None,
        lock_dir: str | os.PathLike[str] | None = None,
    ) -> SessionLock:
        """The key lock of a session: ``<runtime_lock_dir>/key-<key id>.lock``.

        Every session holding one auth key — any file spelling, symlink or copy, a string
        session — meets on this file, whatever process, config or account id holds it.

        Args:
            identity: The session's identity (`mtpoold._sessionid.session_identity`).
            account_id: The account named in errors (default: the identity's).
            lock_dir: The directory (default: `runtime_lock_dir`, created 0700 here).

        Returns:
            An unheld lock.

        Raises:
            PermissionError: the lock directory belongs to another user.
        """
        directory = Path(lock_dir) if lock_dir is not None else runtime_lock_dir()
        lock = cls(
            account_id or identity.account_id,
            directory / f"{KEY_LOCK_PREFIX}{identity.key_id}{LOCK_SUFFIX}",
            identity.path,
        )
        lock._what = f"the auth key of {identity.source}"
        return lock

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
        beside_session = (
            self.session_path is not None and self.lock_path.parent == self.session_path.parent
        )
        if not beside_session or not self.lock_path.parent.exists():
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
                    self.account_id,
                    self.session_path,
                    holder,
                    lock_path=self.lock_path,
                    what=self._what,
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


def lock_sessions_of(
    accounts: Iterable[AccountConfig],
    state_dir: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    lock_dir: str | os.PathLike[str] | None = None,
) -> dict[str, SessionLock]:
    """Take the exclusive session locks of each account, all or none.

    For each account, in order: the file lock of its session file (if it has one), then —
    with its session read under that lock (`mtpoold._sessionid.session_identity`) — the key
    lock named by its auth key in the machine-wide lock directory. So a second daemon
    (another config, another state directory), ``mtpoold authorize``, or a second account
    on any spelling, symlink or copy of a session in use, or on a string session with the
    same key, is refused.

    A session whose key cannot be read (the start-up checks, `session_problems`, refuse it
    before this runs; it can still turn unreadable in between, and tests run fake clients on
    sessions that are no Telethon sessions) is locked by what there is: a file by its file
    lock, a string session by the hash of its text in the lock directory.

    Args:
        accounts: The accounts to lock.
        state_dir: The daemon's state directory; accepted for the pool's calls, unused (the
            locks live next to the session files and in the lock directory).
        environ: Where string sessions' variables come from (default `os.environ`).
        lock_dir: The key locks' directory (default `runtime_lock_dir`).

    Returns:
        The held locks by account id: the key lock under ``"<account id>"``, a session
        file's file lock under ``"<account id>#session"``.

    Raises:
        SessionLocked: one is held elsewhere (names account, session and holder PID,
            never the session text); the locks taken before it are released.
        PermissionError: the lock directory belongs to another user.
    """
    env = os.environ if environ is None else environ
    del state_dir
    held: dict[str, SessionLock] = {}
    try:
        for acc in accounts:
            if acc.session is not None:
                file_lock = SessionLock.for_session_file(acc.id, acc.session)
                file_lock.acquire()
                held[f"{acc.id}#session"] = file_lock
            key_lock = _key_lock(acc, env, lock_dir)
            if key_lock is not None:
                key_lock.acquire()
                held[acc.id] = key_lock
    except BaseException:
        for lock in held.values():
            lock.release()
        raise
    return held


def lock_paths_of(
    account: AccountConfig,
    *,
    environ: Mapping[str, str] | None = None,
    lock_dir: str | os.PathLike[str] | None = None,
) -> set[Path]:
    """The lock files `lock_sessions_of` takes for ``account``; none is taken here.

    Args:
        account: The account.
        environ: As for `lock_sessions_of`.
        lock_dir: As for `lock_sessions_of`.

    Returns:
        The paths (empty when its session source is missing).

    Raises:
        PermissionError: the lock directory belongs to another user.
    """
    paths: set[Path] = set()
    if account.session is not None:
        paths.add(SessionLock.for_session_file(account.id, account.session).lock_path)
    key_lock = _key_lock(account, os.environ if environ is None else environ, lock_dir)
    if key_lock is not None:
        paths.add(key_lock.lock_path)
    return paths


def _key_lock(
    account: AccountConfig, environ: Mapping[str, str], lock_dir: str | os.PathLike[str] | None
) -> SessionLock | None:
    try:
        identity = session_identity(account, environ=environ)
    except (SessionUnusable, SecretUnavailable):
        if account.session is not None:
            return None  # the file lock is taken
        try:
            text = load_string_session(account, environ=environ)
        except SecretUnavailable:
            return None
        return SessionLock.for_session_text(account.id, text, lock_dir=lock_dir) if text else None
    return SessionLock.for_session_key(identity, lock_dir=lock_dir)
