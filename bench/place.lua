-- wrk: each request places an order of two products as a random user.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local body = '{"products":[{"uuid":"' .. bench.products[1] .. '","quantity":2},'
   .. '{"uuid":"' .. bench.products[2] .. '","quantity":1}]}'

function request()
   local _, headers = pick_user()
   headers["Content-Type"] = "application/json"
   return wrk.format("POST", "/api/v1/orders", headers, body)
end
