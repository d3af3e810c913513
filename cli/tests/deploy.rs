//! The Docker Swarm stack: docker-compose.yml is loaded by compose-go (the
//! Compose Specification's schema, interpolation, normalization; run by
//! `scripts/compose-check` with Go) and its settings are checked against the
//! binary: every INGEST_* variable it sets is one the commands read, the
//! health checks are `ingest health` commands that exist, the workers' stop
//! grace period outlasts their drain. No Docker engine runs here: the images
//! are not built and the stack is not deployed by the tests.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn ingest(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ingest")).args(args).output().expect("run ingest");
    assert!(out.status.success(), "ingest {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn seconds(duration: &Value) -> u64 {
    let text = duration.as_str().expect("a duration");
    humantime::parse_duration(text).expect("a Go duration humantime reads").as_secs()
}

#[test]
fn the_compose_file_is_valid_and_matches_the_binary() {
    let out = Command::new("go")
        .args(["run", ".", "../../docker-compose.yml"])
        .current_dir(repo().join("scripts/compose-check"))
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("run go (install Go)");
    assert!(out.status.success(), "compose-check: {}", String::from_utf8_lossy(&out.stderr));
    let project: Value = serde_json::from_slice(&out.stdout).expect("the project as JSON");
    let services = &project["services"];

    let control = &services["control"];
    let worker = &services["worker"];
    assert_eq!(control["deploy"]["replicas"], 2);
    assert_eq!(worker["deploy"]["replicas"], 3);
    for name in ["etcd-1", "etcd-2", "etcd-3", "opensearch", "minio"] {
        assert!(services[name].is_object(), "{name} service missing");
    }
    // etcd is a 3-member cluster: each member names all three peers and
    // advertises itself; control and workers are given every member.
    let members = ["etcd-1", "etcd-2", "etcd-3"];
    let peers = "--initial-cluster=etcd-1=http://etcd-1:2380,etcd-2=http://etcd-2:2380,etcd-3=http://etcd-3:2380";
    for name in members {
        let command: Vec<&str> =
            services[name]["command"].as_array().expect("etcd flags").iter().filter_map(Value::as_str).collect();
        assert!(command.contains(&peers), "{name}: {command:?}");
        assert!(command.contains(&format!("--name={name}").as_str()), "{name}: {command:?}");
        assert!(command.contains(&format!("--initial-advertise-peer-urls=http://{name}:2380").as_str()));
        assert!(command.contains(&format!("--advertise-client-urls=http://{name}:2379").as_str()));
        let volume = &services[name]["volumes"][0]["source"];
        assert_eq!(volume, &format!("{name}-data"), "{name} keeps its own data");
    }
    assert_eq!(
        services["worker"]["environment"]["INGEST_ETCD"],
        "http://etcd-1:2379,http://etcd-2:2379,http://etcd-3:2379"
    );

    // Health checks are `ingest health` invocations the binary accepts.
    let check = |service: &Value| -> Vec<String> {
        let test = service["healthcheck"]["test"].as_array().expect("a health check");
        test.iter().map(|t| t.as_str().expect("text").to_string()).collect()
    };
    assert_eq!(check(control)[..4], ["CMD", "ingest", "health", "--grpc"]);
    assert_eq!(check(worker)[..4], ["CMD", "ingest", "health", "--http"]);
    let help = ingest(&["health", "--help"]);
    assert!(help.contains("--grpc") && help.contains("--http"), "{help}");

    // The workers drain (at most 6 s) and their lease lapses before SIGKILL.
    let ttl = seconds(&worker["environment"]["INGEST_LEASE_TTL"]);
    assert!(seconds(&worker["stop_grace_period"]) > 6 + ttl, "stop_grace_period too short");

    // Every variable set is one the command reads; secrets come from files.
    for (service, command) in [(control, "control"), (worker, "worker")] {
        let help = ingest(&[command, "--help"]);
        let environment = service["environment"].as_object().expect("environment");
        for name in environment.keys() {
            assert!(help.contains(&format!("env: {name}")), "{command} does not read {name}");
        }
        assert!(!environment.contains_key("INGEST_TOKEN"), "the token comes from a Docker secret file");
        assert_eq!(environment["INGEST_TOKEN_FILE"], "/run/secrets/ingest_token");
    }
    for secret in ["ingest_token", "ingest_secrets_key", "s3_access_key", "s3_secret_key"] {
        assert_eq!(project["secrets"][secret]["external"], true, "{secret}");
    }
    assert!(
        worker["environment"]["INGEST_S3_SECRET_KEY_FILE"].as_str().is_some_and(|p| p.starts_with("/run/secrets/"))
    );

    // The Dockerfile builds the binary the stack runs, under the name it runs.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked --bin ingest"));
    assert!(dockerfile.contains("FROM debian:bookworm-slim AS etcd"));
    assert!(dockerfile.contains("ENTRYPOINT [\"ingest\"]"));
}

#[test]
fn a_broken_compose_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = std::fs::read_to_string(repo().join("docker-compose.yml")).expect("compose file");
    let broken = original.replacen("stop_grace_period: 30s", "stop_grace_period: 30s\n    stop_grace_perod: 30s", 1);
    assert_ne!(broken, original);
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, broken).expect("write");
    let out = Command::new("go")
        .args(["run", "."])
        .arg(&file)
        .current_dir(repo().join("scripts/compose-check"))
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("run go");
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("stop_grace_perod"), "{error}");
}
