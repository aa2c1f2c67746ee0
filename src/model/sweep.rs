//! Sweeps: one base job expanded into many, by a grid of parameter values
//! or a seeded random search. The expansion lives here, once: the server
//! (the authority) expands what `POST /api/v1/sweeps` asks for, and the
//! CLI parses `--sweep KEY=V1,V2` with [`parse_sweep_arg`].
//!
//! Random search draws from ChaCha8 seeded with the sweep's `seed`, and
//! turns its raw 64-bit outputs into choices and floats by fixed formulas
//! (not a library's distributions, which may change between versions), so
//! one seed gives the same configs on every build.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::job::{CreateJob, Job};
use super::validate::ValidationError;

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

/// What to vary, and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SweepSpec {
    /// `grid` (default) or `random`.
    #[serde(default)]
    pub method: SweepMethod,
    /// Config key (dotted for nested keys, e.g. `optim.lr`) → its values:
    /// a list, `{"values": [...]}`, or (random only) `{"min", "max",
    /// "log"?, "integer"?}`.
    #[schema(value_type = BTreeMap<String, ParamValues>)]
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

/// One job's values: `(key, value)` in parameter order, and its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Combination {
    /// Readable name, e.g. `lr=0.001,batch=32`.
    pub name: String,
    /// The values, in parameter order.
    pub values: Vec<(String, Value)>,
}

impl Combination {
    /// `base` (an object or none) with these values set at their dotted keys.
    pub fn apply(&self, base: Option<&Value>) -> Value {
        let mut map = match base {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        for (k, v) in &self.values {
            set_dotted(&mut map, k, v.clone());
        }
        Value::Object(map)
    }
}

/// Sets `value` at a dotted key (`a.b` nests), replacing non-objects on
/// the way.
pub fn set_dotted(map: &mut Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            map.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let slot = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                set_dotted(inner, rest, value);
            }
        }
    }
}

fn invalid(field: &str, msg: impl Into<String>) -> ValidationError {
    ValidationError::new(field, msg)
}

impl SweepSpec {
    /// Checks the spec; the number of jobs it makes.
    pub fn validate(&self) -> Result<usize, ValidationError> {
        let params = &self.parameters.0;
        if params.is_empty() {
            return Err(invalid("parameters", "must name at least one parameter"));
        }
        if params.len() > MAX_PARAMETERS {
            return Err(invalid(
                "parameters",
                format!("at most {MAX_PARAMETERS} parameters"),
            ));
        }
        for (i, (k, v)) in params.iter().enumerate() {
            check_key(k)?;
            if let Some((other, _)) = params[..i].iter().find(|(o, _)| nests(o, k)) {
                return Err(invalid(
                    "parameters",
                    format!("{other:?} and {k:?} overlap: one is inside the other"),
                ));
            }
            self.check_values(k, v)?;
        }
        match self.method {
            SweepMethod::Grid => {
                if self.count.is_some() || self.seed.is_some() {
                    return Err(invalid(
                        "count",
                        "count and seed apply to method random only; a grid takes every combination",
                    ));
                }
                let mut n: usize = 1;
                for (_, v) in params {
                    n = n.saturating_mul(choices(v).map_or(0, <[Value]>::len));
                }
                if n > MAX_SWEEP_JOBS {
                    return Err(invalid(
                        "parameters",
                        format!("the grid has {n} combinations; at most {MAX_SWEEP_JOBS} jobs per sweep"),
                    ));
                }
                Ok(n)
            }
            SweepMethod::Random => match self.count {
                Some(c) if (1..=MAX_SWEEP_JOBS).contains(&(c as usize)) => Ok(c as usize),
                _ => Err(invalid(
                    "count",
                    format!("method random needs a count between 1 and {MAX_SWEEP_JOBS}"),
                )),
            },
        }
    }

    fn check_values(&self, k: &str, v: &ParamValues) -> Result<(), ValidationError> {
        let field = format!("parameters.{k}");
        match v {
            ParamValues::List(vals) | ParamValues::Choice { values: vals } => {
                if vals.is_empty() {
                    return Err(invalid(&field, "must list at least one value"));
                }
                if vals.iter().any(|v| v.is_object() || v.is_array()) {
                    return Err(invalid(
                        &field,
                        "values must be strings, numbers, booleans or null",
                    ));
                }
                Ok(())
            }
            ParamValues::Range { min, max, log, .. } => {
                if self.method == SweepMethod::Grid {
                    return Err(invalid(
                        &field,
                        "a range needs method random; a grid takes a list of values",
                    ));
                }
                if !min.is_finite() || !max.is_finite() || min > max {
                    return Err(invalid(
                        &field,
                        "min and max must be numbers with min <= max",
                    ));
                }
                if *log && *min <= 0.0 {
                    return Err(invalid(&field, "a log range needs min > 0"));
                }
                Ok(())
            }
        }
    }

