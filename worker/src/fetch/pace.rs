//! Requests per second per host, for jobs that fetch user-given URLs (feeds,
//! JSON APIs: their types name the parameter, `JobType::PACED_BY`): every
//! request of such a job to a host waits for the host's turn, in order of
//! arrival, one turn every 1/rate seconds (`--fetch-host-rate`, per host
//! `--fetch-host-rates`). Jobs of these types are ranked by their host, not
//! by their id (`view.rs`), so every job of a host runs on the one worker
//! that ranks first for it, and this worker's pace is the cluster's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Hosts nobody waits for are forgotten once this many are held.
const MAX_HOSTS: usize = 4096;

/// Per-host rates given on the command line: `host=rate,...` (requests per
/// second, host names case-insensitive).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostRates(pub Vec<(String, f64)>);

impl std::str::FromStr for HostRates {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rates = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (host, rate) =
                entry.split_once('=').ok_or_else(|| format!("'{entry}': expected host=requests-per-second"))?;
            let host = host.trim().to_ascii_lowercase();
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                return Err(format!("'{entry}': '{host}' is not a host name"));
            }
            rates.push((host, parse_rate(rate.trim())?));
        }
        Ok(Self(rates))
    }
}

/// A rate in requests per second: above 0, at most 1000.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of requests per second"))?;
    if !(rate.is_finite() && rate > 0.0 && rate <= 1000.0) {
        return Err(format!("{s}: a rate must be above 0 and at most 1000 requests per second"));
    }
    Ok(rate)
}

/// Each host's turnstile: the time of its last start, behind a fair
/// (first come, first served) lock that a waiter holds while it sleeps out
/// the spacing. A waiter that gives up (its job stopped) leaves the queue
/// without taking a slot, so a burst of stopped jobs leaves no silence.
pub struct HostPacer {
    default: Duration,
    overrides: HashMap<String, Duration>,
    hosts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
}

impl HostPacer {
    pub fn new(default_rate: f64, overrides: &HostRates) -> Self {
        let spacing = |rate: f64| Duration::from_secs_f64(1.0 / rate);
        Self {
            default: spacing(default_rate),
            overrides: overrides.0.iter().map(|(host, rate)| (host.clone(), spacing(*rate))).collect(),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Time between two requests to `host`.
    pub fn spacing(&self, host: &str) -> Duration {
        self.overrides.get(host).copied().unwrap_or(self.default)
    }

    /// Waits for `host`'s turn: in order of arrival, at least the spacing
    /// after the previous turn. Returns when the turn began.
    pub async fn wait(&self, host: &str) -> Instant {
        let gate = {
            let Ok(mut hosts) = self.hosts.lock() else { return Instant::now() };
            if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
                // Forget hosts nobody waits for and whose spacing has passed.
                hosts.retain(|_, gate| {
                    Arc::strong_count(gate) > 1
                        || gate.try_lock().map_or(true, |last| last.is_some_and(|at| at.elapsed() < self.default))
                });
            }
            hosts.entry(host.to_string()).or_default().clone()
        };
        let mut last = gate.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + self.spacing(host)).await;
        }
        let now = Instant::now();
        *last = Some(now);
        now
    }
}

/// The host a paced job's requests go to: that of its URL parameter, in
/// lower case (`None` when the parameter is absent or not a URL with a host).
pub fn host_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.host_str().map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_bad_ones_say_why() {
        let rates: HostRates = "Feeds.Example.org=5, slow.example=0.25".parse().expect("rates");
        assert_eq!(rates.0, [("feeds.example.org".to_string(), 5.0), ("slow.example".to_string(), 0.25)]);
        assert_eq!("".parse::<HostRates>().expect("empty"), HostRates::default());
        for bad in ["example.org", "example.org=0", "example.org=-1", "example.org=fast", "a/b=1", "=2", "x=1e9"] {
            assert!(bad.parse::<HostRates>().is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn turns_are_spaced_per_host_and_a_waiter_that_leaves_takes_no_turn() {
        let pacer = Arc::new(HostPacer::new(20.0, &"fast.example=100".parse().expect("rates")));
        let ms = Duration::from_millis;
        let first = pacer.wait("feeds.example").await;
        let second = pacer.wait("feeds.example").await;
        assert!(second - first >= ms(50), "one turn every 1/20 s: {:?}", second - first);
        let other = pacer.wait("other.example").await;
        assert!(other - second < ms(20), "another host has its own turns");
        let fast = pacer.wait("fast.example").await;
        let gap = pacer.wait("fast.example").await - fast;
        assert!(gap >= ms(10) && gap < ms(50), "{gap:?}");
        // Ten waiters give up: the next turn is one spacing after the last
        // one taken, not ten.
        let last = pacer.wait("feeds.example").await;
        for _ in 0..10 {
            let pacer = pacer.clone();
            let gave_up = tokio::time::timeout(ms(1), async move { pacer.wait("feeds.example").await }).await;
            assert!(gave_up.is_err());
        }
        let next = pacer.wait("feeds.example").await;
        assert!(next - last >= ms(50) && next - last < ms(150), "{:?}", next - last);
    }

    #[test]
    fn the_host_is_the_urls_in_lower_case() {
        assert_eq!(host_of("https://Blog.Example.ORG:8443/feed.xml").as_deref(), Some("blog.example.org"));
        assert_eq!(host_of("not a url"), None);
    }
}
