-- park: ready stream -> a paused campaign's parking list, for a batch of held-back jobs.
-- KEYS[1] = hk:{sN}:ready   KEYS[2] = hk:{sN}:parked (set of campaign ids with parked jobs)
-- KEYS[3..] = hk:{sN}:parked:<campaign> lists, one per campaign of the batch
-- ARGV[1] = consumer group, then triples: entry id, index of the job's list in KEYS, encoded
-- job. An entry that is no longer pending is skipped (a job is parked at most once, never both
-- parked and elsewhere). Returns the number parked.
local group = ARGV[1]
local parked = 0
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    redis.call('XDEL', KEYS[1], id)
    local list = KEYS[tonumber(ARGV[i + 1])]
    redis.call('RPUSH', list, ARGV[i + 2])
    redis.call('SADD', KEYS[2], string.match(list, ':parked:(%d+)$'))
    parked = parked + 1
  end
end
return parked
