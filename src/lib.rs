//! `platform`: run ML training jobs from one binary.
//!
//! See ARCHITECTURE.md for the map. In short: [`cli`] parses the command
//! line; client commands go through [`client`] to the daemon; the daemon is
//! [`server`] (HTTP) over [`jobs`] (lifecycle rules) over [`db`] (SQLite),
//! with [`model`] holding every type the client and server share.

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub(crate) mod datadir;
pub(crate) mod db;
pub mod errors;
pub(crate) mod events;
pub mod gpus;
pub(crate) mod jobs;
pub(crate) mod leader;
pub mod logging;
pub mod model;
pub mod queues;
pub mod runner;
pub(crate) mod secrets;
pub(crate) mod server;
pub mod storage;
pub(crate) mod switch;
pub(crate) mod trainer;
pub mod trainers;
pub(crate) mod users;
pub(crate) mod webhooks;
