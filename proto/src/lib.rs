//! The `ingest.v1` wire contract. Generated code only: domain types live in
//! `ingest-model` and are converted at the edge (the control crate's `convert`).

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("ingest.v1");

    /// The encoded file descriptor set of `ingest.v1` and its imports, served
    /// by gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ingest_v1_descriptor");
}
