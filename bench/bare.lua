-- wrk: the framework ceiling, one GET of the bare Flask app's JSON.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function request()
   local _, headers = pick_user()
   return wrk.format("GET", "/", headers)
end
