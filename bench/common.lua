-- Shared by every wrk script of the benchmark (see bench.py).
--
-- bench.py writes the run's data (a token per user, the order numbers
-- each user owns, a deep-page cursor per user) as a Lua file and names
-- it in BENCH_DATA. Each wrk thread counts the answers outside 2xx; the
-- main thread sums them and prints one JSON line that bench.py reads.

dofile(os.getenv("BENCH_DATA"))

local threads = {}

function setup(thread)
   thread:set("thread_no", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   non_2xx = 0
   math.randomseed(thread_no * 7919 + os.time())
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non_2xx = non_2xx + 1
   end
end

-- A random user of the seed: their index (0-based) and request headers.
function pick_user()
   local index = math.random(0, #bench.tokens - 1)
   local headers = {
      ["Authorization"] = "Bearer " .. bench.tokens[index + 1],
   }
   return index, headers
end

function done(summary, latency, requests)
   local counted = 0
   for _, thread in ipairs(threads) do
      counted = counted + thread:get("non_2xx")
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
         .. '"mean_us":%.1f,"socket_errors":%d,"timeouts":%d,"non_2xx":%d}\n',
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99), latency.mean,
      errors.connect + errors.read + errors.write, errors.timeout, counted))
end
