//! A client's JWKS fetched from the URL it registered (`client add
//! --jwks-url`), behind a guard against server-side request forgery, and
//! cached. The guard: https only; the host must resolve to public addresses
//! only (no loopback, private, link-local, carrier-grade NAT, multicast or
//! unspecified ones), and the request goes to the address that was checked
//! (no second lookup to rebind); no redirects; five seconds; 64 KiB. A hub
//! on a closed network, or a test, may allow http and private addresses
//! (`--allow-private-jwks-urls`).

use std::collections::HashMap;
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
    crate::outbound::target(&u, allow_private).map_err(|e| format!("the JWKS URL {e}"))?;
    Ok(u)
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
        let (host, port) = crate::outbound::target(&u, self.allow_private)?;
        let allow = if self.allow_private {
            crate::outbound::Allow::Any
        } else {
            crate::outbound::Allow::Public
        };
        let addr = crate::outbound::resolve(&host, port, allow)
            .await
            .map_err(|e| format!("the JWKS URL's host {e}"))?;
        let client = crate::outbound::client(&host, addr, TIMEOUT)?;
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
    fn urls_are_https_without_credentials() {
        assert!(check_url("https://keys.example/jwks.json", false).is_ok());
        assert!(check_url("http://keys.example/jwks.json", false).is_err());
        assert!(check_url("http://127.0.0.1:9/jwks.json", true).is_ok());
        assert!(check_url("https://user:pw@keys.example/jwks.json", false).is_err());
        assert!(check_url("file:///etc/passwd", true).is_err());
    }
}
