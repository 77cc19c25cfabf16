-- slot: takes (or renews) one of a site's fleet-wide connection slots.
-- KEYS[1] = hk:site:<site>:conns   (sorted set: member = <node>/<n>, score = expiry in ms)
-- ARGV[1] = member, ARGV[2] = the fleet's cap, ARGV[3] = lease time in ms.
-- Slots of a node that stopped renewing (it died) expire by themselves. Time is the Redis
-- server's. Returns 1 when the member holds a slot now, 0 when the cap is reached.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
