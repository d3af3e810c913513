//! The one explicit catalogue of job types this worker can run. Adding a job
//! type: write its module under `jobs/` and add one line here.

use ingest_model::{JobTypeSpec, ParamKind, ParamSpec};
use serde_json::Value;

use crate::jobs::{self, Job, Params};

/// A job type: its parameter spec, the mapping of its documents, and how to
/// build a fresh instance of it.
pub struct JobTypeEntry {
    pub spec: fn() -> JobTypeSpec,
    /// Index mapping properties of its documents (the common fields are added).
    pub properties: fn() -> Value,
    pub build: fn(&Params<'_>) -> Result<Box<dyn Job>, String>,
}

/// Every job type this build supports.
pub fn catalogue() -> Vec<JobTypeEntry> {
    vec![
        JobTypeEntry { spec: jobs::demo::spec, properties: jobs::demo::properties, build: jobs::demo::build },
        JobTypeEntry { spec: jobs::rss::spec, properties: jobs::rss::properties, build: jobs::rss::build },
        JobTypeEntry {
            spec: jobs::hackernews::spec,
            properties: jobs::hackernews::properties,
            build: jobs::hackernews::build,
        },
        JobTypeEntry { spec: jobs::reddit::spec, properties: jobs::reddit::properties, build: jobs::reddit::build },
        JobTypeEntry { spec: jobs::weather::spec, properties: jobs::weather::properties, build: jobs::weather::build },
        JobTypeEntry { spec: jobs::stocks::spec, properties: jobs::stocks::properties, build: jobs::stocks::build },
        JobTypeEntry {
            spec: jobs::http_json::spec,
            properties: jobs::http_json::properties,
            build: jobs::http_json::build,
        },
        JobTypeEntry { spec: jobs::twitter::spec, properties: jobs::twitter::properties, build: jobs::twitter::build },
    ]
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
                match (entry.build)(&Params::new("job-1", spec, &defaults, &no_secrets)) {
                    Ok(_) => {}
                    Err(error) => {
                        let named = spec.params.iter().any(|p| error.contains(p.name.as_str()));
                        assert!(named, "{}: '{error}' names no parameter", spec.name);
                    }
                }
            }
        }
    }
}
