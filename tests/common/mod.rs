//! Black-box harness: starts the real `sp-hub` binary on a fresh database and
//! talks to it over HTTP. Every test file does `mod common;` and writes its
//! tests with `both! { ... }` so each one runs on SQLite and on PostgreSQL.
//!
//! Each test file compiles this module separately and uses only part of it.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tokio::process::Command;

pub const FHIR_JSON: &str = "application/fhir+json";
pub const FHIR_XML: &str = "application/fhir+xml";
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const FORM: &str = "application/x-www-form-urlencoded";

pub const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const REFERRAL_ID: &str = "https://fhir.example.org/sp-hub/referral-id";
pub const SNOMED: &str = "http://snomed.info/sct";
/// Our code systems (fhir-profiles/CodeSystem/): the SP referral profile
/// binds reasonCode to needs, the SP task profile businessStatus.
pub const SP_NEED: &str = "https://sp-hub.example/fhir/CodeSystem/sp-need";
pub const SP_BUSINESS_STATUS: &str = "https://sp-hub.example/fhir/CodeSystem/sp-business-status";
pub const SP_STATUS_REASON: &str = "https://sp-hub.example/fhir/CodeSystem/sp-status-reason";
pub const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs each listed test once per backend. The tests are plain
/// `async fn name(s: Server)`: each gets a freshly started server on an
/// empty database.
///
/// ```ignore
/// async fn read_returns_200(s: Server) { ... }
/// both!(read_returns_200);
/// ```
///
/// The generated tests are named `<name>::sqlite` and `<name>::postgres`.
/// A test missing from the list is dead code, which clippy refuses.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let s = $crate::common::Server::start($crate::common::Backend::Sqlite).await;
                    super::$name(s).await
                }
                #[tokio::test]
                async fn postgres() {
                    let s = $crate::common::Server::start($crate::common::Backend::Postgres).await;
                    super::$name(s).await
                }
            }
        )*
    };
}

/// As `both!`, for tests `async fn name(b: Backend)` that start their own
/// server(s), e.g. with extra arguments.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sp-hub")
}

/// A fresh, empty database for one server, and the directory that holds
/// its files (the SQLite file, the server's stderr log).
pub struct Database {
    pub url: String,
    pub dir: tempfile::TempDir,
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

/// Replaces the database name (the URL path) of a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let (head, tail) = url.split_at(scheme_end);
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    let authority_end = tail.find(['/', '?']).unwrap_or(tail.len());
    format!("{head}{}/{name}{query}", &tail[..authority_end])
}

