-- enqueue: campaign expansion → ready stream, exactly once even when a page is replayed.
-- KEYS[1] = hk:{sN}:ready   KEYS[2] = hk:{sN}:expanded (hash: campaign id → last seq enqueued)
-- ARGV[1] = campaign id, then pairs in ascending seq order: seq, encoded job.
-- A job whose seq is not above the campaign's recorded high mark on this shard was enqueued by
-- an earlier (interrupted) run and is skipped. Returns the number of jobs added.
local mark = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local added = 0
local high = mark
for i = 2, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > high then
    redis.call('XADD', KEYS[1], '*', 'j', ARGV[i + 1])
    high = seq
    added = added + 1
  end
end
if high > mark then
  redis.call('HSET', KEYS[2], ARGV[1], high)
end
return added
