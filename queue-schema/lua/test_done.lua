-- test_done: jobs of a test send reached their end; once all have, the test send's snapshot
-- lingers a little for stragglers and then goes.
-- KEYS[1] = hk:camp:{<test id>}
-- ARGV[1] = jobs that ended, ARGV[2] = seconds the snapshot lingers after the last one
-- Returns the jobs still to end (0 when none, or when the snapshot is gone already).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local left = redis.call('HINCRBY', KEYS[1], 'left', -tonumber(ARGV[1]))
if left <= 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 0
end
return left
