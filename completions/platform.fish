# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_platform_global_optspecs
    string join \n server= token= o/output= no-color v/verbose quiet h/help V/version
end

function __fish_platform_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_platform_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_platform_using_subcommand
    set -l cmd (__fish_platform_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c platform -n "__fish_platform_needs_command" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_needs_command" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_needs_command" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_needs_command" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_needs_command" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_needs_command" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_needs_command" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_needs_command" -f -a "serve" -d 'Run the daemon: HTTP API, database, scheduler and runner'
complete -c platform -n "__fish_platform_needs_command" -f -a "job" -d 'Create, list, inspect and cancel training jobs'
complete -c platform -n "__fish_platform_needs_command" -f -a "queue" -d 'List queues, or pause and resume one'
complete -c platform -n "__fish_platform_needs_command" -f -a "metrics" -d 'Show a job\'s metric points (oldest first), or overlay several jobs\' in one chart'
complete -c platform -n "__fish_platform_needs_command" -f -a "dataset" -d 'Upload and list datasets in the daemon\'s object store'
complete -c platform -n "__fish_platform_needs_command" -f -a "sweep" -d 'Show, list and cancel sweeps (create one with `job create --sweep`)'
complete -c platform -n "__fish_platform_needs_command" -f -a "framework" -d 'List the trainer frameworks the daemon knows, or make it reload them'
complete -c platform -n "__fish_platform_needs_command" -f -a "webhook" -d 'Manage webhook endpoints and see their deliveries (admins)'
complete -c platform -n "__fish_platform_needs_command" -f -a "gpu" -d 'List the daemon\'s GPUs: which job holds each, latest telemetry'
complete -c platform -n "__fish_platform_needs_command" -f -a "prune" -d 'Remove the metric history (downsampled or deleted), archived logs and, when asked, artifacts of jobs that ended long ago (admins)'
complete -c platform -n "__fish_platform_needs_command" -f -a "report" -d 'Send a trainer callback from the trainer environment (CALLBACK_URL, CALLBACK_TOKEN)'
complete -c platform -n "__fish_platform_needs_command" -f -a "db" -d 'Work on the daemon\'s database file (where the daemon runs, not over HTTP)'
complete -c platform -n "__fish_platform_needs_command" -f -a "login" -d 'Check a token with a server and save both as a context (mode 0600)'
complete -c platform -n "__fish_platform_needs_command" -f -a "context" -d 'List, switch and delete saved contexts (server and token pairs)'
complete -c platform -n "__fish_platform_needs_command" -f -a "whoami" -d 'Print who the server takes you for (user, role, token name)'
complete -c platform -n "__fish_platform_needs_command" -f -a "user" -d 'Create, list, disable and enable users (admins)'
complete -c platform -n "__fish_platform_needs_command" -f -a "token" -d 'Create, list and revoke API tokens'
complete -c platform -n "__fish_platform_needs_command" -f -a "audit" -d 'Show the audit trail of state-changing requests (admins)'
complete -c platform -n "__fish_platform_needs_command" -f -a "version" -d 'Print the client\'s version and the server\'s, when reachable'
complete -c platform -n "__fish_platform_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c platform -n "__fish_platform_needs_command" -f -a "man" -d 'Print the man page, or write every page to a directory'
complete -c platform -n "__fish_platform_needs_command" -f -a "supervise" -d 'Supervise one trainer process (started by the daemon)'
complete -c platform -n "__fish_platform_needs_command" -f -a "demo-train" -d 'Run the built-in demo trainer (started by the daemon)'
complete -c platform -n "__fish_platform_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand serve" -l bind -d 'Address to listen on [default: $HOST:$PORT, else 127.0.0.1:8000]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l database-url -d 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l data-dir -d 'Directory for the database and the local object store [default: the user\'s data directory]' -r -F
complete -c platform -n "__fish_platform_using_subcommand serve" -l db-pool-size -d 'Connections in the PostgreSQL pool [default: the URL\'s pool_size, else 10]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l runner -d 'Which runner launches trainers' -r -f -a "subprocess\t'Local child processes (the default on a dev box)'
kubernetes\t'One Kubernetes Job per training job'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l leader-election -d 'Leader election among replicas sharing one PostgreSQL database: `lease` (one replica schedules and watches trainers, every one serves the API; needs PostgreSQL and the Kubernetes runner) or `off` (this daemon does everything)' -r -f -a "off\t'This daemon leads alone (one replica; SQLite or PostgreSQL)'
lease\t'A lease row in PostgreSQL: one replica at a time leads (needs PostgreSQL and the Kubernetes runner)'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l replica-id -d 'This replica\'s name in the leader lease and /health [default: the host name (a pod\'s name on Kubernetes), the process id and a random suffix]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l api-token -d 'Bearer token required on the user-facing API' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l admin-token -d 'The first admin\'s token, stored (as a hash) when the database has no user yet; without it a generated one goes to `admin-token` in the data directory. Setting it also requires tokens on user routes' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l callback-auth -d 'Require each job\'s bearer token on callbacks ("off" for seed-era trainers)' -r -f -a "on\t'Enabled'
off\t'Disabled'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-body-bytes -d 'Largest JSON request body, in bytes' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l backend-base-url -d 'Base URL trainers use to reach this daemon [default: http://<bind address>]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l cors-origins -d 'Allowed CORS origins: a JSON list or comma-separated' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l trainers -d 'Trainers file (TOML) [default: trainers.toml in the user\'s config directory, if present]' -r -F
complete -c platform -n "__fish_platform_using_subcommand serve" -l trainer-subprocess-path -d 'Directory with one sub-directory per framework (the seed\'s layout)' -r -F
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-concurrent-jobs -d 'Most jobs running at once [default: 1 for subprocess, 0 (unlimited) for kubernetes]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l queues -d 'Queues besides `default`, as the config file\'s `[queues.NAME]` tables (`max_concurrent`, `max_per_user`, `kueue_queue`) or the same as JSON, e.g. \'{"gpu": {"max_concurrent": 2, "max_per_user": 1}}\'' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-job-duration -d 'Each job\'s default and largest `max_duration`, in seconds (default: none)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l heartbeat-timeout -d 'Default `heartbeat_timeout` of jobs whose request and trainer set none, in seconds (default: none)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l stale-after -d 'Default `stale_after` (further silence before a stalled job is stopped), in seconds (default: never stopped)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kill-grace -d 'Seconds between SIGTERM and SIGKILL when cancelling a trainer' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l artifact-grace -d 'Seconds after a job ends during which its trainer may still upload new artifacts (never replacing one); later uploads are refused (409)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l idempotency-ttl -d 'Seconds an `Idempotency-Key` of a job create is remembered: a retry with the same key and body within it gets the original job back (at most 86400, the default)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l webhook-timeout -d 'Seconds one webhook delivery attempt may take' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l webhook-retry-base -d 'Seconds before a failed webhook delivery is first retried; each later retry waits four times longer (at most 4 h), until WEBHOOK_RETRY_FOR has passed' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l webhook-retry-for -d 'Seconds after its event during which a failing webhook delivery is retried; after that it is recorded as failed (at most 604800, a week)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l webhooks -d 'Webhook endpoints from the configuration: a JSON list of {"url", "secret", "events", "frameworks", "users", "format"} (only url and secret required); they replace the configured ones at each start' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-connections -d 'Most open client connections; past it a new connection replaces the longest-idle one, or gets a quick 503 when none is idle [default: 4096, lowered to fit the open-files limit]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-streams -d 'Most event streams and followed logs open at once; past it they are answered 503' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l header-timeout -d 'Seconds a client has to send a request\'s headers (from connecting, or from its first byte on a reused connection)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l idle-timeout -d 'Seconds a kept-alive connection may wait for its next request before it is closed' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-auth-failures -d 'Failed API-token attempts per minute from one client address before it gets 429 for the rest of the minute (0 = no limit)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-log-bytes -d 'Log bytes kept per job, at least 8 KiB (older output is dropped)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l s3-endpoint -d 'S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO [default: AWS S3 when BUCKET_NAME is set]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l aws-endpoint-url -d 'Alias of S3_ENDPOINT (the AWS SDKs\' name for it)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l bucket -d 'Bucket for datasets, job outputs and logs; selects S3 storage [default: a local directory in the data directory]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l aws-access-key-id -d 'S3 access key id [default: the AWS credential chain]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l aws-secret-access-key -d 'S3 secret access key (prefer the environment variable: flags are visible in `ps`)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l aws-session-token -d 'S3 session token, for temporary credentials' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l aws-region -d 'S3 region (S3-compatible servers usually accept the default)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l s3-path-style -d 'Path-style S3 requests (endpoint/bucket/key), as MinIO and most S3-compatible servers expect; "off" for virtual-hosted style' -r -f -a "on\t'Enabled'
off\t'Disabled'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l s3-allow-http -d 'Allow a plain-HTTP S3 endpoint [default: on for http:// endpoints]' -r -f -a "on\t'Enabled'
off\t'Disabled'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l dataset-check -d 'Check at job creation that the dataset URI exists in the configured store ("off" for stores the daemon cannot see)' -r -f -a "on\t'Enabled'
off\t'Disabled'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l max-object-bytes -d 'Largest object a dataset or artifact upload may create, in bytes' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l presign-downloads -d 'Serve S3 artifact downloads as redirects to presigned URLs valid this many seconds (0: stream through the daemon)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l gpus -d 'GPUs trainers may use (subprocess runner): indices or UUIDs as `nvidia-smi` lists them (`0,1,3`), `all` (every GPU it lists, within an inherited CUDA_VISIBLE_DEVICES) or `none` [default: all]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l gpu-sample-interval -d 'Seconds between GPU telemetry samples while jobs hold GPUs' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l gpu-idle-after -d 'Seconds a GPU held by a running job may stay at 0 % utilisation before the job is flagged `gpu_idle`' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l retention-days -d 'Prune the metric history (and, with --retention-logs, the archived logs) of jobs that ended more than this many days ago, hourly and once shortly after start-up [default: never]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l retention-metrics -d 'What the policy does with those histories' -r -f -a "downsample\t'Keep the first, the last and each stretch\'s extremes (the same curve), up to --retention-max-points per series'
delete\t'Delete every point'
keep\t'Leave histories whole (prune only logs)'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l retention-max-points -d 'Points per series a downsampled history keeps (2 to 10000)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l artifact-retention-days -d 'Delete the artifacts (checkpoints, exports) of jobs that ended more than this many days ago, on the same schedule; a policy of its own [default: never]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l retention-interval -d 'Seconds between automatic prunes (the first runs a minute after start-up, or sooner when this is shorter)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-namespace -d 'Namespace the training Jobs run in' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-config-path -d 'Kubeconfig file [default: in-cluster service account, else $KUBECONFIG or ~/.kube/config]' -r -F
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-context -d 'Kubeconfig context [default: its current context]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kueue-queue -d 'Kueue LocalQueue: Jobs are created suspended with the `kueue.x-k8s.io/queue-name` label' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-image-pull-secrets -d 'Image pull secrets for trainer pods (comma-separated Secret names)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-service-account -d 'Service account trainer pods run as [default: none, and no API token is mounted]' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-image-pull-timeout -d 'Fail a job whose image cannot be pulled for this long (0: never)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-unschedulable-timeout -d 'Fail a job whose pod cannot be scheduled for this long (0: never; let the cluster queue)' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l kube-job-ttl-seconds -d 'ttlSecondsAfterFinished of training Jobs: how long finished Jobs and their pods (and logs) stay' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l demo-image -d 'Image that runs the built-in `demo` trainer (this binary\'s `demo-train`) in kubernetes mode' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand serve" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand serve" -l require-auth -d 'Require a user token (or the API token) on user routes even on a loopback address without PLATFORM_API_TOKEN (a shared machine)'
complete -c platform -n "__fish_platform_using_subcommand serve" -l allow-unauthenticated -d 'Allow a non-loopback bind without an API token'
complete -c platform -n "__fish_platform_using_subcommand serve" -l debug -d 'Debug logging (the seed\'s DEBUG)'
complete -c platform -n "__fish_platform_using_subcommand serve" -l webhook-allow-private -d 'Allow webhook targets on loopback, private, link-local and cloud-metadata addresses (refused by default: a webhook must not reach into the daemon\'s network)'
complete -c platform -n "__fish_platform_using_subcommand serve" -l stop-jobs-on-exit -d 'Cancel running jobs when the daemon stops (default: leave them running and re-adopt them)'
complete -c platform -n "__fish_platform_using_subcommand serve" -l hold-jobs -d 'Accept jobs but launch none (maintenance): pending jobs wait until a daemon runs without it'
complete -c platform -n "__fish_platform_using_subcommand serve" -l retention-logs -d 'The policy also deletes those jobs\' archived trainer logs'
complete -c platform -n "__fish_platform_using_subcommand serve" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand serve" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand serve" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand serve" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "create" -d 'Submit a training job'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "list" -d 'List jobs, newest first'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "ls" -d 'List jobs, newest first'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "get" -d 'Show one job'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "cancel" -d 'Cancel one or more jobs'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "artifacts" -d 'List a job\'s artifacts (checkpoints and other outputs)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "download" -d 'Download a job\'s artifacts, or one of them'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "logs" -d 'Print a job\'s trainer output (stdout and stderr)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "watch" -d 'Follow a job live (progress bar, metrics, ETA) until it ends'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "update" -d 'Change a pending job\'s priority'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "wait" -d 'Wait until jobs end; exit 0 only if all completed (124 on --timeout)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "resubmit" -d 'Create a new job from an old one\'s spec, with overrides (with a user token, the new job is yours; members resubmit only their own jobs)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "tag" -d 'Set or remove a job\'s tags (any status)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "note" -d 'Set a job\'s note (any status; an empty text clears it)'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "compare" -d 'Compare jobs side by side: differing config, status, duration, metrics'
complete -c platform -n "__fish_platform_using_subcommand job; and not __fish_seen_subcommand_from create list ls get cancel artifacts download logs watch update wait resubmit tag note compare help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s f -l framework -d 'Registered trainer framework (see `platform framework list`)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s m -l model -d 'Model to train, e.g. yolo11n' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s d -l dataset -d 'Dataset URI (e.g. s3://bucket/datasets/coco128/), or the name of a dataset uploaded with `platform dataset upload`' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s u -l user -d 'Who the job belongs to [default: $PLATFORM_USER, else $USER]' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s c -l config -d 'Trainer config from a JSON or YAML file' -r -F
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s s -l set -d 'Set a config key (value parsed as JSON when valid, else a string); repeatable, wins over --config' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l idempotency-key -d 'Idempotency-Key sent with the create: running the command again with the same key and job returns the job created the first time instead of a second one [default: a fresh key per run, reused for its own retries]' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l queue -d 'Queue to launch from (see `platform queue list`) [default: default]' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l priority -d 'Priority 0–100 (higher launches first within its queue) [default: 50]' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l after -d 'Start only after these jobs completed (numbers, ids or prefixes); fail if one fails' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l max-duration -d 'Longest run of one attempt (e.g. 90, 1.5, 500ms, 30m, 2h)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l max-pending -d 'Longest wait to launch before the job fails `queue-timeout`' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l heartbeat-timeout -d 'Silence (no trainer call) after which the job is marked stalled' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l stale-after -d 'Further silence after which a stalled job is stopped and fails `stale`' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l retry-on-exit-code -d 'Retry when the trainer exits with this code (repeatable); see --max-attempts' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l max-attempts -d 'Attempts in all, with --retry-on-exit-code [default: 3]' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l retry -d 'A whole retry policy as JSON (max_attempts, backoff, rules), or @FILE' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l gpus -d 'GPUs to run with [default: the trainer\'s resources.gpu, else 0]' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l sweep -d 'Create a grid sweep: one job per combination, each value merged into the config at KEY (dotted keys nest); repeatable. Values split on commas; quote one holding a comma (\'aug="a,b",c\'); values are JSON scalars when they parse (0.01, true), else strings' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l sweep-file -d 'Create a sweep from a YAML or JSON file: `method: grid|random`, `count` and `seed` (random), and `parameters` (KEY: [values], or {values: […]}, or {min, max, log: true, integer: true} for random search)' -r -F
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l tag -d 'Tag the job (every job of a sweep); repeatable' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l note -d 'A free-text note on the job' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s F -l follow -d 'Wait for the job, printing its progress, and exit non-zero unless it completes'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l dry-run -d 'Print what would be launched (Kubernetes manifests, or the process\'s argv and environment, secrets masked) without creating anything'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l status -d 'Only jobs in this status' -r -f -a "pending\t'Waiting to launch'
running\t'Launched'
completed\t'Finished successfully'
failed\t'Failed'
cancelled\t'Cancelled'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s jobs' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l limit -d 'At most this many jobs (1–1000)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l sweep -d 'Only the jobs of this sweep (its id)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l tag -d 'Only jobs with this tag; repeatable (every one must match)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l mine -d 'Only your own jobs (the user of your token)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -s q -l ids -d 'Print only full job ids, one per line'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -s w -l watch -d 'Keep the table live (status, progress, latest metric) until Ctrl-C'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l status -d 'Only jobs in this status' -r -f -a "pending\t'Waiting to launch'
running\t'Launched'
completed\t'Finished successfully'
failed\t'Failed'
cancelled\t'Cancelled'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l user -d 'Only this user\'s jobs' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l limit -d 'At most this many jobs (1–1000)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l sweep -d 'Only the jobs of this sweep (its id)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l tag -d 'Only jobs with this tag; repeatable (every one must match)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l mine -d 'Only your own jobs (the user of your token)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -s q -l ids -d 'Print only full job ids, one per line'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -s w -l watch -d 'Keep the table live (status, progress, latest metric) until Ctrl-C'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from get" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from cancel" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from artifacts" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -l to -d 'Directory to write into (artifacts keep their relative paths)' -r -F
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -s j -l jobs -d 'Files to download at once' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from download" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -l tail -d 'Only the last N lines' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -s f -l follow -d 'Keep printing new output until the job ends'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from logs" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from watch" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -l priority -d 'New priority 0–100 (pending jobs only)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from update" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -l timeout -d 'Give up after this long (e.g. 90, 30m) and exit 124' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from wait" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -s s -l set -d 'Override a field of the spec (user_id, model_name, framework, dataset_s3_uri, queue, priority, max_duration, max_pending, heartbeat_timeout, stale_after) or, for any other key, a config key (dotted keys nest); the value is parsed as JSON when valid. Repeatable' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from resubmit" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -l rm -d 'Tag keys to remove; repeatable' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from tag" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from note" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -l sweep -d 'Compare the jobs of this sweep (with any jobs named too)' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -l metric -d 'A metric to show (best and last) and how its best is taken: max, min or last [default: by its name, min for losses, else max]; repeatable; the first sorts the table' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from compare" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "create" -d 'Submit a training job'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "list" -d 'List jobs, newest first'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "get" -d 'Show one job'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "cancel" -d 'Cancel one or more jobs'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "artifacts" -d 'List a job\'s artifacts (checkpoints and other outputs)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "download" -d 'Download a job\'s artifacts, or one of them'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Print a job\'s trainer output (stdout and stderr)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "watch" -d 'Follow a job live (progress bar, metrics, ETA) until it ends'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "update" -d 'Change a pending job\'s priority'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "wait" -d 'Wait until jobs end; exit 0 only if all completed (124 on --timeout)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "resubmit" -d 'Create a new job from an old one\'s spec, with overrides (with a user token, the new job is yours; members resubmit only their own jobs)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "tag" -d 'Set or remove a job\'s tags (any status)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "note" -d 'Set a job\'s note (any status; an empty text clears it)'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "compare" -d 'Compare jobs side by side: differing config, status, duration, metrics'
complete -c platform -n "__fish_platform_using_subcommand job; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -f -a "list" -d 'Every queue: limits, paused or not, running and pending jobs'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -f -a "ls" -d 'Every queue: limits, paused or not, running and pending jobs'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -f -a "pause" -d 'Stop launching jobs from a queue (running jobs go on; admins)'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -f -a "resume" -d 'Launch jobs from a paused queue again (admins)'
complete -c platform -n "__fish_platform_using_subcommand queue; and not __fish_seen_subcommand_from list ls pause resume help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from pause" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from resume" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "list" -d 'Every queue: limits, paused or not, running and pending jobs'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "pause" -d 'Stop launching jobs from a queue (running jobs go on; admins)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "resume" -d 'Launch jobs from a paused queue again (admins)'
complete -c platform -n "__fish_platform_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand metrics" -l last -d 'Only the last N points, in step order (with --plot, only these are drawn)' -r
complete -c platform -n "__fish_platform_using_subcommand metrics" -l plot -d 'Draw a line chart of these metrics in the terminal (comma-separated or repeated)' -r
complete -c platform -n "__fish_platform_using_subcommand metrics" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand metrics" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand metrics" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand metrics" -s f -l follow -d 'Keep printing new points until the job ends (-o json then prints one point per line)'
complete -c platform -n "__fish_platform_using_subcommand metrics" -l system -d 'The job\'s system metrics (GPU utilisation, memory, temperature, power: `system/gpu<N>/…`) instead of its training metrics'
complete -c platform -n "__fish_platform_using_subcommand metrics" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand metrics" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand metrics" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand metrics" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand metrics" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -f -a "upload" -d 'Upload a directory as a dataset; re-running skips files already uploaded with the same size'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -f -a "list" -d 'List datasets with their file counts and sizes'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -f -a "ls" -d 'List datasets with their file counts and sizes'
complete -c platform -n "__fish_platform_using_subcommand dataset; and not __fish_seen_subcommand_from upload list ls help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -s n -l name -d 'Dataset name: letters, digits, \'.\', \'_\' and \'-\'' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -s j -l jobs -d 'Files to upload at once' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from upload" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from help" -f -a "upload" -d 'Upload a directory as a dataset; re-running skips files already uploaded with the same size'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from help" -f -a "list" -d 'List datasets with their file counts and sizes'
complete -c platform -n "__fish_platform_using_subcommand dataset; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -f -a "get" -d 'Show a sweep: its spec, counts by status and jobs'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -f -a "list" -d 'List sweeps, newest first (members see their own)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -f -a "ls" -d 'List sweeps, newest first (members see their own)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -f -a "cancel" -d 'Cancel every job of a sweep that has not ended'
complete -c platform -n "__fish_platform_using_subcommand sweep; and not __fish_seen_subcommand_from get list ls cancel help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from get" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -l limit -d 'At most this many sweeps (1–100)' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -l limit -d 'At most this many sweeps (1–100)' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from cancel" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from help" -f -a "get" -d 'Show a sweep: its spec, counts by status and jobs'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from help" -f -a "list" -d 'List sweeps, newest first (members see their own)'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from help" -f -a "cancel" -d 'Cancel every job of a sweep that has not ended'
complete -c platform -n "__fish_platform_using_subcommand sweep; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -f -a "list" -d 'List registered frameworks'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -f -a "ls" -d 'List registered frameworks'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -f -a "reload" -d 'Make the daemon re-read its trainers file and directory (as SIGHUP does), then list the frameworks registered now. A broken file changes nothing and the error says why'
complete -c platform -n "__fish_platform_using_subcommand framework; and not __fish_seen_subcommand_from list ls reload help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from reload" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from help" -f -a "list" -d 'List registered frameworks'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from help" -f -a "reload" -d 'Make the daemon re-read its trainers file and directory (as SIGHUP does), then list the frameworks registered now. A broken file changes nothing and the error says why'
complete -c platform -n "__fish_platform_using_subcommand framework; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "add" -d 'Add an endpoint that receives a signed JSON event whenever a job changes status; prints its signing secret, shown only this once'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "list" -d 'List endpoints (URLs cut after their first path segment, secrets by prefix only)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "ls" -d 'List endpoints (URLs cut after their first path segment, secrets by prefix only)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "remove" -d 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon\'s configuration are changed there)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "rm" -d 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon\'s configuration are changed there)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "test" -d 'Queue a `webhook.test` event to an endpoint; follow it with `platform webhook deliveries`'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "deliveries" -d 'Show an endpoint\'s latest deliveries, newest first: state, attempts, the receiver\'s last answer'
complete -c platform -n "__fish_platform_using_subcommand webhook; and not __fish_seen_subcommand_from add list ls remove rm test deliveries help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l event -d 'Only this event type (repeat for more; default: all)' -r -f -a "job.running\t''
job.completed\t''
job.failed\t''
job.cancelled\t''"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l framework -d 'Only jobs of this framework (repeat for more; default: all)' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l user -d 'Only jobs of this user (repeat for more; default: all)' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l format -d 'Body shape: generic JSON, or a Slack incoming-webhook message' -r -f -a "json\t''
slack\t''"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -l limit -d 'At most this many (1–1000)' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from deliveries" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add an endpoint that receives a signed JSON event whenever a job changes status; prints its signing secret, shown only this once'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from help" -f -a "list" -d 'List endpoints (URLs cut after their first path segment, secrets by prefix only)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon\'s configuration are changed there)'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from help" -f -a "test" -d 'Queue a `webhook.test` event to an endpoint; follow it with `platform webhook deliveries`'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from help" -f -a "deliveries" -d 'Show an endpoint\'s latest deliveries, newest first: state, attempts, the receiver\'s last answer'
complete -c platform -n "__fish_platform_using_subcommand webhook; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -f -a "list" -d 'Every GPU local trainers may use: holder job, utilisation, memory'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -f -a "ls" -d 'Every GPU local trainers may use: holder job, utilisation, memory'
complete -c platform -n "__fish_platform_using_subcommand gpu; and not __fish_seen_subcommand_from list ls help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from help" -f -a "list" -d 'Every GPU local trainers may use: holder job, utilisation, memory'
complete -c platform -n "__fish_platform_using_subcommand gpu; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand prune" -l older-than -d 'Touch only jobs that ended more than this long ago: a number with a unit, `30d`, `12h`, `90m`, `2w`, `1y` (a bare number is days)' -r
complete -c platform -n "__fish_platform_using_subcommand prune" -l downsample -d 'Downsample their metric histories to at most N points per series, keeping the first, the last and the extremes (the default, with N = 1000)' -r
complete -c platform -n "__fish_platform_using_subcommand prune" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand prune" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand prune" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand prune" -l delete-metrics -d 'Delete their metric histories instead'
complete -c platform -n "__fish_platform_using_subcommand prune" -l keep-metrics -d 'Leave their metric histories whole (prune only logs or artifacts)'
complete -c platform -n "__fish_platform_using_subcommand prune" -l logs -d 'Also delete their archived trainer logs'
complete -c platform -n "__fish_platform_using_subcommand prune" -l artifacts -d 'Also delete their artifacts (checkpoints, exports): gone for good'
complete -c platform -n "__fish_platform_using_subcommand prune" -l dry-run -d 'Only say what would be removed; change nothing'
complete -c platform -n "__fish_platform_using_subcommand prune" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand prune" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand prune" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand prune" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand prune" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand report" -l status -d 'New status: running, completed, failed or cancelled' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l progress -d 'Progress between 0 and 1' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l message -d 'A progress line, e.g. "epoch 3/50"' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l metric -d 'A metric as NAME=NUMBER; repeatable (epoch, step, loss, accuracy are lifted)' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l checkpoint -d 'Where the checkpoint was stored' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l error -d 'Failure description' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l sequence -d 'Idempotency sequence (increasing per job). Default: numbered from the clock, after any sequence given before' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l timeout -d 'Seconds to keep retrying while the server is unreachable (default 3600); meanwhile a running report is queued, a terminal one waits' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l retries -d 'Superseded by --timeout; accepted for older scripts' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand report" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand report" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand report" -l heartbeat -d 'Only say the trainer is alive (keeps a job with a heartbeat timeout from being marked stalled); sends no status. Cheap: call it often'
complete -c platform -n "__fish_platform_using_subcommand report" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand report" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand report" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand report" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -f -a "check" -d 'Check the database for damage (SQLite\'s integrity check, read-only): prints "ok", or what is wrong and exits 1'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -f -a "status" -d 'Show the backend, schema version and rows per table (read-only)'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -f -a "migrate" -d 'Copy a SQLite database into an empty PostgreSQL database (stop the daemon first): every job, metric point, user, token and webhook; the counts are checked before anything is committed'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -f -a "vacuum" -d 'Rewrite a SQLite database file to give the space of deleted rows back (stop the daemon first), switching it to incremental auto-vacuum so later prunes give space back by themselves'
complete -c platform -n "__fish_platform_using_subcommand db; and not __fish_seen_subcommand_from check status migrate vacuum help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -l database-url -d 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -l data-dir -d 'Directory for the database and the local object store [default: the user\'s data directory]' -r -F
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -l database-url -d 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -l data-dir -d 'Directory for the database and the local object store [default: the user\'s data directory]' -r -F
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l from -d 'The SQLite database to copy: sqlite:///relative/path or sqlite:////absolute/path [default: the configured database]' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l to -d 'The empty PostgreSQL database to fill: postgresql://user:password@host:5432/database (the variable keeps the password out of the process list)' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l database-url -d 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l data-dir -d 'Directory for the database and the local object store [default: the user\'s data directory]' -r -F
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from migrate" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -l database-url -d 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -l data-dir -d 'Directory for the database and the local object store [default: the user\'s data directory]' -r -F
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from vacuum" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from help" -f -a "check" -d 'Check the database for damage (SQLite\'s integrity check, read-only): prints "ok", or what is wrong and exits 1'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show the backend, schema version and rows per table (read-only)'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from help" -f -a "migrate" -d 'Copy a SQLite database into an empty PostgreSQL database (stop the daemon first): every job, metric point, user, token and webhook; the counts are checked before anything is committed'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from help" -f -a "vacuum" -d 'Rewrite a SQLite database file to give the space of deleted rows back (stop the daemon first), switching it to incremental auto-vacuum so later prunes give space back by themselves'
complete -c platform -n "__fish_platform_using_subcommand db; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand login" -l context -d 'Name to save the context under (default: "default")' -r
complete -c platform -n "__fish_platform_using_subcommand login" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand login" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand login" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand login" -l token-stdin -d 'Read the token from standard input (e.g. `< admin-token`), not from --token / PLATFORM_TOKEN'
complete -c platform -n "__fish_platform_using_subcommand login" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand login" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand login" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand login" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand login" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -f -a "list" -d 'List saved contexts; `*` marks the current one'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -f -a "ls" -d 'List saved contexts; `*` marks the current one'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -f -a "use" -d 'Make NAME the current context'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -f -a "delete" -d 'Forget a saved context (and its token)'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -f -a "rm" -d 'Forget a saved context (and its token)'
complete -c platform -n "__fish_platform_using_subcommand context; and not __fish_seen_subcommand_from list ls use delete rm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from use" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "list" -d 'List saved contexts; `*` marks the current one'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "use" -d 'Make NAME the current context'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Forget a saved context (and its token)'
complete -c platform -n "__fish_platform_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand whoami" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand whoami" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand whoami" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand whoami" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand whoami" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand whoami" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand whoami" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand whoami" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -f -a "create" -d 'Create a user and print their first token (shown only now)'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -f -a "list" -d 'List users'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -f -a "ls" -d 'List users'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -f -a "disable" -d 'Disable a user: their tokens stop working at once'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -f -a "enable" -d 'Enable a disabled user again'
complete -c platform -n "__fish_platform_using_subcommand user; and not __fish_seen_subcommand_from create list ls disable enable help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -l role -d 'Role' -r -f -a "admin\t''
member\t''"
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from disable" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from enable" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a user and print their first token (shown only now)'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "list" -d 'List users'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Disable a user: their tokens stop working at once'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Enable a disabled user again'
complete -c platform -n "__fish_platform_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -f -a "create" -d 'Create a token for yourself (admins: --user) and print it (shown only now)'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -f -a "list" -d 'List your tokens (admins: everyone\'s, or --user\'s)'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -f -a "ls" -d 'List your tokens (admins: everyone\'s, or --user\'s)'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -f -a "revoke" -d 'Revoke a token by id; the next request with it fails'
complete -c platform -n "__fish_platform_using_subcommand token; and not __fish_seen_subcommand_from create list ls revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -l user -d 'Whose token (admins only)' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -l expires-in-days -d 'Expire after this many days' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s tokens' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -l user -d 'Only this user\'s tokens' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from revoke" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a token for yourself (admins: --user) and print it (shown only now)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "list" -d 'List your tokens (admins: everyone\'s, or --user\'s)'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke a token by id; the next request with it fails'
complete -c platform -n "__fish_platform_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand audit" -l user -d 'Only this user\'s requests' -r
complete -c platform -n "__fish_platform_using_subcommand audit" -l since -d 'Only requests at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z)' -r
complete -c platform -n "__fish_platform_using_subcommand audit" -l limit -d 'At most this many entries (1–1000), newest first' -r
complete -c platform -n "__fish_platform_using_subcommand audit" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand audit" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand audit" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand audit" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand audit" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand audit" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand audit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand audit" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand version" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand version" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand version" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand version" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand version" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand version" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand version" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand version" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand completions" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand completions" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand completions" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand completions" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand completions" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand completions" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand completions" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand man" -l dir -d 'Write every page (one per command) into this directory instead of printing the top-level page' -r -F
complete -c platform -n "__fish_platform_using_subcommand man" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand man" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand man" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand man" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand man" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand man" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand man" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand supervise" -l dir -d 'The job\'s run directory' -r -F
complete -c platform -n "__fish_platform_using_subcommand supervise" -l workdir -d 'The trainer\'s working directory' -r -F
complete -c platform -n "__fish_platform_using_subcommand supervise" -l max-log-bytes -d 'Log budget in bytes' -r
complete -c platform -n "__fish_platform_using_subcommand supervise" -l umask -d 'The trainer\'s umask, octal (the supervisor\'s own stays private)' -r
complete -c platform -n "__fish_platform_using_subcommand supervise" -l kill-grace -d 'Seconds between SIGTERM and SIGKILL when the supervisor is told to stop the trainer (by a SIGTERM of its own)' -r
complete -c platform -n "__fish_platform_using_subcommand supervise" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand supervise" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand supervise" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand supervise" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand supervise" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand supervise" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand supervise" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand supervise" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand demo-train" -l server -d 'URL of the platform daemon' -r
complete -c platform -n "__fish_platform_using_subcommand demo-train" -l token -d 'API token sent as a bearer token' -r
complete -c platform -n "__fish_platform_using_subcommand demo-train" -s o -l output -d 'Output format' -r -f -a "table\t'Aligned columns for people'
wide\t'Table with more columns'
json\t'Exactly the API\'s JSON'
yaml\t'YAML'
csv\t'Comma-separated values'"
complete -c platform -n "__fish_platform_using_subcommand demo-train" -l no-color -d 'Never use colour (also: NO_COLOR)'
complete -c platform -n "__fish_platform_using_subcommand demo-train" -s v -l verbose -d 'More log output (repeat for more)'
complete -c platform -n "__fish_platform_using_subcommand demo-train" -l quiet -d 'Only errors'
complete -c platform -n "__fish_platform_using_subcommand demo-train" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c platform -n "__fish_platform_using_subcommand demo-train" -s V -l version -d 'Print version'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "serve" -d 'Run the daemon: HTTP API, database, scheduler and runner'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "job" -d 'Create, list, inspect and cancel training jobs'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "queue" -d 'List queues, or pause and resume one'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "metrics" -d 'Show a job\'s metric points (oldest first), or overlay several jobs\' in one chart'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "dataset" -d 'Upload and list datasets in the daemon\'s object store'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "sweep" -d 'Show, list and cancel sweeps (create one with `job create --sweep`)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "framework" -d 'List the trainer frameworks the daemon knows, or make it reload them'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "webhook" -d 'Manage webhook endpoints and see their deliveries (admins)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "gpu" -d 'List the daemon\'s GPUs: which job holds each, latest telemetry'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "prune" -d 'Remove the metric history (downsampled or deleted), archived logs and, when asked, artifacts of jobs that ended long ago (admins)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "report" -d 'Send a trainer callback from the trainer environment (CALLBACK_URL, CALLBACK_TOKEN)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "db" -d 'Work on the daemon\'s database file (where the daemon runs, not over HTTP)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "login" -d 'Check a token with a server and save both as a context (mode 0600)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "context" -d 'List, switch and delete saved contexts (server and token pairs)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "whoami" -d 'Print who the server takes you for (user, role, token name)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "user" -d 'Create, list, disable and enable users (admins)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "token" -d 'Create, list and revoke API tokens'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "audit" -d 'Show the audit trail of state-changing requests (admins)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "version" -d 'Print the client\'s version and the server\'s, when reachable'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "completions" -d 'Print a shell completion script'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "man" -d 'Print the man page, or write every page to a directory'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "supervise" -d 'Supervise one trainer process (started by the daemon)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "demo-train" -d 'Run the built-in demo trainer (started by the daemon)'
complete -c platform -n "__fish_platform_using_subcommand help; and not __fish_seen_subcommand_from serve job queue metrics dataset sweep framework webhook gpu prune report db login context whoami user token audit version completions man supervise demo-train help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "create" -d 'Submit a training job'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "list" -d 'List jobs, newest first'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "get" -d 'Show one job'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "cancel" -d 'Cancel one or more jobs'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "artifacts" -d 'List a job\'s artifacts (checkpoints and other outputs)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "download" -d 'Download a job\'s artifacts, or one of them'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "logs" -d 'Print a job\'s trainer output (stdout and stderr)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "watch" -d 'Follow a job live (progress bar, metrics, ETA) until it ends'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "update" -d 'Change a pending job\'s priority'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "wait" -d 'Wait until jobs end; exit 0 only if all completed (124 on --timeout)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "resubmit" -d 'Create a new job from an old one\'s spec, with overrides (with a user token, the new job is yours; members resubmit only their own jobs)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "tag" -d 'Set or remove a job\'s tags (any status)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "note" -d 'Set a job\'s note (any status; an empty text clears it)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from job" -f -a "compare" -d 'Compare jobs side by side: differing config, status, duration, metrics'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "list" -d 'Every queue: limits, paused or not, running and pending jobs'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "pause" -d 'Stop launching jobs from a queue (running jobs go on; admins)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "resume" -d 'Launch jobs from a paused queue again (admins)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from dataset" -f -a "upload" -d 'Upload a directory as a dataset; re-running skips files already uploaded with the same size'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from dataset" -f -a "list" -d 'List datasets with their file counts and sizes'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from sweep" -f -a "get" -d 'Show a sweep: its spec, counts by status and jobs'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from sweep" -f -a "list" -d 'List sweeps, newest first (members see their own)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from sweep" -f -a "cancel" -d 'Cancel every job of a sweep that has not ended'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from framework" -f -a "list" -d 'List registered frameworks'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from framework" -f -a "reload" -d 'Make the daemon re-read its trainers file and directory (as SIGHUP does), then list the frameworks registered now. A broken file changes nothing and the error says why'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from webhook" -f -a "add" -d 'Add an endpoint that receives a signed JSON event whenever a job changes status; prints its signing secret, shown only this once'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from webhook" -f -a "list" -d 'List endpoints (URLs cut after their first path segment, secrets by prefix only)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from webhook" -f -a "remove" -d 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon\'s configuration are changed there)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from webhook" -f -a "test" -d 'Queue a `webhook.test` event to an endpoint; follow it with `platform webhook deliveries`'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from webhook" -f -a "deliveries" -d 'Show an endpoint\'s latest deliveries, newest first: state, attempts, the receiver\'s last answer'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from gpu" -f -a "list" -d 'Every GPU local trainers may use: holder job, utilisation, memory'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from db" -f -a "check" -d 'Check the database for damage (SQLite\'s integrity check, read-only): prints "ok", or what is wrong and exits 1'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from db" -f -a "status" -d 'Show the backend, schema version and rows per table (read-only)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from db" -f -a "migrate" -d 'Copy a SQLite database into an empty PostgreSQL database (stop the daemon first): every job, metric point, user, token and webhook; the counts are checked before anything is committed'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from db" -f -a "vacuum" -d 'Rewrite a SQLite database file to give the space of deleted rows back (stop the daemon first), switching it to incremental auto-vacuum so later prunes give space back by themselves'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from context" -f -a "list" -d 'List saved contexts; `*` marks the current one'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from context" -f -a "use" -d 'Make NAME the current context'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from context" -f -a "delete" -d 'Forget a saved context (and its token)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "create" -d 'Create a user and print their first token (shown only now)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "list" -d 'List users'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "disable" -d 'Disable a user: their tokens stop working at once'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "enable" -d 'Enable a disabled user again'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "create" -d 'Create a token for yourself (admins: --user) and print it (shown only now)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "list" -d 'List your tokens (admins: everyone\'s, or --user\'s)'
complete -c platform -n "__fish_platform_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "revoke" -d 'Revoke a token by id; the next request with it fails'
