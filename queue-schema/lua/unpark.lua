-- unpark: a campaign's parking list -> ready stream, once the campaign is no longer paused.
-- KEYS[1] = hk:{sN}:parked:<campaign>   KEYS[2] = hk:{sN}:ready   KEYS[3] = hk:{sN}:parked
-- ARGV[1] = campaign id, ARGV[2] = most jobs to move in one call
-- Atomic: a job is in the list or in the stream, never both, never neither. The campaign
-- leaves the parked set when its list is empty. Returns the count moved.
local jobs = redis.call('LPOP', KEYS[1], tonumber(ARGV[2]))
local n = 0
if jobs then
  for _, job in ipairs(jobs) do
    redis.call('XADD', KEYS[2], '*', 'j', job)
  end
  n = #jobs
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return n
