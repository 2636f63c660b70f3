//! SMART on FHIR system scopes, v2 (`system/Task.rs?status=requested`) and
//! v1 (`system/Task.read`, `.write`, `.*`). Backend services act for an
//! organisation, never for a patient or a user, so only `system/` scopes
//! exist here.

use std::fmt;

/// The five SMART v2 permissions, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms(u8);

impl Perms {
    pub const CREATE: Perms = Perms(1);
    pub const READ: Perms = Perms(2);
    pub const UPDATE: Perms = Perms(4);
    pub const DELETE: Perms = Perms(8);
    pub const SEARCH: Perms = Perms(16);
    const LETTERS: [(char, Perms); 5] = [
        ('c', Perms::CREATE),
        ('r', Perms::READ),
        ('u', Perms::UPDATE),
        ('d', Perms::DELETE),
        ('s', Perms::SEARCH),
    ];

    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn letter(self) -> char {
        Perms::LETTERS
            .iter()
            .find(|(_, p)| *p == self)
            .map_or('?', |(c, _)| *c)
    }

    /// v2 letters in their fixed order (`cruds`), or a v1 word.
    fn parse(s: &str) -> Option<Perms> {
        match s {
            "read" => return Some(Perms(Perms::READ.0 | Perms::SEARCH.0)),
            "write" => return Some(Perms(Perms::CREATE.0 | Perms::UPDATE.0 | Perms::DELETE.0)),
            "*" => return Some(Perms(31)),
            _ => {}
        }
        let mut bits = 0;
        let mut rest = s;
        for (c, p) in Perms::LETTERS {
            if let Some(r) = rest.strip_prefix(c) {
                bits |= p.0;
                rest = r;
            }
        }
        (bits != 0 && rest.is_empty()).then_some(Perms(bits))
    }
}

/// One scope: a resource type (`None` for `*`), permissions, and the
/// search parameters it is limited to (v2 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub res_type: Option<String>,
    pub perms: Perms,
    pub constraint: Vec<(String, String)>,
    text: String,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        let bad = |why: &str| format!("scope '{s}' {why}");
        let rest = s.strip_prefix("system/").ok_or_else(|| {
            bad("is not a system/ scope (backend services act for an organisation)")
        })?;
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (res_type, perms) = body
            .split_once('.')
            .ok_or_else(|| bad("has no '.' between the resource type and its permissions"))?;
        let perms_parsed = Perms::parse(perms).ok_or_else(|| {
            bad("has permissions that are neither SMART v2 letters (cruds) nor read, write or *")
        })?;
        let res_type = match res_type {
            "*" => None,
            t if crate::interactions::is_supported_type(t) => Some(t.to_string()),
            t => {
                return Err(bad(&format!(
                    "names '{t}', which is not an R4 resource type"
                )))
            }
        };
        let mut constraint = vec![];
        if let Some(q) = query {
            if matches!(perms, "read" | "write" | "*") {
                return Err(bad("puts a search constraint on a SMART v1 scope"));
            }
            for pair in q.split('&') {
                let (k, v) = pair
                    .split_once('=')
                    .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                    .ok_or_else(|| bad("has a constraint that is not param=value"))?;
                constraint.push((k.to_string(), v.to_string()));
            }
            constraint.sort();
        }
        Ok(Scope {
            res_type,
            perms: perms_parsed,
            constraint,
            text: s.to_string(),
        })
    }

    /// Whether holding `self` allows everything `other` does.
    fn covers(&self, other: &Scope) -> bool {
        (self.res_type.is_none() || self.res_type == other.res_type)
            && self.perms.contains(other.perms)
            && self.constraint.iter().all(|c| other.constraint.contains(c))
    }
}

/// A set of scopes: what a client is registered for, or what a token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(pub Vec<Scope>);

