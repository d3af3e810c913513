//! The one explicit catalogue of job types this worker can run. Adding a job
//! type: write its module under `jobs/` and add one line here.

use ingest_model::JobTypeSpec;

use crate::jobs;

/// Every job type this build supports, with its parameter spec.
pub fn job_types() -> Vec<JobTypeSpec> {
    vec![jobs::demo::spec()]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_defaults_validate() {
        let types = job_types();
        let names: HashSet<&str> = types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), types.len());
        for spec in &types {
            assert!(spec.min_interval <= spec.default_interval, "{}", spec.name);
            // Every default must pass the type's own validation.
            let defaults = spec.params.iter().filter_map(|p| Some((p.name.clone(), p.default.clone()?))).collect();
            let result = ingest_model::validate_params(spec, &defaults, &[], "params");
            assert!(result.is_ok(), "{}: {:?}", spec.name, result.err());
        }
    }
}
