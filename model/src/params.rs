//! Job types and their parameter specs, and the validation of a job's
//! parameters against them. Control validates every write with this code;
//! the UI form and `ListJobTypes` are generated from the same specs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::FieldViolation;

/// How a parameter's value is written (in JSON) and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    String,
    Integer,
    Number,
    Boolean,
    Enum,
    Url,
    Duration,
    List,
    Secret,
    /// A string holding a JSON document (e.g. a request body).
    Json,
}

impl ParamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Enum => "enum",
            Self::Url => "url",
            Self::Duration => "duration",
            Self::List => "list",
            Self::Secret => "secret",
            Self::Json => "json",
        }
    }
}

/// Longest string, URL or secret accepted when the spec sets no `max_length`.
pub const DEFAULT_MAX_STRING: u32 = 4096;
/// Most list items accepted when the spec sets no `max_length`.
pub const DEFAULT_MAX_LIST: u32 = 1000;
/// Longest URL accepted.
pub const MAX_URL: u32 = 2048;

/// One parameter of a job type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamKind,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: String,
    /// Enum: the allowed values; list: the allowed items when restricted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<String>,
    /// Integer and number: smallest value; duration: in seconds; list:
    /// fewest items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Integer and number: largest value; duration: in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// String, URL and secret: most characters; list: most items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// String: a regular expression the whole value must match (a subset
    /// JavaScript shares, so forms can check it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

impl ParamSpec {
    pub fn new(name: &str, kind: ParamKind, description: &str) -> Self {
        Self {
            name: name.to_string(),
            kind,
            required: false,
            default: None,
            description: description.to_string(),
            allowed_values: Vec::new(),
            minimum: None,
            maximum: None,
            max_length: None,
            pattern: None,
        }
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn default_value(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    pub fn allowed(mut self, values: &[&str]) -> Self {
        self.allowed_values = values.iter().map(|v| v.to_string()).collect();
        self
    }

    pub fn bounds(mut self, minimum: Option<f64>, maximum: Option<f64>) -> Self {
        self.minimum = minimum;
        self.maximum = maximum;
        self
    }

    pub fn max_length(mut self, max_length: u32) -> Self {
        self.max_length = Some(max_length);
        self
    }

    /// The whole value (each item of a list) must match `pattern`
    /// (anchored for you).
    pub fn pattern(mut self, pattern: &str) -> Self {
        self.pattern = Some(pattern.to_string());
        self
    }

    pub fn is_secret(&self) -> bool {
        self.kind == ParamKind::Secret
    }
}

/// A kind of job as published by the workers that run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobTypeSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub params: Vec<ParamSpec>,
    #[serde(with = "crate::duration_ms")]
    pub default_interval: Duration,
    #[serde(with = "crate::duration_ms")]
    pub min_interval: Duration,
    /// Rules over several parameters, checked with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ParamRule>,
}

/// A rule over several parameters of a job type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRule {
    /// `param` is required when the parameter `when` (given or defaulted)
    /// equals `equals`.
    RequiredIf { param: String, when: String, equals: String },
    /// At most one of these sets of parameters is given, each set whole
    /// (e.g. a bearer token, or the four OAuth 1.0a secrets); when
    /// `required`, exactly one.
    OneOf { sets: Vec<Vec<String>>, required: bool },
    /// At least one of these parameters holds something (given or
    /// defaulted; an empty list or string is nothing), e.g. current or
    /// hourly weather variables.
    AnyOf { params: Vec<String> },
}

impl ParamRule {
    pub fn required_if(param: &str, when: &str, equals: &str) -> Self {
        Self::RequiredIf { param: param.into(), when: when.into(), equals: equals.into() }
    }

    pub fn one_of(sets: &[&[&str]], required: bool) -> Self {
        Self::OneOf { sets: sets.iter().map(|s| s.iter().map(|p| p.to_string()).collect()).collect(), required }
    }

    pub fn any_of(params: &[&str]) -> Self {
        Self::AnyOf { params: params.iter().map(|p| p.to_string()).collect() }
    }

