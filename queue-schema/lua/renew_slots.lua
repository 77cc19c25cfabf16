-- renew_slots: extends the connection slots a node still holds on one site.
-- KEYS[1] = hk:site:{<site>}:conns, KEYS[2] = hk:site:{<site>}:want
-- ARGV[1] = lease time in ms, ARGV[2] = this node, ARGV[3..] = members.
-- Only members still present are extended (XX): a slot that expired meanwhile is not revived
-- past the cap. Returns {extended, other nodes waiting for a slot, nodes holding or wanting
-- slots}: a node whose connections idle while others wait, or that holds more than its fair
-- share (cap / the last figure), should close connections.
-- Runs prefixed with fleet_lib.lua (now_ms, slot_nodes).
local now = now_ms()
local expiry = now + tonumber(ARGV[1])
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local waiting = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then waiting = waiting - 1 end
local _, _, count = slot_nodes(KEYS[1], KEYS[2], ARGV[2])
return {n, waiting, count}
