-- Admit one gateway request made with an API key, atomically: the key is known and
-- not revoked, may use the alias, and is under its rpm/tpm limits; only then is the
-- request counted.
-- KEYS[1] the key's record  KEYS[2] its window of this minute  KEYS[3] its window of
-- the previous minute  KEYS[4] its usage of today
-- ARGV[1] alias  ARGV[2] now (whole epoch seconds)  ARGV[3] window ttl  ARGV[4] usage ttl
-- Returns {0, name, aliases, rpm, tpm} admitted | {1} unknown key | {2, name} revoked
--       | {3, name, aliases} alias not allowed
--       | {4, name, 'rpm' or 'tpm', limit, seconds until the window frees up}
-- A window holds r<S> (requests) and t<S> (tokens) per second S of its minute; a limit
-- counts the last 60 seconds, so it slides by the second across the minute's edge.
local rec = redis.call('HMGET', KEYS[1], 'name', 'aliases', 'rpm', 'tpm', 'revoked')
local name = rec[1]
if not name then return {1} end
if rec[5] and rec[5] ~= '' and rec[5] ~= '0' then return {2, name} end
local aliases = rec[2] or ''
if aliases ~= '' and not string.find(',' .. aliases .. ',', ',' .. ARGV[1] .. ',', 1, true) then
  return {3, name, aliases}
end
local rpm = tonumber(rec[3]) or 0
local tpm = tonumber(rec[4]) or 0
local now = tonumber(ARGV[2])
local second = now % 60
if rpm > 0 or tpm > 0 then
  local counts = {r = {}, t = {}}
  local function read(key, base, from)
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      local kind, s = string.sub(fields[i], 1, 1), tonumber(string.sub(fields[i], 2))
      if counts[kind] and s and s >= from then
        counts[kind][base + s] = (counts[kind][base + s] or 0) + tonumber(fields[i + 1])
      end
    end
  end
  read(KEYS[3], now - second - 60, second + 1)
  read(KEYS[2], now - second, 0)
  -- nil when under the limit, else the seconds until enough of the window has passed
  local function wait(per_second, limit)
    if limit <= 0 then return nil end
    local total = 0
    for at = now - 59, now do total = total + (per_second[at] or 0) end
    if total < limit then return nil end
    for at = now - 59, now do
      total = total - (per_second[at] or 0)
      if total < limit then return at + 60 - now end
    end
    return 60
  end
  local kind, limit = 'rpm', rpm
  local seconds = wait(counts.r, rpm)
  if not seconds then kind, limit, seconds = 'tpm', tpm, wait(counts.t, tpm) end
  if seconds then
    redis.call('HINCRBY', KEYS[4], 'rate_limited', 1)
    redis.call('EXPIRE', KEYS[4], ARGV[4])
    return {4, name, kind, limit, seconds}
  end
  redis.call('HINCRBY', KEYS[2], 'r' .. second, 1)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('HINCRBY', KEYS[4], 'requests', 1)
redis.call('EXPIRE', KEYS[4], ARGV[4])
return {0, name, aliases, rpm, tpm}
