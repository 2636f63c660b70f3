//! Tokens: client assertions in (RFC 7523, SMART backend services), access
//! tokens out, signed by the server's own key.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest as _;

use super::scopes::Scopes;
use super::{Principal, Role};
use crate::store::{ClientRow, Store};

/// Algorithms a client may sign its assertion with (those the NHS APIs
/// use). Never `none`, never an HMAC: a public key is not a shared secret.
pub const ASSERTION_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS384, Algorithm::ES384, Algorithm::RS512];

/// How far ahead a client assertion's `exp` may be (SMART: five minutes).
const MAX_ASSERTION_LIFETIME: i64 = 300;
/// Clock difference tolerated between a client and the server.
const LEEWAY: u64 = 30;

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The server's signing key (ECDSA P-256), shared by every replica through
/// the database: created by the first to start.
pub struct ServerKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwk: Value,
}

impl ServerKey {
    pub fn load(store: &Store) -> Result<ServerKey, String> {
        use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
        let stored = store.secret_or("token-signing-key", || {
            let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
            let der = key.to_pkcs8_der().expect("a fresh P-256 key encodes");
            STANDARD.encode(der.as_bytes())
        })?;
        let der = STANDARD
            .decode(stored)
            .map_err(|e| format!("the stored token-signing key is not base64: {e}"))?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&der)
            .map_err(|e| format!("the stored token-signing key is not a P-256 key: {e}"))?;
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(point.x().expect("uncompressed point")),
            URL_SAFE_NO_PAD.encode(point.y().expect("uncompressed point")),
        );
        // The kid names the key by its content, so every replica agrees.
        let kid = hex(&sha2::Sha256::digest(point.as_bytes())[..8]);
        Ok(ServerKey {
            encoding: EncodingKey::from_ec_der(&der),
            decoding: DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?,
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y,
                        "kid": kid, "use": "sig", "alg": "ES256"}),
            kid,
        })
    }

    /// The public key set, as published at the JWKS endpoint.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an access token carries: enough to serve a request without a
/// database lookup.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    exp: i64,
    iat: i64,
    jti: String,
    scope: String,
    organization: String,
    role: String,
}

pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

/// An RFC 6749 §5.2 error: `error` code, description, HTTP status.
#[derive(Debug)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
    pub status: u16,
}

fn invalid_client(description: impl Into<String>) -> OAuthError {
    OAuthError {
        error: "invalid_client",
        description: description.into(),
        status: 401,
    }
}

fn invalid_grant(description: impl Into<String>) -> OAuthError {
    OAuthError {
        error: "invalid_grant",
        description: description.into(),
        status: 400,
    }
}

pub fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError {
        error: "invalid_request",
        description: description.into(),
        status: 400,
    }
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    jti: Option<String>,
}

/// The token request's fields (form-encoded).
pub struct TokenRequest<'a> {
    pub grant_type: Option<&'a str>,
    pub assertion_type: Option<&'a str>,
    pub assertion: Option<&'a str>,
    pub scope: Option<&'a str>,
}

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client id (`iss`) and key id an assertion names, unverified: only
/// to find where the client's keys are.
pub fn peek(assertion: &str) -> Option<(String, Option<String>)> {
    let header = jsonwebtoken::decode_header(assertion).ok()?;
    let claims: AssertionClaims = jsonwebtoken::dangerous::insecure_decode(assertion)
        .ok()?
        .claims;
    Some((claims.iss, header.kid))
}

/// An assertion refused because the client's published keys could not be
/// fetched.
pub fn unusable_keys(why: String) -> OAuthError {
    invalid_client(format!("the client's JWKS could not be used: {why}"))
}

