"""The Lua scripts of the Redis peer store: each announce is two atomic round trips.

Keys, for prefix ``P`` and swarm ``H`` (info hash in hex); the ``{H}`` hash tag keeps
a swarm's keys together::

    P{H}:p           hash   address → record: kind (C/S/I), gateway (0/1), peer id (20
                             bytes), location key (region|idc|rack)
    P{H}:e           zset   address → expiry time
    P{H}:b:K|LOC     zset   one bucket: address → handout order (lower = handed out
                             less recently; peers never handed out score below 1)
    P{H}:n           hash   bucket "K|LOC" → peers in it
    P{H}:g           hash   idc → live gateways
    P{H}:m           hash   downloaded, seq (handout counter)
    Pswarms          zset   H → latest expiry among its peers
    Pswarmpeers      hash   H → peers in it (for the totals)
    Ptotals          hash   peers → peers in all swarms

Times come from the tracker's wall clock (trackers sharing a Redis need clocks in
sync to well within a peer TTL, which NTP gives). Every per-swarm key also gets a
Redis TTL, so a Redis that no tracker talks to any more empties itself. The
scripts build key names themselves (bucket names are data), so they need a
standalone Redis (or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

_COMMON = """
local prefix, h = ARGV[1], ARGV[2]
local base = prefix .. '{' .. h .. '}:'
local kp, ke, kn, kg, km = base .. 'p', base .. 'e', base .. 'n', base .. 'g', base .. 'm'
local kswarms, kswarmpeers, ktotals = prefix .. 'swarms', prefix .. 'swarmpeers', prefix .. 'totals'

local function idc_of(lockey)
  return string.match(lockey, '^[^|]*|([^|]*)|')
end

local function count_peer(delta)
  redis.call('HINCRBY', ktotals, 'peers', delta)
  if redis.call('HINCRBY', kswarmpeers, h, delta) <= 0 then
    redis.call('HDEL', kswarmpeers, h)
  end
end

local function unfile(addr, rec)
  local bucket = string.sub(rec, 1, 1) .. '|' .. string.sub(rec, 23)
  redis.call('ZREM', base .. 'b:' .. bucket, addr)
  if redis.call('HINCRBY', kn, bucket, -1) <= 0 then
    redis.call('HDEL', kn, bucket)
  end
  if string.sub(rec, 2, 2) == '1' then
    local idc = idc_of(string.sub(rec, 23))
    if redis.call('HINCRBY', kg, idc, -1) <= 0 then
      redis.call('HDEL', kg, idc)
    end
  end
end

local function drop(addr)
  local rec = redis.call('HGET', kp, addr)
  redis.call('ZREM', ke, addr)
  if not rec then
    return 0
  end
  unfile(addr, rec)
  redis.call('HDEL', kp, addr)
  count_peer(-1)
  return 1
end

local function expire(now, limit)
  local dead = redis.call('ZRANGEBYSCORE', ke, '-inf', now, 'LIMIT', 0, limit)
  for _, addr in ipairs(dead) do
    drop(addr)
  end
  return #dead
end

-- Forget a whole swarm of hex hash sh (evicted or dead).
local function forget(sh)
  local sbase = prefix .. '{' .. sh .. '}:'
  for _, bucket in ipairs(redis.call('HKEYS', sbase .. 'n')) do
    redis.call('DEL', sbase .. 'b:' .. bucket)
  end
  redis.call('DEL', sbase .. 'p', sbase .. 'e', sbase .. 'n', sbase .. 'g', sbase .. 'm')
  local peers = tonumber(redis.call('HGET', kswarmpeers, sh) or '0')
  if peers ~= 0 then
    redis.call('HINCRBY', ktotals, 'peers', -peers)
  end
  redis.call('HDEL', kswarmpeers, sh)
  redis.call('ZREM', kswarms, sh)
end
"""

ANNOUNCE = (
    _COMMON
    + """
-- ARGV: prefix, hash, addr, peer_id, kind, lockey, event, now, ttl, max_peers,
--       gateways, max_swarms, max_locations, tiebreak, key_ttl_ms
local addr, peer_id, kind, lockey, event = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now, ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
local max_peers, gateways = tonumber(ARGV[10]), tonumber(ARGV[11])
local max_swarms, max_locations = tonumber(ARGV[12]), tonumber(ARGV[13])
local tiebreak, key_ttl = tonumber(ARGV[14]), tonumber(ARGV[15])

expire(now, 1000)
local gw = '0'
if event == 'stopped' then
  drop(addr)
