-- wrk: each request asks for a page half-way down a random user's list,
-- through the cursor an earlier page handed out.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function request()
   local index, headers = pick_user()
   local path = "/api/v1/orders?after=" .. bench.deep_cursors[index + 1]
   return wrk.format("GET", path, headers)
end
