//! The on/off value accepted by seed-era variables (`CALLBACK_AUTH=off`,
//! `S3_PATH_STYLE=true`, …). It sits at the bottom so that the serve flags
//! and the storage flags can both use it without importing each other.

use clap::ValueEnum;

/// On/off switch accepted by the seed-era variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    #[value(alias = "true", alias = "1", alias = "yes")]
    On,
    /// Disabled.
    #[value(alias = "false", alias = "0", alias = "no")]
    Off,
}
