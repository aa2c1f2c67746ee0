-- wrk script for benches/callback_load.sh: trainer callbacks with metrics.
--
-- Usage: wrk -t THREADS ... -s callback.lua URL -- JOBS_FILE THREADS
-- JOBS_FILE holds one "<job id> <callback token>" per line. Each wrk thread
-- owns a disjoint share of the jobs and rotates through them, so every
-- job's `sequence` strictly increases and every callback is applied (none
-- is acknowledged-but-ignored as a duplicate).

local next_index = 0

-- Runs in the main Lua state once per thread, before init().
function setup(thread)
  thread:set("thread_index", next_index)
  next_index = next_index + 1
end

function init(args)
  jobs = {}
  counter = 0
  local i = 0
  for line in io.lines(args[1]) do
    local id, token = line:match("^(%S+)%s+(%S+)$")
    if id then
      if i % tonumber(args[2]) == thread_index then
        table.insert(jobs, {
          path = "/api/v1/training/jobs/" .. id .. "/callback",
          headers = {
            ["Authorization"] = "Bearer " .. token,
            ["Content-Type"] = "application/json",
          },
        })
      end
      i = i + 1
    end
  end
  if #jobs == 0 then
    error("thread " .. thread_index .. " got no jobs from " .. args[1])
  end
end

function request()
  counter = counter + 1
  local job = jobs[(counter % #jobs) + 1]
  local step = counter
  local body = string.format(
    '{"status":"running","progress":%.4f,"message":"step %d","sequence":%d,' ..
    '"metrics":{"epoch":%d,"step":%d,"loss":%.6f,"accuracy":%.6f,"mAP50":%.6f,"lr":0.001}}',
    (step % 1000) / 1000, step, step, math.floor(step / 100), step, 1 / (1 + step / 1000),
    1 - 1 / (1 + step / 1000), 0.5 + (step % 97) / 200)
  return wrk.format("POST", job.path, job.headers, body)
end
