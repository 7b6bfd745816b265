"""Shared per-account state in Redis: what the state store keeps per account, for every node.

In cluster mode (issue 15, ``[cluster]``) an account moves between nodes with its lease; what
the single-node `mtpoold._store.StateStore` keeps per account must move with it, or the node
that takes an account over walks straight back into its FLOOD_WAIT, re-enables a disabled
session, forgets what its budgets spent and looks up peers it already knew. Each account has
one Redis hash, ``{prefix}acct:{account_id}``; its fields (values are UTF-8 text):

=========================  ======================================================================
``cooldown``               JSON ``[until_unix, cause]``: the account-wide cooldown (UNIX s)
``disabled``               JSON ``[reason, at_unix]``: why and when (UNIX s) it was disabled
``counters``               JSON object: ``calls_ok``, ``calls_failed``, ``failures_by_class``
                           (``{class: n}``), ``last_error_class``, ``last_error_message``,
                           ``last_used_unix`` (UNIX s or null)
``class:{rate_class}``     JSON ``[until_unix, cause]``: a per-class FLOOD_WAIT cooldown
``chat:{peer_key}``        JSON ``[until_unix, cause]``: a per-chat SLOWMODE_WAIT cooldown
``spends:{rate_class}``    budget spends, UNIX s with ms, space-separated, oldest first; spends
                           older than the longest budget window (`SPEND_KEEP_S`) are dropped
                           by every write
``first_seen``             UNIX s the account was first seen (the warm-up ramp; first writer
                           wins)
``peer:{kind}:{peer_id}``  JSON ``[access_hash, username, seen_unix]``: the peer memory
                           (`mtpoold._store.StoredPeer`; kind ``user``/``channel``/``self``)
=========================  ======================================================================

Nothing else: the same data the SQLite store holds (peer rows carry access hashes already,
as in SQLite), never a phone number, name, message text or secret; causes and error messages
are redacted (`mtpoold._errors.redact`) before they are queued, as the SQLite store does.
Proxy lane state (cooldowns, failure runs) is per node and stays in SQLite only.

Reading (`ClusterState.pull`, `ClusterState.pull_many`): one round trip, decoded and
validated field by field: a garbled field is logged by its name only
(``event=cluster_state_field_unreadable``; never its value) and skipped, never raised.

Writing is write-behind: the pool changes state synchronously (it calls its store from the
trio thread), so the ``push_*`` methods only queue the change, merged per account and field
(the last value of a field wins; deleting every ``chat:`` field drops queued chat cooldowns
queued before it). `ClusterState.run`, a task in the node's nursery, writes what is queued
every `FLUSH_INTERVAL_S` (or at once when `ClusterState.flush` asks) in ONE script call for all
accounts with changes — one Redis round trip per flush, not per change. Redis unreachable:
the batch is put back under whatever was queued since and retried on the next flush; nothing
is lost while the process lives.

A key that is not a hash at all (another program wrote it), or one whose bytes a client
decoding UTF-8 refuses (`RedisLink` decodes replies), is read as empty
(``field="<the whole key>"`` logged); changes queued for a key that is not a hash are dropped
by the flush (``event=cluster_state_write_refused``): bad data never stops the node.

How a node uses it (integ wires this; the pool itself is unchanged). Import this module
before `mtpoold._redislink.open_redis_link` builds the link: its two scripts join core's
registry (`mtpoold._clusterscripts.SCRIPTS`) on import, and the link reads the registry
when it is built::

    state = ClusterState(link, lease_of=lambda a: (lease := book.lease(a)) and lease.value)
    store = ClusterStore(sqlite_store, state)     # given to open_pool(..., store=store)
    store.cooldown_cause_of = lambda a: ...       # AccountWorker.cooldown_cause of account a
    await nursery.start(state.run)                # the write-behind flusher, node's nursery
    # after LeaseBook.acquire(...) returned `acquired`:
    shared = await state.pull_many(list(acquired))            # one round trip
    for a, s in shared.items():
        if s.found:
            with store.quiet():                   # applying it must not queue it back
                ...apply s.without_expired(time.time()) to the pool's account a
            store.adopt(s)                        # and mirror it into SQLite
    # before LeaseBook.release(ids) (drain): await state.flush()
    # at shutdown: with trio.move_on_after(op_timeout_s): await state.flush()

`SharedAccountState` is the truth for an account whose ``found`` is True: it replaces what
the node's own SQLite file says (that is only what this node saw when it last held it).

Fencing: given ``lease_of`` (account id -> the lease value ``"node|epoch|token"`` this node
holds, or None), every account's writes in a flush are applied only if ``{prefix}lease:{id}``
still holds that value, in the same script (atomically): a node that was paused past its
lease and wakes up cannot overwrite the state the new holder wrote. Writes for an account
this node does not hold are dropped and counted (`ClusterState.fenced_out`,
`ClusterState.dropped_unheld`) — except
cooldowns (account, class, chat) that end later than the one stored: those are written
anyway, so a FLOOD_WAIT seen just before a lease was lost still keeps every node away.
Without ``lease_of`` writes are unconditional (tests, tools).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, final

import attrs
import redis
import trio

from ._clusterscripts import SCRIPTS
from ._errors import redact
from ._logformat import log_event
from ._store import MAX_ERROR_MESSAGE_CHARS, StateStore, StoredAccount, StoredPeer, StoredState

__all__ = [
    "FLUSH_INTERVAL_S",
    "FLUSH_SCRIPT",
    "PULL_SCRIPT",
    "SPEND_KEEP_S",
    "ClusterState",
    "ClusterStore",
    "SharedAccountState",
    "StateLink",
]

log = logging.getLogger("mtpoold.clusterstate")

#: Seconds between two flushes of the write-behind queue (when something is queued).
FLUSH_INTERVAL_S: Final = 0.05
#: Seconds budget spends are kept: the longest budget window (``per_day``,
#: `mtpoold._rateclass.WINDOWS`).
SPEND_KEEP_S: Final = 86400.0
#: Changes per account and flush are cut into script arguments of at most this many values
#: (Lua's ``unpack`` has a stack limit of about 8,000).
_UNPACK_CHUNK: Final = 1000

COOLDOWN: Final = "cooldown"
DISABLED: Final = "disabled"
COUNTERS: Final = "counters"
FIRST_SEEN: Final = "first_seen"
CLASS_PREFIX: Final = "class:"
CHAT_PREFIX: Final = "chat:"
SPENDS_PREFIX: Final = "spends:"
PEER_PREFIX: Final = "peer:"
PEER_KINDS: Final = frozenset({"user", "channel", "self"})

#: The flush script. KEYS: n account hashes, then their n lease keys. ARGV[1]: the spend
#: cut-off (UNIX s); ARGV[1 + i]: JSON of account i's changes: ``l`` lease value that must
#: hold ("" = unfenced), ``f`` 1 = delete the hash first, ``c`` field prefixes to delete,
#: ``d`` fields to delete, ``s`` [field, value, ...] to set, ``n`` the same set only if
#: missing, ``b`` {spends field: "t t ..."} to append. Returns ``{fenced, refused}``: the
#: indexes (1-based) of the accounts whose lease did not hold, and of those whose key is not
#: a hash (nothing written for them). For the fenced ones only cooldowns that end later than
#: the stored one are written (a FLOOD_WAIT is never lost, a stale clear never lifts the new
#: holder's).
FLUSH_LUA: Final = """
local n = #KEYS / 2
local cutoff = tonumber(ARGV[1])
local fenced = {}
local refused = {}
local function each_chunk(list, fn)
  for j = 1, #list, 1000 do
    fn(unpack(list, j, math.min(j + 999, #list)))
  end
end
for i = 1, n do
  local key = KEYS[i]
  local op = cjson.decode(ARGV[i + 1])
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'hash' and kind ~= 'none' then
    refused[#refused + 1] = i
  elseif op.l ~= '' and redis.call('GET', KEYS[n + i]) ~= op.l then
    fenced[#fenced + 1] = i
    for j = 1, #op.s, 2 do
      local name = op.s[j]
      if name == 'cooldown' or string.sub(name, 1, 6) == 'class:'
          or string.sub(name, 1, 5) == 'chat:' then
        local ok_new, new = pcall(cjson.decode, op.s[j + 1])
        local ok_old, old = pcall(cjson.decode, redis.call('HGET', key, name) or 'null')
        if ok_new and type(new) == 'table' and type(new[1]) == 'number' and (not ok_old
            or type(old) ~= 'table' or type(old[1]) ~= 'number' or old[1] < new[1]) then
          redis.call('HSET', key, name, op.s[j + 1])
        end
      end
    end
  else
    if op.f == 1 then redis.call('DEL', key) end
    if #op.c > 0 then
      for _, name in ipairs(redis.call('HKEYS', key)) do
        for _, pre in ipairs(op.c) do
          if string.sub(name, 1, #pre) == pre then
            redis.call('HDEL', key, name)
            break
          end
        end
      end
    end
    if #op.d > 0 then each_chunk(op.d, function(...) redis.call('HDEL', key, ...) end) end
    if #op.s > 0 then each_chunk(op.s, function(...) redis.call('HSET', key, ...) end) end
    for j = 1, #op.n, 2 do redis.call('HSETNX', key, op.n[j], op.n[j + 1]) end
    for field, add in pairs(op.b) do
      local kept = {}
      for t in string.gmatch(redis.call('HGET', key, field) or '', '%S+') do
        local v = tonumber(t)
        if v and v > cutoff then kept[#kept + 1] = t end
      end
      for t in string.gmatch(add, '%S+') do kept[#kept + 1] = t end
      if #kept > 0 then
        redis.call('HSET', key, field, table.concat(kept, ' '))
      else
        redis.call('HDEL', key, field)
      end
    end
  end
end
return {fenced, refused}
"""

#: Every account hash of KEYS, in order: one round trip for many accounts.
PULL_LUA: Final = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""

#: The names `RedisLink.run_script` knows these scripts by: added to core's registry
#: (`mtpoold._clusterscripts.SCRIPTS`) when this module is imported.
FLUSH_SCRIPT: Final = "state_flush"
PULL_SCRIPT: Final = "state_pull"
SCRIPTS.setdefault(FLUSH_SCRIPT, FLUSH_LUA)
SCRIPTS.setdefault(PULL_SCRIPT, PULL_LUA)


class StateLink(Protocol):
    """What the shared state needs of `mtpoold._redislink.RedisLink` (core)."""

    async def command(self, *args: str | int | float) -> Any: ...

    async def run_script(
        self, name: str, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any: ...

    def key(self, *parts: str) -> str: ...


# --- what a pull returns ---------------------------------------------------------------------


@attrs.frozen
class SharedAccountState:
    """One account's shared state as `ClusterState.pull` read it. Times are UNIX seconds.

    Cooldowns are returned as stored, also those already over: the caller compares with its
    clock (``until_unix <= now`` means none).

    Attributes:
        account_id: The account id.
        found: Whether Redis had a hash for the account (False: every field is a default;
            a node taking the account over then keeps what its SQLite store has).
        cooldown_until_unix: The account-wide cooldown's end, or None.
        cooldown_cause: Its cause (``"FLOOD_WAIT: ..."``), redacted; ``""`` if unknown.
        disabled_reason: Why the account is disabled; None if enabled.
        disabled_at_unix: When; None if enabled.
        class_cooldowns: ``{rate class: (until_unix, cause)}``.
        chat_cooldowns: ``{peer_key: (until_unix, cause)}``.
        budget_spends: ``[(rate class, at_unix)]``, oldest first, within `SPEND_KEEP_S`.
        first_seen_unix: When the account was first seen (warm-up ramp), or None.
        failures_by_class, last_error_class, last_error_message, calls_ok, calls_failed,
        last_used_unix: The counters, as in `mtpoold._store.StoredAccount`.
        peers: The account's peer memory rows.
        skipped: Names of the fields that could not be decoded (each logged once, by name).
    """

    account_id: str
    found: bool = False
    cooldown_until_unix: float | None = None
    cooldown_cause: str = ""
    disabled_reason: str | None = None
    disabled_at_unix: float | None = None
    class_cooldowns: dict[str, tuple[float, str]] = attrs.field(factory=dict)
    chat_cooldowns: dict[str, tuple[float, str]] = attrs.field(factory=dict)
    budget_spends: list[tuple[str, float]] = attrs.field(factory=list)
    first_seen_unix: float | None = None
    failures_by_class: dict[str, int] = attrs.field(factory=dict)
    last_error_class: str | None = None
    last_error_message: str | None = None
    calls_ok: int = 0
    calls_failed: int = 0
    last_used_unix: float | None = None
    peers: list[StoredPeer] = attrs.field(factory=list)
    skipped: tuple[str, ...] = ()

    def without_expired(self, now_unix: float) -> SharedAccountState:
        """This state without the cooldowns over at ``now_unix`` (UNIX s) and the spends
        older than `SPEND_KEEP_S`: what a node applies when it takes the account over."""
        live = self.cooldown_until_unix is not None and self.cooldown_until_unix > now_unix
        return attrs.evolve(
            self,
            cooldown_until_unix=self.cooldown_until_unix if live else None,
            cooldown_cause=self.cooldown_cause if live else "",
            class_cooldowns={k: v for k, v in self.class_cooldowns.items() if v[0] > now_unix},
            chat_cooldowns={k: v for k, v in self.chat_cooldowns.items() if v[0] > now_unix},
            budget_spends=[s for s in self.budget_spends if s[1] > now_unix - SPEND_KEEP_S],
        )

    def stored_account(self) -> StoredAccount:
        """The `StoredAccount` row these fields make (for the SQLite mirror)."""
        return StoredAccount(
            id=self.account_id,
            cooldown_until_unix=self.cooldown_until_unix,
            disabled_reason=self.disabled_reason,
            disabled_at_unix=self.disabled_at_unix,
            failures_by_class=dict(self.failures_by_class),
            last_error_class=self.last_error_class,
            last_error_message=self.last_error_message,
            calls_ok=self.calls_ok,
            calls_failed=self.calls_failed,
            last_used_unix=self.last_used_unix,
        )


class _Garbled(ValueError):
    pass


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if isinstance(raw, str):
        return raw
    raise _Garbled(type(raw).__name__)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Garbled("not a finite number")
    return float(value)


def _opt_finite(value: Any) -> float | None:
    return None if value is None else _finite(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Garbled("not a count")
    return value


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Garbled("not a string")
    return value


def _until_cause(text: str) -> tuple[float, str]:
    value = json.loads(text)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)):
        raise _Garbled("not [until, cause]")
    return _finite(value[0]), value[1]


def _decode(account_id: str, raw: Any) -> SharedAccountState:
    """The state of one HGETALL reply (a flat list or a dict, bytes or str)."""
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list | tuple):
        pairs = list(zip(raw[0::2], raw[1::2], strict=False))
    else:
        pairs = []
    out: dict[str, Any] = {
        "class_cooldowns": {},
        "chat_cooldowns": {},
        "budget_spends": [],
        "peers": [],
    }
    skipped: list[str] = []
    for raw_name, raw_value in pairs:
        try:
            name = _text(raw_name)
        except (ValueError, TypeError):
            skipped.append("<undecodable field name>")
            continue
        try:
            _decode_field(account_id, name, _text(raw_value), out)
        except (ValueError, TypeError, KeyError):  # json.JSONDecodeError is a ValueError
            skipped.append(name)
    for name in skipped:
        log_event(
            log,
            logging.WARNING,
            "cluster_state_field_unreadable",
            account=account_id,
            field=name,
            note="skipped; the rest of the account's shared state is used",
        )
    out["budget_spends"].sort(key=lambda s: s[1])
    return SharedAccountState(account_id, found=bool(pairs), skipped=tuple(skipped), **out)


def _decode_field(account_id: str, name: str, text: str, out: dict[str, Any]) -> None:
    if name == COOLDOWN:
        out["cooldown_until_unix"], out["cooldown_cause"] = _until_cause(text)
    elif name == DISABLED:
        value = json.loads(text)
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
            raise _Garbled("not [reason, at]")
        out["disabled_reason"], out["disabled_at_unix"] = value[0], _opt_finite(value[1])
    elif name == COUNTERS:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise _Garbled("not an object")
        failures = value.get("failures_by_class", {})
        if not isinstance(failures, dict):
            raise _Garbled("failures_by_class")
        decoded = {
            "failures_by_class": {str(k): _count(v) for k, v in failures.items()},
            "last_error_class": _opt_str(value.get("last_error_class")),
            "last_error_message": _opt_str(value.get("last_error_message")),
            "calls_ok": _count(value.get("calls_ok", 0)),
            "calls_failed": _count(value.get("calls_failed", 0)),
            "last_used_unix": _opt_finite(value.get("last_used_unix")),
        }
        out.update(decoded)  # all or nothing
    elif name == FIRST_SEEN:
        out["first_seen_unix"] = _finite(float(text))
    elif name.startswith(CLASS_PREFIX) and len(name) > len(CLASS_PREFIX):
        out["class_cooldowns"][name[len(CLASS_PREFIX) :]] = _until_cause(text)
    elif name.startswith(CHAT_PREFIX) and len(name) > len(CHAT_PREFIX):
        out["chat_cooldowns"][name[len(CHAT_PREFIX) :]] = _until_cause(text)
    elif name.startswith(SPENDS_PREFIX) and len(name) > len(SPENDS_PREFIX):
        rate_class = name[len(SPENDS_PREFIX) :]
        spends = [(rate_class, _finite(float(t))) for t in text.split()]
        out["budget_spends"].extend(spends)  # all or nothing
    elif name.startswith(PEER_PREFIX):
        kind, sep, peer_id = name[len(PEER_PREFIX) :].partition(":")
        if not sep or kind not in PEER_KINDS:
            raise _Garbled("peer kind")
        value = json.loads(text)
        if not (isinstance(value, list) and len(value) == 3):
            raise _Garbled("not [access_hash, username, seen]")
        access_hash, username, seen = value
        if isinstance(access_hash, bool) or not isinstance(access_hash, int):
            raise _Garbled("access_hash")
        out["peers"].append(
            StoredPeer(
                account_id, kind, int(peer_id), access_hash, _opt_str(username), _finite(seen)
            )
        )
    else:
        raise _Garbled("unknown field")


def _unreadable(account_id: str, exc: Exception) -> SharedAccountState:
    log_event(
        log,
        logging.WARNING,
        "cluster_state_field_unreadable",
        account=account_id,
        field="<the whole key>",
        error=type(exc).__name__,
        note="not a hash; the account's shared state is ignored",
    )
    return SharedAccountState(account_id, skipped=("<the whole key>",))


# --- the write-behind queue ------------------------------------------------------------------


@attrs.define
class _Changes:
    """One account's queued changes (see FLUSH_LUA's ARGV)."""

    forget: bool = False
    prefixes: set[str] = attrs.field(factory=set)
    fields: dict[str, str | None] = attrs.field(factory=dict)  # None: delete the field
    if_missing: dict[str, str] = attrs.field(factory=dict)
    spends: dict[str, list[str]] = attrs.field(factory=dict)

    def has_cooldowns(self) -> bool:
        """Whether a cooldown (account, class or chat) is set among these changes."""
        return any(
            value is not None and (name == COOLDOWN or name.startswith((CLASS_PREFIX, CHAT_PREFIX)))
            for name, value in self.fields.items()
        )

    def set(self, name: str, value: str | None) -> None:
        self.fields.pop(name, None)  # re-inserted last: the order of the pushes
        self.fields[name] = value

    def drop_prefix(self, prefix: str) -> None:
        self.prefixes.add(prefix)
        for name in [n for n in self.fields if n.startswith(prefix)]:
            del self.fields[name]
        for name in [n for n in self.if_missing if n.startswith(prefix)]:
            del self.if_missing[name]

    def under(self, newer: _Changes) -> _Changes:
        """These (older, failed to write) changes with ``newer`` applied after them."""
        if newer.forget:
            return newer
        merged = _Changes(
            self.forget,
            set(self.prefixes),
            dict(self.fields),
            dict(self.if_missing),
            {k: list(v) for k, v in self.spends.items()},
        )
        for prefix in newer.prefixes:
            merged.drop_prefix(prefix)
        for name, value in newer.fields.items():
            merged.set(name, value)
        for name, value in newer.if_missing.items():
            merged.if_missing.setdefault(name, value)
        for name, times in newer.spends.items():
            merged.spends.setdefault(name, []).extend(times)
        return merged

    def argument(self, lease: str) -> str:
        sets: list[str] = []
        dels: list[str] = []
        for name, value in self.fields.items():
            if value is None:
                dels.append(name)
            else:
                sets += (name, value)
        return json.dumps(
            {
                "l": lease,
                "f": 1 if self.forget else 0,
                "c": sorted(self.prefixes),
                "d": dels,
                "s": sets,
                "n": [x for kv in self.if_missing.items() for x in kv],
                "b": {k: " ".join(v) for k, v in self.spends.items()},
            },
            separators=(",", ":"),
        )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _cause(text: str) -> str:
    return redact(text, limit=MAX_ERROR_MESSAGE_CHARS)


@final
class ClusterState:
    """The cluster's shared per-account state: reads (`pull`) and the write-behind queue.

    One per node, built on the node's `mtpoold._redislink.RedisLink`; `run` is a task in the
    node's nursery (the cluster task's owner starts it with ``await nursery.start(state.run)``).
    The ``push_*`` methods are sync, never block, never raise for Redis: they queue.

    Args:
        link: The Redis link (``command``, ``run_script``, ``key``).
        lease_of: Account id -> the lease value this node holds for it, or None (see the
            module's "Fencing"); None: writes are unconditional.
        flush_interval_s: Seconds between flushes while changes are queued.
        wall_clock: UNIX time in seconds (for the spend cut-off).

    Attributes:
        flushes: Flush scripts sent (each one Redis round trip).
        failed_flushes: Flushes that failed (Redis unreachable); their changes were requeued.
        fenced_out: Accounts whose changes a flush dropped because this node no longer
            held their lease (their later-ending cooldowns were still written).
        refused: Accounts whose changes were dropped because their key is not a hash.
        dropped_unheld: Accounts whose queued changes were not sent at all: not held here
            and no cooldown among them (e.g. first-seen times queued at startup).
        last_error: The last flush failure's cause (`ClusterUnavailable.cause`), or None.
    """

    def __init__(
        self,
        link: StateLink,
        *,
        lease_of: Callable[[str], str | None] | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._link = link
        self._lease_of = lease_of
        self._interval_s = flush_interval_s
        self._wall_clock = wall_clock
        self._queue: dict[str, _Changes] = {}
        self._wake = trio.Event()
        self._flush_lock = trio.Lock()
        self.flushes = 0
        self.failed_flushes = 0
        self.fenced_out = 0
        self.dropped_unheld = 0
        self.refused = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"<ClusterState queued={len(self._queue)} flushes={self.flushes}>"

    def key(self, account_id: str) -> str:
        """The account's hash: ``{prefix}acct:{account_id}``."""
        return self._link.key("acct", account_id)

    # -- reads -------------------------------------------------------------------------------

    async def pull(self, account_id: str) -> SharedAccountState:
        """The account's shared state, in one round trip (``HGETALL``).

        Changes still queued on this node are not in it (`flush` first when that matters).

        Raises:
            ClusterUnavailable: Redis unreachable or too slow (``op_timeout_s``).
        """
        try:
            raw = await self._link.command("HGETALL", self.key(account_id))
        except (redis.ResponseError, UnicodeDecodeError) as exc:  # not a hash; not UTF-8
            return _unreadable(account_id, exc)
        return _decode(account_id, raw)

    async def pull_many(self, account_ids: Sequence[str]) -> dict[str, SharedAccountState]:
        """Several accounts' shared state, in one round trip (one script): what a node reads
        for the accounts its lease book just acquired.

        Raises:
            ClusterUnavailable: Redis unreachable or too slow.
        """
        if not account_ids:
            return {}
        try:
            raw = await self._link.run_script(PULL_SCRIPT, [self.key(a) for a in account_ids], [])
        except (redis.ResponseError, UnicodeDecodeError):  # one bad key: one by one
            return {a: await self.pull(a) for a in account_ids}
        replies = list(raw) if isinstance(raw, list | tuple) else []
        replies += [[]] * (len(account_ids) - len(replies))
        return {a: _decode(a, r) for a, r in zip(account_ids, replies, strict=False)}

    # -- writes (queued) --------------------------------------------------------------------

    def _changes(self, account_id: str) -> _Changes:
        changes = self._queue.get(account_id)
        if changes is None:
            changes = self._queue[account_id] = _Changes()
        self._wake.set()
        return changes

    @property
    def queued(self) -> int:
        """Accounts with changes not yet written."""
        return len(self._queue)

    def push_account(self, state: StoredAccount, *, cooldown_cause: str | None = None) -> None:
        """Queue what `StateStore.save_account` saves: account-wide cooldown (with its
        cause), disable, counters. Redacted as the SQLite store redacts."""
        changes = self._changes(state.id)
        until = state.cooldown_until_unix
        changes.set(
            COOLDOWN, None if until is None else _dumps([until, _cause(cooldown_cause or "")])
        )
        reason = state.disabled_reason
        changes.set(DISABLED, None if reason is None else _dumps([reason, state.disabled_at_unix]))
        message = state.last_error_message
        changes.set(
            COUNTERS,
            _dumps(
                {
                    "calls_ok": state.calls_ok,
                    "calls_failed": state.calls_failed,
                    "failures_by_class": dict(state.failures_by_class),
                    "last_error_class": state.last_error_class,
                    "last_error_message": None if message is None else _cause(message),
                    "last_used_unix": state.last_used_unix,
                }
            ),
        )

    def push_class_cooldown(
        self, account_id: str, rate_class: str, until_unix: float | None, cause: str = ""
    ) -> None:
        """Queue setting (``until_unix``, UNIX s) or deleting (None) a per-class cooldown."""
        value = None if until_unix is None else _dumps([until_unix, _cause(cause)])
        self._changes(account_id).set(CLASS_PREFIX + rate_class, value)

    def push_chat_cooldown(
        self, account_id: str, peer_key: str, until_unix: float | None, cause: str = ""
    ) -> None:
        """Queue setting (``until_unix``, UNIX s) or deleting (None) a per-chat cooldown."""
        value = None if until_unix is None else _dumps([until_unix, _cause(cause)])
        self._changes(account_id).set(CHAT_PREFIX + peer_key, value)

    def push_forget_chat_cooldowns(self, account_id: str) -> None:
        """Queue deleting every chat cooldown of the account."""
        self._changes(account_id).drop_prefix(CHAT_PREFIX)

    def push_budget_spends(self, spends: Sequence[tuple[str, str, float]]) -> None:
        """Queue budget spends ``(account, rate class, at_unix)`` to append."""
        for account_id, rate_class, at in spends:
            if math.isfinite(at):
                field = SPENDS_PREFIX + rate_class
                self._changes(account_id).spends.setdefault(field, []).append(f"{at:.3f}")

    def push_first_seen(self, account_id: str, at_unix: float) -> None:
        """Queue the first-seen time; it is written only if the hash has none."""
        self._changes(account_id).if_missing.setdefault(FIRST_SEEN, f"{at_unix:.3f}")

    def push_peers(self, peers: Sequence[StoredPeer]) -> None:
        """Queue peer memory rows to insert or replace (by account, kind and id)."""
        for p in peers:
            name = f"{PEER_PREFIX}{p.kind}:{p.peer_id}"
            self._changes(p.account_id).set(name, _dumps([p.access_hash, p.username, p.seen_unix]))

    def push_forget_peer(self, account_id: str, kind: str, peer_id: int) -> None:
        """Queue deleting one peer of the account."""
        self._changes(account_id).set(f"{PEER_PREFIX}{kind}:{peer_id}", None)

    def push_forget_peers(self, account_id: str) -> None:
        """Queue deleting every peer of the account."""
        self._changes(account_id).drop_prefix(PEER_PREFIX)

    def push_forget_account(self, account_id: str) -> None:
        """Queue deleting the account's whole hash (``mtpoold accounts forget``)."""
        self._queue[account_id] = _Changes(forget=True)
        self._wake.set()

    # -- flushing ------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything queued so far, in one round trip; returns once it is in Redis.

        Called before a lease is released (so the next holder pulls it) and at shutdown.

        Raises:
            ClusterUnavailable: Redis unreachable; the changes stay queued (merged under
                newer ones) for the next flush.
        """
        async with self._flush_lock:
            batch, self._queue = self._queue, {}
            leases: dict[str, str] = {}
            for a, changes in list(batch.items()):
                held = "" if self._lease_of is None else self._lease_of(a)
                if held is None and not changes.has_cooldowns():
                    del batch[a]  # not ours (e.g. first_seen at startup): the holder writes
                    self.dropped_unheld += 1
                    continue
                leases[a] = "\x00" if held is None else held  # "\x00" never matches
            if not batch:
                return
            ids = list(batch)
            keys = [self.key(a) for a in ids] + [self._link.key("lease", a) for a in ids]
            cutoff = self._wall_clock() - SPEND_KEEP_S
            args = [f"{cutoff:.3f}"] + [batch[a].argument(leases[a]) for a in ids]
            try:
                reply = await self._link.run_script(FLUSH_SCRIPT, keys, args)
            except BaseException:
                merged: dict[str, _Changes] = {}
                for a in ids:  # back in front of anything queued meanwhile
                    newer = self._queue.pop(a, None)
                    merged[a] = batch[a] if newer is None else batch[a].under(newer)
                merged.update(self._queue)
                self._queue = merged
                self.failed_flushes += 1
                raise
            self.flushes += 1
            fenced, refused = reply if isinstance(reply, list) and len(reply) == 2 else ([], [])
            for index in refused:
                self.refused += 1
                log_event(
                    log,
                    logging.ERROR,
                    "cluster_state_write_refused",
                    account=ids[int(index) - 1],
                    note="its key is not a hash (another program wrote it); changes dropped",
                )
            for index in fenced:
                account = ids[int(index) - 1]
                self.fenced_out += 1
                if leases[account] != "\x00":
                    log_event(
                        log,
                        logging.WARNING,
                        "cluster_state_write_fenced",
                        account=account,
                        note="its lease is no longer ours; the new holder's state stands",
                    )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush the queue every ``flush_interval_s`` while something is queued, until
        cancelled. A failed flush (Redis unreachable) is logged once per outage
        (``event=cluster_state_unflushed``) and retried; it never ends the task."""
        from ._redislink import ClusterUnavailable

        task_status.started()
        while True:
            await self._wake.wait()
            await trio.sleep(self._interval_s)
            self._wake = trio.Event()
            if not self._queue:
                continue
            try:
                await self.flush()
            except ClusterUnavailable as exc:
                if self.last_error is None:
                    log_event(
                        log,
                        logging.WARNING,
                        "cluster_state_unflushed",
                        cause=exc.cause,
                        queued=len(self._queue),
                        note="kept queued; retried",
                    )
                self.last_error = exc.cause
                self._wake.set()
                continue
            if self.last_error is not None:
                log_event(log, logging.INFO, "cluster_state_flushed", note="redis is back")
            self.last_error = None


# --- the adapter the pool writes through ------------------------------------------------------


@final
class ClusterStore:
    """A `StateStore` in cluster mode: every write goes to SQLite as now AND is queued for
    the account's shared hash in Redis (`ClusterState`); reads come from SQLite.

    It has the `StateStore` methods the pool, the peer memory and the daemon call, with the
    same signatures, so the pool can be given one in place of the store (type it as
    ``StateStore | ClusterStore``). What it does not share: proxy lane rows (`save_proxy`,
    `rename_proxies`: a lane's state is the node's own) and `load`/`load_*` (startup reads
    the local file; the shared state of an account arrives with its lease: `ClusterState.pull`,
    applied by the caller, mirrored into SQLite with `adopt`).

    Args:
        store: The open SQLite store (still owned and closed by its opener; `close` closes it).
        state: The node's shared state.

    Attributes:
        cooldown_cause_of: Account id -> the cause of its account-wide cooldown
            (``AccountWorker.cooldown_cause``), read by `save_account` because
            `StoredAccount` carries no cause. Default: no cause (``""``).
    """

    def __init__(self, store: StateStore, state: ClusterState) -> None:
        self._store = store
        self.state = state
        self.cooldown_cause_of: Callable[[str], str | None] = lambda account_id: None
        self._quiet = 0

    def __repr__(self) -> str:
        return f"<ClusterStore {self._store!r} {self.state!r}>"

    @property
    def _sharing(self) -> bool:
        return self._quiet == 0

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Writes inside this block go to SQLite only (applying pulled state to the pool
        must not queue it back to Redis)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def adopt(self, shared: SharedAccountState) -> None:
        """Mirror pulled shared state into SQLite (nothing is queued): the account row, its
        class and chat cooldowns, its peers. A ``found=False`` state changes nothing."""
        if not shared.found:
            return
        store = self._store
        store.save_account(shared.stored_account())
        for name, (until, cause) in shared.class_cooldowns.items():
            store.save_class_cooldown(shared.account_id, name, until, cause)
        store.forget_chat_cooldowns(shared.account_id)
        for key, (until, cause) in shared.chat_cooldowns.items():
            store.save_chat_cooldown(shared.account_id, key, until, cause)
        store.save_peers(shared.peers)

    # -- StateStore: delegated reads and per-node rows -------------------------------------------

    @property
    def path(self) -> Any:
        """The SQLite file (`StateStore.path`)."""
        return self._store.path

    @property
    def moved_aside_to(self) -> Any:
        """`StateStore.moved_aside_to`."""
        return self._store.moved_aside_to

    @property
    def closed(self) -> bool:
        """`StateStore.closed`."""
        return self._store.closed

    def load(self) -> StoredState:
        """`StateStore.load` (SQLite)."""
        return self._store.load()

    def load_peers(self) -> list[StoredPeer]:
        """`StateStore.load_peers` (SQLite)."""
        return self._store.load_peers()

    def load_class_cooldowns(self, now_unix: float) -> dict[str, dict[str, tuple[float, str]]]:
        """`StateStore.load_class_cooldowns` (SQLite)."""
        return self._store.load_class_cooldowns(now_unix)

    def load_chat_cooldowns(self, now_unix: float) -> dict[str, dict[str, tuple[float, str]]]:
        """`StateStore.load_chat_cooldowns` (SQLite)."""
        return self._store.load_chat_cooldowns(now_unix)

    def load_budget_spends(self, since_unix: float) -> list[tuple[str, str, float]]:
        """`StateStore.load_budget_spends` (SQLite)."""
        return self._store.load_budget_spends(since_unix)

    def account_ids(self) -> set[str]:
        """`StateStore.account_ids` (SQLite)."""
        return self._store.account_ids()

    def save_proxy(self, state: Any) -> None:
        """`StateStore.save_proxy` (SQLite only: lane state is per node)."""
        self._store.save_proxy(state)

    def rename_proxies(self, renames: Mapping[str, str]) -> int:
        """`StateStore.rename_proxies` (SQLite only)."""
        return self._store.rename_proxies(renames)

    def close(self) -> None:
        """Close the SQLite store (what is queued for Redis stays queued: flush first)."""
        self._store.close()

    # -- StateStore: writes, shared -------------------------------------------------------------

    def save_account(self, state: StoredAccount) -> None:
        """`StateStore.save_account`, and `ClusterState.push_account` (with the cause from
        `cooldown_cause_of`)."""
        self._store.save_account(state)
        if self._sharing:
            self.state.push_account(state, cooldown_cause=self.cooldown_cause_of(state.id))

    def save_class_cooldown(
        self, account_id: str, rate_class: str, until_unix: float | None, cause: str = ""
    ) -> None:
        """`StateStore.save_class_cooldown`, and queued."""
        self._store.save_class_cooldown(account_id, rate_class, until_unix, cause)
        if self._sharing:
            self.state.push_class_cooldown(account_id, rate_class, until_unix, cause)

    def save_chat_cooldown(
        self, account_id: str, peer_key: str, until_unix: float | None, cause: str = ""
    ) -> None:
        """`StateStore.save_chat_cooldown`, and queued."""
        self._store.save_chat_cooldown(account_id, peer_key, until_unix, cause)
        if self._sharing:
            self.state.push_chat_cooldown(account_id, peer_key, until_unix, cause)

    def forget_chat_cooldowns(self, account_id: str) -> None:
        """`StateStore.forget_chat_cooldowns`, and queued."""
        self._store.forget_chat_cooldowns(account_id)
        if self._sharing:
            self.state.push_forget_chat_cooldowns(account_id)

    def add_budget_spends(self, spends: Sequence[tuple[str, str, float]]) -> None:
        """`StateStore.add_budget_spends`, and queued."""
        self._store.add_budget_spends(spends)
        if self._sharing:
            self.state.push_budget_spends(spends)

    def first_seen(self, account_ids: Sequence[str], now_unix: float) -> dict[str, float]:
        """`StateStore.first_seen`; each account's time is queued (written only where the
        shared hash has none)."""
        seen = self._store.first_seen(account_ids, now_unix)
        if self._sharing:
            for a in account_ids:
                if a in seen:
                    self.state.push_first_seen(a, seen[a])
        return seen

    def save_peers(self, peers: Sequence[StoredPeer]) -> None:
        """`StateStore.save_peers`, and queued."""
        self._store.save_peers(peers)
        if self._sharing:
            self.state.push_peers(peers)

    def forget_peer(self, account_id: str, kind: str, peer_id: int) -> bool:
        """`StateStore.forget_peer`, and queued."""
        found = self._store.forget_peer(account_id, kind, peer_id)
        if self._sharing:
            self.state.push_forget_peer(account_id, kind, peer_id)
        return found

    def forget_peers(self, account_id: str) -> int:
        """`StateStore.forget_peers`, and queued."""
        n = self._store.forget_peers(account_id)
        if self._sharing:
            self.state.push_forget_peers(account_id)
        return n

    def forget_account(self, account_id: str) -> bool:
        """`StateStore.forget_account`, and the shared hash is deleted (queued)."""
        found = self._store.forget_account(account_id)
        if self._sharing:
            self.state.push_forget_account(account_id)
        return found
