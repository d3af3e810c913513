//! The web UI in a real browser: a cluster of three worker processes on a
//! real etcd, control requiring tokens with roles (the workers hold a
//! `worker` token), and `control/ui-tests/ui.mjs`
//! driving Debian's Chromium through it (token prompt, live table, workers,
//! the generated form and its field errors, counters rising, pause, resume,
//! cursor reset, edit, delete, then a read token's tab without any of those actions).
//! Screenshots of every step are kept under
//! `<target dir>/artifacts/ui/`.
//!
//! Needs node, the script's node_modules (`npm ci` in control/ui-tests) and
//! /usr/bin/chromium: `bash scripts/deps.sh` installs them.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Cluster;
use ingest_control::ServeArgs;
use ingest_control::error::ControlError;

const TOKEN: &str = "ui-test-token";
const READ_TOKEN: &str = "ui-read-token";
const WORKER_TOKEN: &str = "ui-worker-token";
const WORKERS: usize = 3;

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// `<target dir>/artifacts/ui`, next to the test binary's build tree.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_dir().join("target"), PathBuf::from);
    target.join("artifacts/ui")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_drives_a_cluster_in_chromium() {
    let scripts = repo_dir().join("control/ui-tests");
    assert!(
        scripts.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `bash scripts/deps.sh` (npm ci in control/ui-tests)"
    );
    // Tokens with roles: the UI's admin token, a read token for the
    // read-only tab, and the workers' token, which may only report.
    let tokens = tempfile::tempdir().expect("tempdir");
    let token_file = tokens.path().join("tokens");
    std::fs::write(&token_file, format!("admin {TOKEN}\nread {READ_TOKEN}\nworker {WORKER_TOKEN}\n")).expect("tokens");
    let args = ServeArgs { token_file: Some(token_file), ..ServeArgs::loopback() };
    let mut cluster = Cluster::start_with(Duration::from_secs(4), args).await;
    cluster.worker_env.push(("INGEST_TOKEN".into(), WORKER_TOKEN.into()));
    for i in 1..=WORKERS {
        cluster.start_worker(&format!("w{i}"));
    }
    cluster.create_jobs(6, Duration::from_secs(2)).await;

    let artifacts = artifacts_dir();
    let _ = std::fs::remove_dir_all(&artifacts);
    let url = cluster.control_http.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(scripts.join("ui.mjs"))
            .arg(&url)
            .arg(&artifacts)
            .env("INGEST_TOKEN", TOKEN)
            .env("INGEST_READ_TOKEN", READ_TOKEN)
            .env("INGEST_WORKERS", WORKERS.to_string())
            .output()
            .expect("run node (install Node.js)")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the browser test failed:\n{stdout}\n{stderr}\n{}", cluster.log_tails());
    assert!(stdout.contains("all 24 steps passed"), "{stdout}");

    // What the browser did, seen through the service: the job it added is
    // gone again, the others are untouched.
    let deleted = cluster.control.get_job("ui-demo").await;
    assert!(matches!(deleted, Err(ControlError::NotFound { .. })), "ui-demo still exists");
    let shots = std::fs::read_dir(artifacts_dir()).expect("screenshots").count();
    assert!(shots >= 24, "{shots} screenshots");
    cluster.stop();
}
