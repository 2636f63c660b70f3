//! A bench client's key and access token: an ES384 key made at run time,
//! its JWKS for `sp-hub client add`, and a token by SMART backend services
//! (a signed client assertion). Shared with the load benchmark in `bench/`,
//! which includes this file by path.

use serde_json::{json, Value};

/// The public half of `key` as a JWKS, naming it `kid`.
pub fn jwks(kid: &str, key: &p384::ecdsa::SigningKey) -> Result<String, String> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let point = key.verifying_key().to_encoded_point(false);
    Ok(
        json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": kid, "use": "sig", "alg": "ES384",
        "x": b64(point.x().ok_or("no x")?), "y": b64(point.y().ok_or("no y")?)}]})
        .to_string(),
    )
}

/// An access token for `scope` from the server at `base`, for `client`
/// whose registered key `kid` is `key`.
pub async fn request_token(
    http: &reqwest::Client,
    base: &str,
    client: &str,
    kid: &str,
    key: &p384::ecdsa::SigningKey,
    scope: &str,
) -> Result<String, String> {
    use p384::pkcs8::EncodePrivateKey as _;
    let aud = format!("{base}/auth/token");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = json!({"iss": client, "sub": client, "aud": aud, "exp": now + 240,
        "iat": now, "jti": uuid::Uuid::new_v4().to_string()});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(kid.to_string());
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let assertion = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", scope),
        ])
        .finish();
    let v: Value = http
        .post(&aud)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    v["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("no token: {v}"))
}
