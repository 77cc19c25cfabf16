-- slot: takes (or renews) one of a site's fleet-wide connection slots, sharing them fairly.
-- KEYS[1] = hk:site:{<site>}:conns  (sorted set: member = <node>/<n>, score = expiry in ms)
-- KEYS[2] = hk:site:{<site>}:want   (sorted set: node refused a slot lately, score = expiry)
-- ARGV[1] = member, ARGV[2] = the fleet's cap, ARGV[3] = lease time in ms, ARGV[4] = node.
-- A node may hold more than its fair share (cap / nodes holding or wanting slots) only while
-- no other node wants one: so a node that took every slot while alone gives them up, one
-- closing connection at a time, when others arrive. Slots of a node that stopped renewing
-- (it died) expire by themselves. Time is the Redis server's.
-- Returns 1 when the member holds a slot now, 0 when refused.
-- Runs prefixed with fleet_lib.lua (now_ms, slot_nodes).
local now = now_ms()
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[2])
local node = ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  return 1
end
local held, mine, count = slot_nodes(KEYS[1], KEYS[2], node)
local fair = math.max(1, math.ceil(cap / count))
if #held >= cap or (count > 1 and mine >= fair) then
  redis.call('ZADD', KEYS[2], now + 2000, node)
  redis.call('PEXPIRE', KEYS[2], 2000)
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREM', KEYS[2], node)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
