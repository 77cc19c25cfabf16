-- fleet_lib: helpers the fleet scripts (slot, renew_slots, heartbeat, forget) are prefixed with.

-- The Redis server's time in ms since the epoch: one timeline for every node.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Who takes part in a site's connection slots: for `node`, returns the slot members held,
-- how many of them are node's (members are <node>/<n>), and how many nodes hold or want
-- slots (`node` included).
local function slot_nodes(conns, want, node)
  local held = redis.call('ZRANGE', conns, 0, -1)
  local nodes, mine, count = {[node] = true}, 0, 1
  for _, m in ipairs(held) do
    local owner = string.match(m, '^(.*)/[^/]*$') or m
    if owner == node then mine = mine + 1 end
    if not nodes[owner] then nodes[owner] = true; count = count + 1 end
  end
  for _, w in ipairs(redis.call('ZRANGE', want, 0, -1)) do
    if not nodes[w] then nodes[w] = true; count = count + 1 end
  end
  return held, mine, count
end