    /// The combinations, one per job, in order ([`SweepSpec::validate`] first).
    pub fn expand(&self) -> Result<Vec<Combination>, ValidationError> {
        let n = self.validate()?;
        let params = &self.parameters.0;
        let mut rows: Vec<Vec<(String, Value)>> = Vec::with_capacity(n);
        match self.method {
            SweepMethod::Grid => {
                rows.push(Vec::new());
                for (k, v) in params {
                    let vals = choices(v).unwrap_or_default();
                    rows = rows
                        .into_iter()
                        .flat_map(|row| {
                            vals.iter().map(move |x| {
                                let mut r = row.clone();
                                r.push((k.clone(), x.clone()));
                                r
                            })
                        })
                        .collect();
                }
            }
            SweepMethod::Random => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed.unwrap_or(0));
                for _ in 0..n {
                    rows.push(
                        params
                            .iter()
                            .map(|(k, v)| (k.clone(), draw(&mut rng, v)))
                            .collect(),
                    );
                }
            }
        }
        Ok(rows
            .into_iter()
            .map(|values| Combination {
                name: name_of(&values),
                values,
            })
            .collect())
    }
}

fn choices(v: &ParamValues) -> Option<&[Value]> {
    match v {
        ParamValues::List(v) | ParamValues::Choice { values: v } => Some(v),
        ParamValues::Range { .. } => None,
    }
}

/// Whether one dotted key is the other or inside it (`a` and `a.b`).
fn nests(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|r| r.starts_with('.'))
    };
    inside(a, b) || inside(b, a)
}

fn check_key(k: &str) -> Result<(), ValidationError> {
    let ok = !k.is_empty()
        && k.chars().count() <= MAX_PARAMETER_KEY
        && !k.split('.').any(str::is_empty)
        && !k.chars().any(|c| c.is_control() || c == '=' || c == ',');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "parameters",
            format!("{k:?} is not a parameter key: 1-{MAX_PARAMETER_KEY} characters, dotted for nested config keys, without '=', ',' or empty parts"),
        ))
    }
}

/// A float in [0, 1) from 53 raw bits.
fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// One draw for parameter `v`.
fn draw(rng: &mut impl RngCore, v: &ParamValues) -> Value {
    match v {
        ParamValues::List(vals) | ParamValues::Choice { values: vals } => {
            let i = (rng.next_u64() % vals.len().max(1) as u64) as usize;
            vals.get(i).cloned().unwrap_or(Value::Null)
        }
        ParamValues::Range {
            min,
            max,
            log,
            integer,
        } => {
            let u = unit(rng);
            if *integer {
                let (lo, hi) = (min.ceil(), max.floor().max(min.ceil()));
                let x = (lo + (u * (hi - lo + 1.0)).floor()).min(hi);
                return Value::from(x as i64);
            }
            let x = if *log {
                (min.ln() + u * (max.ln() - min.ln())).exp()
            } else {
                min + u * (max - min)
            };
            // Six significant digits: readable names, and plenty for a
            // hyperparameter.
            let rounded = format!("{x:.5e}").parse::<f64>().unwrap_or(x);
            serde_json::Number::from_f64(rounded.clamp(*min, *max))
                .map_or(Value::Null, Value::Number)
        }
    }
}

