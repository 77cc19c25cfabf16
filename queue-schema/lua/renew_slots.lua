-- renew_slots: extends the connection slots a node still holds on one site.
-- KEYS[1] = hk:site:<site>:conns, ARGV[1] = lease time in ms, ARGV[2..] = members.
-- Only members still present are extended (XX): a slot that expired meanwhile is not revived
-- past the cap. Returns how many were extended.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return n
