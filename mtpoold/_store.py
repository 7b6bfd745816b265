"""The state store: what the pool must remember across restarts, in one SQLite file.

Per account: cooldown (a FLOOD_WAIT must survive a restart, or the daemon walks straight back
into it), disabled flag, failure counters, last error, call counters, last use. Per proxy lane:
cooldown and consecutive failures. Nothing secret is stored; error messages are redacted again
on the way in.

Durability and speed: the file is in WAL mode with ``synchronous=NORMAL``. Every save is one
small autocommitted statement: it is on disk (in the WAL, in the OS page cache) when the call
returns, so it survives the daemon being killed at any point; a power loss may lose the last
few saves but never corrupts the file. A save takes tens of microseconds — well under a
millisecond — with no fsync, so the methods are sync and are called directly from the trio
thread.

Robustness: a file that is not a database, is truncated or corrupt, belongs to another
application, or has a schema version newer than this code knows is moved aside
(``<name>.corrupt-YYYYmmddTHHMMSS`` / ``<name>.foreign-YYYYmmddTHHMMSS``, UTC) with a warning,
and a fresh store is started: losing cooldowns is better than a daemon in a crash loop.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, cast, final

import attrs

from ._errors import redact
from ._logformat import log_event
from ._secrets import PRIVATE_FILE_MODE, ensure_private_dir, ensure_private_file

__all__ = [
    "ACCOUNT_TABLES",
    "APPLICATION",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StateStore",
    "StoredAccount",
    "StoredPeer",
    "StoredProxy",
    "StoredState",
]

logger = logging.getLogger(__name__)

APPLICATION: Final = "mtpoold"  # meta.application: how we recognise our own file
MAX_ERROR_MESSAGE_CHARS: Final = 1000  # last_error_message is cut to this many characters
BUSY_TIMEOUT_MS: Final = 250  # only if someone else (a sqlite3 shell) holds the write lock
_SIDECAR_SUFFIXES: Final = ("-wal", "-shm", "-journal")
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


# --- records ----------------------------------------------------------------------------------


@attrs.frozen
class StoredAccount:
    """One account's persisted state. Times are UNIX seconds, UTC (``time.time()``): the
    ``_unix`` names. The SQLite columns keep their names (``cooldown_until``, ``disabled_at``,
    ``last_used``): the schema did not change.

    Attributes:
        id: The account id from the config.
        cooldown_until_unix: Not schedulable before this time; None if not cooling down.
        disabled_reason: Why the account is disabled; None if enabled.
        disabled_at_unix: When it was disabled; None if enabled.
        failures_by_class: Failure count per `ErrorClass` value, e.g. ``{"FLOOD_WAIT": 3}``.
        last_error_class: `ErrorClass` value of the last failure, or None.
        last_error_message: Redacted message of the last failure, or None.
        calls_ok: Calls that succeeded, ever.
        calls_failed: Calls that failed, ever.
        last_used_unix: When the account last made a call; None if never.
    """

    id: str
    cooldown_until_unix: float | None = None
    disabled_reason: str | None = None
    disabled_at_unix: float | None = None
    failures_by_class: dict[str, int] = attrs.field(factory=dict)
    last_error_class: str | None = None
    last_error_message: str | None = None
    calls_ok: int = 0
    calls_failed: int = 0
    last_used_unix: float | None = None


@attrs.frozen
class StoredProxy:
    """One proxy lane's persisted state.

    Attributes:
        key: `proxy_key()` of the proxy (``"no_proxy"`` for direct connections).
        cooldown_until_unix: Lane not usable before this time (UNIX seconds, UTC); None if not
            cooling down.
        consecutive_failures: Failures since the last success (drives the backoff).
    """

    key: str
    cooldown_until_unix: float | None = None
    consecutive_failures: int = 0


@attrs.frozen
class StoredState:
    """Everything in the store, as `StateStore.load` returns it.

    Attributes:
        accounts: By account id, including accounts no longer in the config (orphans).
        proxies: By proxy key.
    """

    accounts: dict[str, StoredAccount] = attrs.field(factory=dict)
    proxies: dict[str, StoredProxy] = attrs.field(factory=dict)


@attrs.frozen
class StoredPeer:
    """One peer an account has seen with its access hash (the peer memory,
    `mtpoold._peermemory`). Never a name, phone number or message text.

    Attributes:
        account_id: The account that saw it (access hashes belong to the user it logs in as).
        kind: ``"user"`` or ``"channel"`` (channels and supergroups), or ``"self"``: the
            user the account logs in as (``access_hash`` 0, no username), whose peers these
            are.
        peer_id: The bare Telegram id (not marked).
        access_hash: The hash the account presents in ``InputPeerUser`` / ``InputPeerChannel``.
        username: The active username in lower case, or None.
        seen_unix: When it was last seen in a result, UNIX seconds.
    """

    account_id: str
    kind: str
    peer_id: int
    access_hash: int
    username: str | None
    seen_unix: float


# --- schema -----------------------------------------------------------------------------------

Migration = Callable[[sqlite3.Connection], None]


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """Version 1: meta, accounts, proxies."""
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)")
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('application', ?), ('created_at', ?)",
        (APPLICATION, datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")),
    )
    conn.execute(
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY NOT NULL,
            cooldown_until REAL,
            disabled_reason TEXT,
            disabled_at REAL,
            failures_by_class TEXT NOT NULL DEFAULT '{}',  -- JSON object: class -> count
            last_error_class TEXT,
            last_error_message TEXT,
            calls_ok INTEGER NOT NULL DEFAULT 0,
            calls_failed INTEGER NOT NULL DEFAULT 0,
            last_used REAL,
            updated_at REAL NOT NULL
        )"""
    )
    conn.execute(
        """CREATE TABLE proxies (
            key TEXT PRIMARY KEY NOT NULL,
            cooldown_until REAL,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        )"""
    )


