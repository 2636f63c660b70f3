//! Who is calling and what they may do: SMART backend-services tokens
//! (`token`), their scopes (`scopes`), and the check of one request
//! against them (`Principal::permits`), used by the HTTP layer for every
//! request and by Bundle processing for every entry.

pub mod access;
pub mod jwks_url;
pub mod scopes;
pub mod token;

use crate::fhir::outcome::{FhirError, FhirResult};
use scopes::{Allowed, Perms, Scopes};

/// The organisation-level roles of the hub (DESIGN.md, "who sees what").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A GP practice's system: refers, and hears back.
    Gp,
    /// A voluntary and community sector organisation: works its Tasks.
    Vcs,
    /// A Primary Care Network: its practices' and link workers' trails.
    Pcn,
    /// Operates the hub: everything.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "gp" => Ok(Role::Gp),
            "vcs" => Ok(Role::Vcs),
            "pcn" => Ok(Role::Pcn),
            "admin" => Ok(Role::Admin),
            other => Err(format!("role '{other}' is not one of gp, vcs, pcn, admin")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gp => "gp",
            Role::Vcs => "vcs",
            Role::Pcn => "pcn",
            Role::Admin => "admin",
        }
    }
}

/// Where a client's public keys are: given at registration, or published
/// at a URL the hub fetches (`auth::jwks_url`).
pub enum Keys<'a> {
    Jwks(&'a str),
    Url(&'a str),
}

/// A checked registration: the id is usable, the organisation is a
/// reference, the role and scopes parse, the JWKS holds public keys of the
/// allowed kinds only (or the URL is one the hub could fetch).
pub fn registration(
    id: &str,
    organization: &str,
    role: &str,
    scope: &str,
    keys: Keys,
) -> Result<crate::store::ClientRow, String> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the client id must be 1-128 visible ASCII characters".into());
    }
    let org_id = organization
        .strip_prefix("Organization/")
        .filter(|i| crate::fhir::resource::check_id(i).is_ok())
        .ok_or_else(|| format!("organization '{organization}' is not Organization/ID"))?;
    let role = Role::parse(role)?;
    let scopes = Scopes::parse(scope)?;
    if scopes.is_empty() {
        return Err("a client needs at least one scope".into());
    }
    let (jwks, jwks_url) = match keys {
        Keys::Jwks(jwks) => {
            token::check_jwks(jwks)?;
            (jwks.to_string(), None)
        }
        Keys::Url(url) => {
            jwks_url::check_url(url, true)?;
            (String::new(), Some(url.to_string()))
        }
    };
    Ok(crate::store::ClientRow {
        id: id.to_string(),
        organization: format!("Organization/{org_id}"),
        role: role.as_str().to_string(),
        scopes: scopes.to_string(),
        jwks,
        disabled: false,
        created: crate::fhir::instant::now(),
        jwks_url,
    })
}

/// The caller of one request, from its access token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub client_id: String,
    /// `Organization/ID`.
    pub organization: String,
    pub role: Role,
    pub scopes: Scopes,
    /// The request being served, for its audit record (none for the hub's
    /// own work).
    pub request: Option<std::sync::Arc<crate::audit::Request>>,
}

/// What a request needs before it may run.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// Served to anyone: capability, discovery, probes, the token endpoint.
    Open,
    /// Any valid token; the parts are checked on their own (Bundle entries).
    Token,
    /// A permission on one resource type.
    Type(String, Perms),
    /// A permission on every type (system-wide history).
    AllTypes(Perms),
    /// An admin client (the audit trail).
    Admin,
}

/// Paths served without a token.
pub const OPEN_PATHS: &[&str] = &[
    "/metadata",
    "/healthz",
    "/readyz",
    "/metrics",
    "/.well-known/smart-configuration",
    "/auth/token",
    "/auth/jwks",
    "/dashboard",
    "/dashboard/app.js",
];

