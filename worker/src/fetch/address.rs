//! Which addresses a fetch may connect to (DESIGN.md §7): by default none
//! that reach the machine itself or a private network, unless an explicit
//! allowlist says so.

use std::net::IpAddr;

use ipnet::IpNet;

/// Blocked by default, with the reason shown in errors.
const BLOCKED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "an unspecified address"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (cloud metadata lives here)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("::ffff:0:0/96", "an IPv4-mapped address"),
    ("::/96", "an IPv4-compatible address"),
    ("64:ff9b::/96", "a NAT64 address"),
    ("fc00::/7", "a unique-local address"),
    ("fe80::/10", "a link-local address"),
    ("ff00::/8", "a multicast address"),
];

static BLOCKED_NETS: std::sync::LazyLock<Vec<(IpNet, &'static str)>> = std::sync::LazyLock::new(|| {
    BLOCKED.iter().filter_map(|(net, reason)| Some((net.parse().ok()?, *reason))).collect()
});

/// One `--fetch-allow` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    /// An address or a network, every port: `10.1.0.0/16`, `127.0.0.1`.
    Net(IpNet),
    /// One address and port: `127.0.0.1:8080`, `[::1]:8080`.
    Socket(IpAddr, u16),
    /// A host name and port: `fixtures.internal:8080`. Its addresses are
    /// allowed whatever they are, on that port only.
    Name(String, u16),
}

/// A service of this process that fetches must never reach (its etcd,
/// control, metrics address), whatever the allowlist says: a job could
/// otherwise read every job's secrets out of etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnEndpoint {
    pub host: String,
    pub port: u16,
    /// What it is, for the refusal ("etcd", "control", "metrics").
    pub what: &'static str,
}

impl OwnEndpoint {
    /// From a URL such as `http://127.0.0.1:2379`; `None` when it has no host.
    pub fn from_url(url: &str, what: &'static str) -> Option<Self> {
        let url = url::Url::parse(url).ok()?;
        Some(Self {
            host: url.host_str()?.trim_matches(['[', ']']).to_string(),
            port: url.port_or_known_default()?,
            what,
        })
    }

    /// From a listening address; one on all addresses counts as loopback.
    pub fn from_addr(addr: std::net::SocketAddr, what: &'static str) -> Vec<Self> {
        let ip = addr.ip();
        let hosts: Vec<IpAddr> = if ip.is_unspecified() {
            vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST), ip]
        } else {
            vec![ip]
        };
        hosts.into_iter().map(|ip| Self { host: ip.to_string(), port: addr.port(), what }).collect()
    }
}

