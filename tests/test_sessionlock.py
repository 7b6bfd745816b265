from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mtpoold._sessionlock import SessionLock, SessionLocked

# Takes the lock in a separate process, reports "locked <pid>", holds it until stdin closes.
_HOLDER = """
import sys
from mtpoold._sessionlock import SessionLock
kind, account, where = sys.argv[1:4]
if kind == "file":
    lock = SessionLock.for_session_file(account, where)
else:
    lock = SessionLock.for_string_session(account, where)
with lock:
    print("locked", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""


@contextmanager
def holder(kind: str, account: str, where: Path) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, kind, account, str(where)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            assert proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.stdout.readline() == "released\n"
    proc.wait(timeout=10)


def test_SessionLock_file_lock_path_mode_and_pid(tmp_path: Path) -> None:
    session = tmp_path / "acc3.session"
    lock = SessionLock.for_session_file("acc-3", session)
    assert lock.lock_path == tmp_path / "acc3.session.lock"
    assert not lock.held
    with lock:
        assert lock.held
        assert stat.S_IMODE(lock.lock_path.stat().st_mode) == 0o600
        assert lock.lock_path.read_text() == f"{os.getpid()}\n"
        assert "held" in repr(lock)
    assert not lock.held
    assert lock.lock_path.exists()  # never unlinked
    assert lock.lock_path.read_text() == ""


def test_SessionLock_other_process_fails_at_once_naming_account_path_pid(tmp_path: Path) -> None:
    session = tmp_path / "acc3.session"
    with holder("file", "acc-3", session) as proc:
        lock = SessionLock.for_session_file("acc-3", session)
        with pytest.raises(
            SessionLocked,
            match=rf'^account "acc-3": session {session} is in use by PID {proc.pid}$',
        ) as info:
            lock.acquire()
        assert not lock.held
        assert info.value.account_id == "acc-3"
        assert info.value.session_path == session
        assert info.value.holder_pid == proc.pid
        assert info.value.lock_path == tmp_path / "acc3.session.lock"
        release(proc)
        with lock:  # the holder is gone: now it's ours
            assert lock.lock_path.read_text() == f"{os.getpid()}\n"


def test_SessionLock_other_process_blocked_by_us(tmp_path: Path) -> None:
    session = tmp_path / "acc3.session"
    with SessionLock.for_session_file("acc-3", session):
        result = subprocess.run(
            [sys.executable, "-c", _HOLDER, "file", "acc-3", str(session)],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f'SessionLocked: account "acc-3": session {session} is in use by PID {os.getpid()}' in (
        result.stderr
    )


def test_SessionLock_killed_holder_frees_lock(tmp_path: Path) -> None:
    session = tmp_path / "acc3.session"
    with holder("file", "acc-3", session) as proc:
        proc.kill()
        proc.wait(timeout=10)
        with SessionLock.for_session_file("acc-3", session) as lock:
            assert lock.held


def test_SessionLock_same_process_second_lock_fails(tmp_path: Path) -> None:
    # Two accounts configured with the same session file.
    session = tmp_path / "shared.session"
    with SessionLock.for_session_file("acc-1", session):
        with pytest.raises(
            SessionLocked,
            match=rf'^account "acc-2": session {session} is in use by PID {os.getpid()}$',
        ):
            SessionLock.for_session_file("acc-2", session).acquire()


def test_SessionLock_acquire_twice_is_a_bug(tmp_path: Path) -> None:
    lock = SessionLock.for_session_file("acc-1", tmp_path / "s.session")
    with lock:
        with pytest.raises(RuntimeError, match=r'^account "acc-1": session lock already held$'):
            lock.acquire()
    lock.release()  # idempotent


def test_SessionLock_string_session(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = SessionLock.for_string_session("acc-7", state)
    assert lock.lock_path == state / "locks" / "acc-7.lock"
    assert lock.session_path is None
    with holder("string", "acc-7", state) as proc:
        assert stat.S_IMODE((state / "locks").stat().st_mode) == 0o700
        assert stat.S_IMODE(lock.lock_path.stat().st_mode) == 0o600
        with pytest.raises(
            SessionLocked,
            match=rf'^account "acc-7": string session \(lock {state}/locks/acc-7.lock\) '
            rf"is in use by PID {proc.pid}$",
        ):
            lock.acquire()
        release(proc)
        with lock:
            pass
    # other accounts are independent
    with (
        SessionLock.for_string_session("acc-7", state),
        SessionLock.for_string_session("acc-8", state),
    ):
        pass


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\0b"])
def test_SessionLock_string_session_rejects_unsafe_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match=r"cannot name a lock file$"):
        SessionLock.for_string_session(bad, tmp_path)


def test_SessionLocked_unknown_pid_and_pickle(tmp_path: Path) -> None:
    exc = SessionLocked("a", tmp_path / "s", None, lock_path=tmp_path / "s.lock")
    assert str(exc) == (
        f'account "a": session {tmp_path}/s is in use by another process (PID unknown)'
    )
    copy = pickle.loads(pickle.dumps(exc))
    assert str(copy) == str(exc)
    assert copy.lock_path == exc.lock_path


def test_runtime_lock_dir_xdg_then_tempdir_private_and_owned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtpoold._sessionlock import runtime_lock_dir

    xdg = tmp_path / "xdg"
    xdg.mkdir()
    assert runtime_lock_dir({"XDG_RUNTIME_DIR": str(xdg)}) == xdg / "mtpoold" / "locks"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    old = os.umask(0o000)  # a permissive umask does not leak into the mode
    try:
        got = runtime_lock_dir({})
    finally:
        os.umask(old)
    assert got == tmp_path / "tmp" / f"mtpoold-{os.getuid()}" / "locks"
    for d in (got, got.parent):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    # a pre-made directory of another user (a shared /tmp): refused, not used
    other = tmp_path / "tmp2"
    other.mkdir()
    (other / f"mtpoold-{os.getuid()}").mkdir()
    if os.getuid() == 0:
        os.chown(other / f"mtpoold-{os.getuid()}", 4242, 4242)
        monkeypatch.setattr("tempfile.tempdir", str(other))
        with pytest.raises(PermissionError, match=r"belongs to uid 4242, not to this user"):
            runtime_lock_dir({})
    # a symlink planted there: refused too
    (other / "target").mkdir()
    link_top = tmp_path / "tmp3"
    link_top.mkdir()
    (link_top / f"mtpoold-{os.getuid()}").symlink_to(other / "target")
    monkeypatch.setattr("tempfile.tempdir", str(link_top))
    with pytest.raises(PermissionError, match=r"is not a directory \(or is a symlink\)"):
        runtime_lock_dir({})


def test_SessionLock_for_session_text_meets_across_state_dirs_and_never_names_the_text(
    tmp_path: Path,
) -> None:
    from mtpoold._sessionlock import session_text_key

    text = "1BVtsOsecretsecretsecretsecret"
    key = session_text_key(text)
    assert len(key) == 32 and key == session_text_key(f"  {text}\n")
    first = SessionLock.for_session_text("acc-1", text, lock_dir=tmp_path)
    assert first.lock_path == tmp_path / f"{key}.lock"
    with first:
        second = SessionLock.for_session_text("other", text, lock_dir=tmp_path)
        with pytest.raises(SessionLocked) as info:
            second.acquire()
    assert str(info.value) == (
        f'account "other": string session (lock {tmp_path}/{key}.lock) is in use by PID'
        f" {os.getpid()}"
    )
    assert text not in str(info.value) and text not in repr(info.value)
    assert stat.S_IMODE(os.stat(first.lock_path).st_mode) == 0o600
