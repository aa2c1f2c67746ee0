//! The daemon's GPUs: which ones it may hand to trainers (discovered with
//! `nvidia-smi`, narrowed by `--gpus` and an inherited
//! `CUDA_VISIBLE_DEVICES`), which job holds each, and their latest
//! telemetry. The subprocess runner's scheduler decides who holds what
//! ([`Gpus::set_holders`]); the HTTP API and `/metrics` read it here.
//!
//! No GPUs (no `nvidia-smi`, no driver, `--gpus none`) is a normal state:
//! jobs asking for none run as before.

pub mod smi;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{AssignedGpu, GpuInfo, GpuTelemetry};

/// One GPU of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// `nvidia-smi` index (PCI bus order).
    pub index: u32,
    /// `GPU-…` (empty when the GPU was named by `--gpus` without `nvidia-smi`).
    pub uuid: String,
    /// Model name.
    pub name: String,
    /// Total memory, MiB.
    pub memory_total_mib: u64,
}

impl Gpu {
    /// As a job's assignment records it.
    pub fn assigned(&self) -> AssignedGpu {
        AssignedGpu {
            index: self.index,
            uuid: self.uuid.clone(),
        }
    }

    /// Whether `id` (an index or a UUID, as `--gpus` and
    /// `CUDA_VISIBLE_DEVICES` spell them) names this GPU.
    fn is(&self, id: &str) -> bool {
        id.parse::<u32>().map_or_else(
            // CUDA takes any unique prefix of a UUID.
            |_| !self.uuid.is_empty() && self.uuid.starts_with(id),
            |i| i == self.index,
        )
    }
}

/// `--gpus` / `PLATFORM_GPUS`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every GPU `nvidia-smi` lists (the default; also `all`).
    #[default]
    All,
    /// None: jobs asking for GPUs are refused.
    None,
    /// These, by index or UUID.
    Only(Vec<String>),
}

impl std::str::FromStr for Selection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "" | "all" => return Ok(Selection::All),
            "none" => return Ok(Selection::None),
            _ => {}
        }
        let ids: Vec<String> = s.split(',').map(|p| p.trim().to_string()).collect();
        if ids.iter().any(String::is_empty) {
            return Err(format!(
                "{s:?} is not a GPU list: use indices or UUIDs separated by commas (0,1,3), `all` or `none`"
            ));
        }
        Ok(Selection::Only(ids))
    }
}

/// Why the configured GPUs cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuConfigError {
    /// `--gpus` names a GPU the machine (or `CUDA_VISIBLE_DEVICES`) does not offer.
    #[error("--gpus names GPU {id:?}, which is not among this machine's usable GPUs ({known})")]
    Unknown {
        /// The entry.
        id: String,
        /// What there is.
        known: String,
    },
}

