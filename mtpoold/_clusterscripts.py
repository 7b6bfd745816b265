"""The Lua scripts of the cluster (gate reservation, leases, node registry), by name.

`mtpoold._redislink.RedisLink.run_script` runs them (EVALSHA, NOSCRIPT -> EVAL). Each is one
atomic step on Redis, so one round trip; Redis runs scripts one at a time, so "first come
first served" means first to arrive at Redis.

Every time inside a script comes from ``redis.call('TIME')`` (Redis's own clock), in ms, so
nodes' clocks never have to agree. Key layout (``{p}`` = the link's key prefix):

- ``{p}gate:{proxy}``: the last reserved start plus its window (the latest instant it can
  go), Redis ms.
- ``{p}lease:{account}``: ``"node|epoch|token"``, PX = lease ms.
- ``{p}conn:{account}``: the lease value while the account may have a connection open, PX =
  lease ms + disconnect delay ms; ACQUIRE refuses the account while it exists.
- ``{p}fence``: INCR counter, the lease tokens.
- ``{p}epoch``: ``"epoch_id|quarantine_until_ms"``, no TTL: gone means Redis lost its memory.
- ``{p}node:{name}``, ``{p}nodes``, ``{p}status:{name}``: the node registry.
- Migration mode: ``{php}tg:proxy:throttle:{proxy}`` (PHP ``Cache::add``) and
  ``{php}tg:mtproto:lock:{account}`` (Laravel ``Cache::lock``: SET NX with owner).

The node scripts (``heartbeat``, ``statuses``) read node keys they are not given in KEYS:
fine on a single Redis (what mtpoold supports), not on Redis Cluster.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SCRIPTS"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: gate, lease, conn, php throttle (unused ones: any key, e.g. the gate).
#: ARGV: lease value ('' = no lease check), interval ms, jitter ms, conn ttl ms (0 = no conn
#: key), php (1/0), window ms (how late after its slot this start may go,
#: `mtpoold._startwindow`).
#: Returns {delay_ms, start_ms, now_ms, now_us (Redis's TIME in microseconds)}, or {-1} if the
#: lease is not ARGV[1].
RESERVE: Final = (
    _NOW
    + """
local value = ARGV[1]
local interval = tonumber(ARGV[2])
local window = tonumber(ARGV[6]) or 0
if value ~= '' and redis.call('GET', KEYS[2]) ~= value then
  return {-1}
end
local start = now + tonumber(ARGV[3])
local last_end = tonumber(redis.call('GET', KEYS[1]))
if last_end and last_end + interval > start then
  start = last_end + interval
end
if ARGV[5] == '1' then
  local pttl = redis.call('PTTL', KEYS[4])
  if pttl == -1 then pttl = interval end
  if pttl > 0 and now + pttl > start then start = now + pttl end
  if interval > 0 then
    redis.call('SET', KEYS[4], 'mtpoold', 'PX', start + window + interval - now)
  end
end
redis.call('SET', KEYS[1], start + window, 'PX', start + window - now + interval + 1000)
local conn_ttl = tonumber(ARGV[4])
if value ~= '' and conn_ttl > 0 then
  redis.call('SET', KEYS[3], value, 'PX', conn_ttl)
end
return {start - now, start, now, tonumber(t[1]) * 1000000 + tonumber(t[2])}
"""
)

#: KEYS: fence, epoch, then per account: lease, conn, php lock.
#: ARGV: node, lease ms, quarantine ms, php (1/0), new epoch id (used if the epoch is gone).
#: Returns {1 | 0 (quarantine), epoch id, quarantine_until_ms, now_ms, result...}; one result
#: per account: its token (> 0), 0 another lease holds it, -1 its conn key exists, -2 PHP
#: holds its lock. In quarantine (0) there are no results.
ACQUIRE: Final = (
    _NOW
    + """
local node = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  local until_ms = now + tonumber(ARGV[3])
  redis.call('SET', KEYS[2], ARGV[5] .. '|' .. until_ms)
  return {0, ARGV[5], until_ms, now}
end
local bar = string.find(epoch, '|', 1, true)
local epoch_id = string.sub(epoch, 1, bar - 1)
local until_ms = tonumber(string.sub(epoch, bar + 1))
if now < until_ms then
  return {0, epoch_id, until_ms, now}