/// The token endpoint: checks the client assertion and issues an access
/// token for the requested scopes the client is registered for.
/// `token_url` is this endpoint's URL (the assertion's required `aud`);
/// `fetched_jwks` the client's keys when it publishes them at a URL.
pub fn issue(
    store: &Store,
    key: &ServerKey,
    req: &TokenRequest,
    token_url: &str,
    lifetime: i64,
    fetched_jwks: Option<&str>,
) -> Result<Issued, OAuthError> {
    match req.grant_type {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(OAuthError {
                error: "unsupported_grant_type",
                description: format!(
                    "grant_type '{other}' is not supported; use client_credentials"
                ),
                status: 400,
            })
        }
        None => return Err(invalid_request("grant_type is missing")),
    }
    if req.assertion_type != Some(ASSERTION_TYPE) {
        return Err(invalid_request(format!(
            "client_assertion_type must be {ASSERTION_TYPE}"
        )));
    }
    let assertion = req
        .assertion
        .ok_or_else(|| invalid_request("client_assertion is missing"))?;
    let requested = Scopes::parse(req.scope.unwrap_or_default()).map_err(|e| OAuthError {
        error: "invalid_scope",
        description: e,
        status: 400,
    })?;
    if requested.is_empty() {
        return Err(OAuthError {
            error: "invalid_scope",
            description: "scope is missing: ask for the system/ scopes you need".into(),
            status: 400,
        });
    }
    let client = check_assertion(store, assertion, token_url, fetched_jwks)?;
    let registered = Scopes::parse(&client.scopes)
        .map_err(|e| invalid_client(format!("the client's registered scopes are unusable: {e}")))?;
    let granted = registered.grant(&requested);
    if granted.is_empty() {
        return Err(OAuthError {
            error: "invalid_scope",
            description: format!(
                "none of the requested scopes is registered for client '{}'",
                client.id
            ),
            status: 400,
        });
    }
    let now = now();
    let claims = AccessClaims {
        iss: token_url.to_string(),
        sub: client.id.clone(),
        exp: now + lifetime,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: granted.to_string(),
        organization: client.organization.clone(),
        role: client.role.clone(),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    let access_token =
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| OAuthError {
            error: "server_error",
            description: format!("could not sign the access token: {e}"),
            status: 500,
        })?;
    Ok(Issued {
        access_token,
        expires_in: lifetime,
        scope: claims.scope,
    })
}

