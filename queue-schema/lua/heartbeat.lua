-- heartbeat: one engine node says it is alive and reads who else is.
-- KEYS[1] = hk:nodes   (sorted set: member = node id, score = expiry in ms)
-- ARGV[1] = node id, ARGV[2] = time to live in ms; ARGV[2] = 0 leaves (graceful stop).
-- Returns {now_ms, node, expiry, node, expiry, ...} for every member, dead ones included:
-- whoever sees a dead node first cleans up after it, then removes it.
-- Runs prefixed with fleet_lib.lua (now_ms, slot_nodes).
local now = now_ms()
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local out = {now}
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  out[#out + 1] = all[i]
  out[#out + 1] = tonumber(all[i + 1])
end
return out
