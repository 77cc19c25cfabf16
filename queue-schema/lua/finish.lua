-- finish: ready stream -> events stream, for a batch of jobs that reached an end state.
-- KEYS[1] = hk:{sN}:ready   KEYS[2] = hk:{sN}:events
-- ARGV[1] = consumer group, then pairs: ARGV[i] = ready-stream entry id, ARGV[i+1] = encoded event
-- An entry that is no longer pending (already finished by another engine after a reclaim) is
-- skipped, so each job yields exactly one event. Returns the number of events written.
local group = ARGV[1]
local written = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    redis.call('XDEL', KEYS[1], id)
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[i + 1])
    written = written + 1
  end
end
return written