impl Database {
    pub async fn fresh(backend: Backend) -> Database {
        let dir = tempfile::Builder::new()
            .prefix("sp-hub-test-")
            .tempdir()
            .expect("create temp dir");
        let url = match backend {
            Backend::Sqlite => dir.path().join("test.db").to_string_lossy().into_owned(),
            Backend::Postgres => {
                let admin = std::env::var("SP_HUB_TEST_PG_URL").unwrap_or_else(|_| {
                    panic!(
                        "SP_HUB_TEST_PG_URL is not set: the PostgreSQL half of the suite needs \
                         a server. Run the tests with tests/run.sh (it starts a throwaway \
                         PostgreSQL cluster), or export SP_HUB_TEST_PG_URL=postgres://user@host:port/db \
                         and put createdb on PATH."
                    )
                });
                let name = format!("sp_hub_t_{}", unique_suffix());
                let out = Command::new("createdb")
                    .arg(format!("--maintenance-db={admin}"))
                    .arg(&name)
                    .output()
                    .await
                    .unwrap_or_else(|e| {
                        panic!("could not run createdb (is it on PATH? use tests/run.sh): {e}")
                    });
                assert!(
                    out.status.success(),
                    "createdb {name} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                with_database(&admin, &name)
            }
        };
        Database { url, dir }
    }
}

/// A running `sp-hub serve` on its own database, and a client that calls
/// it with an access token (by default an admin client's, registered on
/// the fresh database before the server starts). Killed (and reaped) when
/// the last handle is dropped; if a test panicked, the server's stderr is
/// printed.
pub struct Server {
    pub base: String,
    /// Sends the token in `Authorization` on every request.
    pub client: reqwest::Client,
    /// The access token `client` sends.
    pub token: String,
    pub backend: Backend,
    pub database_url: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    proc: std::sync::Arc<Proc>,
    // Declared last: the directory outlives the process that writes in it.
    dir: std::sync::Arc<tempfile::TempDir>,
}

/// The server process; shared by every handle on it.
struct Proc {
    child: std::sync::Mutex<Option<Child>>,
    log: PathBuf,
    backend: Backend,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- sp-hub ({:?}, {}) stderr ----\n{}",
                self.backend,
                self.base,
                read_log(&self.log)
            );
        }
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The admin client every test server has.
pub const ADMIN_CLIENT: &str = "test-admin";
pub const ADMIN_ORG: &str = "Organization/hub-operator";

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Server::start_with(backend, &[], &[]).await
    }

    /// Starts a server with extra `serve` arguments (e.g. `--max-body-bytes`)
    /// and extra environment variables.
    pub async fn start_with(backend: Backend, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let db = Database::fresh(backend).await;
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        // A test may name its own database URL (e.g. the sqlite:// form).
        let url = args
            .iter()
            .position(|a| a == "--database-url")
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| db.url.clone());
        let dir = std::sync::Arc::new(db.dir);
        let admin = TestClient::new(ADMIN_CLIENT);
        admin
            .register(&url, dir.path(), ADMIN_ORG, "admin", "system/*.*")
            .await;
        let mut s = Server::spawn(
            backend,
            db.url,
            dir,
            args,
            envs.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .await;
        let token = s.token_for(&admin, "system/*.*").await;
        s = s.with_token(&token);
        s
    }

    /// Another handle on the same server whose requests carry `token`.
    pub fn with_token(&self, token: &str) -> Server {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .expect("token fits a header"),
        );
        Server {
            base: self.base.clone(),
            client: http_client(headers),
            token: token.to_string(),
            backend: self.backend,
            database_url: self.database_url.clone(),
            args: self.args.clone(),
            envs: self.envs.clone(),
            proc: self.proc.clone(),
            dir: self.dir.clone(),
        }
    }

    /// A handle whose requests carry no token.
    pub fn anonymous(&self) -> Server {
        Server {
            client: http_client(HeaderMap::new()),
            token: String::new(),
            ..self.with_token("")
        }
    }

    /// Registers a client on this server's database (the `sp-hub client
    /// add` command) with a fresh ES384 key.
    pub async fn register(
        &self,
        id: &str,
        organization: &str,
        role: &str,
        scope: &str,
    ) -> TestClient {
        let c = TestClient::new(id);
        c.register(
            &self.database_url,
            self.dir.path(),
            organization,
            role,
            scope,
        )
        .await;
        c
    }

    /// The token endpoint's URL (the `aud` of client assertions).
    pub fn token_url(&self) -> String {
        self.url("/auth/token")
    }

    /// Asks the token endpoint for a token; returns the status and the
    /// JSON body.
    pub async fn request_token(&self, assertion: &str, scope: &str) -> (u16, Value) {
        let form = format!(
            "grant_type=client_credentials&client_assertion_type={}&client_assertion={}&scope={}",
            enc("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            enc(assertion),
            enc(scope)
        );
        let resp = self
            .send(
                self.client
                    .post(self.token_url())
                    .header(CONTENT_TYPE, FORM)
                    .body(form),
            )
            .await;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("token response is not JSON ({e}): {body}"));
        (status, v)
    }

    /// An access token for `client` with `scope`; panics unless granted.
    pub async fn token_for(&self, client: &TestClient, scope: &str) -> String {
        let (status, body) = self
            .request_token(&client.assertion(&self.token_url()), scope)
            .await;
        assert_eq!(
            status, 200,
            "token request for {} refused: {body}",
            client.id
        );
        body["access_token"].as_str().unwrap().to_string()
    }

    /// A handle on this server acting as a newly registered client.
    pub async fn as_new_client(
        &self,
        id: &str,
        organization: &str,
        role: &str,
        scope: &str,
    ) -> Server {
        let c = self.register(id, organization, role, scope).await;
        let token = self.token_for(&c, scope).await;
        self.with_token(&token)
    }

    async fn spawn(
        backend: Backend,
        database_url: String,
        dir: std::sync::Arc<tempfile::TempDir>,
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Server {
        let log = dir.path().join(format!("server-{}.log", unique_suffix()));
        let stderr = std::fs::File::create(&log).expect("create server log");
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0");
        if !args.iter().any(|a| a == "--database-url") {
            cmd.arg("--database-url").arg(&database_url);
        }
        cmd.args(&args)
            .env_remove("SP_HUB_LISTEN")
            .env_remove("SP_HUB_DATABASE_URL")
            .env_remove("SP_HUB_MAX_BODY_BYTES")
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin()));
        // A thread reads stdout: the first line goes to us, the rest is
        // drained so a stray print can never block or kill the server.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines.by_ref() {}
        });
        let first = tokio::task::spawn_blocking(move || rx.recv_timeout(STARTUP_TIMEOUT))
            .await
            .unwrap();
        let line = match first {
            Ok(Some(line)) => line,
            Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let mut status = None;
                for _ in 0..50 {
                    status = child.try_wait().ok().flatten();
                    if status.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sp-hub exited before printing its address (status {status:?}); stderr:\n{}",
                    read_log(&log)
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sp-hub printed nothing on stdout within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    read_log(&log)
                );
            }
        };
        let base = line
            .strip_prefix("sp-hub listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"))
            .trim()
            .trim_end_matches('/')
            .to_string();
        assert!(
            base.starts_with("http://127.0.0.1:"),
            "listening line should name http://127.0.0.1:PORT, got {line:?}"
        );
        Server {
            base: base.clone(),
            client: http_client(HeaderMap::new()),
            token: String::new(),
            backend,
            database_url,
            args,
            envs,
            proc: std::sync::Arc::new(Proc {
                child: std::sync::Mutex::new(Some(child)),
                log,
                backend,
                base,
            }),
            dir,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.proc
            .child
            .lock()
            .unwrap()
            .as_ref()
            .expect("running")
            .id()
    }

    /// Waits up to `timeout` for the server process to exit by itself.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self
                .proc
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// A server process on another, existing database (e.g. a restored
    /// backup of this one), called with this server's token.
    pub async fn serve_other(&self, database_url: &str) -> Server {
        let s = Server::spawn(
            self.backend,
            database_url.to_string(),
            self.dir.clone(),
            vec![],
            self.envs.clone(),
        )
        .await;
        s.with_token(&self.token)
    }

    /// A second server process on the same database (another replica),
    /// called with the same token.
    pub async fn replica(&self) -> Server {
        let s = Server::spawn(
            self.backend,
            self.database_url.clone(),
            self.dir.clone(),
            self.args.clone(),
            self.envs.clone(),
        )
        .await;
        s.with_token(&self.token)
    }

    /// Stops this server and starts a new one on the same database, with
    /// the same token.
    pub async fn restart(self) -> Server {
        if let Some(mut child) = self.proc.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let s = Server::spawn(
            self.backend,
            self.database_url.clone(),
            self.dir.clone(),
            self.args.clone(),
            self.envs.clone(),
        )
        .await;
        s.with_token(&self.token)
    }

    pub fn log(&self) -> String {
        read_log(&self.proc.log)
    }

    /// The server's working directory (`serve --demo` writes its demo
    /// clients' keys there).
    pub fn workdir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    /// The host:port the server listens on.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn send(&self, rb: RequestBuilder) -> Response {
        rb.send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e:?}\nserver stderr:\n{}", self.log()))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(self.req(Method::GET, path)).await
    }

    pub async fn get_accept(&self, path: &str, accept: &str) -> Response {
        self.send(self.req(Method::GET, path).header("Accept", accept))
            .await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(self.req(Method::DELETE, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.send_body(Method::POST, path, FHIR_JSON, body.to_string())
            .await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Response {
        self.send_body(Method::PUT, path, FHIR_JSON, body.to_string())
            .await
    }

    pub async fn patch_json(&self, path: &str, patch: &Value) -> Response {
        self.send_body(Method::PATCH, path, JSON_PATCH, patch.to_string())
            .await
    }

    pub async fn send_body(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.send(
            self.req(method, path)
                .header(CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    /// POSTs a resource, asserts 201, and returns the stored resource.
    pub async fn create(&self, resource: &Value) -> Value {
        let rt = resource["resourceType"]
            .as_str()
            .expect("resource has a resourceType");
        let resp = self.post_json(&format!("/{rt}"), resource).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "POST /{rt} should create; body: {body}"
        );
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("create response is not JSON ({e}): {body}"));
        assert_eq!(v["resourceType"], rt, "create returned {v}");
        assert!(v["id"].is_string(), "created resource has no id: {v}");
        v
    }

    /// PUTs a resource to /{type}/{id} (id taken from the body), expects 200 or 201.
    pub async fn update(&self, resource: &Value) -> Value {
        let rt = resource["resourceType"].as_str().unwrap();
        let id = resource["id"].as_str().expect("update needs an id");
        let resp = self.put_json(&format!("/{rt}/{id}"), resource).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status == StatusCode::OK || status == StatusCode::CREATED,
            "PUT /{rt}/{id} should succeed, got {status}: {body}"
        );
        serde_json::from_str(&body).unwrap()
    }

    /// GETs a path, asserts 200, returns the JSON body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} did not return JSON ({e}): {body}"))
    }

    /// GETs a resource and returns its status code only.
    pub async fn status_of(&self, path: &str) -> u16 {
        self.get(path).await.status().as_u16()
    }

    /// GETs a Bundle and returns its `total`.
    pub async fn total(&self, path: &str) -> u64 {
        let b = self.get_ok(path).await;
        b["total"]
            .as_u64()
            .unwrap_or_else(|| panic!("GET {path}: Bundle has no total: {b}"))
    }

    /// Number of versions in system history that the test's requests wrote:
    /// every write leaves one. The Provenance the server adds to each
    /// writing transaction is not counted (tests/provenance.rs checks it).
    pub async fn versions_written(&self) -> u64 {
        self.total("/_history").await - self.provenance_versions().await
    }

    /// Versions of the Provenance the server wrote (each is written once;
    /// they name their agent as the `author`, which test data does not).
    pub async fn provenance_versions(&self) -> u64 {
        self.total(&format!(
            "/Provenance?agent-type={}&_summary=count",
            enc("http://terminology.hl7.org/CodeSystem/provenance-participant-type|author")
        ))
        .await
    }

    /// Follows `next` links from `first_path`, returning every page.
    pub async fn all_pages(&self, first_path: &str) -> Vec<Value> {
        let mut pages = vec![];
        let mut next = Some(self.url(first_path));
        while let Some(url) = next {
            assert!(pages.len() < 1000, "paging does not end");
            let page = self.get_ok(&url).await;
            next = link(&page, "next").map(|u| self.url(&u));
            pages.push(page);
        }
        pages
    }

    /// Sends raw bytes over a new TCP connection and returns the status code
    /// (0 if none could be read) and the whole response text. For requests
    /// an HTTP client would refuse to send or would normalise.
    pub async fn raw(&self, request: Vec<u8>) -> (u16, String) {
        let addr = self.addr();
        let request = with_authorization(request, &self.token);
        tokio::task::spawn_blocking(move || raw_http(&addr, &request))
            .await
            .unwrap()
    }
}

/// Inserts `Authorization: Bearer <token>` after the request line.
fn with_authorization(request: Vec<u8>, token: &str) -> Vec<u8> {
    let Some(end) = request.windows(2).position(|w| w == b"\r\n") else {
        return request;
    };
    if token.is_empty() {
        return request;
    }
    let mut out = request[..end + 2].to_vec();
    out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    out.extend_from_slice(&request[end + 2..]);
    out
}

fn http_client(headers: HeaderMap) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
        .build()
        .expect("reqwest client")
}

