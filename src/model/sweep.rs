//! Sweeps: one base job expanded into many, by a grid of parameter values
//! or a seeded random search. The wire types live here; the expansion,
//! once, in [`super::expand`] (re-exported): the server (the authority)
//! expands what `POST /api/v1/sweeps` asks for, and the CLI parses
//! `--sweep KEY=V1,V2` with [`parse_sweep_arg`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::job::{CreateJob, Job};

pub use super::expand::{parse_sweep_arg, set_dotted, Combination};

/// Most jobs one sweep may create.
pub const MAX_SWEEP_JOBS: usize = 500;
/// Most parameters one sweep may vary.
pub const MAX_PARAMETERS: usize = 32;
/// Longest parameter key (a dotted config path), in characters.
pub const MAX_PARAMETER_KEY: usize = 128;

/// How the parameter values are combined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SweepMethod {
    /// Every combination (the cartesian product), first parameter slowest.
    #[default]
    Grid,
    /// `count` draws, each parameter independently, from `seed`.
    Random,
}

/// One parameter's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ParamValues {
    /// The values to take (scalars), e.g. `[0.01, 0.001]`.
    List(Vec<Value>),
    /// The same, spelled `{"values": [...]}`.
    Choice {
        /// The values to take.
        #[schema(value_type = Vec<Object>)]
        values: Vec<Value>,
    },
    /// A range to draw from (random search only): uniform, or
    /// log-uniform with `log: true` (`min` > 0); whole numbers with
    /// `integer: true`.
    Range {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// Draw log-uniformly.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        log: bool,
        /// Draw whole numbers.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        integer: bool,
    },
}

/// The parameters in the order given (the order names jobs and nests the
/// grid); a JSON object on the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters(pub Vec<(String, ParamValues)>);

impl Serialize for Parameters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Parameters;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of parameter name to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Parameters, A::Error> {
                let mut out: Vec<(String, ParamValues)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, ParamValues>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!(
                            "parameter {k:?} is given twice"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(Parameters(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The schema of `parameters`: 1–[`MAX_PARAMETERS`] keys as the expansion
/// checks them (1–[`MAX_PARAMETER_KEY`] characters, dot-separated
/// non-empty parts, no `=`, `,` or control character).
fn parameters_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Config key (dotted for nested keys, e.g. `optim.lr`) → its values: a list, `{\"values\": [...]}`, or (random only) `{\"min\", \"max\", \"log\"?, \"integer\"?}`.",
        ))
        .min_properties(Some(1))
        .max_properties(Some(MAX_PARAMETERS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_PARAMETER_KEY))
                .pattern(Some(
                    "^[^.=,\\u0000-\\u001f\\u007f-\\u009f]+(\\.[^.=,\\u0000-\\u001f\\u007f-\\u009f]+)*$",
                )),
        ))
        .additional_properties(Some(utoipa::openapi::Ref::from_schema_name("ParamValues")))
        .build()
}

/// What to vary, and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SweepSpec {
    /// `grid` (default) or `random`.
    #[serde(default)]
    pub method: SweepMethod,
    /// Config key (dotted for nested keys, e.g. `optim.lr`) → its values:
    /// a list, `{"values": [...]}`, or (random only) `{"min", "max",
    /// "log"?, "integer"?}`.
    #[schema(schema_with = parameters_schema)]
    pub parameters: Parameters,
    /// How many jobs a random search creates (1–500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 500)]
    pub count: Option<u32>,
    /// The random search's seed; the server picks one when it is left out
    /// (and returns it), so every sweep can be reproduced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Body of `POST /api/v1/sweeps`: the base job plus the spec.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateSweep {
    /// The fields every job of the sweep shares (as `POST …/jobs` takes
    /// them); each job's `config` is this one with its combination merged in.
    #[serde(flatten)]
    pub job: CreateJob,
    /// What to vary.
    #[serde(flatten)]
    pub spec: SweepSpec,
}

/// A stored sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SweepRecord {
    /// UUID v7.
    pub id: Uuid,
    /// Who created it (the owner of its jobs).
    pub user_id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// What it varies (with the seed a random search used).
    #[serde(flatten)]
    pub spec: SweepSpec,
}

/// A sweep as the API returns it: the stored sweep, its jobs' counts by
/// status and (on create and get) the jobs themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sweep {
    /// The sweep.
    #[serde(flatten)]
    pub sweep: SweepRecord,
    /// How many jobs it created.
    pub total: usize,
    /// Its jobs per status (`pending`, `running`, …; missing: none).
    pub counts: BTreeMap<String, usize>,
    /// Its jobs in creation order (empty in lists).
    #[serde(default)]
    pub jobs: Vec<Job>,
}

impl Sweep {
    /// A sweep with `jobs` counted (and kept when `keep_jobs`).
    pub fn new(sweep: SweepRecord, mut jobs: Vec<Job>, keep_jobs: bool) -> Sweep {
        let mut counts = BTreeMap::new();
        for j in &jobs {
            *counts.entry(j.status.as_str().to_string()).or_insert(0) += 1;
        }
        jobs.sort_by_key(|j| j.number);
        Sweep {
            sweep,
            total: jobs.len(),
            counts,
            jobs: if keep_jobs { jobs } else { Vec::new() },
        }
    }
}
