-- defer: ready stream -> retry set, for a batch of jobs to try again later.
-- KEYS[1] = hk:{sN}:ready   KEYS[2] = hk:{sN}:retry
-- ARGV[1] = consumer group, then triples: entry id, due time (ms since epoch), encoded job
-- (with its attempt counter already advanced by the caller). An entry that is no longer pending
-- is skipped, so a job is never both in the retry set and finished. Returns the number deferred.
local group = ARGV[1]
local moved = 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    redis.call('XDEL', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    moved = moved + 1
  end
end
return moved
