//! The expansion of a [`SweepSpec`] into one combination of values per
//! job: its checks, the grid (cartesian product, first parameter slowest),
//! the seeded random search, job names, and `--sweep KEY=V1,V2` parsing.
//!
//! Random search draws from ChaCha8 seeded with the sweep's `seed`, and
//! turns its raw 64-bit outputs into choices and floats by fixed formulas
//! (not a library's distributions, which may change between versions), so
//! one seed gives the same configs on every build.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::{Map, Value};

use super::sweep::{
    ParamValues, SweepMethod, SweepSpec, MAX_PARAMETERS, MAX_PARAMETER_KEY, MAX_SWEEP_JOBS,
};
use super::validate::ValidationError;

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
    use crate::model::sweep::Parameters;
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
    }

    /// Pinned: a change of the formulas (or of the generator) would change
    /// every stored sweep's meaning.
    #[test]
    fn random_draws_are_pinned() {
        let spec = SweepSpec {
            method: SweepMethod::Random,
            parameters: Parameters(vec![
                (
                    "batch".into(),
                    ParamValues::List(vec![json!(16), json!(32), json!(64)]),
                ),
                (
                    "layers".into(),
                    ParamValues::Range {
                        min: 2.0,
                        max: 6.0,
                        log: false,
                        integer: true,
                    },
                ),
                (
                    "lr".into(),
                    ParamValues::Range {
                        min: 1e-4,
                        max: 0.1,
                        log: true,
                        integer: false,
                    },
                ),
            ]),
            count: Some(2),
            seed: Some(42),
        };
        let names: Vec<String> = spec.expand().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "batch=16,layers=6,lr=0.00191668",
                "batch=32,layers=3,lr=0.000281758"
            ]
        );
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
