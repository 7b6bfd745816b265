from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from mtpoold._store import (
    ACCOUNT_TABLES,
    MAX_ERROR_MESSAGE_CHARS,
    MIGRATIONS,
    SCHEMA_VERSION,
    StateStore,
    StoredAccount,
    StoredPeer,
    StoredProxy,
    StoredState,
)

STAMP = r"\d{8}T\d{6}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sample_account(id: str = "acc-1") -> StoredAccount:
    return StoredAccount(
        id=id,
        cooldown_until_unix=1_900_000_000.5,
        disabled_reason=None,
        disabled_at_unix=None,
        failures_by_class={"FLOOD_WAIT": 2, "GENERIC": 1},
        last_error_class="FLOOD_WAIT",
        last_error_message="A wait of 37 seconds is required",
        calls_ok=10,
        calls_failed=3,
        last_used_unix=1_899_999_000.25,
    )


def raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.sqlite3"


# -- basics ------------------------------------------------------------------------------------


def test_StateStore_round_trip(db_path: Path) -> None:
    acc = sample_account()
    disabled = StoredAccount(
        id="acc-2", disabled_reason="session revoked", disabled_at_unix=1_800_000_000.0
    )
    proxy = StoredProxy(
        key="0123456789abcdef", cooldown_until_unix=1_900_000_100.0, consecutive_failures=4
    )
    with StateStore.open(db_path) as store:
        assert store.path == db_path
        assert store.moved_aside_to is None
        assert store.load() == StoredState(accounts={}, proxies={})
        store.save_account(acc)
        store.save_account(disabled)
        store.save_proxy(proxy)
        store.save_proxy(StoredProxy(key="no_proxy"))
        expected = StoredState(
            accounts={"acc-1": acc, "acc-2": disabled},
            proxies={"0123456789abcdef": proxy, "no_proxy": StoredProxy(key="no_proxy")},
        )
        assert store.load() == expected
    with StateStore.open(db_path) as store:
        assert store.load() == expected


def test_StateStore_upsert_replaces(db_path: Path) -> None:
    with StateStore.open(db_path) as store:
        store.save_account(sample_account())
        cleared = StoredAccount(
            id="acc-1", calls_ok=11, calls_failed=3, failures_by_class={"FLOOD_WAIT": 2}
        )
        store.save_account(cleared)
        store.save_proxy(StoredProxy(key="k", cooldown_until_unix=5.0, consecutive_failures=1))
        store.save_proxy(StoredProxy(key="k"))
        assert store.load() == StoredState(
            accounts={"acc-1": cleared}, proxies={"k": StoredProxy(key="k")}
        )


def test_StateStore_wal_and_pragmas(db_path: Path) -> None:
    with StateStore.open(db_path) as store:
        store.save_account(sample_account())
        assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
        assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert raw(db_path, "SELECT value FROM meta WHERE key = 'application'") == [("mtpoold",)]
        db = store._db()
        assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_StateStore_permissions_fresh(db_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with StateStore.open(db_path) as store:
            store.save_account(sample_account())
            assert mode(db_path.parent) == 0o700
            assert mode(db_path) == 0o600
            assert mode(db_path.with_name(db_path.name + "-wal")) == 0o600
            assert mode(db_path.with_name(db_path.name + "-shm")) == 0o600
    finally:
        os.umask(old)


def test_StateStore_permissions_tightened_with_warning(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StateStore.open(db_path):
        pass
    os.chmod(db_path.parent, 0o755)
    os.chmod(db_path, 0o644)
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        assert store.load() == StoredState()
    assert mode(db_path.parent) == 0o700
    assert mode(db_path) == 0o600
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(db_path.parent) in m and "0755" in m for m in messages)
    assert any(str(db_path) in m and "0644" in m for m in messages)


def test_StateStore_closed(db_path: Path) -> None:
    store = StateStore.open(db_path)
    assert "open" in repr(store)
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(RuntimeError, match=rf"^state store {re.escape(str(db_path))} is closed$"):
        store.load()


def test_StateStore_saves_without_a_full_sync_per_write(db_path: Path) -> None:
    """What keeps a save well under a millisecond, checked without a clock (speed goals live
    in bench/): WAL with ``synchronous = NORMAL``, so a commit does not fsync the database."""
    with StateStore.open(db_path) as store:
        acc = sample_account()
        for i in range(50):
            store.save_account(StoredAccount(id=f"acc-{i % 20}", calls_ok=i))
            store.save_account(acc)
        conn = store._db()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert store.load().accounts["acc-19"].calls_ok == 39


# -- redaction ---------------------------------------------------------------------------------


def test_StateStore_redacts_and_bounds_error_message(db_path: Path) -> None:
    token = "1BVtsOKABu" + "Qx9zR4mP2kLw7NcY" * 4
    hexkey = "0123456789abcdef" * 2
    with StateStore.open(db_path) as store:
        store.save_account(
            StoredAccount(id="a", last_error_message=f"bad session {token} hash {hexkey}")
        )
        store.save_account(StoredAccount(id="b", last_error_message="x " * 5000))
        state = store.load()
    assert state.accounts["a"].last_error_message == "bad session [redacted] hash [redacted]"
    msg_b = state.accounts["b"].last_error_message
    assert msg_b is not None and len(msg_b) == MAX_ERROR_MESSAGE_CHARS


# -- durability --------------------------------------------------------------------------------

_WRITER = """
import sys, time
from mtpoold._store import StateStore, StoredAccount
store = StateStore.open(sys.argv[1])
store.save_account(StoredAccount(id="acc-9", cooldown_until_unix=float(sys.argv[2]),
                                 failures_by_class={"FLOOD_WAIT": 1},
                                 last_error_class="FLOOD_WAIT", calls_failed=1))
print("saved", flush=True)
time.sleep(60)
"""


def test_StateStore_cooldown_survives_sigkill(db_path: Path) -> None:
    cooldown_until_unix = time.time() + 3600.0
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_path), repr(cooldown_until_unix)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "saved\n"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert db_path.with_name(db_path.name + "-wal").stat().st_size > 0  # not checkpointed
    with StateStore.open(db_path) as store:
        acc = store.load().accounts["acc-9"]
    assert acc.cooldown_until_unix == cooldown_until_unix
    assert acc.failures_by_class == {"FLOOD_WAIT": 1}
    assert acc.last_error_class == "FLOOD_WAIT"


