//! `buf lint` (the STANDARD rules) on ingest.v1, and `buf breaking` against
//! the last released ingest.v1 (`released/ingest-v1.json`): the working tree
//! passes, and a change that breaks clients is caught.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn buf(dir: &Path, args: &[&str]) -> Output {
    let bin = std::env::var("INGEST_BUF").unwrap_or_else(|_| "buf".to_string());
    Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} ({e}); run `bash scripts/deps.sh` or set INGEST_BUF"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_api_passes_lint_and_breaks_no_client() {
    let lint = buf(&proto_dir(), &["lint"]);
    assert!(lint.status.success(), "buf lint:\n{}", text(&lint));
    let breaking = buf(&proto_dir(), &["breaking", "--against", "released/ingest-v1.json"]);
    assert!(breaking.status.success(), "buf breaking against the last release:\n{}", text(&breaking));
}

#[test]
fn a_removed_field_is_a_breaking_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("ingest/v1")).expect("mkdir");
    std::fs::copy(proto_dir().join("buf.yaml"), dir.path().join("buf.yaml")).expect("copy buf.yaml");
    for file in ["jobs.proto", "workers.proto"] {
        let mut source = std::fs::read_to_string(proto_dir().join("ingest/v1").join(file)).expect("read");
        if file == "jobs.proto" {
            let field = "  string state_reason = 2;\n";
            assert!(source.contains(field), "the test's field is gone from jobs.proto");
            source = source.replace(field, "");
        }
        std::fs::write(dir.path().join("ingest/v1").join(file), source).expect("write");
    }
    let against = proto_dir().join("released/ingest-v1.json");
    let breaking = buf(dir.path(), &["breaking", "--against", against.to_str().expect("UTF-8 path")]);
    assert!(!breaking.status.success(), "a removed field went unnoticed");
    assert!(text(&breaking).contains("state_reason"), "{}", text(&breaking));
}
