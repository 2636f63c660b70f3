//! Requests the hub makes to addresses its clients gave it (a client's
//! JWKS URL, a subscription's endpoint), behind one guard against
//! server-side request forgery: the host must resolve to addresses the
//! operator allows (public ones only, by default: no loopback, private,
//! link-local (which holds the cloud metadata address), carrier-grade NAT,
//! multicast or unspecified ones), the request goes to the address that
//! was checked (no second lookup to rebind), and redirects are not
//! followed.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

/// Which addresses a request may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    Public,
    /// Public and loopback addresses (tests, a receiver beside the hub).
    Loopback,
    /// Any address (a closed network).
    Any,
}

impl Allow {
    pub fn permits(self, ip: IpAddr) -> bool {
        match self {
            Allow::Any => true,
            Allow::Loopback => is_public(ip) || is_loopback(ip),
            Allow::Public => is_public(ip),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Addresses reachable on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The host and port of a URL, after checking its form: `https` (or `http`
/// when `http_ok`), no credentials, a host.
pub fn target(u: &url::Url, http_ok: bool) -> Result<(String, u16), String> {
    match u.scheme() {
        "https" => {}
        "http" if http_ok => {}
        other => return Err(format!("must be https, not {other}")),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("may not carry credentials".into());
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("has no host".into()),
    };
    Ok((host, u.port_or_known_default().unwrap_or(443)))
}

fn check(host: &str, addrs: Vec<SocketAddr>, allow: Allow) -> Result<SocketAddr, String> {
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if let Some(bad) = addrs.iter().find(|a| !allow.permits(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a private, local or metadata address; refused",
            bad.ip()
        ));
    }
    Ok(addrs[0])
}

/// The address to send to, resolved now (async, for requests).
pub async fn resolve(host: &str, port: u16, allow: Allow) -> Result<SocketAddr, String> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    check(host, addrs, allow)
}

/// As `resolve`, blocking (for checks made inside a write).
pub fn resolve_blocking(host: &str, port: u16, allow: Allow) -> Result<SocketAddr, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    check(host, addrs, allow)
}

/// A client that sends requests for `host` to `addr` only, follows no
/// redirect and gives up after `timeout` (connecting: at most five seconds).
pub fn client(host: &str, addr: SocketAddr, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .no_proxy()
        .resolve(host, addr)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "151.101.1.1", "2a00:1450:4009:81f::200e"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn loopback_allowance_admits_loopback_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(Allow::Loopback.permits(ip("127.0.0.1")));
        assert!(Allow::Loopback.permits(ip("::1")));
        assert!(!Allow::Loopback.permits(ip("10.0.0.1")));
        assert!(!Allow::Loopback.permits(ip("169.254.169.254")));
        assert!(!Allow::Public.permits(ip("127.0.0.1")));
        assert!(Allow::Any.permits(ip("10.0.0.1")));
    }

    #[test]
    fn resolving_checks_every_address() {
        assert!(resolve_blocking("127.0.0.1", 443, Allow::Public).is_err());
        assert!(resolve_blocking("127.0.0.1", 443, Allow::Loopback).is_ok());
        assert!(resolve_blocking("10.0.0.1", 443, Allow::Loopback).is_err());
    }

    #[test]
    fn targets_are_https_without_credentials() {
        let t = |s: &str, http: bool| target(&url::Url::parse(s).unwrap(), http);
        assert_eq!(
            t("https://hooks.example/x", false).unwrap(),
            ("hooks.example".into(), 443)
        );
        assert!(t("http://hooks.example/x", false).is_err());
        assert!(t("http://127.0.0.1:9/x", true).is_ok());
        assert!(t("https://user:pw@hooks.example/x", false).is_err());
        assert!(t("file:///etc/passwd", true).is_err());
    }
}
