"""The peer memory: every account's peers with their access hashes, kept across restarts.

An account can only name a user or channel to Telegram with the access hash Telegram gave
*that* account (``InputPeerUser(id, access_hash)``, ``InputPeerChannel(...)``); without one a
look-up goes on the wire first (``contacts.resolveUsername`` for a username, about 30 % of a
read workload's requests, issue 12). Telethon keeps the hashes it sees in its session, but a
``StringSession`` forgets them on every restart. The peer memory keeps, per account, every
user and channel that came back with an access hash in any result — peer id, kind, access
hash, username in lower case, and the UNIX time it was seen (never names, phone numbers or
text) — in the state store (`mtpoold._store.StateStore`, the ``peers`` table), loaded when
the pool opens and written as new peers are seen.

Plain Python (scheduling core): the Telegram side turns TL objects into `StoredPeer` records
(`mtpoold._lookup`) and asks an account's `AccountPeers` before it looks a peer up. The pool
hands the whole `PeerMemory` to the dispatcher as its ``PeerKnowledge`` (`knows`, `knowers`:
which accounts need no look-up for a job's ``peer_key``).

Rules:
    - Peers are keyed by account id; they belong to the user the account logs in as. After
      every connect the client reports that user (`AccountPeers.check_owner`): another user
      than the one the peers were seen by (a reload or restart with another session) drops
      them all. The same user with a new auth key keeps them (access hashes are per user).
    - A username names at most one peer per account: the peer seen last with it wins.
    - A cached peer Telegram calls invalid is forgotten (`AccountPeers.forget`) and looked
      up again by the caller, within the same call (see `mtpoold._lookup`).
    - A store that fails to write is logged (``event=peer_memory_write_failed``) and the
      memory keeps working in memory: a lost write costs one look-up after a restart.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Final, Protocol, final

import attrs

from ._logformat import log_event
from ._store import StoredPeer

__all__ = [
    "PEER_KINDS",
    "SEEN_REFRESH_S",
    "AccountPeers",
    "PeerMemory",
    "PeerStore",
    "StoredPeer",
    "first_peer_argument",
    "keys_of",
]

log = logging.getLogger("mtpoold.peermemory")

#: Kinds of peer kept, and the `peer_key` prefix of their ids (`mtpoold._links.peer_key`).
PEER_KINDS: Final = {"user": "user_id", "channel": "channel_id"}
SELF: Final = "self"  # the row naming the user an account's peers belong to
#: A peer seen again with nothing changed is written again (its ``seen_unix``) only after
#: this many seconds: a busy channel's every read must not be a write, s.
SEEN_REFRESH_S: Final = 86400.0


#: ``invoke`` argument names that hold the peer a TL function acts on, in the order they are
#: looked at (Telegram's schema: ``messages.getHistory(peer)``, ``channels.getMessages
#: (channel)``, ``users.getFullUser(id)``, ``photos.getUserPhotos(user_id)`` ...). ``id`` only
#: as a string: as a number or list it is a message, photo or sticker id.
PEER_ARGUMENTS: Final = ("peer", "channel", "user_id", "user", "id")


def first_peer_argument(args: Mapping[str, object]) -> str | int | None:
    """The peer an ``invoke`` job names first (`PEER_ARGUMENTS`), for its ``peer_key``, or
    None: a plain string or integer only (an ``{"_": "InputPeer…"}`` object names no peer
    shared across accounts)."""
    for name in PEER_ARGUMENTS:
        value = args.get(name)
        if isinstance(value, str) or (
            isinstance(value, int) and not isinstance(value, bool) and name != "id"
        ):
            return value
    return None


class PeerStore(Protocol):
    """What the peer memory needs of the state store (`mtpoold._store.StateStore`)."""

    def load_peers(self) -> list[StoredPeer]: ...

    def save_peers(self, peers: Sequence[StoredPeer]) -> None: ...

    def forget_peer(self, account_id: str, kind: str, peer_id: int) -> bool: ...

    def forget_peers(self, account_id: str) -> int: ...


def keys_of(peer: StoredPeer) -> tuple[str, ...]:
    """The `peer_key` spellings that name ``peer``: its id key, and its username's if any.

    >>> keys_of(StoredPeer("a1", "channel", 2001, 7, "news", 0.0))
    ('channel_id:2001', 'username:news')
    """
    id_key = f"{PEER_KINDS[peer.kind]}:{peer.peer_id}"
    return (id_key, f"username:{peer.username}") if peer.username else (id_key,)


@final
class PeerMemory:
    """Every account's peers, in memory and in the store; the pool's ``PeerKnowledge``.

    Build with `PeerMemory.load` (or with no store, for tests). Sync and quick: look-ups are
    dict reads; a write is one small store transaction (see `mtpoold._store`).

    Args:
        store: Where peers are kept across restarts, or None (memory only).
        clock: UNIX time in seconds, for ``seen_unix``.
    """

    def __init__(
        self, store: PeerStore | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._clock = clock
        self._books: dict[str, AccountPeers] = {}
        #: peer key -> accounts that know it (the index `knowers` reads).
        self._knowers: dict[str, set[str]] = {}

    @classmethod
    def load(cls, store: PeerStore, *, clock: Callable[[], float] = time.time) -> PeerMemory:
        """The memory with every account's peers read from ``store``.

        Raises:
            sqlite3.Error: if the store cannot be read.
        """
        memory = cls(store, clock=clock)
        rows = sorted(store.load_peers(), key=lambda p: p.seen_unix)  # last seen wins
        for row in rows:
            memory.book(row.account_id)._put(row)
        return memory

    def __repr__(self) -> str:
        peers = sum(len(b) for b in self._books.values())
        return f"<PeerMemory accounts={len(self._books)} peers={peers}>"

    # -- PeerKnowledge -------------------------------------------------------------------

    def knows(self, account_id: str, peer_key: str) -> bool:
        """Whether ``account_id`` can name the peer ``peer_key`` without a look-up."""
        book = self._books.get(account_id)
        return book is not None and peer_key in book._by_key

    def knowers(self, peer_key: str) -> Collection[str]:
        """The accounts that know ``peer_key`` (O(1); may name accounts no longer in the
        pool's config, whose peers are kept until the account is forgotten)."""
        return self._knowers.get(peer_key, frozenset())

    # -- per account ---------------------------------------------------------------------

    def book(self, account_id: str) -> AccountPeers:
        """The account's view (created empty the first time)."""
        book = self._books.get(account_id)
        if book is None:
            book = self._books[account_id] = AccountPeers(account_id, self)
        return book

    def forget_account(self, account_id: str) -> int:
        """Drop every peer of an account, in memory and in the store; how many there were."""
        book = self._books.get(account_id)
        dropped = 0 if book is None else book._clear()
        self._write(lambda store: store.forget_peers(account_id))
        return dropped

    def _index(self, key: str, account_id: str, add: bool) -> None:
        if add:
            self._knowers.setdefault(key, set()).add(account_id)
            return
        holders = self._knowers.get(key)
        if holders is not None:
            holders.discard(account_id)
            if not holders:
                del self._knowers[key]

    def _write(self, action: Callable[[PeerStore], object]) -> None:
        if self._store is None:
            return
        try:
            action(self._store)
        except (sqlite3.Error, RuntimeError) as exc:  # RuntimeError: the store is closed
            log_event(log, logging.WARNING, "peer_memory_write_failed", error=type(exc).__name__)


@final
@attrs.define(eq=False, repr=False)
class AccountPeers:
    """One account's peers: what its client asks before a look-up and tells what it saw.

    Made by `PeerMemory.book`. The Telegram side builds the records (`StoredPeer` with this
    account's id; the ``seen_unix`` it gives is replaced by the memory's clock).
    """

    account_id: str
    _memory: PeerMemory
    _by_key: dict[str, StoredPeer] = attrs.field(init=False, factory=dict)
    _by_id: dict[tuple[str, int], StoredPeer] = attrs.field(init=False, factory=dict)
    owner: int | None = attrs.field(init=False, default=None)

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"<AccountPeers account={self.account_id} peers={len(self._by_id)}>"

    def get(self, peer_key: str) -> StoredPeer | None:
        """The peer ``peer_key`` names for this account (`mtpoold._links.peer_key`), or None."""
        return self._by_key.get(peer_key)

    def learn(self, peers: Iterable[StoredPeer]) -> int:
        """Remember peers seen in a result; new or changed ones are written to the store.

        Args:
            peers: Users and channels with their access hashes, any account id (this
                account's is used); a username already held by another peer of this account
                moves to the new one.

        Returns:
            How many peers were new or changed.
        """
        now = self._memory._clock()
        changed: list[StoredPeer] = []
        for peer in peers:
            if peer.kind not in PEER_KINDS:
                continue
            row = attrs.evolve(peer, account_id=self.account_id, seen_unix=now)
            old = self._by_id.get((row.kind, row.peer_id))
            if (
                old is not None
                and (old.access_hash, old.username) == (row.access_hash, row.username)
                and now - old.seen_unix < SEEN_REFRESH_S
            ):
                continue
            if row.username is not None:
                holder = self._by_key.get(f"username:{row.username}")
                if holder is not None and (holder.kind, holder.peer_id) != (row.kind, row.peer_id):
                    moved = attrs.evolve(holder, username=None)
                    self._put(moved)
                    changed.append(moved)
            self._put(row)
            changed.append(row)
        if changed:
            self._memory._write(lambda store: store.save_peers(changed))
        return len(changed)

    def forget(self, peer_key: str) -> StoredPeer | None:
        """Forget the peer ``peer_key`` names (Telegram called it invalid); the forgotten
        record, or None if none was known."""
        peer = self._by_key.get(peer_key)
        if peer is None:
            return None
        self._drop(peer)
        self._memory._write(
            lambda store: store.forget_peer(peer.account_id, peer.kind, peer.peer_id)
        )
        log_event(
            log,
            logging.INFO,
            "peer_forgotten",
            account=self.account_id,
            peer=f"{PEER_KINDS[peer.kind]}:{peer.peer_id}",
        )
        return peer

    def check_owner(self, user_id: int) -> bool:
        """The client's connect says this account logs in as ``user_id``: if its peers were
        seen by another user, drop them all (access hashes belong to the user).

        Returns:
            True if peers were dropped.
        """
        if self.owner == user_id:
            return False
        dropped = 0
        if self.owner is not None:  # peers without an owner yet were seen during this connect
            dropped = self._memory.forget_account(self.account_id)
            log_event(
                log,
                logging.WARNING,
                "peer_memory_dropped",
                account=self.account_id,
                peers=dropped,
                reason="another_user",
            )
        self.owner = user_id
        record = StoredPeer(self.account_id, SELF, user_id, 0, None, self._memory._clock())
        self._memory._write(lambda store: store.save_peers([record]))
        return dropped > 0

    # -- internals -----------------------------------------------------------------------

    def _put(self, row: StoredPeer) -> None:
        if row.kind == SELF:
            self.owner = row.peer_id
            return
        if row.kind not in PEER_KINDS:
            return
        old = self._by_id.get((row.kind, row.peer_id))
        if old is not None:
            self._drop(old)
        if row.username is not None:
            holder = self._by_key.get(f"username:{row.username}")
            if holder is not None:  # loaded rows: the one seen last holds the username
                self._drop(holder)
                self._put(attrs.evolve(holder, username=None))
        self._by_id[(row.kind, row.peer_id)] = row
        for key in keys_of(row):
            self._by_key[key] = row
            self._memory._index(key, self.account_id, add=True)

    def _drop(self, row: StoredPeer) -> None:
        self._by_id.pop((row.kind, row.peer_id), None)
        for key in keys_of(row):
            if self._by_key.get(key) is row:
                del self._by_key[key]
                self._memory._index(key, self.account_id, add=False)

    def _clear(self) -> int:
        dropped = len(self._by_id)
        for row in list(self._by_id.values()):
            self._drop(row)
        self.owner = None
        return dropped