    /// The parameters the rule names.
    pub fn params(&self) -> Vec<&str> {
        match self {
            Self::RequiredIf { param, when, .. } => vec![param, when],
            Self::OneOf { sets, .. } => sets.iter().flatten().map(String::as_str).collect(),
            Self::AnyOf { params } => params.iter().map(String::as_str).collect(),
        }
    }
}

impl JobTypeSpec {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().filter(|p| p.is_secret()).map(|p| p.name.as_str())
    }
}

/// A job's parameters split by where they are stored.
#[derive(Clone, Default, PartialEq)]
pub struct SplitParams {
    /// Everything but secrets, normalised (integers as JSON integers).
    pub params: Map<String, Value>,
    /// Secret parameters, stored apart and never returned.
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for SplitParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitParams")
            .field("params", &self.params)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Checks `input` against `spec` and splits secrets out.
///
/// `kept_secrets` names the secret parameters that already hold a value (on
/// update): a required secret absent from `input` is satisfied by them.
/// Violations name fields as `<field_prefix>.<param>`.
/// A URL parameter whose origin (scheme, host, port) a change moves: the
/// job's secrets would go somewhere else than where they were entered for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedOrigin {
    pub param: String,
    pub from: String,
    pub to: String,
}

/// The URL parameters of `spec` whose origin differs between `before` and
/// `after` (defaults applied; an absent URL is the origin "none").
pub fn moved_origins(spec: &JobTypeSpec, before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<MovedOrigin> {
    let origin = |params: &Map<String, Value>, param: &ParamSpec| -> String {
        let value = params.get(&param.name).or(param.default.as_ref()).and_then(Value::as_str);
        match value.map(url::Url::parse) {
            Some(Ok(url)) => url.origin().ascii_serialization(),
            Some(Err(_)) => "an unreadable URL".to_string(),
            None => "none".to_string(),
        }
    };
    spec.params
        .iter()
        .filter(|p| p.kind == ParamKind::Url)
        .filter_map(|param| {
            let (from, to) = (origin(before, param), origin(after, param));
            (from != to).then(|| MovedOrigin { param: param.name.clone(), from, to })
        })
        .collect()
}

pub fn validate_params(
    spec: &JobTypeSpec,
    input: &Map<String, Value>,
    kept_secrets: &[String],
    field_prefix: &str,
) -> Result<SplitParams, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut split = SplitParams::default();
    for (name, value) in input {
        let field = format!("{field_prefix}.{name}");
        let Some(param) = spec.param(name) else {
            let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
            violations.push(FieldViolation::new(
                field,
                format!("unknown parameter for job type '{}'; it takes: {}", spec.name, known.join(", ")),
            ));
            continue;
        };
        if value.is_null() {
            continue;
        }
        match check_value(param, value) {
            Ok(Checked::Plain(v)) => {
                split.params.insert(name.clone(), v);
            }
            Ok(Checked::Secret(s)) => {
                split.secrets.insert(name.clone(), s);
            }
            Err(description) => violations.push(FieldViolation::new(field, description)),
        }
    }
    for param in spec.params.iter().filter(|p| p.required) {
        let given = input.get(&param.name).is_some_and(|v| !v.is_null());
        let kept = param.is_secret() && kept_secrets.iter().any(|s| s == &param.name);
        if !given && !kept {
            violations.push(FieldViolation::new(
                format!("{field_prefix}.{}", param.name),
                format!("required {} parameter is missing", param.kind.as_str()),
            ));
        }
    }
    if violations.is_empty() {
        check_rules(spec, input, kept_secrets, field_prefix, &mut violations);
    }
    if violations.is_empty() { Ok(split) } else { Err(violations) }
}

