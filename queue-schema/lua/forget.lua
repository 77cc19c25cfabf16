-- forget: removes a node from the membership if its heartbeat is still expired (a node that
-- came back meanwhile stays). KEYS[1] = hk:nodes, ARGV[1] = node. Returns 1 when removed.
-- Runs prefixed with fleet_lib.lua (now_ms, slot_nodes).
local now = now_ms()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= now then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
