//! The spec of a job this worker runs, as the view, the scheduler and the
//! job share it: the record, with its params kept as their JSON text. A
//! decoded map costs a 632-byte node even for one parameter, and a worker
//! holds the spec of every job it runs while they sit idle; the params are
//! decoded only to build the job.

use std::ops::Deref;

use ingest_model::JobRecord;
use serde_json::{Map, Value};

/// A job spec held by the worker that runs it. It derefs to the record,
/// whose `params` is always empty here: read them with [`RunSpec::params`].
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    record: JobRecord,
    params: Params,
}

#[derive(Clone, Debug, PartialEq)]
enum Params {
    Text(Box<str>),
    /// Params whose text would not read back as they are (a float off by
    /// its last digit): kept decoded.
    Map(Box<Map<String, Value>>),
}

impl RunSpec {
    /// A stored record (`None` when it does not decode).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<JobRecord>(bytes).ok().map(Self::from)
    }

    /// The job's parameters.
    pub fn params(&self) -> Map<String, Value> {
        match &self.params {
            // Checked to read back when it was written.
            Params::Text(text) => serde_json::from_str(text).unwrap_or_default(),
            Params::Map(map) => (**map).clone(),
        }
    }
}

impl From<JobRecord> for RunSpec {
    fn from(mut record: JobRecord) -> Self {
        let map = std::mem::take(&mut record.params);
        let text = serde_json::to_string(&map).unwrap_or_default();
        let params = match serde_json::from_str::<Map<String, Value>>(&text) {
            Ok(read) if read == map => Params::Text(text.into_boxed_str()),
            _ => Params::Map(Box::new(map)),
        };
        Self { record, params }
    }
}

impl Deref for RunSpec {
    type Target = JobRecord;

    fn deref(&self) -> &JobRecord {
        &self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_kept_as_text_and_read_back_whole() {
        let mut record = ingest_testkit::job_record("job-1", "rss");
        record.params.insert("url".into(), "https://feeds.example.org/a.xml".into());
        record.params.insert("limits".into(), serde_json::json!({"max": 18_446_744_073_709_551_615u64, "f": 0.5}));
        let spec = RunSpec::decode(&serde_json::to_vec(&record).unwrap()).expect("decodes");
        assert!(spec.record.params.is_empty(), "the record holds no decoded map");
        assert_eq!(spec.params(), record.params);
        assert_eq!(spec.id, "job-1");
        let mut other = record.clone();
        other.params.insert("url".into(), "https://feeds.example.org/b.xml".into());
        assert_ne!(RunSpec::from(other), spec, "specs differ by their params");
        assert_eq!(RunSpec::from(record), spec);
        assert!(RunSpec::decode(b"{\"id\": 1}").is_none());
    }
}
