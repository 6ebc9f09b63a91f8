-- Admit one request for an alias, atomically.
-- KEYS[1] spec hash  KEYS[2] alive zset  KEYS[3] request stream
-- ARGV[1] encoded request  ARGV[2] default max waiting  ARGV[3] stall grace (seconds)
-- Returns {0, entry id} | {1} unknown alias | {2, state, last error} no live worker
--       | {3, waiting, limit} overload
-- A worker counts as live until its heartbeat is ARGV[3] seconds late: when Redis
-- itself stalled (CLIENT PAUSE, DEBUG SLEEP, a slow fork), every heartbeat is late
-- by the stall, and refusing then would blame workers that are fine.
if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('ZCOUNT', KEYS[2], now - tonumber(ARGV[3]), '+inf') == 0 then
  local why = redis.call('HMGET', KEYS[1], 'state', 'last_error')
  return {2, why[1] or '', why[2] or ''}
end
local limit = tonumber(redis.call('HGET', KEYS[1], 'max_waiting') or ARGV[2])
local waiting = redis.call('XLEN', KEYS[3])
if waiting >= limit then
  -- acked entries are deleted, so the stream holds waiting + in-flight ones
  waiting = waiting - redis.call('XPENDING', KEYS[3], 'workers')[1]
  if waiting >= limit then return {3, waiting, limit} end
end
return {0, redis.call('XADD', KEYS[3], '*', 'm', ARGV[1])}