/// The address policy: blocked ranges, less an allowlist; never this
/// process's own services.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    nets: Vec<IpNet>,
    sockets: Vec<(IpAddr, u16)>,
    names: Vec<(String, u16)>,
    /// Own services by address and port (names resolved when set).
    own: Vec<(IpAddr, u16, &'static str)>,
    own_names: Vec<(String, u16, &'static str)>,
}

impl AddressPolicy {
    pub fn new(allow: Vec<AllowEntry>) -> Self {
        let mut policy = Self::default();
        for entry in allow {
            match entry {
                AllowEntry::Net(net) => policy.nets.push(net),
                AllowEntry::Socket(ip, port) => policy.sockets.push((ip, port)),
                AllowEntry::Name(name, port) => policy.names.push((name.to_ascii_lowercase(), port)),
            }
        }
        policy
    }

    /// Never fetch these; host names among them are resolved now.
    pub fn with_own(mut self, own: &[OwnEndpoint]) -> Self {
        use std::net::ToSocketAddrs;
        for endpoint in own {
            match endpoint.host.parse::<IpAddr>() {
                Ok(ip) => self.own.push((ip, endpoint.port, endpoint.what)),
                Err(_) => {
                    self.own_names.push((endpoint.host.to_ascii_lowercase(), endpoint.port, endpoint.what));
                    if let Ok(addrs) = (endpoint.host.as_str(), endpoint.port).to_socket_addrs() {
                        self.own.extend(addrs.map(|a| (a.ip(), endpoint.port, endpoint.what)));
                    }
                }
            }
        }
        self
    }

    /// Whether a URL's host and port may be fetched, before connecting. An
    /// IP address is decided here; a host name's addresses are decided by
    /// [`Self::check_resolved`] when it is resolved.
    pub fn check_target(&self, host: &url::Host<&str>, port: u16) -> Result<(), String> {
        let own = |what: &str| format!("{host}:{port} is this worker's own {what} endpoint: never fetched");
        match host {
            url::Host::Ipv4(_) | url::Host::Ipv6(_) => {
                let ip = match host {
                    url::Host::Ipv4(v4) => IpAddr::V4(*v4),
                    url::Host::Ipv6(v6) => IpAddr::V6(*v6),
                    url::Host::Domain(_) => return Ok(()),
                };
                if let Some((_, _, what)) = self.own.iter().find(|(o, p, _)| *o == ip && *p == port) {
                    return Err(own(what));
                }
                if self.sockets.contains(&(ip, port)) {
                    return Ok(());
                }
                self.check_ip(ip).map_err(|reason| refused(&host.to_string(), ip, reason))
            }
            url::Host::Domain(name) => {
                let name = name.to_ascii_lowercase();
                if let Some((_, _, what)) = self.own_names.iter().find(|(n, p, _)| *n == name && *p == port) {
                    return Err(own(what));
                }
                let ports: Vec<u16> = self.names.iter().filter(|(n, _)| *n == name).map(|(_, p)| *p).collect();
                if !ports.is_empty() && !ports.contains(&port) {
                    return Err(format!(
                        "{name} is allowed on port {} only (--fetch-allow), not on {port}",
                        ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                    ));
                }
                if !ports.is_empty()
                    && let Some((_, _, what)) = self.own.iter().find(|(_, p, _)| *p == port)
                {
                    return Err(format!("{name}:{port} may be this worker's own {what} endpoint: never fetched"));
                }
                Ok(())
            }
        }
    }

    /// Whether an address `name` resolved to may be connected to (the port
    /// is checked by [`Self::check_target`]). `Err(reason)` otherwise.
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), &'static str> {
        if self.names.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Ok(());
        }
        if self.own.iter().any(|(o, _, _)| *o == ip) {
            // The port is not known here: an address of an own service is
            // reached only as ip:port, where the port is checked.
            return Err("an address of this worker's own etcd, control or metrics endpoint (use ip:port)");
        }
        self.check_ip(ip)
    }

    /// `Err(reason)` when `ip` is in a blocked range that no network of the
    /// allowlist opens.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.nets.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match BLOCKED_NETS.iter().find(|(net, _)| net.contains(&ip)) {
            Some((_, reason)) => Err(reason),
            None => Ok(()),
        }
    }
}

fn refused(host: &str, ip: IpAddr, reason: &str) -> String {
    format!("{host} is {reason} ({ip}); fetching it needs the worker's --fetch-allow (INGEST_FETCH_ALLOW)")
}

/// Parses a comma-separated allowlist such as `10.1.0.0/16,127.0.0.1:8080,fixtures:80`:
/// networks or addresses (every port), `ip:port`, `[v6]:port`, `name:port`.
pub fn parse_allowlist(s: &str) -> Result<Vec<AllowEntry>, String> {
    s.split(',').map(str::trim).filter(|part| !part.is_empty()).map(parse_entry).collect()
}

