//! The one explicit catalogue of job types this worker can run. Adding a job
//! type: write its module under `jobs/` and add one line here.

use std::collections::BTreeMap;
use std::sync::Arc;

use ingest_model::{FieldViolation, JobTypeSpec, ParamKind, ParamSpec, parse_params, spec_of};
use serde_json::{Map, Value};

use crate::jobs::{CursorFormat, Job, JobType, demo, hackernews, http_json, reddit, rss, stocks, twitter, weather};

/// Every job type this build supports.
pub fn catalogue() -> Vec<JobTypeEntry> {
    vec![
        entry::<demo::Demo>(),
        entry::<rss::Rss>(),
        entry::<hackernews::HackerNews>(),
        entry::<reddit::Reddit>(),
        entry::<weather::Weather>(),
        entry::<stocks::Stocks>(),
        entry::<http_json::HttpJson>(),
        entry::<twitter::Twitter>(),
    ]
}

/// The host a job of `job_type` is placed and paced by: that of its URL
/// parameter when its type is paced (`JobType::PACED_BY`), from the whole
/// catalogue (every worker places every job alike, whatever it runs).
pub fn paced_host(job_type: &str, params: &Map<String, Value>) -> Option<String> {
    static PACED_BY: std::sync::OnceLock<BTreeMap<String, &'static str>> = std::sync::OnceLock::new();
    let paced_by =
        PACED_BY.get_or_init(|| catalogue().into_iter().filter_map(|e| Some(((e.spec)().name, e.paced_by?))).collect());
    let param = paced_by.get(job_type)?;
    crate::fetch::pace::host_of(params.get(*param)?.as_str()?)
}

/// The catalogue's entries named in `only` (all when it is empty); a name
/// that is no job type is an error listing the ones there are.
pub fn runs(only: &[String]) -> Result<Vec<JobTypeEntry>, String> {
    let all = catalogue();
    if only.is_empty() {
        return Ok(all);
    }
    let names: Vec<String> = all.iter().map(|e| (e.spec)().name).collect();
    if let Some(unknown) = only.iter().find(|t| !names.contains(t)) {
        return Err(format!("--job-types: no job type '{unknown}'; there are: {}", names.join(", ")));
    }
    Ok(all.into_iter().filter(|e| only.contains(&(e.spec)().name)).collect())
}

/// A job type as the worker holds it: its spec, the mapping of its
/// documents, and how to build a job of it from stored parameters.
pub struct JobTypeEntry {
    pub spec: fn() -> JobTypeSpec,
    /// Index mapping properties of its documents (the common fields are added).
    pub properties: fn() -> Value,
    /// The index mapping built from `properties`, once per type: every job
    /// of the type shares it (built per job, it cost ~5.7 KB a job).
    pub mapping: Arc<Value>,
    /// The URL parameter its jobs are placed and paced by (`JobType::PACED_BY`).
    pub paced_by: Option<&'static str>,
    pub build: fn(&BuildInput<'_>) -> Result<Box<dyn Job>, BuildError>,
    /// Its cursor's format version and migrations.
    pub cursor: CursorFormat,
}

/// The catalogue entry of job type `T`.
pub fn entry<T: JobType>() -> JobTypeEntry {
    JobTypeEntry {
        spec: || spec_of::<T::Params>(T::NAME, T::DESCRIPTION, T::DEFAULT_INTERVAL, T::MIN_INTERVAL),
        properties: T::properties,
        mapping: Arc::new(ingest_sinks::delivery::index_mapping(&T::properties())),
        paced_by: T::PACED_BY,
        build: |input| {
            let params =
                parse_params::<T::Params>(input.spec, input.params, input.secrets).map_err(BuildError::Params)?;
            let job = T::build(input.job_id, params).map_err(BuildError::Refused)?;
            Ok(Box::new(job))
        },
        cursor: CursorFormat { version: T::CURSOR_VERSION, migrate: T::migrate_cursor },
    }
}

/// What a job is built from: its id, its type's full spec, its stored
/// parameters and its secrets.
pub struct BuildInput<'a> {
    pub job_id: &'a str,
    pub spec: &'a JobTypeSpec,
    pub params: &'a Map<String, Value>,
    pub secrets: &'a BTreeMap<String, String>,
}

