-- move_due: retry set -> ready stream, for jobs whose due time has passed.
-- KEYS[1] = hk:{sN}:retry   KEYS[2] = hk:{sN}:ready
-- ARGV[1] = now (ms since epoch), ARGV[2] = most jobs to move in one call
-- Atomic: a job is in the set or in the stream, never both, never neither. Returns the count.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'j', job)
end
for i = 1, #due, 500 do
  redis.call('ZREM', KEYS[1], unpack(due, i, math.min(i + 499, #due)))
end
return #due
