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

/// The address policy: blocked ranges, less an allowlist.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// `Err(reason)` when `ip` may not be connected to.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match BLOCKED_NETS.iter().find(|(net, _)| net.contains(&ip)) {
            Some((_, reason)) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Parses a comma-separated allowlist such as `127.0.0.1/32,10.1.0.0/16`
/// (a bare address is a /32 or /128).
pub fn parse_allowlist(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("'{part}' is not an address or a network such as 10.1.0.0/16"))
        })
        .collect()
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
            assert!(policy.check(ip(refused)).is_err(), "{refused} must be refused");
        }
        for allowed in ["93.184.216.34", "1.1.1.1", "172.32.0.1", "2606:4700::1111"] {
            assert!(policy.check(ip(allowed)).is_ok(), "{allowed} must be allowed");
        }
        assert_eq!(policy.check(ip("169.254.169.254")), Err("a link-local address (cloud metadata lives here)"));
    }

    #[test]
    fn an_allowlist_opens_exactly_what_it_names() {
        let policy = AddressPolicy::new(parse_allowlist("127.0.0.1, 10.1.0.0/16").unwrap());
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("127.0.0.2")).is_err());
        assert!(policy.check(ip("10.1.200.3")).is_ok());
        assert!(policy.check(ip("10.2.0.1")).is_err());
        assert!(parse_allowlist("10.0.0.0/33").is_err());
        assert!(parse_allowlist("localhost").is_err());
        assert_eq!(parse_allowlist("").unwrap(), vec![]);
    }
}
