//! Compiles `ingest/v1/*.proto`, and their proto3 JSON mapping with pbjson. Uses `$PROTOC` when set, otherwise the protoc
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
        // Bad request bytes answer INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::StrictCodec")
        // Well-known types with serde (proto3 JSON) for the HTTP API.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(config, &protos, &includes)?;
    // serde impls following the proto3 JSON mapping (lowerCamelCase names,
    // enums as strings, 64-bit integers as strings), defaults included.
    let descriptors = std::fs::read(out_dir.join("ingest_v1_descriptor.bin"))?;
    pbjson_build::Builder::new().register_descriptors(&descriptors)?.emit_fields().build(&[".ingest.v1"])?;
    println!("cargo:rerun-if-changed=ingest");
    Ok(())
}
