-- wrk script: POST /trade as one broker, random accounts of that broker, 60% buys and 40%
-- sells (some refused for insufficient holdings), a fresh Idempotency-Key on every request.
-- Arguments (after --): api_key first_account last_account step.
-- done() prints one JSON line that stockledger bench reads.

local symbols = {"AAPL", "MSFT", "GOOG", "AMZN"}
local threads = {}
local counter = 0
local headers, first, last, step, prefix

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   headers = {
      ["Authorization"] = "Bearer " .. args[1],
      ["Content-Type"] = "application/json",
   }
   first, last, step = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
   -- Keys stay unique across threads and across runs against the same database.
   prefix = string.format("wrk-%d-%d-%d-", os.time(), id, math.random(1, 1e9))
   math.randomseed(os.time() * 1000 + id)
end

function request()
   counter = counter + 1
   local account = first + step * math.random(0, math.floor((last - first) / step))
   local side, quantity = "buy", math.random(1, 100)
   if math.random() < 0.4 then
      side, quantity = "sell", math.random(1, 150)
   end
   headers["Idempotency-Key"] = prefix .. counter
   local body = string.format(
      '{"account_id":%d,"symbol":"%s","side":"%s","quantity":%d,"price":"100.00"}',
      account, symbols[math.random(1, 4)], side, quantity)
   return wrk.format("POST", "/trade", headers, body)
end

function done(summary, latency, requests)
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
      summary.errors.read, summary.errors.write, summary.errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
