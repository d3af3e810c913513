//! The `ingest.v1` wire contract. Generated code, the codec it uses
//! (`codec`), and the wire forms of what both control and workers send
//! (`convert`); every other conversion happens at control's edge (the
//! control crate's `convert`).

#![allow(clippy::all, missing_docs)]

pub mod codec;
pub mod convert;

pub mod v1 {
    tonic::include_proto!("ingest.v1");
    include!(concat!(env!("OUT_DIR"), "/ingest.v1.serde.rs"));

    /// The encoded file descriptor set of `ingest.v1` and its imports, served
    /// by gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ingest_v1_descriptor");

    impl std::fmt::Debug for Job {
        /// Parameter names only: on input, parameters may hold secrets.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let param_names: Vec<&String> = self.params.iter().flat_map(|p| p.fields.keys()).collect();
            f.debug_struct("Job")
                .field("id", &self.id)
                .field("name", &self.name)
                .field("type", &self.r#type)
                .field("param_names", &param_names)
                .field("secret_params_set", &self.secret_params_set)
                .field("interval", &self.interval)
                .field("paused", &self.paused)
                .field("revision", &self.revision)
                .field("create_time", &self.create_time)
                .field("update_time", &self.update_time)
                .field("status", &self.status)
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::{CreateJobRequest, Job};

    #[test]
    fn job_debug_prints_parameter_names_but_no_values() {
        let value = pbjson_types::Value { kind: Some(pbjson_types::value::Kind::StringValue("s3cr3t-value".into())) };
        let params = pbjson_types::Struct { fields: [("api_key".to_string(), value)].into() };
        let request =
            CreateJobRequest { job: Some(Job { params: Some(params), ..Default::default() }), ..Default::default() };
        let text = format!("{request:?}");
        assert!(text.contains("api_key"), "{text}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
    }
}
