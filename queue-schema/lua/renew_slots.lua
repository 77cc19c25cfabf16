-- renew_slots: extends the connection slots a node still holds on one site.
-- KEYS[1] = hk:site:{<site>}:conns, KEYS[2] = hk:site:{<site>}:want
-- ARGV[1] = lease time in ms, ARGV[2] = this node, ARGV[3..] = members.
-- Only members still present are extended (XX): a slot that expired meanwhile is not revived
-- past the cap. Returns {extended, other nodes waiting for a slot, nodes holding or wanting
-- slots}: a node whose connections idle while others wait, or that holds more than its fair
-- share (cap / the last figure), should close connections.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local waiting = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then waiting = waiting - 1 end
local nodes, count = {}, 0
nodes[ARGV[2]] = true
count = 1
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local owner = string.match(m, '^(.*)/[^/]*$') or m
  if not nodes[owner] then nodes[owner] = true; count = count + 1 end
end
for _, w in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not nodes[w] then nodes[w] = true; count = count + 1 end
end
return {n, waiting, count}