else
  local rec = redis.call('HGET', kp, addr)
  local bucket = kind .. '|' .. lockey
  if not rec and redis.call('HEXISTS', kn, bucket) == 0
      and redis.call('HLEN', kn) >= 3 * max_locations then
    lockey = '||'
    bucket = kind .. '|' .. lockey
  end
  if rec then
    gw = string.sub(rec, 2, 2)
    local old = string.sub(rec, 1, 1) .. '|' .. string.sub(rec, 23)
    if old ~= bucket then
      local score = redis.call('ZSCORE', base .. 'b:' .. old, addr) or tiebreak
      unfile(addr, rec)
      gw = '0'
      redis.call('ZADD', base .. 'b:' .. bucket, score, addr)
      redis.call('HINCRBY', kn, bucket, 1)
    end
  else
    if redis.call('ZCARD', ke) >= max_peers then
      local oldest = redis.call('ZRANGE', ke, 0, 0)
      if oldest[1] then
        drop(oldest[1])
      end
    end
    redis.call('ZADD', base .. 'b:' .. bucket, tiebreak, addr)
    redis.call('HINCRBY', kn, bucket, 1)
    count_peer(1)
  end
  if gateways > 0 and kind == 'I' and gw == '0' then
    local idc = idc_of(lockey)
    if tonumber(redis.call('HGET', kg, idc) or '0') < gateways then
      redis.call('HINCRBY', kg, idc, 1)
      gw = '1'
    end
  end
  redis.call('HSET', kp, addr, kind .. gw .. peer_id .. lockey)
  redis.call('ZADD', ke, now + ttl, addr)
  if event == 'completed' then
    redis.call('HINCRBY', km, 'downloaded', 1)
  end
  redis.call('ZADD', kswarms, now + ttl, h)
  if redis.call('ZCARD', kswarms) > max_swarms then
    local oldest = redis.call('ZRANGE', kswarms, 0, 0)
    if oldest[1] and oldest[1] ~= h then
      forget(oldest[1])
    end
  end
  for _, key in ipairs({kp, ke, kn, kg, km, base .. 'b:' .. bucket}) do
    redis.call('PEXPIRE', key, key_ttl)
  end
end
if redis.call('HLEN', kp) == 0 then
  forget(h)
end
return {gw, redis.call('HGETALL', kn)}
"""
)

TAKE = (
    _COMMON
    + """
-- ARGV: prefix, hash, requester addr, with_ids (0/1), now, tiebreak, then bucket, count pairs.
-- Returns {IPv4 addresses, IPv6 addresses, their peer ids}, each concatenated into one
-- string (6, 18 and 20 bytes an item; ids in the order v4 then v6): one reply element
-- instead of one per peer, which is what a client spends its time parsing.
local me, with_ids = ARGV[3], ARGV[4] == '1'
local now, tiebreak = tonumber(ARGV[5]), tonumber(ARGV[6])
local seq = redis.call('HINCRBY', km, 'seq', 1)
-- The announce just dropped the expired peers; only if some are left (more than its
-- batch, or expired in between) does each candidate need a look at its expiry.
local check = #redis.call('ZRANGEBYSCORE', ke, '-inf', now, 'LIMIT', 0, 1) > 0
local v4, v6 = {}, {}
for i = 7, #ARGV, 2 do
  local key = base .. 'b:' .. ARGV[i]
  local want = tonumber(ARGV[i + 1])
  local taken, scores = 0, {}
  -- Spare candidates: the requester itself, and (when checking) expired peers.
  local spare = check and want + 8 or want
  for _, addr in ipairs(redis.call('ZRANGE', key, 0, spare)) do
    if taken >= want then
      break
    end
    if addr ~= me and (not check
        or tonumber(redis.call('ZSCORE', ke, addr) or '0') > now) then
      taken = taken + 1
      if #addr == 6 then
        v4[#v4 + 1] = addr
      else
        v6[#v6 + 1] = addr
      end
      tiebreak = (tiebreak + 0.6180339887) % 1
      scores[#scores + 1] = seq + tiebreak
      scores[#scores + 1] = addr
    end
  end
  if #scores > 0 then
    redis.call('ZADD', key, 'XX', unpack(scores))
  end
end
local ids = {}
if with_ids then
  for _, list in ipairs({v4, v6}) do
    if #list > 0 then
      for _, rec in ipairs(redis.call('HMGET', kp, unpack(list))) do
        ids[#ids + 1] = rec and string.sub(rec, 3, 22) or string.rep('-', 20)
      end
    end
  end
end
return {table.concat(v4), table.concat(v6), table.concat(ids)}
"""
)

STATS = (
    _COMMON
    + """
-- ARGV: prefix, hash, now
expire(tonumber(ARGV[3]), 1000)
if redis.call('HLEN', kp) == 0 then
  forget(h)
  return {{}, 0}
end
return {redis.call('HGETALL', kn), tonumber(redis.call('HGET', km, 'downloaded') or '0')}
"""
)

PURGE = (
    _COMMON
    + """
-- ARGV: prefix, (unused hash), now, limit: forget swarms whose every peer has expired.
local dead = redis.call('ZRANGEBYSCORE', kswarms, '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local removed = 0
for _, sh in ipairs(dead) do
  removed = removed + tonumber(redis.call('HGET', kswarmpeers, sh) or '0')
  forget(sh)
end
return {#dead, removed}
"""
)
