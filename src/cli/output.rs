//! How the CLI prints: output formats, aligned tables, relative times and
//! colour (only on a terminal, never with `--no-color`/`NO_COLOR`).

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use comfy_table::{presets, Cell, ContentArrangement, Table};
use console::Style;
use serde::Serialize;

use super::exit::Exit;
pub use super::label::{job_arg, job_number};
use super::GlobalArgs;
use crate::model::JobStatus;

/// `-o/--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// Table with more columns.
    Wide,
    /// Exactly the API's JSON.
    Json,
    /// YAML.
    Yaml,
    /// Comma-separated values.
    Csv,
}

impl OutputFormat {
    fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Wide => "wide",
            OutputFormat::Json => "json",
            OutputFormat::Yaml => "yaml",
            OutputFormat::Csv => "csv",
        }
    }
}

/// Output settings for one command run.
#[derive(Debug, Clone)]
pub struct Printer {
    requested: Option<OutputFormat>,
    /// Whether colour and animation are allowed.
    pub tty: bool,
    /// `--quiet`.
    pub quiet: bool,
}

impl Printer {
    /// Settings from the global flags and the terminal.
    pub fn new(g: &GlobalArgs) -> Self {
        let tty = std::io::stdout().is_terminal();
        let no_color = g.no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        console::set_colors_enabled(tty && !no_color);
        console::set_colors_enabled_stderr(std::io::stderr().is_terminal() && !no_color);
        Self {
            requested: g.output,
            tty,
            quiet: g.quiet,
        }
    }

    /// The requested format (default: the first of `supported`), or a usage
    /// error naming what this command supports.
    pub fn format(&self, supported: &[OutputFormat]) -> anyhow::Result<OutputFormat> {
        match self.requested {
            None => Ok(supported[0]),
            Some(f) if supported.contains(&f) => Ok(f),
            Some(f) => Err(Exit::usage(format!(
                "this command cannot print -o {}; use one of: {}",
                f.name(),
                supported
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Pretty JSON on stdout.
    pub fn json<T: Serialize + ?Sized>(&self, v: &T) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, v)?;
        writeln!(out)?;
        Ok(())
    }

    /// YAML on stdout.
    pub fn yaml<T: Serialize + ?Sized>(&self, v: &T) -> anyhow::Result<()> {
        print!("{}", serde_yaml_ng::to_string(v)?);
        Ok(())
    }
}

/// A borderless, left-aligned table like kubectl's.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().map(Cell::new));
    t
}

/// Prints a table without the leading space comfy-table pads each row with.
pub fn print_table(t: &Table) {
    for line in table_lines(t) {
        println!("{line}");
    }
}

/// Prints `items` in `fmt`: JSON/YAML exactly as the API sent them, else a
/// table with `headers` and one `row` per item.
pub fn print_list<T: Serialize>(
    out: &Printer,
    fmt: OutputFormat,
    items: &[T],
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    match fmt {
        OutputFormat::Json => out.json(items),
        OutputFormat::Yaml => out.yaml(items),
        _ => {
            let mut t = table(headers);
            for item in items {
                t.add_row(row(item));
            }
            print_table(&t);
            Ok(())
        }
    }
}

/// A table's lines, without comfy-table's leading space and trailing blanks.
pub fn table_lines(t: &Table) -> Vec<String> {
    let tidy = |line: String| {
        line.strip_prefix(' ')
            .unwrap_or(&line)
            .trim_end()
            .to_string()
    };
    t.lines().map(tidy).collect()
}

/// A status word, coloured when allowed.
pub fn status(s: JobStatus) -> String {
    let style = match s {
        JobStatus::Pending => Style::new().dim(),
        JobStatus::Running => Style::new().cyan(),
        JobStatus::Completed => Style::new().green(),
        JobStatus::Failed => Style::new().red().bold(),
        JobStatus::Cancelled => Style::new().yellow(),
    };
    style.apply_to(s.as_str()).to_string()
}

/// How a trainer's exit code reads: `exit code 1`, or the signal that
/// killed it (the runners record a signal as its negated number).
pub fn exit_code(code: i32) -> String {
    if code >= 0 {
        return format!("exit code {code}");
    }
    let number = code.unsigned_abs();
    match i32::try_from(number).map(nix::sys::signal::Signal::try_from) {
        Ok(Ok(sig)) => format!("killed by {}", sig.as_str()),
        _ => format!("killed by signal {number}"),
    }
}

/// "just now", "42s ago", "3m ago", "5h ago", "2d ago".
pub fn ago(t: DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds();
    match secs {
        s if s < 2 => "just now".into(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// "1h 02m", "3m 07s", "12s".
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A percentage like "42%".
pub fn percent(p: f64) -> String {
    format!("{:.0}%", (p * 100.0).clamp(0.0, 100.0))
}

/// Formats a metric value compactly.
pub fn number(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) if f.abs() >= 1e-3 && f.abs() < 1e6 => {
            let s = format!("{f:.4}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        Some(f) => format!("{f:.3e}"),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(ago(now), "just now");
        assert_eq!(ago(now - chrono::Duration::minutes(3)), "3m ago");
        assert_eq!(ago(now - chrono::Duration::hours(5)), "5h ago");
        assert_eq!(duration(187), "3m 07s");
    }

    #[test]
    fn exit_codes_name_signals() {
        assert_eq!(exit_code(0), "exit code 0");
        assert_eq!(exit_code(1), "exit code 1");
        assert_eq!(exit_code(-15), "killed by SIGTERM");
        assert_eq!(exit_code(-9), "killed by SIGKILL");
        assert_eq!(exit_code(-99), "killed by signal 99");
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(number(&serde_json::json!(21)), "21");
        assert_eq!(number(&serde_json::json!(0.53000)), "0.53");
        assert_eq!(number(&serde_json::json!(0.000012)), "1.200e-5");
    }
}
