//! A client's JWKS fetched from the URL it registered (`client add
//! --jwks-url`), behind a guard against server-side request forgery, and
//! cached. The guard: https only; the host must resolve to public addresses
//! only (no loopback, private, link-local, carrier-grade NAT, multicast or
//! unspecified ones), and the request goes to the address that was checked
//! (no second lookup to rebind); no redirects; five seconds; 64 KiB. A hub
//! on a closed network, or a test, may allow http and private addresses
//! (`--allow-private-jwks-urls`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fetched JWKS is used before it is fetched again.
const FRESH_FOR: Duration = Duration::from_secs(300);
/// A key id not in the cached set makes a new fetch, at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BYTES: usize = 64 * 1024;

pub struct Fetcher {
    allow_private: bool,
    cache: Mutex<HashMap<String, (Instant, String)>>,
}

/// Whether a JWKS URL is one the hub could fetch (at registration, private
/// networks are allowed: the guard applies when it is fetched).
pub fn check_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(url).map_err(|e| format!("the JWKS URL '{url}' is not a URL: {e}"))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_private => {}
        other => return Err(format!("the JWKS URL must be https, not {other}")),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the JWKS URL may not carry credentials".into());
    }
    if u.host_str().is_none() {
        return Err("the JWKS URL has no host".into());
    }
    Ok(u)
}

/// Addresses a fetch may go to.
fn is_public(ip: IpAddr) -> bool {
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

impl Fetcher {
    pub fn new(allow_private: bool) -> Fetcher {
        Fetcher {
            allow_private,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The JWKS at `url`: from the cache while fresh and holding `kid`,
    /// else fetched.
    pub async fn get(&self, url: &str, kid: Option<&str>) -> Result<String, String> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned();
        if let Some((at, jwks)) = &cached {
            let has_kid = kid.is_none_or(|k| jwks.contains(&format!("\"{k}\"")));
            if at.elapsed() < FRESH_FOR && (has_kid || at.elapsed() < REFETCH_AFTER) {
                return Ok(jwks.clone());
            }
        }
        let jwks = self.fetch(url).await?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(url.to_string(), (Instant::now(), jwks.clone()));
        Ok(jwks)
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let u = check_url(url, self.allow_private)?;
        let host = u.host_str().unwrap_or_default().to_string();
        let port = u.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("the JWKS URL's host {host} does not resolve: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("the JWKS URL's host {host} has no address"));
        }
        if !self.allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(format!(
                "the JWKS URL's host {host} resolves to a private or local address; refused"
            ));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .no_proxy()
            .resolve(&host, addrs[0])
            .build()
            .map_err(|e| format!("cannot fetch the JWKS: {e}"))?;
        let mut resp = client
            .get(u)
            .send()
            .await
            .map_err(|e| format!("cannot fetch the JWKS from {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("the JWKS URL answered {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("cannot read the JWKS: {e}"))?
        {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!(
                    "the JWKS at {url} is larger than {MAX_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".to_string())?;
        super::token::check_jwks(&text).map_err(|e| format!("the JWKS at {url}: {e}"))?;
        Ok(text)
    }
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
    fn urls_are_https_without_credentials() {
        assert!(check_url("https://keys.example/jwks.json", false).is_ok());
        assert!(check_url("http://keys.example/jwks.json", false).is_err());
        assert!(check_url("http://127.0.0.1:9/jwks.json", true).is_ok());
        assert!(check_url("https://user:pw@keys.example/jwks.json", false).is_err());
        assert!(check_url("file:///etc/passwd", true).is_err());
    }
}
