//! The one explicit catalogue of job types this worker can run. Adding a job
//! type: write its module under `jobs/` and add one line here.

use ingest_model::JobTypeSpec;

use crate::jobs::{self, Job, Params};

/// A job type: its parameter spec and how to build a fresh instance of it.
pub struct JobTypeEntry {
    pub spec: fn() -> JobTypeSpec,
    pub build: fn(&Params<'_>) -> Result<Box<dyn Job>, String>,
}

/// Every job type this build supports.
pub fn catalogue() -> Vec<JobTypeEntry> {
    vec![JobTypeEntry { spec: jobs::demo::spec, build: jobs::demo::build }]
}

/// The parameter specs of every job type.
pub fn job_types() -> Vec<JobTypeSpec> {
    catalogue().iter().map(|e| (e.spec)()).collect()
}

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
            assert!(spec.min_interval <= spec.default_interval, "{}", spec.name);
            let defaults = spec.params.iter().filter_map(|p| Some((p.name.clone(), p.default.clone()?))).collect();
            let result = ingest_model::validate_params(spec, &defaults, &[], "params");
            assert!(result.is_ok(), "{}: {:?}", spec.name, result.err());
            let no_secrets = BTreeMap::new();
            if spec.params.iter().all(|p| !p.required) {
                let built = (entry.build)(&Params::new(spec, &defaults, &no_secrets));
                assert!(built.is_ok(), "{} builds from its defaults", spec.name);
            }
        }
    }
}