/// A client of the token endpoint with its own ES384 key, generated here.
pub struct TestClient {
    pub id: String,
    pub kid: String,
    key: p384::ecdsa::SigningKey,
}

impl TestClient {
    pub fn new(id: &str) -> TestClient {
        TestClient {
            id: id.to_string(),
            kid: format!("{id}-key-1"),
            key: p384::ecdsa::SigningKey::random(&mut rand_core::OsRng),
        }
    }

    /// A client whose private key is in a PKCS#8 PEM file (as `serve
    /// --demo` writes them), with the kid convention `<id>-key-1`.
    pub fn from_pem_file(id: &str, path: &std::path::Path) -> TestClient {
        use p384::pkcs8::DecodePrivateKey as _;
        let pem = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        TestClient {
            id: id.to_string(),
            kid: format!("{id}-key-1"),
            key: p384::ecdsa::SigningKey::from_pkcs8_pem(&pem).expect("a P-384 PKCS#8 key"),
        }
    }

    /// The public JWKS registered for this client.
    pub fn jwks(&self) -> Value {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let point = self.key.verifying_key().to_encoded_point(false);
        json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": self.kid, "use": "sig", "alg": "ES384",
                         "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}]})
    }

    /// Runs `sp-hub client add` against `database_url`.
    pub async fn register(
        &self,
        database_url: &str,
        dir: &std::path::Path,
        organization: &str,
        role: &str,
        scope: &str,
    ) {
        let file = dir.join(format!("{}-{}.jwks.json", self.id, unique_suffix()));
        std::fs::write(&file, self.jwks().to_string()).unwrap();
        let out = Command::new(bin())
            .args([
                "client",
                "add",
                "--database-url",
                database_url,
                "--id",
                &self.id,
            ])
            .args([
                "--organization",
                organization,
                "--role",
                role,
                "--scope",
                scope,
            ])
            .arg("--jwks")
            .arg(&file)
            .env_remove("SP_HUB_DATABASE_URL")
            .output()
            .await
            .expect("run sp-hub client add");
        assert!(
            out.status.success(),
            "sp-hub client add {} failed: {}",
            self.id,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The claims of a valid assertion for `aud`, to be changed by tests.
    pub fn claims(&self, aud: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({"iss": self.id, "sub": self.id, "aud": aud, "exp": now + 240,
               "iat": now, "jti": uuid::Uuid::new_v4().to_string()})
    }

    /// A valid client assertion for the token endpoint at `aud`.
    pub fn assertion(&self, aud: &str) -> String {
        self.sign(&self.claims(aud))
    }

    /// Signs `claims` with this client's key (ES384, its kid).
    pub fn sign(&self, claims: &Value) -> String {
        use p384::pkcs8::EncodePrivateKey as _;
        let der = self.key.to_pkcs8_der().unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
        )
        .unwrap()
    }
}

fn raw_http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer (e.g. 413) and close before reading everything.
    let _ = stream.write_all(request);
    let _ = stream.flush();
    let mut buf = vec![];
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if response_complete(&buf) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// True once a response with a Content-Length has been read whole.
fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..head_end].to_ascii_lowercase();
    let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    else {
        return false;
    };
    buf.len() >= head_end + 4 + len
}

