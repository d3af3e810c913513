//! The catalogue's invariant, checked on generated parameters: whatever
//! control accepts (the spec's validation, rules included), the worker
//! builds; whatever breaks a parameter's own constraint, control refuses,
//! naming that parameter.

use std::collections::BTreeMap;

use ingest_model::{JobTypeSpec, ParamKind, ParamRule, ParamSpec, validate_params};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

use super::{BuildInput, JobTypeEntry, catalogue};

/// Values the spec allows for `param`, boundaries included.
fn valid_value(param: &ParamSpec) -> BoxedStrategy<Value> {
    let max_len = |default: u32| param.max_length.unwrap_or(default) as usize;
    match param.kind {
        ParamKind::Integer => {
            let min = param.minimum.unwrap_or(-1e6) as i64;
            let max = param.maximum.unwrap_or(1e6) as i64;
            prop_oneof![Just(min), Just(max), min..=max].prop_map(Value::from).boxed()
        }
        ParamKind::Number => {
            let min = param.minimum.unwrap_or(-1e6);
            let max = param.maximum.unwrap_or(1e6);
            prop_oneof![Just(min), Just(max), min..=max].prop_map(|n| json!(n)).boxed()
        }
        ParamKind::Boolean => any::<bool>().prop_map(Value::from).boxed(),
        ParamKind::Enum => proptest::sample::select(param.allowed_values.clone()).prop_map(Value::from).boxed(),
        ParamKind::Duration => {
            let min = param.minimum.unwrap_or(1.0).ceil() as u64;
            let max = param.maximum.unwrap_or(86_400.0).floor() as u64;
            prop_oneof![Just(min), Just(max), min..=max].prop_map(|s| Value::from(format!("{s}s"))).boxed()
        }
        ParamKind::Url => prop_oneof![
            Just("https://example.org/".to_string()),
            Just("http://api.example.com:8080/v1/items?limit=5".to_string()),
            "[a-z]{1,12}".prop_map(|h| format!("https://{h}.example/feed.xml")),
        ]
        .prop_map(Value::from)
        .boxed(),
        ParamKind::Secret => "[A-Za-z0-9._~+/=-]{1,40}".prop_map(Value::from).boxed(),
        ParamKind::Json => prop_oneof![
            Just("{}".to_string()),
            Just("[1, 2.5, \"three\"]".to_string()),
            "[a-z]{0,10}".prop_map(|q| format!("{{\"query\": \"{q}\", \"limit\": 10}}")),
        ]
        .prop_map(Value::from)
        .boxed(),
        ParamKind::String => text(param, max_len(200).min(200)).prop_map(Value::from).boxed(),
        ParamKind::List => {
            let item: BoxedStrategy<String> = if param.allowed_values.is_empty() {
                text(param, 100)
            } else {
                proptest::sample::select(param.allowed_values.clone()).boxed()
            };
            let min = param.minimum.unwrap_or(0.0) as usize;
            proptest::collection::vec(item, min..=max_len(5).min(5).max(min)).prop_map(|v| json!(v)).boxed()
        }
    }
}

/// A string the parameter's pattern (if any) accepts, at most `max` chars.
fn text(param: &ParamSpec, max: usize) -> BoxedStrategy<String> {
    match &param.pattern {
        Some(pattern) => proptest::string::string_regex(pattern)
            .expect("a pattern proptest can generate from")
            .prop_filter("within max_length", move |s| s.chars().count() <= max)
            .boxed(),
        None => proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).expect("printable ASCII").boxed(),
    }
}

/// A parameter map: each parameter given (a valid value) or left out; of
/// the sets of a `OneOf` rule, one is given whole (or none, when allowed),
/// so that rules leave enough cases valid.
fn params_of(spec: &JobTypeSpec) -> BoxedStrategy<Map<String, Value>> {
    let one_of: Vec<(Vec<Vec<String>>, bool)> = spec
        .rules
        .iter()
        .filter_map(|rule| match rule {
            ParamRule::OneOf { sets, required } => Some((sets.clone(), *required)),
            _ => None,
        })
        .collect();
    let in_a_set = |name: &str| one_of.iter().any(|(sets, _)| sets.iter().flatten().any(|p| p == name));
    let per_param: Vec<BoxedStrategy<Option<(String, Value)>>> = spec
        .params
        .iter()
        .map(|param| {
            let name = param.name.clone();
            let value = valid_value(param).prop_map(move |v| Some((name.clone(), v)));
            if param.required || in_a_set(&param.name) {
                value.boxed()
            } else {
                prop_oneof![1 => Just(None), 2 => value].boxed()
            }
        })
        .collect();
    let choices: Vec<BoxedStrategy<usize>> =
        one_of.iter().map(|(sets, required)| (0..sets.len() + usize::from(!*required)).boxed()).collect();
    (per_param, choices)
        .prop_map(move |(entries, chosen)| {
            let mut params: Map<String, Value> = entries.into_iter().flatten().collect();
            for ((sets, _), chosen) in one_of.iter().zip(chosen) {
                for (i, set) in sets.iter().enumerate() {
                    if i != chosen {
                        for name in set {
                            params.remove(name);
                        }
                    }
                }
            }
            params
        })
        .boxed()
}