def test_StateStore_cooldown_survives_close_and_reopen(db_path: Path) -> None:
    store = StateStore.open(db_path)
    store.save_account(StoredAccount(id="acc-1", cooldown_until_unix=1_900_000_037.0))
    store.close()
    with StateStore.open(db_path) as store:
        assert store.load().accounts["acc-1"].cooldown_until_unix == 1_900_000_037.0


# -- bad files ---------------------------------------------------------------------------------


def assert_moved_aside(
    db_path: Path, caplog: pytest.LogCaptureFixture, kind: str, store: StateStore
) -> Path:
    moved = store.moved_aside_to
    assert moved is not None
    assert re.fullmatch(rf"{re.escape(db_path.name)}\.{kind}-{STAMP}", moved.name)
    assert moved.parent == db_path.parent
    assert moved.exists()
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name == "mtpoold._store"
    ]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "\n" not in message
    assert message.startswith("event=state_store_reset ")
    fields = warnings[0].msg.fields
    assert fields["path"] == str(db_path) and fields["moved_to"] == str(moved)
    assert "started a fresh store" in str(fields["note"])
    # and the fresh store works
    assert store.load() == StoredState()
    store.save_account(sample_account())
    assert store.load().accounts["acc-1"] == sample_account()
    assert mode(db_path) == 0o600
    return moved


