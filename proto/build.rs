//! Compiles `ingest/v1/*.proto`. Uses `$PROTOC` when set, otherwise the protoc
//! shipped by the `protoc-bin-vendored` crate, so a fresh machine needs no
//! system protoc to build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let includes = [PathBuf::from("."), protoc_bin_vendored::include_path()?];
    let protos = [PathBuf::from("ingest/v1/jobs.proto"), PathBuf::from("ingest/v1/workers.proto")];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ingest_v1_descriptor.bin"))
        // A Job on its way in may carry secret parameters: its Debug is
        // written by hand (src/lib.rs) to print parameter names only.
        .skip_debug([".ingest.v1.Job"])
        .compile_with_config(config, &protos, &includes)?;
    println!("cargo:rerun-if-changed=ingest");
    Ok(())
}