/// Narrows the `discovered` GPUs to what the daemon may use: those in an
/// inherited `CUDA_VISIBLE_DEVICES` (indices or UUIDs; empty: none), then
/// the `selection`. A list naming GPUs when none were discovered (no
/// `nvidia-smi`) is taken as given, by index.
pub fn select(
    discovered: Vec<Gpu>,
    cuda_visible: Option<&str>,
    selection: &Selection,
) -> Result<Vec<Gpu>, GpuConfigError> {
    let nothing_found = discovered.is_empty();
    let mut usable: Vec<Gpu> = match cuda_visible {
        Some(v) => {
            let ids: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            discovered
                .into_iter()
                .filter(|g| ids.iter().any(|id| g.is(id)))
                .collect()
        }
        None => discovered,
    };
    match selection {
        Selection::All => {}
        Selection::None => usable.clear(),
        Selection::Only(ids) if nothing_found => {
            let mut given = Vec::new();
            for id in ids {
                let index = id.parse::<u32>().map_err(|_| GpuConfigError::Unknown {
                    id: id.clone(),
                    known: "none found by nvidia-smi; name GPUs by index".into(),
                })?;
                given.push(Gpu {
                    index,
                    uuid: String::new(),
                    name: "unknown".into(),
                    memory_total_mib: 0,
                });
            }
            usable = given;
        }
        Selection::Only(ids) => {
            let known = usable
                .iter()
                .map(|g| g.index.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let mut chosen: Vec<Gpu> = Vec::new();
            for id in ids {
                let g =
                    usable
                        .iter()
                        .find(|g| g.is(id))
                        .ok_or_else(|| GpuConfigError::Unknown {
                            id: id.clone(),
                            known: if known.is_empty() {
                                "none".into()
                            } else {
                                known.clone()
                            },
                        })?;
                chosen.push(g.clone());
            }
            usable = chosen;
        }
    }
    usable.sort_by_key(|g| g.index);
    usable.dedup_by_key(|g| g.index);
    Ok(usable)
}

/// Discovers the machine's GPUs with `nvidia-smi` (none when it is missing
/// or fails, logged once) and narrows them as [`select`] does.
pub fn discover(selection: &Selection) -> Result<Vec<Gpu>, GpuConfigError> {
    let discovered = if *selection == Selection::None {
        Vec::new()
    } else {
        match smi::inventory() {
            Ok(g) => g,
            Err(e) => {
                tracing::info!(error = %e, "no GPUs: nvidia-smi gave none; jobs asking for GPUs are refused");
                Vec::new()
            }
        }
    };
    let cuda = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    select(discovered, cuda.as_deref(), selection)
}

/// What changes while the daemon runs.
#[derive(Debug, Default)]
struct State {
    /// GPU index → the job holding it.
    holders: HashMap<u32, Uuid>,
    /// GPU index → its latest sample.
    telemetry: HashMap<u32, GpuTelemetry>,
    /// GPU index → since when it has been at 0 % under its current holder.
    idle_since: HashMap<u32, DateTime<Utc>>,
    /// How long at 0 % makes a held GPU `idle`.
    idle_after: Option<std::time::Duration>,
}

/// The daemon's usable GPUs and who holds them. One per daemon, shared.
#[derive(Debug, Default)]
pub struct Gpus {
    inventory: Vec<Gpu>,
    state: Mutex<State>,
}

impl Gpus {
    /// Over these GPUs (sorted by index).
    pub fn new(inventory: Vec<Gpu>) -> Self {
        Self {
            inventory,
            state: Mutex::default(),
        }
    }

    /// The usable GPUs.
    pub fn inventory(&self) -> &[Gpu] {
        &self.inventory
    }

    /// How many there are.
    pub fn count(&self) -> u32 {
        u32::try_from(self.inventory.len()).unwrap_or(u32::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it cannot leave the maps half-written in
        // a way that matters: take them as they are.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces who holds which GPU (the scheduler's view after each change).
    pub fn set_holders(&self, holders: HashMap<u32, Uuid>) {
        let mut s = self.state();
        let before = std::mem::take(&mut s.holders);
        s.idle_since
            .retain(|i, _| holders.contains_key(i) && before.get(i) == holders.get(i));
        s.holders = holders;
    }

    /// How long at 0 % utilisation makes a held GPU `idle` (none: never).
    pub fn set_idle_after(&self, after: std::time::Duration) {
        self.state().idle_after = Some(after);
    }

    /// Who holds which GPU.
    pub fn holders(&self) -> HashMap<u32, Uuid> {
        self.state().holders.clone()
    }

    /// Stores a telemetry sample; returns, per held GPU, its holder and
    /// since when it has been at 0 % utilisation (none: busy).
    pub fn record(
        &self,
        samples: &[(u32, GpuTelemetry)],
    ) -> BTreeMap<u32, (Uuid, Option<DateTime<Utc>>)> {
        let mut s = self.state();
        let mut out = BTreeMap::new();
        for (index, t) in samples {
            s.telemetry.insert(*index, t.clone());
            let Some(job) = s.holders.get(index).copied() else {
                s.idle_since.remove(index);
                continue;
            };
            let idle = t.utilization.is_some_and(|u| u <= 0.0);
            let since = if idle {
                Some(*s.idle_since.entry(*index).or_insert(t.at))
            } else {
                s.idle_since.remove(index);
                None
            };
            out.insert(*index, (job, since));
        }
        out
    }

    /// Whether a GPU held by `job` is flagged idle.
    pub fn idle_job(&self, job: Uuid) -> bool {
        self.list().iter().any(|g| g.idle && g.job_id == Some(job))
    }

    /// Every usable GPU with its holder and latest sample.
    pub fn list(&self) -> Vec<GpuInfo> {
        let s = self.state();
        self.inventory
            .iter()
            .map(|g| GpuInfo {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                memory_total_mib: g.memory_total_mib,
                job_id: s.holders.get(&g.index).copied(),
                telemetry: s.telemetry.get(&g.index).cloned(),
                idle: match (
                    s.idle_since.get(&g.index),
                    s.idle_after,
                    s.telemetry.get(&g.index),
                ) {
                    (Some(since), Some(after), Some(t)) => {
                        (t.at - *since).to_std().unwrap_or_default() >= after
                    }
                    _ => false,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four() -> Vec<Gpu> {
        (0..4)
            .map(|i| Gpu {
                index: i,
                uuid: format!("GPU-{i}{i}{i}"),
                name: "Fake".into(),
                memory_total_mib: 1024,
            })
            .collect()
    }

    fn indices(g: &[Gpu]) -> Vec<u32> {
        g.iter().map(|g| g.index).collect()
    }

    #[test]
    fn selections_parse() {
        assert_eq!("none".parse(), Ok(Selection::None));
        assert_eq!("ALL".parse(), Ok(Selection::All));
        assert_eq!(
            "0, 1,GPU-3".parse(),
            Ok(Selection::Only(vec![
                "0".into(),
                "1".into(),
                "GPU-3".into()
            ]))
        );
        assert!("0,,1".parse::<Selection>().is_err());
    }

    #[test]
    fn cuda_visible_devices_and_the_list_narrow_the_set() {
        let all = select(four(), None, &Selection::All).unwrap();
        assert_eq!(indices(&all), [0, 1, 2, 3]);
        let cuda = select(four(), Some("2,GPU-000"), &Selection::All).unwrap();
        assert_eq!(indices(&cuda), [0, 2]);
        assert!(select(four(), Some(""), &Selection::All)
            .unwrap()
            .is_empty());
        let only = "3,1".parse().unwrap();
        assert_eq!(indices(&select(four(), None, &only).unwrap()), [1, 3]);
        let err = select(four(), Some("0,1"), &only).unwrap_err();
        assert!(err.to_string().contains("\"3\""), "{err}");
        assert!(select(four(), None, &Selection::None).unwrap().is_empty());
        // Without nvidia-smi an explicit list is taken by index.
        let given = select(Vec::new(), None, &"0,1".parse().unwrap()).unwrap();
        assert_eq!(indices(&given), [0, 1]);
    }

    #[test]
    fn idleness_is_tracked_per_holder() {
        let gpus = Gpus::new(four());
        let job = Uuid::now_v7();
        gpus.set_holders(HashMap::from([(1, job)]));
        let t = |u: f64, at: DateTime<Utc>| GpuTelemetry {
            at,
            utilization: Some(u),
            memory_used_mib: None,
            temperature_c: None,
            power_w: None,
        };
        let t0 = Utc::now();
        let r = gpus.record(&[(0, t(0.0, t0)), (1, t(0.0, t0))]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[&1], (job, Some(t0)));
        let later = t0 + chrono::Duration::seconds(5);
        assert_eq!(gpus.record(&[(1, t(0.0, later))])[&1], (job, Some(t0)));
        assert_eq!(gpus.record(&[(1, t(50.0, later))])[&1], (job, None));
        let list = gpus.list();
        assert_eq!(list[1].job_id, Some(job));
        assert_eq!(list[0].job_id, None);
        assert_eq!(
            list[1].telemetry.as_ref().and_then(|t| t.utilization),
            Some(50.0)
        );
    }
}