/// The rules across parameters, once each parameter is valid on its own.
fn check_rules(
    spec: &JobTypeSpec,
    input: &Map<String, Value>,
    kept_secrets: &[String],
    prefix: &str,
    violations: &mut Vec<FieldViolation>,
) {
    // An empty string is no value (as the job types read their parameters).
    let given = |name: &str| {
        input.get(name).is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
            || kept_secrets.iter().any(|s| s == name)
    };
    let value = |name: &str| {
        input.get(name).filter(|v| !v.is_null()).or_else(|| spec.param(name).and_then(|p| p.default.as_ref()))
    };
    for rule in &spec.rules {
        match rule {
            ParamRule::RequiredIf { param, when, equals } => {
                if value(when).and_then(Value::as_str) == Some(equals.as_str()) && !given(param) {
                    violations.push(FieldViolation::new(
                        format!("{prefix}.{param}"),
                        format!("required when {when} is {equals}"),
                    ));
                }
            }
            ParamRule::OneOf { sets, required } => {
                let chosen: Vec<&Vec<String>> = sets.iter().filter(|set| set.iter().any(|p| given(p))).collect();
                let describe = |set: &Vec<String>| set.join(", ");
                let alternatives = sets.iter().map(describe).collect::<Vec<_>>().join("; or ");
                match chosen.as_slice() {
                    [] if *required => violations.push(FieldViolation::new(
                        format!("{prefix}.{}", sets.first().and_then(|s| s.first()).map_or("", String::as_str)),
                        format!("required: give {alternatives}"),
                    )),
                    [] => {}
                    [set] => {
                        let missing: Vec<&str> = set.iter().filter(|p| !given(p)).map(String::as_str).collect();
                        if let Some(first) = missing.first() {
                            violations.push(FieldViolation::new(
                                format!("{prefix}.{first}"),
                                format!("{} go together; missing: {}", describe(set), missing.join(", ")),
                            ));
                        }
                    }
                    [_, second, ..] => violations.push(FieldViolation::new(
                        format!("{prefix}.{}", second.iter().find(|p| given(p)).map_or("", String::as_str)),
                        format!("give only one of: {alternatives}"),
                    )),
                }
            }
            ParamRule::AnyOf { params } => {
                let holds = |name: &str| {
                    kept_secrets.iter().any(|s| s == name)
                        || value(name).is_some_and(|v| match v {
                            Value::Array(items) => !items.is_empty(),
                            Value::String(s) => !s.is_empty(),
                            other => !other.is_null(),
                        })
                };
                if !params.iter().any(|p| holds(p)) {
                    violations.push(FieldViolation::new(
                        format!("{prefix}.{}", params.first().map_or("", String::as_str)),
                        format!("give at least one of: {}", params.join(", ")),
                    ));
                }
            }
        }
    }
}

enum Checked {
    Plain(Value),
    Secret(String),
}

