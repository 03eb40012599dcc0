-- TechEmpower's plaintext shape: 16 requests pipelined in one write, every write.
-- wrk counts each response, so req/s is requests, not writes.
local depth = 16
local req
init = function(args)
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end
request = function()
  return req
end
