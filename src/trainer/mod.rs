//! The trainer side of the contract: code that runs *inside* a trainer
//! process (the built-in demo trainer and `platform report`), reading the
//! SPEC §4 environment and calling back over HTTP.
//!
//! Trainers keep training while the daemon is away: reports wait in an
//! ordered, bounded queue ([`outbox`]) — in memory for the in-process
//! [`Reporter`], on disk for `platform report` ([`spool`]) — and are
//! delivered with retries ([`delivery`]) for up to
//! `PLATFORM_REPORT_TIMEOUT` seconds of outage.

pub mod delivery;
pub mod demo;
pub mod outbox;
mod reporter;
pub mod spool;
#[cfg(test)]
mod testing;

pub use delivery::{Endpoint, ReportError};
pub use outbox::Report;
pub use reporter::Reporter;
