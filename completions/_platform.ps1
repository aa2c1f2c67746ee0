
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'platform' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'platform'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'platform' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the daemon: HTTP API, database, scheduler and runner')
            [CompletionResult]::new('job', 'job', [CompletionResultType]::ParameterValue, 'Create, list, inspect and cancel training jobs')
            [CompletionResult]::new('queue', 'queue', [CompletionResultType]::ParameterValue, 'List queues, or pause and resume one')
            [CompletionResult]::new('metrics', 'metrics', [CompletionResultType]::ParameterValue, 'Show a job''s metric points (oldest first), or overlay several jobs'' in one chart')
            [CompletionResult]::new('dataset', 'dataset', [CompletionResultType]::ParameterValue, 'Upload and list datasets in the daemon''s object store')
            [CompletionResult]::new('sweep', 'sweep', [CompletionResultType]::ParameterValue, 'Show, list and cancel sweeps (create one with `job create --sweep`)')
            [CompletionResult]::new('framework', 'framework', [CompletionResultType]::ParameterValue, 'List the trainer frameworks the daemon knows, or make it reload them')
            [CompletionResult]::new('webhook', 'webhook', [CompletionResultType]::ParameterValue, 'Manage webhook endpoints and see their deliveries (admins)')
            [CompletionResult]::new('gpu', 'gpu', [CompletionResultType]::ParameterValue, 'List the daemon''s GPUs: which job holds each, latest telemetry')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Remove the metric history (downsampled or deleted), archived logs and, when asked, artifacts of jobs that ended long ago (admins)')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Send a trainer callback from the trainer environment (CALLBACK_URL, CALLBACK_TOKEN)')
            [CompletionResult]::new('db', 'db', [CompletionResultType]::ParameterValue, 'Work on the daemon''s database file (where the daemon runs, not over HTTP)')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Check a token with a server and save both as a context (mode 0600)')
            [CompletionResult]::new('context', 'context', [CompletionResultType]::ParameterValue, 'List, switch and delete saved contexts (server and token pairs)')
            [CompletionResult]::new('whoami', 'whoami', [CompletionResultType]::ParameterValue, 'Print who the server takes you for (user, role, token name)')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'Create, list, disable and enable users (admins)')
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Create, list and revoke API tokens')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Show the audit trail of state-changing requests (admins)')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print the client''s version and the server''s, when reachable')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print the man page, or write every page to a directory')
            [CompletionResult]::new('supervise', 'supervise', [CompletionResultType]::ParameterValue, 'Supervise one trainer process (started by the daemon)')
            [CompletionResult]::new('demo-train', 'demo-train', [CompletionResultType]::ParameterValue, 'Run the built-in demo trainer (started by the daemon)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;serve' {
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Address to listen on [default: $HOST:$PORT, else 127.0.0.1:8000]')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for the database and the local object store [default: the user''s data directory]')
            [CompletionResult]::new('--db-pool-size', '--db-pool-size', [CompletionResultType]::ParameterName, 'Connections in the PostgreSQL pool [default: the URL''s pool_size, else 10]')
            [CompletionResult]::new('--runner', '--runner', [CompletionResultType]::ParameterName, 'Which runner launches trainers')
            [CompletionResult]::new('--leader-election', '--leader-election', [CompletionResultType]::ParameterName, 'Leader election among replicas sharing one PostgreSQL database: `lease` (one replica schedules and watches trainers, every one serves the API; needs PostgreSQL and the Kubernetes runner) or `off` (this daemon does everything)')
            [CompletionResult]::new('--replica-id', '--replica-id', [CompletionResultType]::ParameterName, 'This replica''s name in the leader lease and /health [default: the host name (a pod''s name on Kubernetes), the process id and a random suffix]')
            [CompletionResult]::new('--api-token', '--api-token', [CompletionResultType]::ParameterName, 'Bearer token required on the user-facing API')
            [CompletionResult]::new('--admin-token', '--admin-token', [CompletionResultType]::ParameterName, 'The first admin''s token, stored (as a hash) when the database has no user yet; without it a generated one goes to `admin-token` in the data directory. Setting it also requires tokens on user routes')
            [CompletionResult]::new('--callback-auth', '--callback-auth', [CompletionResultType]::ParameterName, 'Require each job''s bearer token on callbacks ("off" for seed-era trainers)')
            [CompletionResult]::new('--max-body-bytes', '--max-body-bytes', [CompletionResultType]::ParameterName, 'Largest JSON request body, in bytes')
            [CompletionResult]::new('--backend-base-url', '--backend-base-url', [CompletionResultType]::ParameterName, 'Base URL trainers use to reach this daemon [default: http://<bind address>]')
            [CompletionResult]::new('--cors-origins', '--cors-origins', [CompletionResultType]::ParameterName, 'Allowed CORS origins: a JSON list or comma-separated')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format')
            [CompletionResult]::new('--trainers', '--trainers', [CompletionResultType]::ParameterName, 'Trainers file (TOML) [default: trainers.toml in the user''s config directory, if present]')
            [CompletionResult]::new('--trainer-subprocess-path', '--trainer-subprocess-path', [CompletionResultType]::ParameterName, 'Directory with one sub-directory per framework (the seed''s layout)')
            [CompletionResult]::new('--max-concurrent-jobs', '--max-concurrent-jobs', [CompletionResultType]::ParameterName, 'Most jobs running at once [default: 1 for subprocess, 0 (unlimited) for kubernetes]')
            [CompletionResult]::new('--queues', '--queues', [CompletionResultType]::ParameterName, 'Queues besides `default`, as the config file''s `[queues.NAME]` tables (`max_concurrent`, `max_per_user`, `kueue_queue`) or the same as JSON, e.g. ''{"gpu": {"max_concurrent": 2, "max_per_user": 1}}''')
            [CompletionResult]::new('--max-job-duration', '--max-job-duration', [CompletionResultType]::ParameterName, 'Each job''s default and largest `max_duration`, in seconds (default: none)')
            [CompletionResult]::new('--heartbeat-timeout', '--heartbeat-timeout', [CompletionResultType]::ParameterName, 'Default `heartbeat_timeout` of jobs whose request and trainer set none, in seconds (default: none)')
            [CompletionResult]::new('--stale-after', '--stale-after', [CompletionResultType]::ParameterName, 'Default `stale_after` (further silence before a stalled job is stopped), in seconds (default: never stopped)')
            [CompletionResult]::new('--kill-grace', '--kill-grace', [CompletionResultType]::ParameterName, 'Seconds between SIGTERM and SIGKILL when cancelling a trainer')
            [CompletionResult]::new('--artifact-grace', '--artifact-grace', [CompletionResultType]::ParameterName, 'Seconds after a job ends during which its trainer may still upload new artifacts (never replacing one); later uploads are refused (409)')
            [CompletionResult]::new('--idempotency-ttl', '--idempotency-ttl', [CompletionResultType]::ParameterName, 'Seconds an `Idempotency-Key` of a job create is remembered: a retry with the same key and body within it gets the original job back (at most 86400, the default)')
            [CompletionResult]::new('--webhook-timeout', '--webhook-timeout', [CompletionResultType]::ParameterName, 'Seconds one webhook delivery attempt may take')
            [CompletionResult]::new('--webhook-retry-base', '--webhook-retry-base', [CompletionResultType]::ParameterName, 'Seconds before a failed webhook delivery is first retried; each later retry waits four times longer (at most 4 h), until WEBHOOK_RETRY_FOR has passed')
            [CompletionResult]::new('--webhook-retry-for', '--webhook-retry-for', [CompletionResultType]::ParameterName, 'Seconds after its event during which a failing webhook delivery is retried; after that it is recorded as failed (at most 604800, a week)')
            [CompletionResult]::new('--webhooks', '--webhooks', [CompletionResultType]::ParameterName, 'Webhook endpoints from the configuration: a JSON list of {"url", "secret", "events", "frameworks", "users", "format"} (only url and secret required); they replace the configured ones at each start')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Most open client connections; past it a new connection replaces the longest-idle one, or gets a quick 503 when none is idle [default: 4096, lowered to fit the open-files limit]')
            [CompletionResult]::new('--max-streams', '--max-streams', [CompletionResultType]::ParameterName, 'Most event streams and followed logs open at once; past it they are answered 503')
            [CompletionResult]::new('--header-timeout', '--header-timeout', [CompletionResultType]::ParameterName, 'Seconds a client has to send a request''s headers (from connecting, or from its first byte on a reused connection)')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Seconds a kept-alive connection may wait for its next request before it is closed')
            [CompletionResult]::new('--max-auth-failures', '--max-auth-failures', [CompletionResultType]::ParameterName, 'Failed API-token attempts per minute from one client address before it gets 429 for the rest of the minute (0 = no limit)')
            [CompletionResult]::new('--max-log-bytes', '--max-log-bytes', [CompletionResultType]::ParameterName, 'Log bytes kept per job, at least 8 KiB (older output is dropped)')
            [CompletionResult]::new('--s3-endpoint', '--s3-endpoint', [CompletionResultType]::ParameterName, 'S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO [default: AWS S3 when BUCKET_NAME is set]')
            [CompletionResult]::new('--aws-endpoint-url', '--aws-endpoint-url', [CompletionResultType]::ParameterName, 'Alias of S3_ENDPOINT (the AWS SDKs'' name for it)')
            [CompletionResult]::new('--bucket', '--bucket', [CompletionResultType]::ParameterName, 'Bucket for datasets, job outputs and logs; selects S3 storage [default: a local directory in the data directory]')
            [CompletionResult]::new('--aws-access-key-id', '--aws-access-key-id', [CompletionResultType]::ParameterName, 'S3 access key id [default: the AWS credential chain]')
            [CompletionResult]::new('--aws-secret-access-key', '--aws-secret-access-key', [CompletionResultType]::ParameterName, 'S3 secret access key (prefer the environment variable: flags are visible in `ps`)')
            [CompletionResult]::new('--aws-session-token', '--aws-session-token', [CompletionResultType]::ParameterName, 'S3 session token, for temporary credentials')
            [CompletionResult]::new('--aws-region', '--aws-region', [CompletionResultType]::ParameterName, 'S3 region (S3-compatible servers usually accept the default)')
            [CompletionResult]::new('--s3-path-style', '--s3-path-style', [CompletionResultType]::ParameterName, 'Path-style S3 requests (endpoint/bucket/key), as MinIO and most S3-compatible servers expect; "off" for virtual-hosted style')
            [CompletionResult]::new('--s3-allow-http', '--s3-allow-http', [CompletionResultType]::ParameterName, 'Allow a plain-HTTP S3 endpoint [default: on for http:// endpoints]')
            [CompletionResult]::new('--dataset-check', '--dataset-check', [CompletionResultType]::ParameterName, 'Check at job creation that the dataset URI exists in the configured store ("off" for stores the daemon cannot see)')
            [CompletionResult]::new('--max-object-bytes', '--max-object-bytes', [CompletionResultType]::ParameterName, 'Largest object a dataset or artifact upload may create, in bytes')
            [CompletionResult]::new('--presign-downloads', '--presign-downloads', [CompletionResultType]::ParameterName, 'Serve S3 artifact downloads as redirects to presigned URLs valid this many seconds (0: stream through the daemon)')
            [CompletionResult]::new('--gpus', '--gpus', [CompletionResultType]::ParameterName, 'GPUs trainers may use (subprocess runner): indices or UUIDs as `nvidia-smi` lists them (`0,1,3`), `all` (every GPU it lists, within an inherited CUDA_VISIBLE_DEVICES) or `none` [default: all]')
            [CompletionResult]::new('--gpu-sample-interval', '--gpu-sample-interval', [CompletionResultType]::ParameterName, 'Seconds between GPU telemetry samples while jobs hold GPUs')
            [CompletionResult]::new('--gpu-idle-after', '--gpu-idle-after', [CompletionResultType]::ParameterName, 'Seconds a GPU held by a running job may stay at 0 % utilisation before the job is flagged `gpu_idle`')
            [CompletionResult]::new('--retention-days', '--retention-days', [CompletionResultType]::ParameterName, 'Prune the metric history (and, with --retention-logs, the archived logs) of jobs that ended more than this many days ago, hourly and once shortly after start-up [default: never]')
            [CompletionResult]::new('--retention-metrics', '--retention-metrics', [CompletionResultType]::ParameterName, 'What the policy does with those histories')
            [CompletionResult]::new('--retention-max-points', '--retention-max-points', [CompletionResultType]::ParameterName, 'Points per series a downsampled history keeps (2 to 10000)')
            [CompletionResult]::new('--artifact-retention-days', '--artifact-retention-days', [CompletionResultType]::ParameterName, 'Delete the artifacts (checkpoints, exports) of jobs that ended more than this many days ago, on the same schedule; a policy of its own [default: never]')
            [CompletionResult]::new('--retention-interval', '--retention-interval', [CompletionResultType]::ParameterName, 'Seconds between automatic prunes (the first runs a minute after start-up, or sooner when this is shorter)')
            [CompletionResult]::new('--kube-namespace', '--kube-namespace', [CompletionResultType]::ParameterName, 'Namespace the training Jobs run in')
            [CompletionResult]::new('--kube-config-path', '--kube-config-path', [CompletionResultType]::ParameterName, 'Kubeconfig file [default: in-cluster service account, else $KUBECONFIG or ~/.kube/config]')
            [CompletionResult]::new('--kube-context', '--kube-context', [CompletionResultType]::ParameterName, 'Kubeconfig context [default: its current context]')
            [CompletionResult]::new('--kueue-queue', '--kueue-queue', [CompletionResultType]::ParameterName, 'Kueue LocalQueue: Jobs are created suspended with the `kueue.x-k8s.io/queue-name` label')
            [CompletionResult]::new('--kube-image-pull-secrets', '--kube-image-pull-secrets', [CompletionResultType]::ParameterName, 'Image pull secrets for trainer pods (comma-separated Secret names)')
            [CompletionResult]::new('--kube-service-account', '--kube-service-account', [CompletionResultType]::ParameterName, 'Service account trainer pods run as [default: none, and no API token is mounted]')
            [CompletionResult]::new('--kube-image-pull-timeout', '--kube-image-pull-timeout', [CompletionResultType]::ParameterName, 'Fail a job whose image cannot be pulled for this long (0: never)')
            [CompletionResult]::new('--kube-unschedulable-timeout', '--kube-unschedulable-timeout', [CompletionResultType]::ParameterName, 'Fail a job whose pod cannot be scheduled for this long (0: never; let the cluster queue)')
            [CompletionResult]::new('--kube-job-ttl-seconds', '--kube-job-ttl-seconds', [CompletionResultType]::ParameterName, 'ttlSecondsAfterFinished of training Jobs: how long finished Jobs and their pods (and logs) stay')
            [CompletionResult]::new('--demo-image', '--demo-image', [CompletionResultType]::ParameterName, 'Image that runs the built-in `demo` trainer (this binary''s `demo-train`) in kubernetes mode')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--require-auth', '--require-auth', [CompletionResultType]::ParameterName, 'Require a user token (or the API token) on user routes even on a loopback address without PLATFORM_API_TOKEN (a shared machine)')
            [CompletionResult]::new('--allow-unauthenticated', '--allow-unauthenticated', [CompletionResultType]::ParameterName, 'Allow a non-loopback bind without an API token')
            [CompletionResult]::new('--debug', '--debug', [CompletionResultType]::ParameterName, 'Debug logging (the seed''s DEBUG)')
            [CompletionResult]::new('--webhook-allow-private', '--webhook-allow-private', [CompletionResultType]::ParameterName, 'Allow webhook targets on loopback, private, link-local and cloud-metadata addresses (refused by default: a webhook must not reach into the daemon''s network)')
            [CompletionResult]::new('--stop-jobs-on-exit', '--stop-jobs-on-exit', [CompletionResultType]::ParameterName, 'Cancel running jobs when the daemon stops (default: leave them running and re-adopt them)')
            [CompletionResult]::new('--hold-jobs', '--hold-jobs', [CompletionResultType]::ParameterName, 'Accept jobs but launch none (maintenance): pending jobs wait until a daemon runs without it')
            [CompletionResult]::new('--retention-logs', '--retention-logs', [CompletionResultType]::ParameterName, 'The policy also deletes those jobs'' archived trainer logs')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Submit a training job')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List jobs, newest first')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List jobs, newest first')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show one job')
            [CompletionResult]::new('cancel', 'cancel', [CompletionResultType]::ParameterValue, 'Cancel one or more jobs')
            [CompletionResult]::new('artifacts', 'artifacts', [CompletionResultType]::ParameterValue, 'List a job''s artifacts (checkpoints and other outputs)')
            [CompletionResult]::new('download', 'download', [CompletionResultType]::ParameterValue, 'Download a job''s artifacts, or one of them')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print a job''s trainer output (stdout and stderr)')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Follow a job live (progress bar, metrics, ETA) until it ends')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a pending job''s priority')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until jobs end; exit 0 only if all completed (124 on --timeout)')
            [CompletionResult]::new('resubmit', 'resubmit', [CompletionResultType]::ParameterValue, 'Create a new job from an old one''s spec, with overrides (with a user token, the new job is yours; members resubmit only their own jobs)')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Set or remove a job''s tags (any status)')
            [CompletionResult]::new('note', 'note', [CompletionResultType]::ParameterValue, 'Set a job''s note (any status; an empty text clears it)')
            [CompletionResult]::new('compare', 'compare', [CompletionResultType]::ParameterValue, 'Compare jobs side by side: differing config, status, duration, metrics')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;job;create' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Registered trainer framework (see `platform framework list`)')
            [CompletionResult]::new('--framework', '--framework', [CompletionResultType]::ParameterName, 'Registered trainer framework (see `platform framework list`)')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Model to train, e.g. yolo11n')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Model to train, e.g. yolo11n')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Dataset URI (e.g. s3://bucket/datasets/coco128/), or the name of a dataset uploaded with `platform dataset upload`')
            [CompletionResult]::new('--dataset', '--dataset', [CompletionResultType]::ParameterName, 'Dataset URI (e.g. s3://bucket/datasets/coco128/), or the name of a dataset uploaded with `platform dataset upload`')
            [CompletionResult]::new('-u', '-u', [CompletionResultType]::ParameterName, 'Who the job belongs to [default: $PLATFORM_USER, else $USER]')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Who the job belongs to [default: $PLATFORM_USER, else $USER]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Trainer config from a JSON or YAML file')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Trainer config from a JSON or YAML file')
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Set a config key (value parsed as JSON when valid, else a string); repeatable, wins over --config')
            [CompletionResult]::new('--set', '--set', [CompletionResultType]::ParameterName, 'Set a config key (value parsed as JSON when valid, else a string); repeatable, wins over --config')
            [CompletionResult]::new('--idempotency-key', '--idempotency-key', [CompletionResultType]::ParameterName, 'Idempotency-Key sent with the create: running the command again with the same key and job returns the job created the first time instead of a second one [default: a fresh key per run, reused for its own retries]')
            [CompletionResult]::new('--queue', '--queue', [CompletionResultType]::ParameterName, 'Queue to launch from (see `platform queue list`) [default: default]')
            [CompletionResult]::new('--priority', '--priority', [CompletionResultType]::ParameterName, 'Priority 0–100 (higher launches first within its queue) [default: 50]')
            [CompletionResult]::new('--after', '--after', [CompletionResultType]::ParameterName, 'Start only after these jobs completed (numbers, ids or prefixes); fail if one fails')
            [CompletionResult]::new('--max-duration', '--max-duration', [CompletionResultType]::ParameterName, 'Longest run of one attempt (e.g. 90, 1.5, 500ms, 30m, 2h)')
            [CompletionResult]::new('--max-pending', '--max-pending', [CompletionResultType]::ParameterName, 'Longest wait to launch before the job fails `queue-timeout`')
            [CompletionResult]::new('--heartbeat-timeout', '--heartbeat-timeout', [CompletionResultType]::ParameterName, 'Silence (no trainer call) after which the job is marked stalled')
            [CompletionResult]::new('--stale-after', '--stale-after', [CompletionResultType]::ParameterName, 'Further silence after which a stalled job is stopped and fails `stale`')
            [CompletionResult]::new('--retry-on-exit-code', '--retry-on-exit-code', [CompletionResultType]::ParameterName, 'Retry when the trainer exits with this code (repeatable); see --max-attempts')
            [CompletionResult]::new('--max-attempts', '--max-attempts', [CompletionResultType]::ParameterName, 'Attempts in all, with --retry-on-exit-code [default: 3]')
            [CompletionResult]::new('--retry', '--retry', [CompletionResultType]::ParameterName, 'A whole retry policy as JSON (max_attempts, backoff, rules), or @FILE')
            [CompletionResult]::new('--gpus', '--gpus', [CompletionResultType]::ParameterName, 'GPUs to run with [default: the trainer''s resources.gpu, else 0]')
            [CompletionResult]::new('--sweep', '--sweep', [CompletionResultType]::ParameterName, 'Create a grid sweep: one job per combination, each value merged into the config at KEY (dotted keys nest); repeatable. Values split on commas; quote one holding a comma (''aug="a,b",c''); values are JSON scalars when they parse (0.01, true), else strings')
            [CompletionResult]::new('--sweep-file', '--sweep-file', [CompletionResultType]::ParameterName, 'Create a sweep from a YAML or JSON file: `method: grid|random`, `count` and `seed` (random), and `parameters` (KEY: [values], or {values: […]}, or {min, max, log: true, integer: true} for random search)')
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'Tag the job (every job of a sweep); repeatable')
            [CompletionResult]::new('--note', '--note', [CompletionResultType]::ParameterName, 'A free-text note on the job')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-F', '-F ', [CompletionResultType]::ParameterName, 'Wait for the job, printing its progress, and exit non-zero unless it completes')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Wait for the job, printing its progress, and exit non-zero unless it completes')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print what would be launched (Kubernetes manifests, or the process''s argv and environment, secrets masked) without creating anything')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;list' {
            [CompletionResult]::new('--status', '--status', [CompletionResultType]::ParameterName, 'Only jobs in this status')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s jobs')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many jobs (1–1000)')
            [CompletionResult]::new('--sweep', '--sweep', [CompletionResultType]::ParameterName, 'Only the jobs of this sweep (its id)')
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'Only jobs with this tag; repeatable (every one must match)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--mine', '--mine', [CompletionResultType]::ParameterName, 'Only your own jobs (the user of your token)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only full job ids, one per line')
            [CompletionResult]::new('--ids', '--ids', [CompletionResultType]::ParameterName, 'Print only full job ids, one per line')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Keep the table live (status, progress, latest metric) until Ctrl-C')
            [CompletionResult]::new('--watch', '--watch', [CompletionResultType]::ParameterName, 'Keep the table live (status, progress, latest metric) until Ctrl-C')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;ls' {
            [CompletionResult]::new('--status', '--status', [CompletionResultType]::ParameterName, 'Only jobs in this status')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s jobs')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many jobs (1–1000)')
            [CompletionResult]::new('--sweep', '--sweep', [CompletionResultType]::ParameterName, 'Only the jobs of this sweep (its id)')
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'Only jobs with this tag; repeatable (every one must match)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--mine', '--mine', [CompletionResultType]::ParameterName, 'Only your own jobs (the user of your token)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only full job ids, one per line')
            [CompletionResult]::new('--ids', '--ids', [CompletionResultType]::ParameterName, 'Print only full job ids, one per line')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Keep the table live (status, progress, latest metric) until Ctrl-C')
            [CompletionResult]::new('--watch', '--watch', [CompletionResultType]::ParameterName, 'Keep the table live (status, progress, latest metric) until Ctrl-C')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;get' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;cancel' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;artifacts' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;download' {
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Directory to write into (artifacts keep their relative paths)')
            [CompletionResult]::new('-j', '-j', [CompletionResultType]::ParameterName, 'Files to download at once')
            [CompletionResult]::new('--jobs', '--jobs', [CompletionResultType]::ParameterName, 'Files to download at once')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;logs' {
            [CompletionResult]::new('--tail', '--tail', [CompletionResultType]::ParameterName, 'Only the last N lines')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new output until the job ends')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new output until the job ends')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;watch' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;update' {
            [CompletionResult]::new('--priority', '--priority', [CompletionResultType]::ParameterName, 'New priority 0–100 (pending jobs only)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;wait' {
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up after this long (e.g. 90, 30m) and exit 124')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;resubmit' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'Override a field of the spec (user_id, model_name, framework, dataset_s3_uri, queue, priority, max_duration, max_pending, heartbeat_timeout, stale_after) or, for any other key, a config key (dotted keys nest); the value is parsed as JSON when valid. Repeatable')
            [CompletionResult]::new('--set', '--set', [CompletionResultType]::ParameterName, 'Override a field of the spec (user_id, model_name, framework, dataset_s3_uri, queue, priority, max_duration, max_pending, heartbeat_timeout, stale_after) or, for any other key, a config key (dotted keys nest); the value is parsed as JSON when valid. Repeatable')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;tag' {
            [CompletionResult]::new('--rm', '--rm', [CompletionResultType]::ParameterName, 'Tag keys to remove; repeatable')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;note' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;compare' {
            [CompletionResult]::new('--sweep', '--sweep', [CompletionResultType]::ParameterName, 'Compare the jobs of this sweep (with any jobs named too)')
            [CompletionResult]::new('--metric', '--metric', [CompletionResultType]::ParameterName, 'A metric to show (best and last) and how its best is taken: max, min or last [default: by its name, min for losses, else max]; repeatable; the first sorts the table')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;job;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Submit a training job')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List jobs, newest first')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show one job')
            [CompletionResult]::new('cancel', 'cancel', [CompletionResultType]::ParameterValue, 'Cancel one or more jobs')
            [CompletionResult]::new('artifacts', 'artifacts', [CompletionResultType]::ParameterValue, 'List a job''s artifacts (checkpoints and other outputs)')
            [CompletionResult]::new('download', 'download', [CompletionResultType]::ParameterValue, 'Download a job''s artifacts, or one of them')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print a job''s trainer output (stdout and stderr)')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Follow a job live (progress bar, metrics, ETA) until it ends')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a pending job''s priority')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until jobs end; exit 0 only if all completed (124 on --timeout)')
            [CompletionResult]::new('resubmit', 'resubmit', [CompletionResultType]::ParameterValue, 'Create a new job from an old one''s spec, with overrides (with a user token, the new job is yours; members resubmit only their own jobs)')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Set or remove a job''s tags (any status)')
            [CompletionResult]::new('note', 'note', [CompletionResultType]::ParameterValue, 'Set a job''s note (any status; an empty text clears it)')
            [CompletionResult]::new('compare', 'compare', [CompletionResultType]::ParameterValue, 'Compare jobs side by side: differing config, status, duration, metrics')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;job;help;create' {
            break
        }
        'platform;job;help;list' {
            break
        }
        'platform;job;help;get' {
            break
        }
        'platform;job;help;cancel' {
            break
        }
        'platform;job;help;artifacts' {
            break
        }
        'platform;job;help;download' {
            break
        }
        'platform;job;help;logs' {
            break
        }
        'platform;job;help;watch' {
            break
        }
        'platform;job;help;update' {
            break
        }
        'platform;job;help;wait' {
            break
        }
        'platform;job;help;resubmit' {
            break
        }
        'platform;job;help;tag' {
            break
        }
        'platform;job;help;note' {
            break
        }
        'platform;job;help;compare' {
            break
        }
        'platform;job;help;help' {
            break
        }
        'platform;queue' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Every queue: limits, paused or not, running and pending jobs')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'Every queue: limits, paused or not, running and pending jobs')
            [CompletionResult]::new('pause', 'pause', [CompletionResultType]::ParameterValue, 'Stop launching jobs from a queue (running jobs go on; admins)')
            [CompletionResult]::new('resume', 'resume', [CompletionResultType]::ParameterValue, 'Launch jobs from a paused queue again (admins)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;queue;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;queue;ls' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;queue;pause' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;queue;resume' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;queue;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Every queue: limits, paused or not, running and pending jobs')
            [CompletionResult]::new('pause', 'pause', [CompletionResultType]::ParameterValue, 'Stop launching jobs from a queue (running jobs go on; admins)')
            [CompletionResult]::new('resume', 'resume', [CompletionResultType]::ParameterValue, 'Launch jobs from a paused queue again (admins)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;queue;help;list' {
            break
        }
        'platform;queue;help;pause' {
            break
        }
        'platform;queue;help;resume' {
            break
        }
        'platform;queue;help;help' {
            break
        }
        'platform;metrics' {
            [CompletionResult]::new('--last', '--last', [CompletionResultType]::ParameterName, 'Only the last N points, in step order (with --plot, only these are drawn)')
            [CompletionResult]::new('--plot', '--plot', [CompletionResultType]::ParameterName, 'Draw a line chart of these metrics in the terminal (comma-separated or repeated)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new points until the job ends (-o json then prints one point per line)')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new points until the job ends (-o json then prints one point per line)')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'The job''s system metrics (GPU utilisation, memory, temperature, power: `system/gpu<N>/…`) instead of its training metrics')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;dataset' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('upload', 'upload', [CompletionResultType]::ParameterValue, 'Upload a directory as a dataset; re-running skips files already uploaded with the same size')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List datasets with their file counts and sizes')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List datasets with their file counts and sizes')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;dataset;upload' {
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Dataset name: letters, digits, ''.'', ''_'' and ''-''')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Dataset name: letters, digits, ''.'', ''_'' and ''-''')
            [CompletionResult]::new('-j', '-j', [CompletionResultType]::ParameterName, 'Files to upload at once')
            [CompletionResult]::new('--jobs', '--jobs', [CompletionResultType]::ParameterName, 'Files to upload at once')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;dataset;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;dataset;ls' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;dataset;help' {
            [CompletionResult]::new('upload', 'upload', [CompletionResultType]::ParameterValue, 'Upload a directory as a dataset; re-running skips files already uploaded with the same size')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List datasets with their file counts and sizes')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;dataset;help;upload' {
            break
        }
        'platform;dataset;help;list' {
            break
        }
        'platform;dataset;help;help' {
            break
        }
        'platform;sweep' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show a sweep: its spec, counts by status and jobs')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List sweeps, newest first (members see their own)')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List sweeps, newest first (members see their own)')
            [CompletionResult]::new('cancel', 'cancel', [CompletionResultType]::ParameterValue, 'Cancel every job of a sweep that has not ended')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;sweep;get' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;sweep;list' {
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many sweeps (1–100)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;sweep;ls' {
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many sweeps (1–100)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;sweep;cancel' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;sweep;help' {
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show a sweep: its spec, counts by status and jobs')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List sweeps, newest first (members see their own)')
            [CompletionResult]::new('cancel', 'cancel', [CompletionResultType]::ParameterValue, 'Cancel every job of a sweep that has not ended')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;sweep;help;get' {
            break
        }
        'platform;sweep;help;list' {
            break
        }
        'platform;sweep;help;cancel' {
            break
        }
        'platform;sweep;help;help' {
            break
        }
        'platform;framework' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List registered frameworks')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List registered frameworks')
            [CompletionResult]::new('reload', 'reload', [CompletionResultType]::ParameterValue, 'Make the daemon re-read its trainers file and directory (as SIGHUP does), then list the frameworks registered now. A broken file changes nothing and the error says why')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;framework;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;framework;ls' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;framework;reload' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;framework;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List registered frameworks')
            [CompletionResult]::new('reload', 'reload', [CompletionResultType]::ParameterValue, 'Make the daemon re-read its trainers file and directory (as SIGHUP does), then list the frameworks registered now. A broken file changes nothing and the error says why')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;framework;help;list' {
            break
        }
        'platform;framework;help;reload' {
            break
        }
        'platform;framework;help;help' {
            break
        }
        'platform;webhook' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add an endpoint that receives a signed JSON event whenever a job changes status; prints its signing secret, shown only this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List endpoints (URLs cut after their first path segment, secrets by prefix only)')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List endpoints (URLs cut after their first path segment, secrets by prefix only)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon''s configuration are changed there)')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon''s configuration are changed there)')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Queue a `webhook.test` event to an endpoint; follow it with `platform webhook deliveries`')
            [CompletionResult]::new('deliveries', 'deliveries', [CompletionResultType]::ParameterValue, 'Show an endpoint''s latest deliveries, newest first: state, attempts, the receiver''s last answer')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;webhook;add' {
            [CompletionResult]::new('--event', '--event', [CompletionResultType]::ParameterName, 'Only this event type (repeat for more; default: all)')
            [CompletionResult]::new('--framework', '--framework', [CompletionResultType]::ParameterName, 'Only jobs of this framework (repeat for more; default: all)')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only jobs of this user (repeat for more; default: all)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Body shape: generic JSON, or a Slack incoming-webhook message')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;webhook;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;webhook;ls' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;webhook;remove' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;webhook;rm' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;webhook;test' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;webhook;deliveries' {
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many (1–1000)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;webhook;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add an endpoint that receives a signed JSON event whenever a job changes status; prints its signing secret, shown only this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List endpoints (URLs cut after their first path segment, secrets by prefix only)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon''s configuration are changed there)')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Queue a `webhook.test` event to an endpoint; follow it with `platform webhook deliveries`')
            [CompletionResult]::new('deliveries', 'deliveries', [CompletionResultType]::ParameterValue, 'Show an endpoint''s latest deliveries, newest first: state, attempts, the receiver''s last answer')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;webhook;help;add' {
            break
        }
        'platform;webhook;help;list' {
            break
        }
        'platform;webhook;help;remove' {
            break
        }
        'platform;webhook;help;test' {
            break
        }
        'platform;webhook;help;deliveries' {
            break
        }
        'platform;webhook;help;help' {
            break
        }
        'platform;gpu' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Every GPU local trainers may use: holder job, utilisation, memory')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'Every GPU local trainers may use: holder job, utilisation, memory')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;gpu;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;gpu;ls' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;gpu;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Every GPU local trainers may use: holder job, utilisation, memory')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;gpu;help;list' {
            break
        }
        'platform;gpu;help;help' {
            break
        }
        'platform;prune' {
            [CompletionResult]::new('--older-than', '--older-than', [CompletionResultType]::ParameterName, 'Touch only jobs that ended more than this long ago: a number with a unit, `30d`, `12h`, `90m`, `2w`, `1y` (a bare number is days)')
            [CompletionResult]::new('--downsample', '--downsample', [CompletionResultType]::ParameterName, 'Downsample their metric histories to at most N points per series, keeping the first, the last and the extremes (the default, with N = 1000)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--delete-metrics', '--delete-metrics', [CompletionResultType]::ParameterName, 'Delete their metric histories instead')
            [CompletionResult]::new('--keep-metrics', '--keep-metrics', [CompletionResultType]::ParameterName, 'Leave their metric histories whole (prune only logs or artifacts)')
            [CompletionResult]::new('--logs', '--logs', [CompletionResultType]::ParameterName, 'Also delete their archived trainer logs')
            [CompletionResult]::new('--artifacts', '--artifacts', [CompletionResultType]::ParameterName, 'Also delete their artifacts (checkpoints, exports): gone for good')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Only say what would be removed; change nothing')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;report' {
            [CompletionResult]::new('--status', '--status', [CompletionResultType]::ParameterName, 'New status: running, completed, failed or cancelled')
            [CompletionResult]::new('--progress', '--progress', [CompletionResultType]::ParameterName, 'Progress between 0 and 1')
            [CompletionResult]::new('--message', '--message', [CompletionResultType]::ParameterName, 'A progress line, e.g. "epoch 3/50"')
            [CompletionResult]::new('--metric', '--metric', [CompletionResultType]::ParameterName, 'A metric as NAME=NUMBER; repeatable (epoch, step, loss, accuracy are lifted)')
            [CompletionResult]::new('--checkpoint', '--checkpoint', [CompletionResultType]::ParameterName, 'Where the checkpoint was stored')
            [CompletionResult]::new('--error', '--error', [CompletionResultType]::ParameterName, 'Failure description')
            [CompletionResult]::new('--sequence', '--sequence', [CompletionResultType]::ParameterName, 'Idempotency sequence (increasing per job). Default: numbered from the clock, after any sequence given before')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Seconds to keep retrying while the server is unreachable (default 3600); meanwhile a running report is queued, a terminal one waits')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'Superseded by --timeout; accepted for older scripts')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--heartbeat', '--heartbeat', [CompletionResultType]::ParameterName, 'Only say the trainer is alive (keeps a job with a heartbeat timeout from being marked stalled); sends no status. Cheap: call it often')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;db' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Check the database for damage (SQLite''s integrity check, read-only): prints "ok", or what is wrong and exits 1')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the backend, schema version and rows per table (read-only)')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Copy a SQLite database into an empty PostgreSQL database (stop the daemon first): every job, metric point, user, token and webhook; the counts are checked before anything is committed')
            [CompletionResult]::new('vacuum', 'vacuum', [CompletionResultType]::ParameterValue, 'Rewrite a SQLite database file to give the space of deleted rows back (stop the daemon first), switching it to incremental auto-vacuum so later prunes give space back by themselves')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;db;check' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for the database and the local object store [default: the user''s data directory]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;db;status' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for the database and the local object store [default: the user''s data directory]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;db;migrate' {
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'The SQLite database to copy: sqlite:///relative/path or sqlite:////absolute/path [default: the configured database]')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'The empty PostgreSQL database to fill: postgresql://user:password@host:5432/database (the variable keeps the password out of the process list)')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for the database and the local object store [default: the user''s data directory]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;db;vacuum' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host:5432/database[?sslmode=…] [default: platform.db in the data directory]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for the database and the local object store [default: the user''s data directory]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;db;help' {
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Check the database for damage (SQLite''s integrity check, read-only): prints "ok", or what is wrong and exits 1')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the backend, schema version and rows per table (read-only)')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Copy a SQLite database into an empty PostgreSQL database (stop the daemon first): every job, metric point, user, token and webhook; the counts are checked before anything is committed')
            [CompletionResult]::new('vacuum', 'vacuum', [CompletionResultType]::ParameterValue, 'Rewrite a SQLite database file to give the space of deleted rows back (stop the daemon first), switching it to incremental auto-vacuum so later prunes give space back by themselves')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;db;help;check' {
            break
        }
        'platform;db;help;status' {
            break
        }
        'platform;db;help;migrate' {
            break
        }
        'platform;db;help;vacuum' {
            break
        }
        'platform;db;help;help' {
            break
        }
        'platform;login' {
            [CompletionResult]::new('--context', '--context', [CompletionResultType]::ParameterName, 'Name to save the context under (default: "default")')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--token-stdin', '--token-stdin', [CompletionResultType]::ParameterName, 'Read the token from standard input (e.g. `< admin-token`), not from --token / PLATFORM_TOKEN')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;context' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List saved contexts; `*` marks the current one')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List saved contexts; `*` marks the current one')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Make NAME the current context')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Forget a saved context (and its token)')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Forget a saved context (and its token)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;context;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;context;ls' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;context;use' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;context;delete' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;context;rm' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;context;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List saved contexts; `*` marks the current one')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Make NAME the current context')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Forget a saved context (and its token)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;context;help;list' {
            break
        }
        'platform;context;help;use' {
            break
        }
        'platform;context;help;delete' {
            break
        }
        'platform;context;help;help' {
            break
        }
        'platform;whoami' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;user' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a user and print their first token (shown only now)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('disable', 'disable', [CompletionResultType]::ParameterValue, 'Disable a user: their tokens stop working at once')
            [CompletionResult]::new('enable', 'enable', [CompletionResultType]::ParameterValue, 'Enable a disabled user again')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;user;create' {
            [CompletionResult]::new('--role', '--role', [CompletionResultType]::ParameterName, 'Role')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;user;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;user;ls' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;user;disable' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;user;enable' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;user;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a user and print their first token (shown only now)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('disable', 'disable', [CompletionResultType]::ParameterValue, 'Disable a user: their tokens stop working at once')
            [CompletionResult]::new('enable', 'enable', [CompletionResultType]::ParameterValue, 'Enable a disabled user again')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;user;help;create' {
            break
        }
        'platform;user;help;list' {
            break
        }
        'platform;user;help;disable' {
            break
        }
        'platform;user;help;enable' {
            break
        }
        'platform;user;help;help' {
            break
        }
        'platform;token' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a token for yourself (admins: --user) and print it (shown only now)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your tokens (admins: everyone''s, or --user''s)')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List your tokens (admins: everyone''s, or --user''s)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke a token by id; the next request with it fails')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;token;create' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Whose token (admins only)')
            [CompletionResult]::new('--expires-in-days', '--expires-in-days', [CompletionResultType]::ParameterName, 'Expire after this many days')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;token;list' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s tokens')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;token;ls' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s tokens')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;token;revoke' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;token;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a token for yourself (admins: --user) and print it (shown only now)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your tokens (admins: everyone''s, or --user''s)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke a token by id; the next request with it fails')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;token;help;create' {
            break
        }
        'platform;token;help;list' {
            break
        }
        'platform;token;help;revoke' {
            break
        }
        'platform;token;help;help' {
            break
        }
        'platform;audit' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s requests')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only requests at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many entries (1–1000), newest first')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;version' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;completions' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;man' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Write every page (one per command) into this directory instead of printing the top-level page')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;supervise' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'The job''s run directory')
            [CompletionResult]::new('--workdir', '--workdir', [CompletionResultType]::ParameterName, 'The trainer''s working directory')
            [CompletionResult]::new('--max-log-bytes', '--max-log-bytes', [CompletionResultType]::ParameterName, 'Log budget in bytes')
            [CompletionResult]::new('--umask', '--umask', [CompletionResultType]::ParameterName, 'The trainer''s umask, octal (the supervisor''s own stays private)')
            [CompletionResult]::new('--kill-grace', '--kill-grace', [CompletionResultType]::ParameterName, 'Seconds between SIGTERM and SIGKILL when the supervisor is told to stop the trainer (by a SIGTERM of its own)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;demo-train' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'URL of the platform daemon')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'API token sent as a bearer token')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: NO_COLOR)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output (repeat for more)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'platform;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the daemon: HTTP API, database, scheduler and runner')
            [CompletionResult]::new('job', 'job', [CompletionResultType]::ParameterValue, 'Create, list, inspect and cancel training jobs')
            [CompletionResult]::new('queue', 'queue', [CompletionResultType]::ParameterValue, 'List queues, or pause and resume one')
            [CompletionResult]::new('metrics', 'metrics', [CompletionResultType]::ParameterValue, 'Show a job''s metric points (oldest first), or overlay several jobs'' in one chart')
            [CompletionResult]::new('dataset', 'dataset', [CompletionResultType]::ParameterValue, 'Upload and list datasets in the daemon''s object store')
            [CompletionResult]::new('sweep', 'sweep', [CompletionResultType]::ParameterValue, 'Show, list and cancel sweeps (create one with `job create --sweep`)')
            [CompletionResult]::new('framework', 'framework', [CompletionResultType]::ParameterValue, 'List the trainer frameworks the daemon knows, or make it reload them')
            [CompletionResult]::new('webhook', 'webhook', [CompletionResultType]::ParameterValue, 'Manage webhook endpoints and see their deliveries (admins)')
            [CompletionResult]::new('gpu', 'gpu', [CompletionResultType]::ParameterValue, 'List the daemon''s GPUs: which job holds each, latest telemetry')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Remove the metric history (downsampled or deleted), archived logs and, when asked, artifacts of jobs that ended long ago (admins)')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Send a trainer callback from the trainer environment (CALLBACK_URL, CALLBACK_TOKEN)')
            [CompletionResult]::new('db', 'db', [CompletionResultType]::ParameterValue, 'Work on the daemon''s database file (where the daemon runs, not over HTTP)')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Check a token with a server and save both as a context (mode 0600)')
            [CompletionResult]::new('context', 'context', [CompletionResultType]::ParameterValue, 'List, switch and delete saved contexts (server and token pairs)')
            [CompletionResult]::new('whoami', 'whoami', [CompletionResultType]::ParameterValue, 'Print who the server takes you for (user, role, token name)')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'Create, list, disable and enable users (admins)')
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Create, list and revoke API tokens')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Show the audit trail of state-changing requests (admins)')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print the client''s version and the server''s, when reachable')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print the man page, or write every page to a directory')
            [CompletionResult]::new('supervise', 'supervise', [CompletionResultType]::ParameterValue, 'Supervise one trainer process (started by the daemon)')
            [CompletionResult]::new('demo-train', 'demo-train', [CompletionResultType]::ParameterValue, 'Run the built-in demo trainer (started by the daemon)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'platform;help;serve' {
            break
        }
        'platform;help;job' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Submit a training job')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List jobs, newest first')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show one job')
            [CompletionResult]::new('cancel', 'cancel', [CompletionResultType]::ParameterValue, 'Cancel one or more jobs')
            [CompletionResult]::new('artifacts', 'artifacts', [CompletionResultType]::ParameterValue, 'List a job''s artifacts (checkpoints and other outputs)')
            [CompletionResult]::new('download', 'download', [CompletionResultType]::ParameterValue, 'Download a job''s artifacts, or one of them')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Print a job''s trainer output (stdout and stderr)')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Follow a job live (progress bar, metrics, ETA) until it ends')
            [CompletionResult]::new('update', 'update', [CompletionResultType]::ParameterValue, 'Change a pending job''s priority')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until jobs end; exit 0 only if all completed (124 on --timeout)')
            [CompletionResult]::new('resubmit', 'resubmit', [CompletionResultType]::ParameterValue, 'Create a new job from an old one''s spec, with overrides (with a user token, the new job is yours; members resubmit only their own jobs)')
            [CompletionResult]::new('tag', 'tag', [CompletionResultType]::ParameterValue, 'Set or remove a job''s tags (any status)')
            [CompletionResult]::new('note', 'note', [CompletionResultType]::ParameterValue, 'Set a job''s note (any status; an empty text clears it)')
            [CompletionResult]::new('compare', 'compare', [CompletionResultType]::ParameterValue, 'Compare jobs side by side: differing config, status, duration, metrics')
            break
        }
        'platform;help;job;create' {
            break
        }
        'platform;help;job;list' {
            break
        }
        'platform;help;job;get' {
            break
        }
        'platform;help;job;cancel' {
            break
        }
        'platform;help;job;artifacts' {
            break
        }
        'platform;help;job;download' {
            break
        }
        'platform;help;job;logs' {
            break
        }
        'platform;help;job;watch' {
            break
        }
        'platform;help;job;update' {
            break
        }
        'platform;help;job;wait' {
            break
        }
        'platform;help;job;resubmit' {
            break
        }
        'platform;help;job;tag' {
            break
        }
        'platform;help;job;note' {
            break
        }
        'platform;help;job;compare' {
            break
        }
        'platform;help;queue' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Every queue: limits, paused or not, running and pending jobs')
            [CompletionResult]::new('pause', 'pause', [CompletionResultType]::ParameterValue, 'Stop launching jobs from a queue (running jobs go on; admins)')
            [CompletionResult]::new('resume', 'resume', [CompletionResultType]::ParameterValue, 'Launch jobs from a paused queue again (admins)')
            break
        }
        'platform;help;queue;list' {
            break
        }
        'platform;help;queue;pause' {
            break
        }
        'platform;help;queue;resume' {
            break
        }
        'platform;help;metrics' {
            break
        }
        'platform;help;dataset' {
            [CompletionResult]::new('upload', 'upload', [CompletionResultType]::ParameterValue, 'Upload a directory as a dataset; re-running skips files already uploaded with the same size')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List datasets with their file counts and sizes')
            break
        }
        'platform;help;dataset;upload' {
            break
        }
        'platform;help;dataset;list' {
            break
        }
        'platform;help;sweep' {
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Show a sweep: its spec, counts by status and jobs')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List sweeps, newest first (members see their own)')
            [CompletionResult]::new('cancel', 'cancel', [CompletionResultType]::ParameterValue, 'Cancel every job of a sweep that has not ended')
            break
        }
        'platform;help;sweep;get' {
            break
        }
        'platform;help;sweep;list' {
            break
        }
        'platform;help;sweep;cancel' {
            break
        }
        'platform;help;framework' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List registered frameworks')
            [CompletionResult]::new('reload', 'reload', [CompletionResultType]::ParameterValue, 'Make the daemon re-read its trainers file and directory (as SIGHUP does), then list the frameworks registered now. A broken file changes nothing and the error says why')
            break
        }
        'platform;help;framework;list' {
            break
        }
        'platform;help;framework;reload' {
            break
        }
        'platform;help;webhook' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add an endpoint that receives a signed JSON event whenever a job changes status; prints its signing secret, shown only this once')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List endpoints (URLs cut after their first path segment, secrets by prefix only)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove an endpoint added over the API, with its delivery records (endpoints from the daemon''s configuration are changed there)')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Queue a `webhook.test` event to an endpoint; follow it with `platform webhook deliveries`')
            [CompletionResult]::new('deliveries', 'deliveries', [CompletionResultType]::ParameterValue, 'Show an endpoint''s latest deliveries, newest first: state, attempts, the receiver''s last answer')
            break
        }
        'platform;help;webhook;add' {
            break
        }
        'platform;help;webhook;list' {
            break
        }
        'platform;help;webhook;remove' {
            break
        }
        'platform;help;webhook;test' {
            break
        }
        'platform;help;webhook;deliveries' {
            break
        }
        'platform;help;gpu' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Every GPU local trainers may use: holder job, utilisation, memory')
            break
        }
        'platform;help;gpu;list' {
            break
        }
        'platform;help;prune' {
            break
        }
        'platform;help;report' {
            break
        }
        'platform;help;db' {
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Check the database for damage (SQLite''s integrity check, read-only): prints "ok", or what is wrong and exits 1')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the backend, schema version and rows per table (read-only)')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Copy a SQLite database into an empty PostgreSQL database (stop the daemon first): every job, metric point, user, token and webhook; the counts are checked before anything is committed')
            [CompletionResult]::new('vacuum', 'vacuum', [CompletionResultType]::ParameterValue, 'Rewrite a SQLite database file to give the space of deleted rows back (stop the daemon first), switching it to incremental auto-vacuum so later prunes give space back by themselves')
            break
        }
        'platform;help;db;check' {
            break
        }
        'platform;help;db;status' {
            break
        }
        'platform;help;db;migrate' {
            break
        }
        'platform;help;db;vacuum' {
            break
        }
        'platform;help;login' {
            break
        }
        'platform;help;context' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List saved contexts; `*` marks the current one')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Make NAME the current context')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Forget a saved context (and its token)')
            break
        }
        'platform;help;context;list' {
            break
        }
        'platform;help;context;use' {
            break
        }
        'platform;help;context;delete' {
            break
        }
        'platform;help;whoami' {
            break
        }
        'platform;help;user' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a user and print their first token (shown only now)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('disable', 'disable', [CompletionResultType]::ParameterValue, 'Disable a user: their tokens stop working at once')
            [CompletionResult]::new('enable', 'enable', [CompletionResultType]::ParameterValue, 'Enable a disabled user again')
            break
        }
        'platform;help;user;create' {
            break
        }
        'platform;help;user;list' {
            break
        }
        'platform;help;user;disable' {
            break
        }
        'platform;help;user;enable' {
            break
        }
        'platform;help;token' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create a token for yourself (admins: --user) and print it (shown only now)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your tokens (admins: everyone''s, or --user''s)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke a token by id; the next request with it fails')
            break
        }
        'platform;help;token;create' {
            break
        }
        'platform;help;token;list' {
            break
        }
        'platform;help;token;revoke' {
            break
        }
        'platform;help;audit' {
            break
        }
        'platform;help;version' {
            break
        }
        'platform;help;completions' {
            break
        }
        'platform;help;man' {
            break
        }
        'platform;help;supervise' {
            break
        }
        'platform;help;demo-train' {
            break
        }
        'platform;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
