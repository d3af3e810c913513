//! `ingest health`: exits 0 when a control server's gRPC health service says
//! SERVING, or a worker's `/healthz` answers 200; 1 otherwise, with the
//! reason. For container health checks (no other tool in the image).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct HealthArgs {
    /// A control server's gRPC address: asks grpc.health.v1.Health/Check.
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// A worker's --metrics-addr: asks GET /healthz.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl HealthArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let check = async {
            match (self.grpc, self.http) {
                (Some(addr), _) => grpc(addr).await,
                (_, Some(addr)) => http(addr).await,
                _ => bail!("give --grpc or --http"),
            }
        };
        tokio::time::timeout(self.timeout, check)
            .await
            .with_context(|| format!("no answer within {:?}", self.timeout))?
    }
}

async fn grpc(addr: SocketAddr) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let mut client = HealthClient::new(channel);
    let answer = client.check(HealthCheckRequest { service: String::new() }).await?.into_inner();
    match ServingStatus::try_from(answer.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        status => bail!("{addr} is not serving: {status:?}"),
    }
}

async fn http(addr: SocketAddr) -> anyhow::Result<()> {
    let response =
        reqwest::get(format!("http://{addr}/healthz")).await.with_context(|| format!("cannot reach {addr}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{addr} answered {status}: {}", body.trim());
    }
    Ok(())
}
