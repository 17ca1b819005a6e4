-- wrk script for bench/run.sh: every connection rotates through the request paths listed in the
-- file named after `--` (one per line, e.g. /<hash>.narinfo), and the summary is printed as one
-- JSON line so that run.sh reads the same numbers for nginx and cached.
--   wrk -t2 -c64 -d10s -s narinfo.lua http://127.0.0.1:PORT -- paths.txt

local paths = {}
local i = 0

function init(args)
  local f = assert(io.open(args[1], "r"), "cannot open " .. tostring(args[1]))
  for line in f:lines() do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  f:close()
  assert(#paths > 0, "no paths in " .. args[1])
  -- Threads start at different places in the list, so they do not ask in lockstep.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  i = math.random(#paths)
end

function request()
  i = i + 1
  if i > #paths then
    i = 1
  end
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"req_per_sec":%.1f,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6), summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