end
local out = {1, epoch_id, until_ms, now}
for i = 3, #KEYS, 3 do
  local result
  if redis.call('EXISTS', KEYS[i]) == 1 then
    result = 0
  elseif redis.call('EXISTS', KEYS[i + 1]) == 1 then
    result = -1
  elseif ARGV[4] == '1' and redis.call('EXISTS', KEYS[i + 2]) == 1 then
    result = -2
  else
    result = redis.call('INCR', KEYS[1])
    local value = node .. '|' .. epoch_id .. '|' .. result
    redis.call('SET', KEYS[i], value, 'PX', lease_ms)
    if ARGV[4] == '1' then
      redis.call('SET', KEYS[i + 2], value, 'PX', lease_ms)
    end
  end
  out[#out + 1] = result
end
return out
"""
)

#: KEYS: per account: lease, conn, php lock.
#: ARGV: lease ms, conn ttl ms, php (1/0), then per account: lease value, connected (1/0).
#: Returns one 1 (renewed) / 0 (lost: key gone, another's, or PHP took its lock) per account.
RENEW: Final = """
local lease_ms = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 3 do
  local n = (i - 1) / 3
  local value = ARGV[4 + 2 * n]
  local ok = 0
  if redis.call('GET', KEYS[i]) == value then
    ok = 1
    if ARGV[3] == '1' then
      local php = redis.call('GET', KEYS[i + 2])
      if php == value then
        redis.call('PEXPIRE', KEYS[i + 2], lease_ms)
      elseif not php then
        redis.call('SET', KEYS[i + 2], value, 'PX', lease_ms)
      else
        ok = 0
      end
    end
    if ok == 1 then
      redis.call('PEXPIRE', KEYS[i], lease_ms)
      if ARGV[5 + 2 * n] == '1' then
        redis.call('SET', KEYS[i + 1], value, 'PX', tonumber(ARGV[2]))
      end
    end
  end
  out[#out + 1] = ok
end
return out
"""

#: KEYS: per account: lease, conn, php lock. ARGV: php (1/0), then one lease value per account.
#: Deletes each key whose value is the caller's. Returns the number of leases deleted.
RELEASE: Final = """
local released = 0
for i = 1, #KEYS, 3 do
  local value = ARGV[2 + (i - 1) / 3]
  if redis.call('GET', KEYS[i]) == value then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
  if redis.call('GET', KEYS[i + 1]) == value then
    redis.call('DEL', KEYS[i + 1])
  end
  if ARGV[1] == '1' and redis.call('GET', KEYS[i + 2]) == value then
    redis.call('DEL', KEYS[i + 2])
  end
end
return released
"""

#: KEYS: nodes set, own node key, own status key.
#: ARGV: name, info JSON, node PX ms, status JSON ('' = keep), status PX ms, node key prefix.
#: Returns {name, info JSON, ...} for every live node; prunes the set's dead names. If the
#: own node key holds another info (another live process has this name, or a killed one's
#: key has not expired yet), writes nothing and returns {that info} (one element).
HEARTBEAT: Final = """
local mine = redis.call('GET', KEYS[2])
if mine and mine ~= ARGV[2] then
  return {mine}
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[1], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4], 'PX', tonumber(ARGV[5]))
end
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local info = redis.call('GET', ARGV[6] .. name)
  if info then
    out[#out + 1] = name
    out[#out + 1] = info
  else
    redis.call('SREM', KEYS[1], name)
  end
end
return out
"""

#: KEYS: nodes set. ARGV: node key prefix, status key prefix.
#: Returns {name, status JSON or '', ...} for every live node.
STATUSES: Final = """
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. name) == 1 then
    out[#out + 1] = name
    out[#out + 1] = redis.call('GET', ARGV[2] .. name) or ''
  end
end
return out
"""

#: KEYS: this node's key. ARGV: its info JSON. Deletes the key only if it is this node's
#: (a node refused for a name another live node holds must not delete that node's key).
LEAVE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Lua source by name, for `RedisLink.run_script`.
SCRIPTS: Final[dict[str, str]] = {
    "reserve": RESERVE,
    "acquire": ACQUIRE,
    "renew": RENEW,
    "release": RELEASE,
    "heartbeat": HEARTBEAT,
    "statuses": STATUSES,
    "leave": LEAVE,
}
