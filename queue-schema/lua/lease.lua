-- lease: takes up to ARGV[3] send tokens of one site from the fleet-wide GCRA limiter.
-- KEYS[1] = hk:site:<site>:tat   (the theoretical arrival time, µs since the epoch)
-- ARGV[1] = emission interval in µs (1e6 / rate), ARGV[2] = burst (tokens beyond the steady
-- rate a quiet site may take at once), ARGV[3] = tokens wanted.
-- Time is the Redis server's, so nodes with skewed clocks share one timeline.
-- Returns {granted, wait_us}: wait_us > 0 only when nothing was granted (when the next token
-- is free).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = math.max(1, math.floor(tonumber(ARGV[1])))
local tau = interval * math.max(0, math.floor(tonumber(ARGV[2])))
local want = math.max(1, math.floor(tonumber(ARGV[3])))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local free = math.floor((now + tau - tat) / interval) + 1
if free <= 0 then
  return {0, tat - tau - now}
end
local n = math.min(want, free)
tat = tat + n * interval
local ttl_ms = math.floor((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', ttl_ms)
return {n, 0}
