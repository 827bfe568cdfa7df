-- wrk script for tests/bench/feedback.py: POST /v1/feedback, each request with the next pre-signed
-- token of the file given after `--`; prints one JSON line of totals and latency percentiles.
local tokens, next_index = {}, 0

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
end

function request()
  next_index = next_index % #tokens + 1
  return wrk.format("POST", "/v1/feedback", {["Content-Type"] = "application/json"},
                    '{"feedback_token":"' .. tokens[next_index] .. '","rating":"up"}')
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