fn build(entry: &JobTypeEntry, spec: &JobTypeSpec, params: &Map<String, Value>) -> Result<(), String> {
    let split = validate_params(spec, params, &[], "params").map_err(|v| format!("refused: {v:?}"))?;
    let secrets: BTreeMap<String, String> = split.secrets;
    (entry.build)(&BuildInput { job_id: "job-1", spec, params: &split.params, secrets: &secrets })
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn whatever_control_accepts_the_worker_builds() {
    for entry in catalogue() {
        let spec = entry.full_spec();
        let mut runner = TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
        let accepted = std::cell::Cell::new(0u32);
        let result = runner.run(&params_of(&spec), |params| {
            if validate_params(&spec, &params, &[], "params").is_err() {
                return Ok(()); // a rule across parameters refused it: control would too
            }
            accepted.set(accepted.get() + 1);
            match build(&entry, &spec, &params) {
                Ok(()) => Ok(()),
                Err(error) => Err(TestCaseError::fail(format!("accepted but not built: {error}"))),
            }
        });
        if let Err(failure) = result {
            panic!("{}: {failure}", spec.name);
        }
        let accepted = accepted.get();
        assert!(accepted > 20, "{}: only {accepted} generated parameter sets were valid", spec.name);
    }
}

/// A value breaking the parameter's own constraint, if the spec has one to break.
fn invalid_values(param: &ParamSpec) -> Vec<Value> {
    let mut bad = vec![json!({"not": "a scalar"})];
    match param.kind {
        ParamKind::Integer | ParamKind::Number => {
            bad.push(json!("12"));
            bad.extend(param.minimum.map(|m| json!(m - 1.0)));
            bad.extend(param.maximum.map(|m| json!(m + 1.0)));
        }
        ParamKind::Boolean => bad.push(json!("yes")),
        ParamKind::Enum => bad.push(json!("not-one-of-them")),
        ParamKind::Duration => {
            bad.push(json!("soon"));
            bad.extend(param.minimum.filter(|m| *m >= 1.0).map(|m| json!(format!("{}ms", (m * 1000.0) as u64 - 1))));
            bad.extend(param.maximum.map(|m| json!(format!("{}s", m as u64 + 1))));
        }
        ParamKind::Url => {
            bad.push(json!("not a url"));
            bad.push(json!("ftp://example.org/"));
        }
        ParamKind::Json => {
            bad.push(json!("{oops"));
            bad.push(json!(""));
        }
        ParamKind::String | ParamKind::Secret => {
            bad.push(json!(7));
            let max = param.max_length.unwrap_or(ingest_model::params::DEFAULT_MAX_STRING) as usize;
            bad.push(json!("x".repeat(max + 1)));
        }
        ParamKind::List => {
            bad.push(json!("a string"));
            let max = param.max_length.unwrap_or(ingest_model::params::DEFAULT_MAX_LIST) as usize;
            bad.push(json!(vec!["x"; max + 1]));
            if param.minimum.is_some_and(|m| m >= 1.0) {
                bad.push(json!([]));
            }
            if param.pattern.is_some() || !param.allowed_values.is_empty() {
                bad.push(json!(["\u{7}\u{0}"]));
            }
        }
    }
    if param.pattern.is_some() && matches!(param.kind, ParamKind::String) {
        bad.push(json!("\u{7}\u{0} no pattern takes this"));
    }
    bad
}

#[test]
fn a_value_breaking_its_own_constraint_is_refused_by_name() {
    for entry in catalogue() {
        let spec = entry.full_spec();
        // A valid base: every parameter at its default, required ones from
        // the generator's first valid value.
        let mut runner = TestRunner::deterministic();
        let base = loop {
            let tree = params_of(&spec).new_tree(&mut runner).expect("a value");
            let params = tree.current();
            if validate_params(&spec, &params, &[], "params").is_ok() {
                break params;
            }
        };
        for param in &spec.params {
            for bad in invalid_values(param) {
                let mut params = base.clone();
                params.insert(param.name.clone(), bad.clone());
                let violations = validate_params(&spec, &params, &[], "params").err().unwrap_or_default();
                let field = format!("params.{}", param.name);
                assert!(
                    violations.iter().any(|v| v.field == field),
                    "{}: {} = {bad} was not refused by name: {violations:?}",
                    spec.name,
                    param.name
                );
            }
        }
    }
}