def _migrate_add_peers(conn: sqlite3.Connection) -> None:
    """Peer memory: every account's peers with their access hashes (`StoredPeer`)."""
    conn.execute(
        """CREATE TABLE peers (
            account_id TEXT NOT NULL,
            kind TEXT NOT NULL,  -- 'user', 'channel', 'self'
            peer_id INTEGER NOT NULL,  -- bare Telegram id
            access_hash INTEGER NOT NULL,
            username TEXT,  -- lower case; never names, phone numbers or text
            seen_unix REAL NOT NULL,
            PRIMARY KEY (account_id, kind, peer_id)
        ) WITHOUT ROWID"""
    )


def _migrate_add_rate_classes(conn: sqlite3.Connection) -> None:
    """Version 3 (rate classes): per-class FLOOD_WAIT cooldowns, budget spends and
    when each account was first seen (the warm-up ramp). Times are UNIX seconds."""
    conn.execute(
        """CREATE TABLE class_cooldowns (
            account_id TEXT NOT NULL,
            rate_class TEXT NOT NULL,
            cooldown_until REAL NOT NULL,
            cause TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (account_id, rate_class)
        )"""
    )
    conn.execute(
        """CREATE TABLE budget_spends (
            account_id TEXT NOT NULL,
            rate_class TEXT NOT NULL,
            at REAL NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX budget_spends_at ON budget_spends (at)")
    conn.execute(
        """CREATE TABLE account_first_seen (
            account_id TEXT PRIMARY KEY NOT NULL,
            first_seen REAL NOT NULL
        )"""
    )


def _migrate_add_chat_cooldowns(conn: sqlite3.Connection) -> None:
    """Version 4: SLOWMODE_WAIT cooldowns per (account, chat). ``peer_key`` is the chat's
    `mtpoold._links.peer_key` (a username or an id; phone numbers have none). UNIX seconds."""
    conn.execute(
        """CREATE TABLE chat_cooldowns (
            account_id TEXT NOT NULL,
            peer_key TEXT NOT NULL,
            cooldown_until REAL NOT NULL,
            cause TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (account_id, peer_key)
        )"""
    )


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _migrate_0_to_1,
    _migrate_add_peers,
    _migrate_add_rate_classes,
    _migrate_add_chat_cooldowns,
)
"""``MIGRATIONS[n]`` turns a schema-version-n file into version n+1, inside one transaction.

Append a function to change the schema; never edit a released one. Version 0 is an empty file.
"""
SCHEMA_VERSION: Final = len(MIGRATIONS)

#: Every table with rows per account and its account-id column: what
#: `StateStore.forget_account` deletes and `StateStore.account_ids` reads. A migration that
#: adds such a table appends it here.
ACCOUNT_TABLES: Final[tuple[tuple[str, str], ...]] = (
    ("accounts", "id"),
    ("peers", "account_id"),
    ("class_cooldowns", "account_id"),
    ("budget_spends", "account_id"),
    ("account_first_seen", "account_id"),
    ("chat_cooldowns", "account_id"),
)


class _Unusable(Exception):
    """The file cannot be used as our store; it must be moved aside."""

    def __init__(self, kind: Literal["corrupt", "foreign"], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# --- the store --------------------------------------------------------------------------------


@final
@attrs.define(eq=False, repr=False)
class StateStore:
    """The daemon's persistent state, in one SQLite file in the state directory.

    Open with `StateStore.open`. All methods are sync and quick (one small transaction, no
    fsync in WAL with ``synchronous=NORMAL``; well under a millisecond) and are meant to be
    called from the trio thread, the one that opened the store. Usable as a context manager,
    which closes it.

    Rows for accounts that are no longer in the config are kept (the pool reports them as
    orphaned); `forget_account` is the only way to delete one.

    Attributes:
        path: The database file (for `statistics()` and logs).
        moved_aside_to: Where `open` moved an unusable file before starting fresh, else None.
    """

    path: Path
    _conn: sqlite3.Connection | None = attrs.field(alias="conn")
    moved_aside_to: Path | None = None

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, migrations: Sequence[Migration] = MIGRATIONS
    ) -> StateStore:
        """Open the store at `path`, creating or migrating it as needed.

        The directory is created 0700 if missing, the file 0600; group/world access on an
        existing directory or file is removed with a warning. The file is put in WAL mode and
        migrated to the newest schema version, one transaction per step.

        A file that can't be ours — not a database, truncated or otherwise corrupt, another
        application's SQLite database, or a schema version newer than `migrations` knows — is
        renamed to ``<name>.corrupt-YYYYmmddTHHMMSS`` or ``<name>.foreign-YYYYmmddTHHMMSS``
        (UTC; with its ``-wal``/``-shm`` files), a one-line warning naming the new path is
        logged, and a fresh store is created in its place.

        Args:
            path: The database file, e.g. ``<state_dir>/state.sqlite3``.
            migrations: The schema migrations; only tests pass anything but `MIGRATIONS`.

        Returns:
            The open store.

        Raises:
            FileExistsError: if `path` exists and is not a regular file.
            OSError: if the directory or file cannot be created.
            sqlite3.Error: if SQLite fails for a reason other than a bad file (disk full,
                permission denied, locked by another process past `BUSY_TIMEOUT_MS`), or a
                migration fails; the file is left as it was.
        """
        p = Path(path)
        ensure_private_dir(p.parent)
        try:
            return cls(p, _connect(p, migrations))
        except _Unusable as exc:
            moved = _move_aside(p, exc.kind)
            log_event(
                logger,
                logging.WARNING,
                "state_store_reset",
                path=str(p),
                reason=exc.reason,
                moved_to=str(moved),
                note="started a fresh store: cooldowns and counters start from zero",
            )
        return cls(p, _connect(p, migrations), moved)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"state store {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction (the connection autocommits otherwise): committed when the block
        ends, rolled back when it raises."""
        db = self._db()
        db.execute("BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self._conn is None

    def load(self) -> StoredState:
        """Read everything, in one consistent snapshot.

        Meant for startup (and reload): its cost grows with the number of rows (about 1 ms
        for 200 accounts), unlike the saves.

        Returns:
            All accounts (including orphans) and proxies.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        with self._transaction() as db:
            account_rows = db.execute(
                "SELECT id, cooldown_until, disabled_reason, disabled_at, failures_by_class,"
                " last_error_class, last_error_message, calls_ok, calls_failed, last_used"
                " FROM accounts ORDER BY id"
            ).fetchall()
            proxy_rows = db.execute(
                "SELECT key, cooldown_until, consecutive_failures FROM proxies ORDER BY key"
            ).fetchall()
        accounts = {
            row[0]: StoredAccount(
                id=row[0],
                cooldown_until_unix=row[1],
                disabled_reason=row[2],
                disabled_at_unix=row[3],
                failures_by_class=self._decode_failures(row[0], row[4]),
                last_error_class=row[5],
                last_error_message=row[6],
                calls_ok=row[7],
                calls_failed=row[8],
                last_used_unix=row[9],
            )
            for row in account_rows
        }
        proxies = {
            row[0]: StoredProxy(key=row[0], cooldown_until_unix=row[1], consecutive_failures=row[2])
            for row in proxy_rows
        }
        return StoredState(accounts=accounts, proxies=proxies)

    def _decode_failures(self, account_id: str, text: str) -> dict[str, int]:
        try:
            value = json.loads(text)
            if isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, int) for k, v in value.items()
            ):
                return cast(dict[str, int], value)
        except ValueError:
            pass
        log_event(
            logger,
            logging.WARNING,
            "state_store_counters_unreadable",
            path=str(self.path),
            account=account_id,
            note="failure counters start at zero",
        )
        return {}

    def save_account(self, state: StoredAccount) -> None:
        """Insert or replace one account's row, committed when this returns.

        `last_error_message` is redacted again (long base64/hex runs become ``[redacted]``),
        made one line and cut to `MAX_ERROR_MESSAGE_CHARS`, so what `load` returns may differ
        from what was saved.

        Args:
            state: The account's complete state.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        message = state.last_error_message
        if message is not None:
            message = redact(message, limit=MAX_ERROR_MESSAGE_CHARS)
        self._db().execute(
            "INSERT INTO accounts (id, cooldown_until, disabled_reason, disabled_at,"
            " failures_by_class, last_error_class, last_error_message, calls_ok, calls_failed,"
            " last_used, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET cooldown_until = excluded.cooldown_until,"
            " disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at,"
            " failures_by_class = excluded.failures_by_class,"
            " last_error_class = excluded.last_error_class,"
            " last_error_message = excluded.last_error_message, calls_ok = excluded.calls_ok,"
            " calls_failed = excluded.calls_failed, last_used = excluded.last_used,"
            " updated_at = excluded.updated_at",
            (
                state.id,
                state.cooldown_until_unix,
                state.disabled_reason,
                state.disabled_at_unix,
                json.dumps(state.failures_by_class, sort_keys=True, separators=(",", ":")),
                state.last_error_class,
                message,
                state.calls_ok,
                state.calls_failed,
                state.last_used_unix,
                time.time(),
            ),
        )

    def save_proxy(self, state: StoredProxy) -> None:
        """Insert or replace one proxy lane's row, committed when this returns.

        Args:
            state: The lane's complete state.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        self._db().execute(
            "INSERT INTO proxies (key, cooldown_until, consecutive_failures, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " cooldown_until = excluded.cooldown_until,"
            " consecutive_failures = excluded.consecutive_failures,"
            " updated_at = excluded.updated_at",
            (state.key, state.cooldown_until_unix, state.consecutive_failures, time.time()),
        )

    def rename_proxies(self, renames: Mapping[str, str]) -> int:
        """Move proxy rows to new keys, in one transaction: the migration of rows saved under
        an older proxy key (``docs/ARCHITECTURE.md``, "Where the PHP system's numbers went")
        to `mtpoold._config.proxy_key` (the proxy's name).

        A row under an old key moves to its new key unless a row is already there (the
        newer one wins; the old row is deleted). Old keys without a row are skipped.

        Args:
            renames: ``{old key: new key}``.

        Returns:
            How many rows were moved.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error (nothing was changed).
        """
        moved = 0
        with self._transaction() as db:
            for old, new in renames.items():
                if old == new:
                    continue
                taken = db.execute("SELECT 1 FROM proxies WHERE key = ?", (new,)).fetchone()
                if taken:
                    db.execute("DELETE FROM proxies WHERE key = ?", (old,))
                    continue
                cursor = db.execute("UPDATE proxies SET key = ? WHERE key = ?", (new, old))
                moved += cursor.rowcount
        return moved

    def forget_account(self, account_id: str) -> bool:
        """Delete everything the store keeps for an account — its row, peers, class
        cooldowns, budget spends, first-seen time (every table of `ACCOUNT_TABLES`) — in one
        transaction; the only way an account's row is ever deleted.

        Args:
            account_id: The account id.

        Returns:
            True if there was a row to delete in any of those tables.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error (nothing was deleted).
        """
        db = self._db()
        deleted = 0
        db.execute("BEGIN")
        try:
            for table, column in ACCOUNT_TABLES:
                deleted += db.execute(
                    f"DELETE FROM {table} WHERE {column} = ?",  # table names are ours
                    (account_id,),
                ).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return deleted > 0

    def account_ids(self) -> set[str]:
        """Every account id the store holds anything for, in any table of `ACCOUNT_TABLES`
        (an account with only peers or budget spends included): what orphans are found from.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        union = " UNION ".join(f"SELECT {c} FROM {t}" for t, c in ACCOUNT_TABLES)
        return {row[0] for row in self._db().execute(union)}  # table names are ours

    # -- peers (the peer memory, `mtpoold._peermemory`) --------------------------------------

    def load_peers(self) -> list[StoredPeer]:
        """Every account's stored peers, ordered by account, kind and id.

        Meant for startup: its cost grows with the rows (a few ms per 10,000).

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        rows = self._db().execute(
            "SELECT account_id, kind, peer_id, access_hash, username, seen_unix FROM peers"
            " ORDER BY account_id, kind, peer_id"
        )
        return [StoredPeer(*row) for row in rows]

    def save_peers(self, peers: Sequence[StoredPeer]) -> None:
        """Insert or replace peers (by account, kind and id), in one transaction.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error (nothing was saved).
        """
        if not peers:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO peers (account_id, kind, peer_id, access_hash, username, seen_unix)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, kind, peer_id) DO UPDATE"
                " SET access_hash = excluded.access_hash, username = excluded.username,"
                " seen_unix = excluded.seen_unix",
                [
                    (p.account_id, p.kind, p.peer_id, p.access_hash, p.username, p.seen_unix)
                    for p in peers
                ],
            )

    def forget_peer(self, account_id: str, kind: str, peer_id: int) -> bool:
        """Delete one stored peer of an account; True if there was one.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        cur = self._db().execute(
            "DELETE FROM peers WHERE account_id = ? AND kind = ? AND peer_id = ?",
            (account_id, kind, peer_id),
        )
        return cur.rowcount > 0

    def forget_peers(self, account_id: str) -> int:
        """Delete every stored peer of an account; how many there were.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        cur = self._db().execute("DELETE FROM peers WHERE account_id = ?", (account_id,))
        return cur.rowcount

    # -- rate classes: cooldowns per class, budget spends, first seen (issue 12) ---------------

    def save_class_cooldown(
        self, account_id: str, rate_class: str, until_unix: float | None, cause: str = ""
    ) -> None:
        """Set (``until_unix``: UNIX s) or delete (None) one (account, rate class) cooldown.

        ``cause`` is redacted and cut like an error message (an RPC error name, e.g.
        ``"FLOOD_WAIT: FLOOD_WAIT_86400 (420) ..."``).

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        self._save_cooldown(
            "class_cooldowns", "rate_class", account_id, rate_class, until_unix, cause
        )

    def load_class_cooldowns(self, now_unix: float) -> dict[str, dict[str, tuple[float, str]]]:
        """The cooldowns still running at ``now_unix`` (UNIX s): ``{account: {class:
        (until_unix, cause)}}``; those over are deleted."""
        db = self._db()
        db.execute("DELETE FROM class_cooldowns WHERE cooldown_until <= ?", (now_unix,))
        out: dict[str, dict[str, tuple[float, str]]] = {}
        for acc, cls, until_unix, cause in db.execute(
            "SELECT account_id, rate_class, cooldown_until, cause FROM class_cooldowns"
        ):
            out.setdefault(acc, {})[cls] = (until_unix, cause)
        return out

    def save_chat_cooldown(
        self, account_id: str, peer_key: str, until_unix: float | None, cause: str = ""
    ) -> None:
        """Set (``until_unix``: UNIX s) or delete (None) one (account, chat) SLOWMODE_WAIT
        cooldown; ``cause`` redacted and cut as in `save_class_cooldown`.

        Raises:
            RuntimeError: if the store is closed.
            sqlite3.Error: on a database error.
        """
        self._save_cooldown("chat_cooldowns", "peer_key", account_id, peer_key, until_unix, cause)

    def _save_cooldown(
        self,
        table: Literal["class_cooldowns", "chat_cooldowns"],
        column: Literal["rate_class", "peer_key"],
        account_id: str,
        key: str,
        until_unix: float | None,
        cause: str,
    ) -> None:
        """Upsert or delete one row of a per-(account, key) cooldown table."""
        db = self._db()
        if until_unix is None:
            db.execute(
                f"DELETE FROM {table} WHERE account_id = ? AND {column} = ?", (account_id, key)
            )
            return
        db.execute(
            f"INSERT INTO {table} (account_id, {column}, cooldown_until, cause)"
            f" VALUES (?, ?, ?, ?) ON CONFLICT (account_id, {column}) DO UPDATE SET"
            " cooldown_until = excluded.cooldown_until, cause = excluded.cause",
            (account_id, key, until_unix, redact(cause, limit=MAX_ERROR_MESSAGE_CHARS)),
        )

    def forget_chat_cooldowns(self, account_id: str) -> None:
        """Delete every (account, chat) cooldown of an account (an operator cleared them)."""
        self._db().execute("DELETE FROM chat_cooldowns WHERE account_id = ?", (account_id,))

    def load_chat_cooldowns(self, now_unix: float) -> dict[str, dict[str, tuple[float, str]]]:
        """The chat cooldowns still running at ``now_unix`` (UNIX s): ``{account: {peer_key:
        (until_unix, cause)}}``; those over are deleted."""
        db = self._db()
        db.execute("DELETE FROM chat_cooldowns WHERE cooldown_until <= ?", (now_unix,))
        out: dict[str, dict[str, tuple[float, str]]] = {}
        for acc, key, until_unix, cause in db.execute(
            "SELECT account_id, peer_key, cooldown_until, cause FROM chat_cooldowns"
        ):
            out.setdefault(acc, {})[key] = (until_unix, cause)
        return out

    def add_budget_spends(self, spends: Sequence[tuple[str, str, float]]) -> None:
        """Record requests counted against budgets: ``(account, class, UNIX s)`` each, in one
        transaction."""
        if not spends:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO budget_spends (account_id, rate_class, at) VALUES (?, ?, ?)", spends
            )

    def load_budget_spends(self, since_unix: float) -> list[tuple[str, str, float]]:
        """The spends after ``since_unix`` (UNIX s); older ones are deleted."""
        db = self._db()
        db.execute("DELETE FROM budget_spends WHERE at <= ?", (since_unix,))
        return [
            (a, c, t)
            for a, c, t in db.execute(
                "SELECT account_id, rate_class, at FROM budget_spends ORDER BY at"
            )
        ]

    def first_seen(self, account_ids: Sequence[str], now_unix: float) -> dict[str, float]:
        """When each account was first seen (UNIX s); accounts never seen get ``now_unix``."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO account_first_seen (account_id, first_seen) VALUES (?, ?)",
                [(a, now_unix) for a in account_ids],
            )
            return dict(
                db.execute("SELECT account_id, first_seen FROM account_first_seen").fetchall()
            )

    def close(self) -> None:
        """Close the database (SQLite checkpoints the WAL). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"<StateStore {self.path} {state}>"


# --- opening ----------------------------------------------------------------------------------


def _prepare_file(path: Path) -> None:
    """Create the file empty with 0600 (an empty file is a valid empty database), or tighten."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        if not path.is_file():
            raise FileExistsError(f"{path} exists and is not a regular file") from None
        ensure_private_file(path, "state store")
        for suffix in _SIDECAR_SUFFIXES:
            ensure_private_file(path.with_name(path.name + suffix), "state store")
    else:
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # SQLite gives -wal/-shm the same mode
        finally:
            os.close(fd)


def _connect(path: Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
    _prepare_file(path)
    conn = sqlite3.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
    try:
        _check_and_migrate(conn, path, migrations)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if (exc.sqlite_errorcode or 0) & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            raise _Unusable("corrupt", f"is corrupt ({exc})") from exc
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _check_and_migrate(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]
) -> None:
    problems = conn.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        raise _Unusable("corrupt", f"is corrupt (quick_check: {problems[0][0]})")
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if version == 0:
        if tables:
            raise _Unusable(
                "foreign",
                f"is another application's SQLite database (tables {', '.join(sorted(tables))})",
            )
    else:
        if "meta" not in tables:
            raise _Unusable("foreign", "is another application's SQLite database (no meta table)")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
        except sqlite3.OperationalError:
            row = None
        if row is None or row[0] != APPLICATION:
            raise _Unusable(
                "foreign",
                "is another application's SQLite database "
                f"(meta.application is {row[0] if row else None!r}, not {APPLICATION!r})",
            )
        if version > len(migrations):
            raise _Unusable(
                "foreign",
                f"has schema version {version}, newer than this mtpoold knows ({len(migrations)})",
            )
        if version < 0:
            raise _Unusable("foreign", f"has an invalid schema version ({version})")
    journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(journal).lower() != "wal":
        log_event(
            logger,
            logging.WARNING,
            "state_store_wal_unavailable",
            path=str(path),
            journal_mode=str(journal),
            note="saves will be slower",
        )
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    for step in range(version, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[step](conn)
            conn.execute(f"PRAGMA user_version = {step + 1:d}")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the transaction is already gone; the original error says why
            raise
        conn.execute("COMMIT")
        if version > 0:  # an existing store upgraded; a fresh one is just created
            log_event(
                logger,
                logging.INFO,
                "state_store_migrated",
                path=str(path),
                schema_from=step,
                schema_to=step + 1,
            )


def _move_aside(path: Path, kind: str) -> Path:
    """Rename `path` (and its SQLite sidecars) to ``<name>.<kind>-<UTC stamp>[.n]``."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    base = f"{path.name}.{kind}-{stamp}"
    target = path.with_name(base)
    n = 1
    while any(os.path.lexists(target.with_name(target.name + s)) for s in ("", *_SIDECAR_SUFFIXES)):
        target = path.with_name(f"{base}.{n}")
        n += 1
    # Sidecars first: a stale -wal next to the fresh file would be replayed into it.
    for suffix in _SIDECAR_SUFFIXES:
        side = path.with_name(path.name + suffix)
        if os.path.lexists(side):
            os.rename(side, target.with_name(target.name + suffix))
    os.rename(path, target)
    return target
