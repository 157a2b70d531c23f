-- wrk script for bench/http_server.sh: POSTs the body in $BODY_FILE with the bearer token in
-- $TOKEN over keep-alive connections and prints one JSON line of results.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = os.getenv("METHOD") or "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local token = os.getenv("TOKEN")
if token then wrk.headers["Authorization"] = "Bearer " .. token end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"failed":%d,"seconds":%.2f,"requests_per_s":%.0f,"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f}\n',
    summary.requests, failed, secs, (summary.requests - failed) / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
