-- wrk: each request asks for the first page of a random user's orders.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function request()
   local _, headers = pick_user()
   return wrk.format("GET", "/api/v1/orders", headers)
end