/// Why a job could not be built; shown on the job, counted as a failed run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The stored parameters do not pass the type's spec (e.g. a job
    /// written by an older version, or by hand into the store).
    #[error("parameters refused: {}", join(.0))]
    Params(Vec<FieldViolation>),
    /// The type refused parameters the spec accepted.
    #[error("{0}")]
    Refused(String),
}

fn join(violations: &[FieldViolation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The parameter specs of every job type, with the parameters all share.
pub fn job_types() -> Vec<JobTypeSpec> {
    catalogue().iter().map(JobTypeEntry::full_spec).collect()
}

/// Parameter every job type takes: the index its documents go to.
pub const INDEX_PARAM: &str = "index";

impl JobTypeEntry {
    /// The type's spec with the shared parameters added.
    pub fn full_spec(&self) -> JobTypeSpec {
        let mut spec = (self.spec)();
        spec.params.push(
            ParamSpec::new(
                INDEX_PARAM,
                ParamKind::String,
                "Index for this job's documents (default: ingest-<type>). Lowercase letters, digits, '.', '_' and '-'.",
            )
            .max_length(200)
            .pattern("[a-z0-9][a-z0-9._-]*"),
        );
        spec
    }
}

/// The default index of a job type.
pub fn default_index(job_type: &str) -> String {
    format!("ingest-{job_type}")
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    #[test]
    fn a_worker_runs_the_types_it_is_given_and_refuses_unknown_ones() {
        assert_eq!(runs(&[]).expect("all").len(), catalogue().len());
        let only: Vec<String> =
            runs(&["rss".into(), "demo".into()]).expect("two").iter().map(|e| (e.spec)().name).collect();
        assert_eq!(only, ["demo", "rss"]);
        let error = runs(&["rss".into(), "gopher".into()]).err().unwrap_or_default();
        assert!(error.contains("'gopher'") && error.contains("http_json"), "{error}");
    }

    #[test]
    fn names_are_unique_and_defaults_validate_and_build() {
        let types = job_types();
        let names: HashSet<&str> = types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), types.len());
        for (spec, entry) in types.iter().zip(catalogue()) {
            assert!((entry.properties)().is_object(), "{}: mapping properties", spec.name);
            assert!(spec.param(INDEX_PARAM).is_some());
            for rule in &spec.rules {
                for name in rule.params() {
                    assert!(spec.param(name).is_some(), "{}: a rule names '{name}', which is no parameter", spec.name);
                }
            }
            assert!(spec.min_interval <= spec.default_interval, "{}", spec.name);
            let defaults = spec.params.iter().filter_map(|p| Some((p.name.clone(), p.default.clone()?))).collect();
            let result = ingest_model::validate_params(spec, &defaults, &[], "params");
            // The defaults are valid: the only complaints are required parameters, which have none,
            // and those a rule across parameters asks for (e.g. credentials).
            let required: HashSet<String> =
                spec.params.iter().filter(|p| p.required).map(|p| format!("params.{}", p.name)).collect();
            let ruled: HashSet<String> =
                spec.rules.iter().flat_map(|r| r.params()).map(|p| format!("params.{p}")).collect();
            let complaints: HashSet<String> = result.err().unwrap_or_default().into_iter().map(|v| v.field).collect();
            assert!(required.is_subset(&complaints), "{}: {complaints:?}", spec.name);
            assert!(complaints.is_subset(&(&required | &ruled)), "{}: {complaints:?}", spec.name);
            let no_secrets = BTreeMap::new();
            if required.is_empty() {
                // Builds from its defaults, or says which parameter it needs
                // (rules across parameters, e.g. credentials).
                let input = BuildInput { job_id: "job-1", spec, params: &defaults, secrets: &no_secrets };
                match (entry.build)(&input) {
                    Ok(_) => {}
                    Err(error) => {
                        let error = error.to_string();
                        let named = spec.params.iter().any(|p| error.contains(p.name.as_str()));
                        assert!(named, "{}: '{error}' names no parameter", spec.name);
                    }
                }
            }
        }
    }
}