def test_StateStore_garbage_file_moved_aside(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir(mode=0o700)
    garbage = os.urandom(8192)
    db_path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        moved = assert_moved_aside(db_path, caplog, "corrupt", store)
    assert moved.read_bytes() == garbage
    assert "is corrupt (file is not a database)" in caplog.text


def _populated(db_path: Path, n: int = 300) -> None:
    with StateStore.open(db_path) as store:
        for i in range(n):
            store.save_account(sample_account(f"acc-{i:04d}"))
    assert not db_path.with_name(db_path.name + "-wal").exists()  # checkpointed on close


@pytest.mark.parametrize("keep", [50, 100, 0.5], ids=["header-only", "first-page", "half"])
def test_StateStore_truncated_file_moved_aside(
    db_path: Path, caplog: pytest.LogCaptureFixture, keep: float
) -> None:
    _populated(db_path)
    data = db_path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    db_path.write_bytes(data[:cut])
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        assert_moved_aside(db_path, caplog, "corrupt", store)
    assert "is corrupt" in caplog.text


def test_StateStore_stale_wal_moved_with_file(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir(mode=0o700)
    db_path.write_bytes(os.urandom(4096))
    wal = db_path.with_name(db_path.name + "-wal")
    wal.write_bytes(b"old wal")
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        moved = assert_moved_aside(db_path, caplog, "corrupt", store)
        # SQLite itself discards a WAL that cannot belong to the file when it closes the probe
        # connection; if it is still there, it went along with the file. Never into the fresh
        # store.
        moved_wal = moved.with_name(moved.name + "-wal")
        assert not moved_wal.exists() or moved_wal.read_bytes() == b"old wal"
        assert not wal.exists() or wal.read_bytes() != b"old wal"


def test_StateStore_foreign_sqlite_moved_aside(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir(mode=0o700)
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("CREATE TABLE sessions (dc_id INTEGER, auth_key BLOB)")
        conn.execute("INSERT INTO sessions VALUES (2, x'00')")
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        moved = assert_moved_aside(db_path, caplog, "foreign", store)
    assert raw(moved, "SELECT dc_id FROM sessions") == [(2,)]
    assert "another application's SQLite database (tables sessions)" in caplog.text


def test_StateStore_foreign_sqlite_with_version_and_meta(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir(mode=0o700)
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('application', 'someone-else')")
        conn.execute("PRAGMA user_version = 1")
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        assert_moved_aside(db_path, caplog, "foreign", store)
    assert "meta.application is 'someone-else', not 'mtpoold'" in caplog.text


def test_StateStore_foreign_meta_of_other_shape(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir(mode=0o700)
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("CREATE TABLE meta (name TEXT)")
        conn.execute("PRAGMA user_version = 3")
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        assert_moved_aside(db_path, caplog, "foreign", store)


def test_StateStore_newer_schema_moved_aside(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StateStore.open(db_path) as store:
        store.save_account(sample_account())
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        moved = assert_moved_aside(db_path, caplog, "foreign", store)
    assert f"has schema version {SCHEMA_VERSION + 1}, newer than this mtpoold knows" in caplog.text
    assert raw(moved, "SELECT id FROM accounts") == [("acc-1",)]


def test_StateStore_move_aside_never_overwrites(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved: list[Path] = []
    for _ in range(3):  # same second: .n suffixes
        db_path.parent.mkdir(mode=0o700, exist_ok=True)
        db_path.write_bytes(os.urandom(2048))
        with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
            assert store.moved_aside_to is not None
            moved.append(store.moved_aside_to)
        db_path.unlink()
        for side in ("-wal", "-shm"):
            db_path.with_name(db_path.name + side).unlink(missing_ok=True)
    assert len(set(moved)) == 3
    assert all(p.exists() for p in moved)


def test_StateStore_path_is_a_directory(db_path: Path) -> None:
    db_path.mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"exists and is not a regular file$"):
        StateStore.open(db_path)
    assert db_path.is_dir()


# -- migrations --------------------------------------------------------------------------------


def test_StateStore_migrates_v0_file(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Version 0: an empty SQLite file (what an interrupted first start leaves behind).
    db_path.parent.mkdir(mode=0o700)
    db_path.write_bytes(b"")
    os.chmod(db_path, 0o600)
    with caplog.at_level(logging.WARNING), StateStore.open(db_path) as store:
        assert store.moved_aside_to is None
        store.save_account(sample_account())
    assert caplog.records == []
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def _v2_add_notes(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE accounts ADD COLUMN notes TEXT NOT NULL DEFAULT ''")
    conn.execute("UPDATE accounts SET notes = 'migrated'")


def test_StateStore_migrates_older_version_keeping_rows(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), StateStore.open(db_path) as store:  # the v1 code
        store.save_account(sample_account())
        store.save_proxy(StoredProxy(key="k", consecutive_failures=2))
    # a fresh store is created at the latest schema without "migrated" lines
    assert not [r for r in caplog.records if "state_store_migrated" in r.getMessage()]
    with (
        caplog.at_level(logging.INFO),
        StateStore.open(db_path, migrations=(*MIGRATIONS, _v2_add_notes)) as store,
    ):
        assert store.moved_aside_to is None
        assert store.load() == StoredState(
            accounts={"acc-1": sample_account()},
            proxies={"k": StoredProxy(key="k", consecutive_failures=2)},
        )
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert raw(db_path, "SELECT id, notes FROM accounts") == [("acc-1", "migrated")]
    migrated = [r.getMessage() for r in caplog.records if "state_store_migrated" in r.getMessage()]
    assert len(migrated) == 1 and f"schema_to={SCHEMA_VERSION + 1}" in migrated[0], migrated


def test_StateStore_failed_migration_rolls_back(db_path: Path) -> None:
    with StateStore.open(db_path) as store:
        store.save_account(sample_account())

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE accounts ADD COLUMN half TEXT")
        raise ValueError("bug in migration")

    with pytest.raises(ValueError, match=r"^bug in migration$"):
        StateStore.open(db_path, migrations=(*MIGRATIONS, _v2_add_notes, broken))
    # step 1 -> 2 committed, step 2 -> 3 rolled back; nothing moved aside
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    columns = [row[1] for row in raw(db_path, "PRAGMA table_info(accounts)")]
    assert "notes" in columns and "half" not in columns
    assert list(db_path.parent.glob("*.corrupt-*")) == []


# -- orphans and forget ------------------------------------------------------------------------


def test_StateStore_keeps_orphans_and_forgets_on_request(db_path: Path) -> None:
    with StateStore.open(db_path) as store:
        store.save_account(sample_account("in-config"))
        store.save_account(sample_account("removed-from-config"))
    with StateStore.open(db_path) as store:
        # the pool starts with only "in-config"; the other row is still there
        assert set(store.load().accounts) == {"in-config", "removed-from-config"}
        assert store.forget_account("removed-from-config") is True
        assert store.forget_account("removed-from-config") is False
        assert store.forget_account("never-existed") is False
        assert set(store.load().accounts) == {"in-config"}
    with StateStore.open(db_path) as store:
        assert set(store.load().accounts) == {"in-config"}


def test_StateStore_forgets_every_row_of_an_account_and_lists_every_table(
    db_path: Path,
) -> None:
    """forget_account deletes the account from every table with rows per account, and
    account_ids sees an account whatever table alone holds it (orphans with only peers)."""
    with StateStore.open(db_path) as store:
        for acc in ("gone", "kept"):
            store.save_account(sample_account(acc))
            store.save_peers([StoredPeer(acc, "channel", 2001, 7, "news", 1.0)])
            store.save_class_cooldown(acc, "resolve", time.time() + 3600, "FLOOD_WAIT")
            store.add_budget_spends([(acc, "resolve", time.time())])
            store.first_seen([acc], time.time())
            store.save_chat_cooldown(acc, "username:chat", time.time() + 300, "SLOWMODE")
        store.save_peers([StoredPeer("only-peers", "user", 5, 9, None, 1.0)])
        store.add_budget_spends([("only-spends", "resolve", time.time())])
        assert store.account_ids() == {"gone", "kept", "only-peers", "only-spends"}
        assert store.forget_account("gone") is True
        assert store.forget_account("only-peers") is True
        assert store.forget_account("gone") is False
        assert store.account_ids() == {"kept", "only-spends"}
    for table, column in ACCOUNT_TABLES:
        rows = raw(db_path, f"SELECT DISTINCT {column} FROM {table}")
        assert ("gone",) not in rows and ("only-peers",) not in rows, table
        assert table == "accounts" or ("kept",) in rows, table
    tables = {r[0] for r in raw(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    columns = {
        t: {c[1] for c in raw(db_path, f"PRAGMA table_info({t})")} for t in tables
    }  # every table keyed by an account is listed (a new one must be added)
    keyed = {t for t, cs in columns.items() if "account_id" in cs} | {"accounts"}
    assert keyed == {t for t, _ in ACCOUNT_TABLES}


def test_StateStore_chat_cooldowns_round_trip_expire_and_clear(db_path: Path) -> None:
    now = time.time()
    with StateStore.open(db_path) as store:
        store.save_chat_cooldown("a1", "username:chat", now + 300, "FLOOD_WAIT: SLOWMODE_WAIT_300")
        store.save_chat_cooldown("a1", "channel_id:5", now - 1, "over")
        store.save_chat_cooldown("a2", "username:chat", now + 30, "")
    with StateStore.open(db_path) as store:
        loaded = store.load_chat_cooldowns(now)
        assert loaded == {
            "a1": {"username:chat": (now + 300, "FLOOD_WAIT: SLOWMODE_WAIT_300")},
            "a2": {"username:chat": (now + 30, "")},
        }
        store.save_chat_cooldown("a2", "username:chat", None)
        store.forget_chat_cooldowns("a1")
        assert store.load_chat_cooldowns(now) == {}


def test_StateStore_unreadable_failure_counters(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StateStore.open(db_path) as store:
        store.save_account(sample_account())
        store._db().execute("UPDATE accounts SET failures_by_class = 'not json'")
        with caplog.at_level(logging.WARNING):
            assert store.load().accounts["acc-1"].failures_by_class == {}
    assert "event=state_store_counters_unreadable" in caplog.text
    assert "account=acc-1" in caplog.text
