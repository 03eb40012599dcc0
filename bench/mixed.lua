-- 10% of requests go to /slow (the app waits 20 ms there, like a database call).
local counter = 0
request = function()
  counter = counter + 1
  if counter % 10 == 0 then
    return wrk.format("GET", "/slow")
  end
  return wrk.format("GET", "/")
end