fn check_value(param: &ParamSpec, value: &Value) -> Result<Checked, String> {
    let kind = param.kind;
    match kind {
        ParamKind::String => check_string(param, value, DEFAULT_MAX_STRING).map(Checked::Plain),
        ParamKind::Json => {
            let text = check_string(param, value, DEFAULT_MAX_STRING)?;
            serde_json::from_str::<Value>(text.as_str().unwrap_or_default())
                .map_err(|e| format!("must be a JSON document: {e}"))?;
            Ok(Checked::Plain(text))
        }
        ParamKind::Secret => {
            let s = expect_str(value, kind)?;
            if s.is_empty() {
                return Err("must not be empty".to_string());
            }
            check_length(s, param.max_length.unwrap_or(DEFAULT_MAX_STRING))?;
            Ok(Checked::Secret(s.to_string()))
        }
        ParamKind::Url => {
            let s = expect_str(value, kind)?;
            check_length(s, param.max_length.unwrap_or(MAX_URL).min(MAX_URL))?;
            let url = url::Url::parse(s).map_err(|e| format!("not a valid absolute URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("URL scheme must be http or https, not '{}'", url.scheme()));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err("URL must name a host".to_string());
            }
            Ok(Checked::Plain(Value::String(s.to_string())))
        }
        ParamKind::Integer => {
            let n = value.as_f64().ok_or_else(|| wrong_type(kind, value))?;
            // gRPC Struct carries every number as a double, so 5.0 is 5.
            if n.fract() != 0.0 || n.abs() > 9_007_199_254_740_991.0 {
                return Err(format!("must be a whole number, got {n}"));
            }
            check_bounds(param, n)?;
            Ok(Checked::Plain(Value::from(n as i64)))
        }
        ParamKind::Number => {
            let n = value.as_f64().filter(|n| n.is_finite()).ok_or_else(|| wrong_type(kind, value))?;
            check_bounds(param, n)?;
            Ok(Checked::Plain(value.clone()))
        }
        ParamKind::Boolean => {
            value.as_bool().map(|b| Checked::Plain(Value::Bool(b))).ok_or_else(|| wrong_type(kind, value))
        }
        ParamKind::Enum => {
            let s = expect_str(value, kind)?;
            if !param.allowed_values.iter().any(|a| a == s) {
                return Err(format!("must be one of: {}", param.allowed_values.join(", ")));
            }
            Ok(Checked::Plain(Value::String(s.to_string())))
        }
        ParamKind::Duration => {
            let s = expect_str(value, kind)?;
            let d = parse_duration(s)?;
            check_bounds(param, d.as_secs_f64()).map_err(|e| format!("{e} seconds"))?;
            Ok(Checked::Plain(Value::String(s.to_string())))
        }
        ParamKind::List => {
            let items = value.as_array().ok_or_else(|| wrong_type(kind, value))?;
            let max = param.max_length.unwrap_or(DEFAULT_MAX_LIST);
            if items.len() > max as usize {
                return Err(format!("at most {max} items allowed, got {}", items.len()));
            }
            if let Some(min) = param.minimum.filter(|min| items.len() < *min as usize) {
                return Err(format!("at least {min} item(s) needed, got {}", items.len()));
            }
            for (i, item) in items.iter().enumerate() {
                let s = item.as_str().ok_or_else(|| format!("item {i} must be a string"))?;
                check_length(s, DEFAULT_MAX_STRING).map_err(|e| format!("item {i}: {e}"))?;
                if !param.allowed_values.is_empty() && !param.allowed_values.iter().any(|a| a == s) {
                    return Err(format!("item {i} must be one of: {}", param.allowed_values.join(", ")));
                }
                if let Some(pattern) = &param.pattern {
                    check_pattern(s, pattern).map_err(|e| format!("item {i} ({s:?}) {e}"))?;
                }
            }
            Ok(Checked::Plain(value.clone()))
        }
    }
}

fn check_string(param: &ParamSpec, value: &Value, default_max: u32) -> Result<Value, String> {
    let s = expect_str(value, param.kind)?;
    check_length(s, param.max_length.unwrap_or(default_max))?;
    if let Some(pattern) = &param.pattern {
        check_pattern(s, pattern)?;
    }
    Ok(Value::String(s.to_string()))
}

/// `s` must match `pattern` whole.
fn check_pattern(s: &str, pattern: &str) -> Result<(), String> {
    let re = regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|_| format!("cannot be checked: the job type's pattern {pattern:?} is invalid"))?;
    if re.is_match(s) { Ok(()) } else { Err(format!("must match the pattern {pattern}")) }
}

fn expect_str(value: &Value, kind: ParamKind) -> Result<&str, String> {
    value.as_str().ok_or_else(|| wrong_type(kind, value))
}

fn check_length(s: &str, max: u32) -> Result<(), String> {
    let chars = s.chars().count();
    if chars > max as usize {
        return Err(format!("at most {max} characters allowed, got {chars}"));
    }
    Ok(())
}

fn check_bounds(param: &ParamSpec, n: f64) -> Result<(), String> {
    if let Some(min) = param.minimum
        && n < min
    {
        return Err(format!("must be at least {min}, got {n}"));
    }
    if let Some(max) = param.maximum
        && n > max
    {
        return Err(format!("must be at most {max}, got {n}"));
    }
    Ok(())
}

fn wrong_type(kind: ParamKind, value: &Value) -> String {
    let expected = match kind {
        ParamKind::Integer => "a whole number",
        ParamKind::Number => "a number",
        ParamKind::Boolean => "true or false",
        ParamKind::List => "a list of strings",
        ParamKind::Duration => "a duration such as \"90s\" or \"15m\"",
        _ => "a string",
    };
    let got = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("must be {expected}, got {got}")
}

/// Parses a duration such as "90s", "15m" or "1h 30m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("not a duration ({e}); write e.g. \"90s\", \"15m\" or \"1h 30m\""))
}

#[cfg(test)]
mod tests;