fn parse_entry(part: &str) -> Result<AllowEntry, String> {
    let bad = || {
        format!("'{part}' is not an address, a network (10.1.0.0/16), an address:port (127.0.0.1:8080) or a host:port")
    };
    if let Ok(net) = part.parse::<IpNet>() {
        return Ok(AllowEntry::Net(net));
    }
    if let Ok(ip) = part.parse::<IpAddr>() {
        return Ok(AllowEntry::Net(IpNet::from(ip)));
    }
    if let Ok(socket) = part.parse::<std::net::SocketAddr>() {
        return Ok(AllowEntry::Socket(socket.ip(), socket.port()));
    }
    let (name, port) = part.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !valid_name || port == 0 {
        return Err(bad());
    }
    Ok(AllowEntry::Name(name.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_local_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(policy.check_ip(ip(refused)).is_err(), "{refused} must be refused");
        }
        for allowed in ["93.184.216.34", "1.1.1.1", "172.32.0.1", "2606:4700::1111"] {
            assert!(policy.check_ip(ip(allowed)).is_ok(), "{allowed} must be allowed");
        }
        assert_eq!(policy.check_ip(ip("169.254.169.254")), Err("a link-local address (cloud metadata lives here)"));
    }

    fn target(policy: &AddressPolicy, url: &str) -> Result<(), String> {
        let url = url::Url::parse(url).unwrap();
        policy.check_target(&url.host().unwrap(), url.port_or_known_default().unwrap())
    }

    #[test]
    fn ports_names_and_own_endpoints() {
        let allow = parse_allowlist("127.0.0.1:8080, fixtures.test:8443, [::1]:9000").unwrap();
        assert_eq!(allow[0], AllowEntry::Socket(ip("127.0.0.1"), 8080));
        assert_eq!(allow[1], AllowEntry::Name("fixtures.test".into(), 8443));
        let own = [
            OwnEndpoint::from_url("http://127.0.0.1:2379", "etcd").unwrap(),
            OwnEndpoint { host: "control.test".into(), port: 50051, what: "control" },
        ];
        let policy = AddressPolicy::new(allow).with_own(&own);
        assert!(target(&policy, "http://127.0.0.1:8080/feed").is_ok());
        assert!(target(&policy, "http://127.0.0.1:8081/feed").unwrap_err().contains("loopback"));
        assert!(target(&policy, "http://[::1]:9000/").is_ok());
        assert!(target(&policy, "https://fixtures.test:8443/").is_ok());
        assert!(target(&policy, "http://fixtures.test:2379/").unwrap_err().contains("port 8443 only"));
        assert!(policy.check_resolved("fixtures.test", ip("10.9.8.7")).is_ok(), "a named host's addresses");
        // Own endpoints: refused even when the allowlist opens their address.
        let open = AddressPolicy::new(parse_allowlist("127.0.0.1").unwrap()).with_own(&own);
        assert!(target(&open, "http://127.0.0.1:2379/v3/kv/range").unwrap_err().contains("own etcd"));
        assert!(target(&open, "http://control.test:50051/").unwrap_err().contains("own control"));
        assert!(target(&open, "http://127.0.0.1:8080/").is_ok(), "another port of that address");
        // A name resolving to an own endpoint's address is not opened by the allowlist.
        assert!(open.check_resolved("rebound.example", ip("127.0.0.1")).is_err());
        assert!(AddressPolicy::new(parse_allowlist("127.0.0.1").unwrap()).check_resolved("x", ip("127.0.0.1")).is_ok());
        for bad in ["fixtures.test", "fixtures.test:0", "host:port", "a b:80", "1.2.3:80"] {
            assert!(parse_allowlist(bad).is_err(), "{bad}");
        }
        let from_all = OwnEndpoint::from_addr("0.0.0.0:9464".parse().unwrap(), "metrics");
        assert!(from_all.iter().any(|e| e.host == "127.0.0.1" && e.port == 9464));
    }

    #[test]
    fn an_allowlist_opens_exactly_what_it_names() {
        let policy = AddressPolicy::new(parse_allowlist("127.0.0.1, 10.1.0.0/16").unwrap());
        assert!(policy.check_ip(ip("127.0.0.1")).is_ok());
        assert!(policy.check_ip(ip("127.0.0.2")).is_err());
        assert!(policy.check_ip(ip("10.1.200.3")).is_ok());
        assert!(policy.check_ip(ip("10.2.0.1")).is_err());
        assert!(parse_allowlist("10.0.0.0/33").is_err());
        assert!(parse_allowlist("localhost").is_err(), "a name needs its port");
        assert_eq!(parse_allowlist("").unwrap(), vec![]);
    }
}
