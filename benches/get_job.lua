-- wrk script for benches/callback_load.sh: GET one job, rotating through
-- the job ids in JOBS_FILE ("<job id> <token>" per line).

function init(args)
  paths = {}
  for line in io.lines(args[1]) do
    local id = line:match("^(%S+)")
    if id then
      table.insert(paths, "/api/v1/training/jobs/" .. id)
    end
  end
  counter = 0
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
