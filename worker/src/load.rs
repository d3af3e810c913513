//! The worker's load for the workers view: CPU and memory of this process
//! and the jobs it owns by type, written under `load/<name>` with the
//! worker's lease every [`LOAD_EVERY`] (so it vanishes with the worker).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest_model::{LoadRecord, now_millis};
use ingest_store::Store;
use ingest_store::keys::Keys;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::membership::LeaseState;

/// How often the load is written: one small write per worker.
pub const LOAD_EVERY: Duration = Duration::from_secs(10);
/// Linux's USER_HZ, the unit of `/proc/<pid>/stat` times.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Jobs owned by type, kept by the scheduler.
pub type OwnedByType = Arc<Mutex<BTreeMap<String, u32>>>;

/// Writes the load until `shutdown`.
pub async fn publish_loop(
    store: Arc<dyn Store>,
    keys: Keys,
    worker: String,
    owned: OwnedByType,
    mut lease_rx: watch::Receiver<Option<LeaseState>>,
    shutdown: CancellationToken,
) {
    let key = keys.load(&worker);
    let mut tick = tokio::time::interval(LOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cpu: Option<(Instant, f64)> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Registered first: the load lives under the lease.
        let lease = loop {
            if let Some(lease) = *lease_rx.borrow_and_update() {
                break lease;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = lease_rx.changed() => if changed.is_err() { return },
            }
        };
        let now = Instant::now();
        let cpu_seconds = cpu_seconds();
        let cpu_percent = match (last_cpu, cpu_seconds) {
            (Some((then, before)), Some(used)) if now > then => {
                Some(((used - before) / now.duration_since(then).as_secs_f64() * 100.0).max(0.0))
            }
            _ => None,
        };
        last_cpu = cpu_seconds.map(|s| (now, s));
        let record = LoadRecord {
            time: now_millis(),
            cpu_percent,
            rss_bytes: rss_bytes(),
            jobs_by_type: owned.lock().map(|o| o.clone()).unwrap_or_default(),
        };
        let Ok(value) = serde_json::to_vec(&record) else { continue };
        if let Err(error) = store.put(&key, value, lease.lease).await {
            tracing::debug!(%error, "load not written; next time");
        }
    }
}

/// User and system CPU time of this process, in seconds (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: utime and
    // stime are the 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / CLOCK_TICKS_PER_SECOND)
}

/// Resident memory of this process (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return; // not Linux: the view shows no figures
        }
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1, "keep the loop");
        assert!(cpu_seconds().is_some_and(|s| s > 0.0));
        assert!(rss_bytes().is_some_and(|b| b > 1024 * 1024), "{:?}", rss_bytes());
    }
}
