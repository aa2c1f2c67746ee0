//! Tracing set-up: `RUST_LOG` filters, text or JSON lines on stderr.
//!
//! Logging is best effort: a log reader that went away (`platform serve
//! 2>&1 | head -1`, or a `| tee` killed by the same Ctrl-C) must not panic
//! a worker or change what the daemon does, so write errors are dropped.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `default` is the filter when `RUST_LOG`
/// is unset (e.g. `info`, or `debug` with `DEBUG=true`).
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        // Its fallback report of a failed write is an `eprintln!`, which
        // panics on the very error it reports.
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .try_init(),
    };
}

/// Stderr that reports every write as done: a closed log stream
/// loses log lines, never requests or the shutdown.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One `write_all` under stderr's lock keeps concurrent lines whole.
        let _ = io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}