fn read_log(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    const KEEP: usize = 8000;
    if text.len() > KEEP {
        let mut cut = text.len() - KEEP;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        format!("...{}", &text[cut..])
    } else {
        text
    }
}

// ---------------------------------------------------------------- assertions

pub fn header(resp: &Response, name: &str) -> Option<String> {
    header_of(resp.headers(), name)
}

pub fn header_of(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

pub fn content_type(resp: &Response) -> String {
    header(resp, "content-type").unwrap_or_default()
}

/// Reads a response body as JSON, failing with the text if it is not.
pub async fn json(resp: Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.expect("read body");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"))
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("read body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"))
}

/// Asserts an error response: the status, `application/fhir+json`, and an
/// OperationOutcome whose first issue is an error with `code` and a
/// non-empty diagnostics. Returns the OperationOutcome.
pub async fn assert_outcome(resp: Response, status: u16, code: &str) -> Value {
    assert_outcome_any(resp, status, &[code]).await
}

/// As `assert_outcome`, accepting any of `codes` as issue[0].code.
pub async fn assert_outcome_any(resp: Response, status: u16, codes: &[&str]) -> Value {
    let got = resp.status().as_u16();
    let ct = content_type(&resp);
    let url = resp.url().to_string();
    let text = resp.text().await.expect("read body");
    assert_eq!(got, status, "{url}: expected HTTP {status}; body: {text}");
    assert!(
        ct.contains("application/fhir+json"),
        "{url}: error Content-Type should be application/fhir+json, got {ct:?}; body: {text}"
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: error body is not JSON ({e}): {text:?}"));
    assert_eq!(v["resourceType"], "OperationOutcome", "{url}: {v}");
    let issue = &v["issue"][0];
    assert_eq!(issue["severity"], "error", "{url}: {v}");
    let code = issue["code"].as_str().unwrap_or("");
    assert!(
        codes.contains(&code),
        "{url}: issue[0].code should be one of {codes:?}, got {code:?}: {v}"
    );
    assert!(
        issue["diagnostics"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty()),
        "{url}: issue[0].diagnostics should be a non-empty message: {v}"
    );
    v
}

/// issue[0].expression[0] of an OperationOutcome.
pub fn expression(outcome: &Value) -> Option<&str> {
    outcome["issue"][0]["expression"][0].as_str()
}

pub fn diagnostics(outcome: &Value) -> &str {
    outcome["issue"][0]["diagnostics"].as_str().unwrap_or("")
}

pub fn etag(resp: &Response) -> String {
    header(resp, "etag").unwrap_or_else(|| panic!("{}: no ETag header", resp.url()))
}

/// The URL of a Bundle link with the given relation.
pub fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"].as_array()?.iter().find_map(|l| {
        (l["relation"] == relation)
            .then(|| l["url"].as_str().map(String::from))
            .flatten()
    })
}

