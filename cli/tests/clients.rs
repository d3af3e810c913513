//! The generated clients against a live control: `ingest control` and
//! `ingest worker` processes on a real etcd, then the Python package
//! (installed with pip), the Go module and the TypeScript package (compiled
//! with tsc) each run their example: list the
//! job types, create a demo job, watch it until it has written items,
//! delete it. With a token, as a deployment would have.
//!
//! Needs Python with grpcio (INGEST_CLIENTS_PYTHON), Go, Node.js and the
//! TypeScript package's node_modules: `bash scripts/deps.sh` sets them up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ingest_testkit::{EtcdServer, free_port};

const TOKEN: &str = "clients-token";

fn clients() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").join("clients")
}

/// A process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(args)
        .env("INGEST_TOKEN", TOKEN)
        .env("INGEST_KEY_ROOT", "/clients-test/")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ingest {name}: {e}"));
    Process(child)
}

/// Control and one worker on `etcd`; returns them and control's gRPC address.
fn start(dir: &Path, etcd: &EtcdServer) -> (Vec<Process>, String) {
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let endpoint = etcd.endpoint();
    let control = spawn(dir, "control", &["control", "--etcd", &endpoint, "--grpc-addr", &grpc, "--http-addr", &http]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health =
            Command::new(env!("CARGO_BIN_EXE_ingest")).args(["health", "--grpc", &grpc]).output().expect("run");
        if health.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "control not serving: {}", String::from_utf8_lossy(&health.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = format!("http://{grpc}");
    let worker = spawn(dir, "worker", &["worker", "--etcd", &endpoint, "--control", &url, "--name", "w1"]);
    (vec![control, worker], grpc)
}

/// Waits until a worker has published the demo type.
async fn wait_for_types(grpc: &str) {
    use ingest_proto::v1::ListJobTypesRequest;
    use ingest_proto::v1::job_service_client::JobServiceClient;
    let mut client = JobServiceClient::connect(format!("http://{grpc}")).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = tonic::Request::new(ListJobTypesRequest {});
        request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
        let types = client.list_job_types(request).await.expect("ListJobTypes").into_inner().job_types;
        if types.iter().any(|t| t.name == "demo" && !t.workers.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "no worker published the demo type");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run(what: &str, command: &mut Command) -> String {
    let out: Output = command.env("INGEST_TOKEN", TOKEN).output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn assert_example(language: &str, output: &str) {
    assert!(output.contains("job types: demo,"), "{language}: {output}");
    assert!(output.contains(&format!("created example-{language}")), "{language}: {output}");
    let written = output.lines().find_map(|l| l.strip_prefix("items written: ")).unwrap_or("0");
    assert!(written.trim().parse::<u64>().unwrap_or(0) > 0, "{language}: {output}");
    assert!(output.contains(&format!("deleted example-{language}")), "{language}: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_clients_run_their_examples_against_control() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.expect("etcd");
    let (_processes, grpc) = tokio::task::block_in_place(|| start(dir.path(), &etcd));
    wait_for_types(&grpc).await;
    tokio::task::block_in_place(|| run_examples(dir.path(), &grpc));
}

fn run_examples(dir: &Path, grpc: &str) {
    let grpc = grpc.to_string();

    // Python: installed from its pyproject.toml, as a user would.
    let python = std::env::var("INGEST_CLIENTS_PYTHON")
        .expect("INGEST_CLIENTS_PYTHON: run `source scripts/deps.sh` (a Python with grpcio and protobuf)");
    let source = dir.join("python-src");
    let copied = Command::new("cp").arg("-r").arg(clients().join("python")).arg(&source).status().expect("cp");
    assert!(copied.success());
    let site = dir.join("python-site");
    run(
        "pip install clients/python",
        Command::new(&python).args(["-m", "pip", "install", "-q", "--no-deps", "--target"]).arg(&site).arg(&source),
    );
    let output =
        run("python example", Command::new(&python).arg(source.join("example.py")).arg(&grpc).env("PYTHONPATH", &site));
    assert_example("python", &output);

    // Go: the module, with its go.sum.
    let output =
        run("go example", Command::new("go").args(["run", "./example", &grpc]).current_dir(clients().join("go")));
    assert_example("go", &output);

    // TypeScript: compiled with the pinned tsc, run with node.
    let typescript = clients().join("typescript");
    run("tsc", Command::new("node").args(["node_modules/typescript/bin/tsc", "-p", "."]).current_dir(&typescript));
    let output =
        run("typescript example", Command::new("node").args(["dist/example.js", &grpc]).current_dir(&typescript));
    assert_example("typescript", &output);
}
