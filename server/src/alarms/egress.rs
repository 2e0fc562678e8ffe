//! Where webhooks may go: public addresses only, unless `--webhook-allow-networks` names a
//! private network.
//!
//! A destination URL is a request the server makes on a tenant's behalf, so without a check any
//! tenant admin could make the server POST to its own loopback ports, the cloud metadata
//! address (169.254.169.254) or the private network behind it. Refused unless allowed:
//! loopback, private (RFC 1918, unique-local), link-local, shared (100.64/10), unspecified,
//! broadcast, multicast and reserved addresses, IPv4-mapped IPv6 forms included.
//!
//! An address literal in a URL is checked when the destination is saved and again before each
//! delivery. A host name is checked where it matters, at connection time: the webhook client
//! resolves names through [`GuardedResolver`], which drops every address that is not allowed,
//! so a name that resolves (or rebinds) to a private address reaches nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// A network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    ///
    /// # Errors
    /// Anything else, named.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix must be 0-{max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let first = seg[0];
    let o = ip.octets();
    // Addresses that carry an IPv4 address and reach it through a translator or tunnel are as
    // public as that address: NAT64 (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16, RFC 3056).
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_is_public(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if first == 0x2002 {
        return v4_is_public(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    // Local-use NAT64 (64:ff9b:1::/48, RFC 8215) and the deprecated IPv4-compatible ::/96
    // lead wherever the local network routes them.
    if (first == 0x64 && seg[1] == 0xff9b && seg[2] == 1) || seg[..6] == [0; 6] {
        return false;
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => v6_is_public(v6),
    }
}

/// The webhook egress policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    allow: Vec<Cidr>,
}

impl Egress {
    /// Public addresses, and those in `allow`.
    pub fn new(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    /// Parses a comma-separated list of networks (`--webhook-allow-networks`).
    ///
    /// # Errors
    /// The first entry that is not a network.
    pub fn parse(list: &str) -> Result<Self, String> {
        let allow = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Cidr::parse)
            .collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    /// Whether a webhook may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Checks the host of a URL that is an address literal (names are checked when they are
    /// resolved).
    ///
    /// # Errors
    /// An address that is not allowed, named.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err("the URL has no host".into()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is a private, loopback, link-local or reserved address; webhooks go to public addresses unless the server allows the network with --webhook-allow-networks"
            ))
        }
    }
}

/// A host name whose every address the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Words every refusal carries, so it can be told apart from a network failure after the
/// HTTP stack has wrapped it (boxed sources hide its type from `downcast_ref`).
const REFUSED_MARK: &str = "which webhooks may not reach";

impl Refused {
    /// The refusal's message somewhere in an error's chain of causes, if there is one.
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<String> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(r) = err.downcast_ref::<Refused>() {
                return Some(r.0.clone());
            }
            let text = err.to_string();
            if text.contains(REFUSED_MARK) {
                return Some(text);
            }
            cur = err.source();
        }
        None
    }
}

/// Resolves webhook host names, keeping only the addresses the policy permits.
#[derive(Debug)]
pub struct GuardedResolver {
    egress: Arc<Egress>,
}

impl GuardedResolver {
    /// A resolver for `egress`.
    pub fn new(egress: Arc<Egress>) -> Self {
        Self { egress }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = Arc::clone(&self.egress);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| egress.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                let shown: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "{host} resolves to {} only, {REFUSED_MARK} (private, loopback, link-local or reserved; see --webhook-allow-networks)",
                    shown.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_reserved_are_refused() {
        let e = Egress::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            // Translators and tunnels to private IPv4, and the deprecated IPv4-compatible form.
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "::127.0.0.1",
            "::8.8.8.8",
        ] {
            assert!(!e.permits(ip(bad)), "{bad}");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(e.permits(ip(good)), "{good}");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_themselves() {
        let e = Egress::parse("127.0.0.1, 10.20.0.0/16").unwrap();
        assert!(e.permits(ip("127.0.0.1")));
        assert!(!e.permits(ip("127.0.0.2")));
        assert!(e.permits(ip("10.20.255.1")));
        assert!(!e.permits(ip("10.21.0.1")));
        assert!(e.permits(ip("::ffff:127.0.0.1")));
        assert!(Egress::parse("10.0.0.0/33").is_err());
        assert!(Egress::parse("example.com").is_err());
        assert!(Cidr::parse("::/0").unwrap().contains(ip("fe80::1")));
    }

    #[test]
    fn url_literals_are_checked_and_names_left_to_the_resolver() {
        let e = Egress::default();
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(
            e.check_url(&u("http://169.254.169.254/latest/meta-data"))
                .is_err()
        );
        assert!(e.check_url(&u("http://[::1]:8080/")).is_err());
        assert!(e.check_url(&u("https://hooks.example.com/x")).is_ok());
        assert!(e.check_url(&u("https://1.1.1.1/x")).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_names_that_reach_private_addresses() {
        use reqwest::dns::Resolve as _;
        let r = GuardedResolver::new(Arc::new(Egress::default()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match r.resolve(name).await {
            Ok(_) => panic!("localhost resolved to an allowed address"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("localhost"), "{err}");
        let open = GuardedResolver::new(Arc::new(Egress::parse("127.0.0.0/8, ::1").unwrap()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(open.resolve(name).await.is_ok());
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[tokio::test]
    async fn a_guarded_client_reports_the_refusal_through_the_http_stack() {
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::new(Egress::default()))))
            .build()
            .unwrap();
        let e = client.get("http://localhost:9/").send().await.unwrap_err();
        let mut chain = Vec::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            chain.push(format!("{err} / {err:?}"));
            cur = err.source();
        }
        let found = Refused::find(&e);
        assert!(found.is_some(), "{chain:#?}");
    }
}