pub fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"].as_array().cloned().unwrap_or_default()
}

/// Ids of the resources in a Bundle's entries, in order.
pub fn entry_ids(bundle: &Value) -> Vec<String> {
    entries(bundle)
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
        .collect()
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn has_subsetted_tag(resource: &Value) -> bool {
    resource["meta"]["tag"].as_array().is_some_and(|tags| {
        tags.iter()
            .any(|t| t["code"] == "SUBSETTED" && t["system"] == SUBSETTED_SYSTEM)
    })
}

/// True for a server-assigned id: a UUID in its hyphenated form.
pub fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Percent-encodes a query-parameter value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses an RFC 7231 IMF-fixdate ("Tue, 15 Nov 1994 08:12:31 GMT") into
/// "1994-11-15T08:12:31".
pub fn http_date_to_iso(date: &str) -> Option<String> {
    let rest = date.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    if parts.len() != 5 || parts[4] != "GMT" {
        return None;
    }
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == parts[1])? + 1;
    let day: u32 = parts[0].parse().ok()?;
    let year: u32 = parts[2].parse().ok()?;
    if parts[3].len() != 8 {
        return None;
    }
    Some(format!("{year:04}-{month:02}-{day:02}T{}", parts[3]))
}

// ---------------------------------------------------------------- fixtures