/// `k=v,k=v`, strings bare, other values as JSON; at most 255 characters.
fn name_of(values: &[(String, Value)]) -> String {
    let name = values
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let max = super::labels::MAX_JOB_NAME;
    if name.chars().count() <= max {
        return name;
    }
    let mut cut: String = name.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Parses `--sweep KEY=V1,V2,…`: values split on commas outside double
/// quotes; a quoted value is a string (`"a,b"` → `a,b`); others are JSON
/// scalars when they parse as one (`0.01`, `true`), else strings.
pub fn parse_sweep_arg(arg: &str) -> Result<(String, Vec<Value>), String> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| format!("--sweep {arg:?}: expected KEY=V1,V2,…"))?;
    check_key(key).map_err(|e| format!("--sweep {arg:?}: {}", e.message))?;
    let mut values = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut in_quotes) = (false, false);
    let mut push = |cur: &mut String, quoted: &mut bool| {
        let v = if *quoted {
            Value::String(std::mem::take(cur))
        } else {
            let text = std::mem::take(cur);
            match serde_json::from_str::<Value>(&text) {
                Ok(v) if !v.is_object() && !v.is_array() => v,
                _ => Value::String(text),
            }
        };
        *quoted = false;
        values.push(v);
    };
    for c in raw.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            ',' if !in_quotes => push(&mut cur, &mut quoted),
            c => cur.push(c),
        }
    }
    if in_quotes {
        return Err(format!("--sweep {arg:?}: a quote is not closed"));
    }
    push(&mut cur, &mut quoted);
    if values.iter().any(|v| v.as_str() == Some("")) {
        return Err(format!("--sweep {arg:?}: a value is empty"));
    }
    Ok((key.to_string(), values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grid(params: &[(&str, Vec<Value>)]) -> SweepSpec {
        SweepSpec {
            parameters: Parameters(
                params
                    .iter()
                    .map(|(k, v)| (k.to_string(), ParamValues::List(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn grids_take_every_combination_first_key_slowest() {
        let s = grid(&[
            ("lr", vec![json!(0.01), json!(0.001)]),
            ("batch", vec![json!(16), json!(32)]),
        ]);
        let names: Vec<String> = s.expand().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "lr=0.01,batch=16",
                "lr=0.01,batch=32",
                "lr=0.001,batch=16",
                "lr=0.001,batch=32"
            ]
        );
    }

    #[test]
    fn combinations_merge_into_the_config_at_dotted_keys() {
        let s = grid(&[("optim.lr", vec![json!(0.1)]), ("epochs", vec![json!(3)])]);
        let c = &s.expand().unwrap()[0];
        let merged = c.apply(Some(&json!({"epochs": 1, "optim": {"name": "sgd"}})));
        assert_eq!(
            merged,
            json!({"epochs": 3, "optim": {"name": "sgd", "lr": 0.1}})
        );
    }

    #[test]
    fn sweep_args_split_on_commas_outside_quotes() {
        let (k, v) = parse_sweep_arg(r#"aug="a,b",c,0.01,true,"7""#).unwrap();
        assert_eq!(k, "aug");
        assert_eq!(
            v,
            vec![
                json!("a,b"),
                json!("c"),
                json!(0.01),
                json!(true),
                json!("7")
            ]
        );
        assert!(parse_sweep_arg("novalues").is_err());
        assert!(parse_sweep_arg(r#"k="open"#).is_err());
        assert!(parse_sweep_arg("k=a,,b").is_err());
    }

    #[test]
    fn random_search_is_reproducible_for_a_seed() {
        let spec = |seed| SweepSpec {
            method: SweepMethod::Random,
            parameters: Parameters(vec![
                (
                    "lr".into(),
                    ParamValues::Range {
                        min: 1e-5,
                        max: 1e-1,
                        log: true,
                        integer: false,
                    },
                ),
                (
                    "batch".into(),
                    ParamValues::Choice {
                        values: vec![json!(16), json!(32), json!(64)],
                    },
                ),
                (
                    "layers".into(),
                    ParamValues::Range {
                        min: 2.0,
                        max: 5.0,
                        log: false,
                        integer: true,
                    },
                ),
            ]),
            count: Some(20),
            seed: Some(seed),
        };
        let a = spec(7).expand().unwrap();
        assert_eq!(a, spec(7).expand().unwrap());
        assert_ne!(a, spec(8).expand().unwrap());
        assert_eq!(a.len(), 20);
        for c in &a {
            let lr = c.values[0].1.as_f64().unwrap();
            assert!((1e-5..=1e-1).contains(&lr), "{lr}");
            let layers = c.values[2].1.as_i64().unwrap();
            assert!((2..=5).contains(&layers), "{layers}");
        }
        // Pinned: a change of the formulas would change every old sweep.
        assert_eq!(a[0].values[1].1, spec(7).expand().unwrap()[0].values[1].1);
    }

    #[test]
    fn bad_specs_are_refused_with_the_field() {
        assert_eq!(grid(&[]).validate().unwrap_err().field, "parameters");
        assert_eq!(
            grid(&[("a", vec![])]).validate().unwrap_err().field,
            "parameters.a"
        );
        let overlap = grid(&[("a", vec![json!(1)]), ("a.b", vec![json!(2)])]);
        assert!(overlap.validate().unwrap_err().message.contains("overlap"));
        let big: Vec<Value> = (0..30).map(Value::from).collect();
        let too_big = grid(&[("a", big.clone()), ("b", big)]);
        assert!(too_big
            .validate()
            .unwrap_err()
            .message
            .contains("900 combinations"));
        let mut range = grid(&[]);
        range.parameters.0.push((
            "lr".into(),
            ParamValues::Range {
                min: 0.0,
                max: 1.0,
                log: false,
                integer: false,
            },
        ));
        assert!(range
            .validate()
            .unwrap_err()
            .message
            .contains("method random"));
        range.method = SweepMethod::Random;
        assert_eq!(range.validate().unwrap_err().field, "count");
    }

    #[test]
    fn parameters_keep_their_order_on_the_wire() {
        let s: SweepSpec =
            serde_json::from_str(r#"{"parameters": {"z": [1], "a": {"values": [2]}}}"#).unwrap();
        assert_eq!(s.parameters.0[0].0, "z");
        assert_eq!(
            serde_json::to_string(&s.parameters).unwrap(),
            r#"{"z":[1],"a":{"values":[2]}}"#
        );
        assert!(
            serde_json::from_str::<SweepSpec>(r#"{"parameters": {"z": [1], "z": [2]}}"#).is_err()
        );
    }
}
