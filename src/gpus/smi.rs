//! `nvidia-smi` as the source of the GPU inventory and of telemetry: one
//! CSV query each, parsed here. Fields `nvidia-smi` cannot read (`[N/A]`,
//! `[Not Supported]`) are left empty rather than failing the line.

use std::process::Output;

use chrono::Utc;

use super::Gpu;
use crate::model::GpuTelemetry;

/// The program, looked up on the daemon's `PATH`.
pub const PROGRAM: &str = "nvidia-smi";

const INVENTORY_ARGS: [&str; 2] = [
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader,nounits",
];

const TELEMETRY_ARGS: [&str; 2] = [
    "--query-gpu=index,utilization.gpu,memory.used,temperature.gpu,power.draw",
    "--format=csv,noheader,nounits",
];

/// Why `nvidia-smi` gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SmiError {
    /// Not on `PATH`, or not runnable.
    #[error("cannot run {PROGRAM}: {0}")]
    Spawn(#[from] std::io::Error),
    /// It ran and failed (no driver, no device).
    #[error("{PROGRAM} failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: String,
        /// The first line of its stderr (or stdout).
        stderr: String,
    },
}

fn stdout(out: Output) -> Result<String, SmiError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let text = if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    Err(SmiError::Failed {
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(text)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
    })
}

/// The GPUs `nvidia-smi` lists (at start-up; blocking is fine there).
pub fn inventory() -> Result<Vec<Gpu>, SmiError> {
    let out = std::process::Command::new(PROGRAM)
        .args(INVENTORY_ARGS)
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok(parse_inventory(&stdout(out)?))
}

/// One telemetry sample of every GPU, by index.
pub async fn sample() -> Result<Vec<(u32, GpuTelemetry)>, SmiError> {
    let out = tokio::process::Command::new(PROGRAM)
        .args(TELEMETRY_ARGS)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    Ok(parse_telemetry(&stdout(out)?))
}

fn fields(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

/// A number, or nothing for `[N/A]` and friends (units tolerated, in case
/// `nounits` was not honoured).
fn number(s: &str) -> Option<f64> {
    let s = s.trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == '%' || c == ' ');
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Parses `index, uuid, name, memory.total` lines; unreadable lines are skipped.
pub fn parse_inventory(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let f = fields(line);
            let [index, uuid, name, memory] = f.as_slice() else {
                return None;
            };
            Some(Gpu {
                index: index.parse().ok()?,
                uuid: uuid.to_string(),
                name: name.to_string(),
                memory_total_mib: number(memory).map_or(0, |m| m as u64),
            })
        })
        .collect()
}

/// Parses `index, utilization, memory.used, temperature, power` lines.
pub fn parse_telemetry(text: &str) -> Vec<(u32, GpuTelemetry)> {
    let at = Utc::now();
    text.lines()
        .filter_map(|line| {
            let f = fields(line);
            let [index, util, mem, temp, power] = f.as_slice() else {
                return None;
            };
            Some((
                index.parse().ok()?,
                GpuTelemetry {
                    at,
                    utilization: number(util),
                    memory_used_mib: number(mem),
                    temperature_c: number(temp),
                    power_w: number(power),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_lines_parse_and_bad_ones_are_skipped() {
        let gpus = parse_inventory(
            "0, GPU-aaa, NVIDIA H100 80GB HBM3, 81559\n1, GPU-bbb, Tesla T4, [N/A]\ngarbage\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].uuid, "GPU-aaa");
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_total_mib, 81559);
        assert_eq!(gpus[1].memory_total_mib, 0);
    }

    #[test]
    fn telemetry_tolerates_missing_fields() {
        let s = parse_telemetry("0, 97, 1024, 61, 250.5\n1, 0, 0, 30, [N/A]\n");
        assert_eq!(s[0].0, 0);
        assert_eq!(s[0].1.utilization, Some(97.0));
        assert_eq!(s[0].1.power_w, Some(250.5));
        assert_eq!(s[1].1.power_w, None);
        assert_eq!(number("250.5 W"), Some(250.5));
    }
}
