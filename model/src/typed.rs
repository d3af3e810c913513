//! Typed job parameters: a job type declares its parameters once, as a
//! struct deriving [`JobParams`] (and `Deserialize`): each field one
//! parameter, its `///` comment the help text, its type the kind, and
//! `#[param(...)]` the default, bounds, pattern and allowed values (see
//! `ingest-model-derive`). The specs published to control, the form in the
//! UI, and the worker's parsing all come from that one struct, so control
//! validates exactly what the worker will parse: [`parse_params`] checks the
//! values with [`validate_params`] (control's check) and only then
//! deserializes them, defaults applied.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub use ingest_model_derive::{JobParams, ParamEnum};
#[doc(hidden)]
pub use serde_json::json;

use crate::{FieldViolation, JobTypeSpec, ParamKind, ParamRule, ParamSpec, validate_params};

/// A job type's parameters as one typed value.
pub trait JobParams: DeserializeOwned {
    /// One spec per field, in the order of the fields.
    fn param_specs() -> Vec<ParamSpec>;
    /// Rules across parameters (`#[params(rule = ...)]`).
    fn rules() -> Vec<ParamRule>;
}

/// The parameter kind a field's type stands for.
pub trait ParamType {
    const KIND: ParamKind;
    /// Enum: its values; a list of an enum: the allowed items.
    fn allowed() -> Vec<String> {
        Vec::new()
    }
}

macro_rules! kinds {
    ($($kind:ident: $($ty:ty),+;)+) => {
        $($(impl ParamType for $ty {
            const KIND: ParamKind = ParamKind::$kind;
        })+)+
    };
}

kinds! {
    Integer: i64, u64, u32, u16, usize;
    Number: f64;
    Boolean: bool;
    String: String;
    Url: url::Url;
}

impl<T: ParamType> ParamType for Vec<T> {
    const KIND: ParamKind = ParamKind::List;
    fn allowed() -> Vec<String> {
        T::allowed()
    }
}

/// A secret: a job's secret parameter (stored apart, never returned by the
/// API) or one given to a process; never printed (not even its length).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl ParamType for Secret {
    const KIND: ParamKind = ParamKind::Secret;
}

/// A parameter holding a JSON document as text (e.g. a request body),
/// checked to parse; kept as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(pub String);

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| serde::de::Error::custom(format!("must be a JSON document: {e}")))?;
        Ok(Self(text))
    }
}

impl ParamType for JsonText {
    const KIND: ParamKind = ParamKind::Json;
}

/// A `ParamEnum` variant's name as serde writes it (as the spec lists it).
pub fn variant_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// A job type's spec from its parameter struct (before the parameters every
/// type shares are added).
pub fn spec_of<P: JobParams>(
    name: &str,
    description: &str,
    default_interval: std::time::Duration,
    min_interval: std::time::Duration,
) -> JobTypeSpec {
    JobTypeSpec {
        name: name.to_string(),
        description: description.to_string(),
        params: P::param_specs(),
        default_interval,
        min_interval,
        rules: P::rules(),
    }
}

/// A job's stored parameters and secrets as its type's struct: validated
/// against `spec` exactly as control validates them, then deserialized with
/// the defaults applied. An empty string is no value for a parameter that
/// may be absent (as in the rules).
pub fn parse_params<P: JobParams>(
    spec: &JobTypeSpec,
    params: &Map<String, Value>,
    secrets: &BTreeMap<String, String>,
) -> Result<P, Vec<FieldViolation>> {
    let mut input = params.clone();
    for (name, value) in secrets {
        input.insert(name.clone(), Value::String(value.clone()));
    }
    let split = validate_params(spec, &input, &[], "params")?;
    let mut values = Map::new();
    for param in P::param_specs() {
        let given = split
            .params
            .get(&param.name)
            .cloned()
            .or_else(|| split.secrets.get(&param.name).cloned().map(Value::String))
            .filter(|v| !v.is_null())
            // An empty string is no value where "no value" is possible (as in the rules).
            .filter(|v| param.required || param.default.is_some() || v.as_str() != Some(""));
        if let Some(value) = given.or_else(|| spec.param(&param.name).and_then(|p| p.default.clone())) {
            values.insert(param.name, value);
        }
    }
    serde_json::from_value(Value::Object(values))
        .map_err(|e| vec![FieldViolation::new("params", format!("does not read as this job type's parameters: {e}"))])
}

#[cfg(test)]
mod tests;
