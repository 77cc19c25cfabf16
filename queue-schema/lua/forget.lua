-- forget: removes a node from the membership if its heartbeat is still expired (a node that
-- came back meanwhile stays). KEYS[1] = hk:nodes, ARGV[1] = node. Returns 1 when removed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= now then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