/// A patient referred for social prescribing, with an NHS number.
pub fn patient(nhs_number: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": NHS_NUMBER, "value": nhs_number}],
        "active": true,
        "name": [{"use": "official", "family": "Okafor", "given": ["Grace", "Adaeze"]}],
        "telecom": [{"system": "phone", "value": "07700 900123", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1948-03-14",
        "address": [{"line": ["12 Mill Lane"], "city": "Leeds", "postalCode": "LS6 2AB"}],
        "maritalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
            "code": "W", "display": "Widowed"}]},
        "photo": [{"contentType": "image/png", "data": "iVBORw0KGgo="}],
        "contact": [{
            "relationship": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
            "name": {"family": "Okafor", "given": ["Chidi"]},
            "telecom": [{"system": "phone", "value": "07700 900456"}]
        }],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-GB"}]}}]
    })
}

/// A referral from a GP practice to a social prescribing service.
pub fn service_request(patient_id: &str, referral_id: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "text": {
            "status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Referral to social prescribing service</div>"
        },
        "identifier": [{"system": REFERRAL_ID, "value": referral_id}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": "306206005",
                                  "display": "Referral to service"}]}],
        "priority": "routine",
        "code": {"coding": [{"system": SNOMED, "code": "871731000000106",
                             "display": "Referral to social prescribing service"}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "authoredOn": "2024-05-01T09:30:00+01:00",
        "requester": {"display": "Dr Amara Shah, Chapel Allerton Medical Centre"},
        "reasonCode": [{"coding": [{"system": SP_NEED, "code": "bereavement"}],
                        "text": "Social isolation and low mood since bereavement"}],
        "note": [{"text": "Would like to join a walking group; prefers morning contact."}]
    })
}