/// The need of a request, from its method and path (the FHIR REST URL
/// grammar of http.html; the path is relative to the base, without query).
pub fn need(method: &str, path: &str) -> Need {
    if OPEN_PATHS.contains(&path) {
        return Need::Open;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ty = |t: &str, p: Perms| Need::Type(t.to_string(), p);
    match (method, segments.as_slice()) {
        (_, [""]) => Need::Token,
        ("GET", ["_history"]) => Need::AllTypes(Perms::SEARCH),
        ("GET", ["$audit"]) => Need::Admin,
        // Bulk export: the kick-off checks each type against the scopes
        // itself; a job's status is its client's alone; a file needs its
        // type readable.
        ("GET", ["$export"]) => Need::Token,
        ("GET" | "DELETE", ["$export-status", _]) => Need::Token,
        ("GET", ["$export-file", _, t]) => ty(t, Perms::READ),
        // Translating reads a map; before `[t, _]`, which would take
        // `$translate` for an id.
        ("GET" | "POST", ["ConceptMap", "$translate"]) => ty("ConceptMap", Perms::READ),
        ("GET" | "HEAD", [t]) => ty(t, Perms::SEARCH),
        ("POST", [t]) => ty(t, Perms::CREATE),
        ("PUT", [t]) => ty(t, Perms::UPDATE),
        ("DELETE", [t]) => ty(t, Perms::DELETE),
        // Its parameters are in the body: the search checks them itself.
        ("POST", [_, "_search"]) => Need::Token,
        ("GET", [t, "_history"]) => ty(t, Perms::SEARCH),
        // Validating reads nothing stored but says what would be accepted.
        ("POST", [t, "$validate"]) => ty(t, Perms::READ),
        // The dashboard counts referrals and their trails: a search of
        // referrals; before `[t, _]`, which would take `dashboard` as a type.
        ("GET", ["dashboard", "metrics"]) => ty("ServiceRequest", Perms::SEARCH),
        ("GET" | "HEAD", [t, _]) => ty(t, Perms::READ),
        ("PUT" | "PATCH", [t, _]) => ty(t, Perms::UPDATE),
        ("DELETE", [t, _]) => ty(t, Perms::DELETE),
        (_, [t, _, "$validate" | "$trail" | "$export" | "_history"]) => ty(t, Perms::READ),
        (_, [t, _, "_history", _]) => ty(t, Perms::READ),
        ("GET" | "POST", ["ConceptMap", _, "$translate"]) => ty("ConceptMap", Perms::READ),
        // A VCS's flat records: reading lists its Tasks; posting rows
        // updates them (each row's other writes are checked by type).
        ("GET", ["Organization", _, "$records"]) => ty("Task", Perms::SEARCH),
        ("POST", ["Organization", _, "$records"]) => ty("Task", Perms::UPDATE),
        // Anything else is refused by routing; a token is still required so
        // that unauthenticated callers learn nothing about the routes.
        _ => Need::Token,
    }
}

impl Principal {
    /// Whether the token's scopes allow `need`. `query` is the request's
    /// search parameters: a scope limited to `param=value` allows a search
    /// that carries those parameters (SMART v2 constraints), and nothing
    /// else — reads and writes need an unconstrained scope.
    pub fn permits(&self, need: &Need, query: &[(String, String)]) -> FhirResult<()> {
        let (res_type, perm) = match need {
            Need::Open | Need::Token => return Ok(()),
            Need::Admin if self.role == Role::Admin => return Ok(()),
            Need::Admin => {
                return Err(FhirError::Forbidden(
                    "this request is for admin clients".into(),
                ))
            }
            Need::AllTypes(p) => {
                return if self.scopes.allows_all_types(*p) {
                    Ok(())
                } else {
                    Err(FhirError::Forbidden(format!(
                        "this request needs scope system/*.{} (every resource type)",
                        p.letter()
                    )))
                }
            }
            Need::Type(t, p) => (t, *p),
        };
        // An unknown type is answered 404 by the handler.
        if !crate::interactions::is_supported_type(res_type) {
            return Ok(());
        }
        match self.scopes.allows(res_type, perm) {
            Allowed::All => Ok(()),
            Allowed::Only(constraints) if perm == Perms::SEARCH => {
                if constraints
                    .iter()
                    .any(|c| c.iter().all(|pair| query.contains(pair)))
                {
                    Ok(())
                } else {
                    let need: Vec<String> = constraints
                        .iter()
                        .map(|c| {
                            c.iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join("&")
                        })
                        .collect();
                    Err(FhirError::Forbidden(format!(
                        "the token's {res_type} scope is limited to searches with {}",
                        need.join(" or ")
                    )))
                }
            }
            Allowed::Only(_) | Allowed::No => Err(FhirError::Forbidden(format!(
                "this request needs scope system/{res_type}.{} (or a wider one); the token grants: {}",
                perm.letter(),
                self.scopes
            ))),
        }
    }

    /// The scope check of a search, with all its parameters.
    pub fn may_search(&self, res_type: &str, params: &[(String, String)]) -> FhirResult<()> {
        self.permits(&Need::Type(res_type.to_string(), Perms::SEARCH), params)
    }

    /// The hub itself, for work it does on its own behalf (loading the
    /// demo data): every scope.
    pub fn hub() -> Principal {
        Principal {
            client_id: "sp-hub".into(),
            organization: String::new(),
            role: Role::Admin,
            scopes: Scopes::parse("system/*.*").expect("a valid scope"),
            request: None,
        }
    }

    /// Whether resources of `res_type` may be shown to this caller at all
    /// (e.g. as `_include`d resources of another type's search).
    pub fn may_read_type(&self, res_type: &str) -> bool {
        self.scopes.allows(res_type, Perms::READ) == Allowed::All
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(scopes: &str) -> Principal {
        Principal {
            client_id: "c".into(),
            organization: "Organization/o".into(),
            role: Role::Vcs,
            scopes: Scopes::parse(scopes).unwrap(),
            request: None,
        }
    }

    #[test]
    fn needs_follow_the_rest_url_grammar() {
        assert_eq!(need("GET", "/metadata"), Need::Open);
        assert_eq!(need("POST", "/"), Need::Token);
        assert_eq!(
            need("GET", "/Task"),
            Need::Type("Task".into(), Perms::SEARCH)
        );
        assert_eq!(
            need("POST", "/Task"),
            Need::Type("Task".into(), Perms::CREATE)
        );
        assert_eq!(
            need("GET", "/Task/1"),
            Need::Type("Task".into(), Perms::READ)
        );
        assert_eq!(
            need("PATCH", "/Task/1"),
            Need::Type("Task".into(), Perms::UPDATE)
        );
        assert_eq!(
            need("GET", "/Task/1/_history/2"),
            Need::Type("Task".into(), Perms::READ)
        );
        assert_eq!(
            need("GET", "/ServiceRequest/1/$trail"),
            Need::Type("ServiceRequest".into(), Perms::READ)
        );
        assert_eq!(need("GET", "/_history"), Need::AllTypes(Perms::SEARCH));
    }

    #[test]
    fn bulk_export_needs() {
        assert_eq!(need("GET", "/$export"), Need::Token);
        assert_eq!(
            need("GET", "/Group/g1/$export"),
            Need::Type("Group".into(), Perms::READ)
        );
        assert_eq!(need("GET", "/$export-status/j1"), Need::Token);
        assert_eq!(need("DELETE", "/$export-status/j1"), Need::Token);
        assert_eq!(
            need("GET", "/$export-file/j1/Patient"),
            Need::Type("Patient".into(), Perms::READ)
        );
        let tasks_only = p("system/Task.rs");
        assert!(tasks_only
            .permits(&need("GET", "/$export-file/j1/Task"), &[])
            .is_ok());
        assert!(tasks_only
            .permits(&need("GET", "/$export-file/j1/Patient"), &[])
            .is_err());
        assert!(tasks_only
            .permits(&need("GET", "/Group/g1/$export"), &[])
            .is_err());
    }

    #[test]
    fn translation_needs() {
        let read_maps = Need::Type("ConceptMap".into(), Perms::READ);
        assert_eq!(need("GET", "/ConceptMap/$translate"), read_maps);
        assert_eq!(need("POST", "/ConceptMap/$translate"), read_maps);
        assert_eq!(need("POST", "/ConceptMap/m1/$translate"), read_maps);
        assert_eq!(
            need("GET", "/Organization/o1/$records"),
            Need::Type("Task".into(), Perms::SEARCH)
        );
        assert_eq!(
            need("POST", "/Organization/o1/$records"),
            Need::Type("Task".into(), Perms::UPDATE)
        );
    }

    #[test]
    fn dashboard_needs_a_referral_search_scope() {
        let needs = need("GET", "/dashboard/metrics");
        assert_eq!(needs, Need::Type("ServiceRequest".into(), Perms::SEARCH));
        assert!(p("system/ServiceRequest.rs").permits(&needs, &[]).is_ok());
        assert!(p("system/Task.rs").permits(&needs, &[]).is_err());
    }

    #[test]
    fn scopes_decide() {
        let vcs = p("system/Task.rus system/ServiceRequest.rs?status=active");
        assert!(vcs.permits(&need("GET", "/Task/1"), &[]).is_ok());
        assert!(vcs.permits(&need("DELETE", "/Task/1"), &[]).is_err());
        assert!(vcs.permits(&need("GET", "/Patient/1"), &[]).is_err());
        let q = vec![("status".to_string(), "active".to_string())];
        assert!(vcs.permits(&need("GET", "/ServiceRequest"), &q).is_ok());
        assert!(vcs.permits(&need("GET", "/ServiceRequest"), &[]).is_err());
        assert!(vcs.permits(&need("GET", "/ServiceRequest/1"), &[]).is_err());
        assert!(vcs.permits(&need("GET", "/_history"), &[]).is_err());
        assert!(p("system/*.read")
            .permits(&need("GET", "/_history"), &[])
            .is_ok());
    }
}