/// What the scopes allow for one type and permission.
#[derive(Debug, PartialEq, Eq)]
pub enum Allowed<'a> {
    No,
    /// Allowed without limits.
    All,
    /// Allowed only for resources matching one of these constraints.
    Only(Vec<&'a [(String, String)]>),
}

impl Scopes {
    /// Space-separated scopes; an unknown one is an error naming it.
    pub fn parse(s: &str) -> Result<Scopes, String> {
        s.split_whitespace()
            .map(Scope::parse)
            .collect::<Result<_, _>>()
            .map(Scopes)
    }

    /// The requested scopes this set covers (SMART: a server may grant
    /// fewer than asked for, never more than registered).
    pub fn grant(&self, requested: &Scopes) -> Scopes {
        Scopes(
            requested
                .0
                .iter()
                .filter(|r| self.0.iter().any(|g| g.covers(r)))
                .cloned()
                .collect(),
        )
    }

    pub fn allows(&self, res_type: &str, perm: Perms) -> Allowed<'_> {
        let mut only = vec![];
        for s in &self.0 {
            if s.res_type.as_deref().is_some_and(|t| t != res_type) || !s.perms.contains(perm) {
                continue;
            }
            if s.constraint.is_empty() {
                return Allowed::All;
            }
            only.push(s.constraint.as_slice());
        }
        if only.is_empty() {
            Allowed::No
        } else {
            Allowed::Only(only)
        }
    }

    /// Whether any scope covers every type with `perm` (system-wide
    /// interactions such as history of all types).
    pub fn allows_all_types(&self, perm: Perms) -> bool {
        self.0
            .iter()
            .any(|s| s.res_type.is_none() && s.perms.contains(perm) && s.constraint.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.0.iter().map(|s| s.text.as_str()).collect();
        f.write_str(&texts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_parse_to_the_same_permissions() {
        let v1 = Scope::parse("system/Task.read").unwrap();
        let v2 = Scope::parse("system/Task.rs").unwrap();
        assert_eq!(v1.perms, v2.perms);
        assert_eq!(
            Scope::parse("system/Task.write").unwrap().perms,
            Scope::parse("system/Task.cud").unwrap().perms
        );
        assert_eq!(
            Scope::parse("system/*.*").unwrap().perms,
            Scope::parse("system/*.cruds").unwrap().perms
        );
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for s in [
            "patient/Task.rs",
            "user/Task.read",
            "system/Task",
            "system/Task.sr",
            "system/Task.x",
            "system/Task.",
            "system/Nope.rs",
            "system/Task.read?status=requested",
            "system/Task.rs?status",
        ] {
            assert!(Scope::parse(s).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn granted_is_requested_within_registered() {
        let registered = Scopes::parse("system/Task.rus system/ServiceRequest.rs").unwrap();
        let requested =
            Scopes::parse("system/Task.rs system/Task.d system/ServiceRequest.r system/Patient.r")
                .unwrap();
        assert_eq!(
            registered.grant(&requested).to_string(),
            "system/Task.rs system/ServiceRequest.r"
        );
        let wildcard = Scopes::parse("system/*.read").unwrap();
        assert_eq!(
            wildcard.grant(&requested).to_string(),
            "system/Task.rs system/ServiceRequest.r system/Patient.r"
        );
    }

    #[test]
    fn a_constrained_registration_grants_only_as_narrow_requests() {
        let registered = Scopes::parse("system/Task.rs?status=requested").unwrap();
        let wide = Scopes::parse("system/Task.rs").unwrap();
        let narrow = Scopes::parse("system/Task.rs?status=requested").unwrap();
        assert!(registered.grant(&wide).is_empty());
        assert_eq!(registered.grant(&narrow), narrow);
        assert!(matches!(
            narrow.allows("Task", Perms::SEARCH),
            Allowed::Only(ref c) if c.len() == 1
        ));
        assert_eq!(narrow.allows("Patient", Perms::READ), Allowed::No);
    }
}