/// The social prescribing service's task to fulfil a referral.
pub fn task(service_request_id: &str, patient_id: &str) -> Value {
    json!({
        "resourceType": "Task",
        "identifier": [{"system": REFERRAL_ID, "value": format!("task-{service_request_id}")}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "focus": {"reference": format!("ServiceRequest/{service_request_id}")},
        "for": {"reference": format!("Patient/{patient_id}")},
        "authoredOn": "2024-05-01T09:31:00+01:00",
        "requester": {"display": "Chapel Allerton Medical Centre"},
        "owner": {"display": "Leeds Community Connectors"},
        "businessStatus": {"coding": [{"system": SP_BUSINESS_STATUS, "code": "awaiting-contact"}],
                           "text": "Awaiting triage"}
    })
}

/// One minimal, valid body for each of the resource types the hub uses.
pub fn hub_resources() -> Vec<Value> {
    let pat = json!({"reference": "Patient/example"});
    vec![
        service_request("example", "REF-ALL-1"),
        task("example", "example"),
        patient("9000000009"),
        json!({"resourceType": "Practitioner",
               "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "555086689106"}],
               "name": [{"family": "Shah", "given": ["Amara"], "prefix": ["Dr"]}]}),
        json!({"resourceType": "PractitionerRole", "active": true,
               "practitioner": {"reference": "Practitioner/example"},
               "organization": {"reference": "Organization/example"},
               "code": [{"text": "Social prescribing link worker"}]}),
        json!({"resourceType": "Organization",
               "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86030"}],
               "name": "Chapel Allerton Medical Centre", "active": true}),
        json!({"resourceType": "CareTeam", "status": "active", "name": "Community connectors",
               "subject": pat}),
        json!({"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": pat}),
        json!({"resourceType": "Communication", "status": "completed", "subject": pat,
               "payload": [{"contentString": "Left voicemail to arrange first meeting"}]}),
        json!({"resourceType": "Encounter", "status": "finished",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
               "subject": pat}),
        json!({"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "93025-5"}],
                        "text": "Loneliness score"},
               "subject": pat, "valueInteger": 6}),
        json!({"resourceType": "Questionnaire", "status": "active", "name": "WellbeingCheck",
               "item": [{"linkId": "1", "text": "How often do you feel lonely?", "type": "choice"}]}),
        json!({"resourceType": "QuestionnaireResponse", "status": "completed",
               "questionnaire": "https://fhir.example.org/Questionnaire/wellbeing", "subject": pat,
               "item": [{"linkId": "1", "answer": [{"valueString": "Often"}]}]}),
        json!({"resourceType": "Provenance", "recorded": "2024-05-01T09:30:00Z",
               "target": [{"reference": "ServiceRequest/example"}],
               "agent": [{"who": {"display": "Dr Amara Shah"}}]}),
        json!({"resourceType": "AuditEvent",
               "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
               "recorded": "2024-05-01T09:30:00Z",
               "agent": [{"requestor": true, "who": {"display": "sp-hub"}}],
               "source": {"observer": {"display": "sp-hub"}}}),
        json!({"resourceType": "Subscription", "status": "requested",
               "reason": "Notify the service of new referrals", "criteria": "ServiceRequest?status=active",
               // A public address (no name to look up); the hub keeps the
               // signing secret out of the stored resource.
               "channel": {"type": "rest-hook", "endpoint": "https://8.8.8.8/notify"},
               "extension": [{"url": "https://sp-hub.example/fhir/StructureDefinition/sp-subscription-secret",
                              "valueString": "a-signing-secret-of-32-characters-or-more"}]}),
        json!({"resourceType": "ValueSet", "status": "active", "url": "https://fhir.example.org/ValueSet/sp-reasons",
               "compose": {"include": [{"system": SNOMED, "concept": [{"code": "422650009"}]}]}}),
        json!({"resourceType": "CodeSystem", "status": "active", "content": "complete",
               "url": "https://fhir.example.org/CodeSystem/sp-outcome",
               "concept": [{"code": "engaged", "display": "Engaged with service"}]}),
        json!({"resourceType": "ConceptMap", "status": "draft",
               "url": "https://fhir.example.org/ConceptMap/sp-outcome"}),
        json!({"resourceType": "StructureDefinition", "status": "draft",
               "url": "https://fhir.example.org/StructureDefinition/SPReferral", "name": "SPReferral",
               "kind": "resource", "abstract": false, "type": "ServiceRequest"}),
        json!({"resourceType": "SearchParameter", "status": "active",
               "url": "https://fhir.example.org/SearchParameter/task-focus", "name": "focus",
               "code": "focus", "base": ["Task"], "type": "reference",
               "description": "The resource the task is about", "expression": "Task.focus"}),
    ]
}

/// Removes server-managed parts (id, meta) to compare content.
pub fn content(resource: &Value) -> Value {
    let mut v = resource.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("meta");
    }
    v
}
