-- defer: ready stream -> retry set, for a batch of jobs to try again later.
-- KEYS[1] = hk:{sN}:ready   KEYS[2] = hk:{sN}:retry   KEYS[3] = hk:{sN}:events
-- ARGV[1] = consumer group, then quadruples: entry id, due time (ms since epoch), encoded job
-- (with its attempt counter already advanced by the caller), encoded deferral event or "" (a
-- job only held back has none). An entry that is no longer pending is skipped, so a job is
-- never both in the retry set and finished, and its deferral is recorded at most once.
-- Returns the number deferred.
local group = ARGV[1]
local moved = 0
for i = 2, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    redis.call('XDEL', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    if ARGV[i + 3] ~= '' then
      redis.call('XADD', KEYS[3], '*', 'e', ARGV[i + 3])
    end
    moved = moved + 1
  end
end
return moved
