-- bench-home-tokens.lua: a new bearer token on every request, for
-- scripts/bench-home.sh's "unseen" mode (issue 12: auth-layer on tokens it
-- has never seen). Usage:
--   wrk -tT -s scripts/bench-home-tokens.lua URL -- TOKENS_FILE T
-- TOKENS_FILE holds one token per line. Thread k of T starts k/T of the way
-- into the list, so threads do not send the same tokens. The caller makes
-- the list longer than the requests of one run (bench-home.sh checks wrk's
-- request count against it), so no token is sent twice.

local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local headers = {}
local n = 0
local i = 0

function init(args)
  local file = args[1]
  if not file then
    error("usage: wrk -s bench-home-tokens.lua URL -- TOKENS_FILE THREADS")
  end
  for line in io.lines(file) do
    if #line > 0 then
      n = n + 1
      headers[n] = "Bearer " .. line
    end
  end
  if n == 0 then
    error("no tokens in " .. file)
  end
  local threads = tonumber(args[2] or "1") or 1
  i = math.floor(n / threads) * (id or 0)
end

function request()
  i = i % n + 1
  return wrk.format(nil, nil, { Authorization = headers[i] })
end