/// The client an assertion authenticates, after every check SMART asks
/// for: a registered, enabled client; a key of its JWKS named by `kid`;
/// an allowed algorithm that matches the key; `iss` = `sub` = client id;
/// `aud` = the token endpoint; `exp` present and at most five minutes
/// ahead; a `jti` not used before.
fn check_assertion(
    store: &Store,
    assertion: &str,
    token_url: &str,
    fetched_jwks: Option<&str>,
) -> Result<ClientRow, OAuthError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| invalid_client(format!("client_assertion is not a signed JWT: {e}")))?;
    if !ASSERTION_ALGORITHMS.contains(&header.alg) {
        return Err(invalid_client(format!(
            "client_assertion is signed with {:?}; allowed: RS384, ES384, RS512",
            header.alg
        )));
    }
    // The client id comes from the unverified claims only to find the key;
    // nothing is trusted until the signature is checked with that key.
    let unverified: AssertionClaims = jsonwebtoken::dangerous::insecure_decode(assertion)
        .map(|d| d.claims)
        .map_err(|e| invalid_client(format!("client_assertion claims are unreadable: {e}")))?;
    let client = store
        .client(&unverified.iss)
        .map_err(|e| OAuthError {
            error: "server_error",
            description: e,
            status: 500,
        })?
        .ok_or_else(|| invalid_client(format!("client '{}' is not registered", unverified.iss)))?;
    if client.disabled {
        return Err(invalid_client(format!(
            "client '{}' is disabled",
            client.id
        )));
    }
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| invalid_client("client_assertion has no kid header"))?;
    let jwks_text = match (&client.jwks_url, fetched_jwks) {
        (Some(_), Some(fetched)) => fetched,
        (Some(_), None) => return Err(unusable_keys("they were not fetched".into())),
        (None, _) => client.jwks.as_str(),
    };
    let jwks: JwkSet = serde_json::from_str(jwks_text)
        .map_err(|e| invalid_client(format!("the client's registered JWKS is unusable: {e}")))?;
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| invalid_client(format!("kid '{kid}' is not in the client's JWKS")))?;
    let key_fits = match (&jwk.algorithm, header.alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS384 | Algorithm::RS512) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == jsonwebtoken::jwk::EllipticCurve::P384
        }
        _ => false,
    };
    if !key_fits {
        return Err(invalid_client(format!(
            "key '{kid}' cannot verify a {:?} signature",
            header.alg
        )));
    }
    let decoding = DecodingKey::from_jwk(jwk)
        .map_err(|e| invalid_client(format!("key '{kid}' is unusable: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[&client.id]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = LEEWAY;
    let claims: AssertionClaims = jsonwebtoken::decode(assertion, &decoding, &validation)
        .map(|d| d.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => invalid_grant("client_assertion has expired"),
                K::InvalidAudience => {
                    invalid_client(format!("client_assertion aud must be {token_url}"))
                }
                K::InvalidIssuer => invalid_client("client_assertion iss must be the client id"),
                K::InvalidSignature => invalid_client("client_assertion signature does not verify"),
                K::MissingRequiredClaim(c) => {
                    invalid_client(format!("client_assertion has no {c} claim"))
                }
                _ => invalid_client(format!("client_assertion is not valid: {e}")),
            }
        })?;
    if claims.sub != client.id {
        return Err(invalid_client("client_assertion sub must be the client id"));
    }
    let now = now();
    if claims.exp > now + MAX_ASSERTION_LIFETIME + LEEWAY as i64 {
        return Err(invalid_grant(
            "client_assertion exp is more than five minutes ahead",
        ));
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 255)
        .ok_or_else(|| invalid_client("client_assertion has no jti claim"))?;
    let fresh = store
        .use_jti(&client.id, &jti, claims.exp + LEEWAY as i64, now)
        .map_err(|e| OAuthError {
            error: "server_error",
            description: e,
            status: 500,
        })?;
    if !fresh {
        return Err(invalid_grant("client_assertion jti has been used before"));
    }
    Ok(client)
}

/// Why an access token was refused (401).
pub fn verify_access(key: &ServerKey, token: &str) -> Result<Principal, String> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 0;
    let claims: AccessClaims = jsonwebtoken::decode(token, &key.decoding, &validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                "the access token has expired".to_string()
            }
            _ => "the access token is not one this server issued".to_string(),
        })?;
    Ok(Principal {
        client_id: claims.sub,
        organization: claims.organization,
        role: Role::parse(&claims.role).map_err(|e| format!("the access token {e}"))?,
        scopes: Scopes::parse(&claims.scope)
            .map_err(|e| format!("the access token has a bad {e}"))?,
        request: None,
    })
}

/// Checks a JWKS offered at registration: public RSA or P-384 keys, each
/// with a `kid`, no private parts, no shared secrets.
pub fn check_jwks(text: &str) -> Result<(), String> {
    let raw: Value =
        serde_json::from_str(text).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys = raw["keys"]
        .as_array()
        .filter(|k| !k.is_empty())
        .ok_or("the JWKS has no keys array")?;
    for (i, k) in keys.iter().enumerate() {
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|f| k.get(f).is_some())
        {
            return Err(format!(
                "key {i} holds private or secret material; register public keys only"
            ));
        }
        if !k["kid"].is_string() {
            return Err(format!("key {i} has no kid"));
        }
        match (k["kty"].as_str(), k["crv"].as_str()) {
            (Some("RSA"), _) | (Some("EC"), Some("P-384")) => {}
            _ => {
                return Err(format!(
                    "key {i} must be an RSA or an EC P-384 key (RS384, RS512, ES384)"
                ))
            }
        }
    }
    let set: JwkSet =
        serde_json::from_value(raw).map_err(|e| format!("the JWKS is not valid: {e}"))?;
    for jwk in &set.keys {
        DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("key {:?} is unusable: {e}", jwk.common.key_id))?;
    }
    Ok(())
}
