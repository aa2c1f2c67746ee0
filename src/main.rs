//! Entry point: parse the command line, run the command, and turn errors
//! into one readable line and an exit code (0 ok, 1 error, 2 usage).

use platform::cli::{self, Cli, Command, Exit};
use platform::config::ServerConfig;

// The static build's memcpy, memmove, memcmp and bcmp: nothing calls the crate by name,
// and an unused crate would not be linked (see crates/fastmem).
use fastmem as _;

/// The hot paths (JSON, HTTP, SQLite) allocate per request; musl's allocator
/// (the static build) and glibc's both trail mimalloc there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let warnings = platform::config::load_env_layers();
    let cli = cli::parse();
    for w in warnings {
        stderr_line(format_args!("warning: {w}"));
    }
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => report(&e),
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Supervise(args) => {
            // Plain threads, no runtime: it must stay small and outlive the daemon.
            return match platform::runner::supervisor::run(args) {
                0 => Ok(()),
                code => Err(Exit::silent(code)),
            };
        }
        Command::Db(cmd) => return platform::admin::db(cmd, cli.global.output),
        command => command,
    };
    // One TLS crypto provider for every client (object_store, kube, reqwest).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = runtime()?;
    let result = match command {
        Command::Serve(args) => {
            let default_level = if args.debug { "debug" } else { "info" };
            platform::logging::init(args.log_format, default_level);
            let cfg = ServerConfig::from_args(&args)?;
            runtime.block_on(platform::daemon::run(cfg))
        }
        command => {
            if !matches!(command, Command::DemoTrain | Command::Report(_)) {
                restore_sigpipe();
            }
            let level = match (cli.global.quiet, cli.global.verbose) {
                (true, _) => "error",
                (false, 0) => "warn",
                (false, 1) => "info",
                _ => "debug",
            };
            platform::logging::init(platform::config::LogFormat::Text, level);
            runtime.block_on(cli::run_client(cli.global, command))
        }
    };
    // Dropping the runtime waits for every blocking-pool task, however
    // long; what is still there once the command has returned (a detached
    // file read) has no one left to report to, so the process does not
    // wait on it.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// Most worker threads: the daemon's work per request is small (its
/// throughput is the database writer's), and every worker that ran keeps
/// a share of memory (its stack, its allocator's pages), so a many-core
/// machine would otherwise hold tens of idle workers. `TOKIO_WORKER_THREADS`
/// overrides it.
const MAX_WORKERS: usize = 4;

/// The runtime: as many workers as cores, at most [`MAX_WORKERS`].
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cores.min(MAX_WORKERS));
    }
    builder.build()
}

/// How long the runtime's blocking tasks get to finish after the command
/// returned (the daemon has closed its database by then).
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(500);

/// Rust ignores SIGPIPE, so `platform job list | head -1` would end in a
/// "failed printing to stdout" panic; like other command-line tools, the
/// client instead ends quietly when its reader goes away. Sockets are not
/// affected (Rust sends with MSG_NOSIGNAL). Trainer-side commands keep the
/// default so a vanished log reader never kills a training run.
fn restore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: the disposition is process-wide and nothing in the client
    // installs its own SIGPIPE handler; SigDfl runs no code of ours.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

fn report(e: &anyhow::Error) -> i32 {
    if let Some(exit) = e.downcast_ref::<Exit>() {
        if !exit.message.is_empty() {
            stderr_line(format_args!("error: {}", exit.message));
        }
        return exit.code;
    }
    stderr_line(format_args!("error: {e:#}"));
    1
}

/// `eprintln!` without its panic on a closed stderr: `platform serve 2>&1
/// | head -1` must still exit with its own code, not 101.
fn stderr_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
