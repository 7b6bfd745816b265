"""Requests already checked: an ``invoke`` identical to one that passed `check_request`
skips the check (and the peer-key work) the second time."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, final

#: Requests remembered at most; the oldest goes first past it (FIFO, not LRU: a hit costs
#: one dict look-up and nothing else).
MAX_REMEMBERED: Final = 4096
#: A key longer than this (characters of canonical JSON) is checked every time: big
#: requests are rare and would take the memory of many small ones.
MAX_KEY_CHARS: Final = 2048

#: What `CheckedRequests.peer_key` answers for a request not remembered.
MISS: Final = object()


@final
class CheckedRequests:
    """The ``invoke`` requests that passed `mtpoold._tljson.check_request` under the
    operator's ``[policy] allow_methods``, with the peer key each names.

    Keyed by the method as written and the job's identical key (`mtpoold._share.
    identical_key`: canonical JSON of the TL name and arguments), so only an identical
    request hits; a request that failed the check is never remembered (it is checked, and
    refused, every time). A change of ``allow_methods`` (a reload) forgets everything: a
    function the operator blocked again is refused again.

    Why: a fleet asks the same look-ups over and over (order checks of the same channels);
    checking a request builds and serializes its TL object, the largest part of an
    ``invoke`` prologue (bench/scale.py, "pool per-job CPU").
    """

    __slots__ = ("_allow", "_known")

    def __init__(self) -> None:
        self._allow: Collection[str] | None = None
        self._known: dict[tuple[str, str], str | None] = {}

    def peer_key(self, method: str, key: str, allow: Collection[str]) -> object:
        """The peer key remembered for a request that passed, or `MISS` (check it, then
        `remember` it)."""
        if allow is not self._allow:
            self._known.clear()
            self._allow = allow
            return MISS
        return self._known.get((method, key), MISS)

    def remember(self, method: str, key: str, peer_key: str | None) -> None:
        """A request of ``method`` with identical key ``key`` passed the check under the
        ``allow`` last given to `peer_key`; ``peer_key``: the peer it names (or None)."""
        if len(key) > MAX_KEY_CHARS:
            return
        known = self._known
        if len(known) >= MAX_REMEMBERED:
            del known[next(iter(known))]
        known[(method, key)] = peer_key

    def __len__(self) -> int:
        return len(self._known)
