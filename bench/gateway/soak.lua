-- wrk script for the soak: a steady mix of requests to tiergate.
-- $BENCH_MIX names a file with one request per line:
--   PATH<TAB>BODY_FILE<TAB>HEADERS_FILE
-- taken in turn by every connection; each connection waits $BENCH_DELAY_MS
-- between its requests, so the rate is about connections / (delay + latency).
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local reqs = {}
local n = 0
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

function init(args)
  for line in slurp(os.getenv("BENCH_MIX")):gmatch("[^\r\n]+") do
    local path, body, hfile = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)$")
    local headers = {["Content-Type"] = "application/json"}
    for hl in slurp(hfile):gmatch("[^\r\n]+") do
      local k, v = hl:match("^([^:]+):%s*(.*)$")
      if k then headers[k] = v end
    end
    reqs[#reqs + 1] = wrk.format("POST", path, headers, slurp(body))
  end
end

function request()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end

function delay()
  return delay_ms
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
