-- wrk: each request reads one seeded order of a random user. Order n
-- belongs to user (n - 1) % users, as bench.py seeds them.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function request()
   local index, headers = pick_user()
   local users = #bench.tokens
   local order_id = users * math.random(0, bench.seeded_orders / users - 1)
      + index + 1
   return wrk.format("GET", "/api/v1/orders/" .. order_id, headers)
end
