//! The one error type of the FHIR layer and its OperationOutcome rendering.
//!
//! Every failure a client can cause is a `FhirError`; the API layer maps it
//! to an HTTP status and an OperationOutcome whose issue names the problem
//! and, where there is one, the FHIRPath of the offending element.

use serde_json::{json, Value};

/// OperationOutcome `issue.code` values we use (IssueType, R4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    NotFound,
    Deleted,
    NotSupported,
    Conflict,
    BusinessRule,
    TooCostly,
    Processing,
    Exception,
    Timeout,
    Informational,
    Invariant,
    Login,
    Forbidden,
    Throttled,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::NotSupported => "not-supported",
            IssueType::Conflict => "conflict",
            IssueType::BusinessRule => "business-rule",
            IssueType::TooCostly => "too-costly",
            IssueType::Processing => "processing",
            IssueType::Exception => "exception",
            IssueType::Timeout => "timeout",
            IssueType::Informational => "informational",
            IssueType::Invariant => "invariant",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Throttled => "throttled",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// 400: the request itself is wrong (bad id, bad parameter, id mismatch).
    #[error("{message}")]
    Invalid {
        message: String,
        expression: Option<String>,
    },
    /// 400: the body is not a well-formed resource of a known shape.
    #[error("{message}")]
    Structure {
        message: String,
        expression: Option<String>,
    },
    /// 401: no access token, or one this server did not issue or that expired.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's scopes do not cover the request. (Data outside the
    /// caller's organisation answers 404 instead: its existence is not told.)
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Conflict(String),
    /// 409: the request is well formed but the resource's current state
    /// forbids it (a workflow rule, e.g. an illegal Task status change).
    #[error("{message}")]
    StateConflict {
        message: String,
        expression: Option<String>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: the client's request rate is used up until `retry_after`
    /// seconds from now.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: i64 },
    #[error("{message}")]
    Unprocessable {
        message: String,
        expression: Option<String>,
    },
    /// 422: the resource breaks the profiles that apply to it; each problem
    /// is an issue of its own.
    #[error("{}", .0.iter().map(|p| format!("{}: {}", p.expression, p.diagnostics)).collect::<Vec<_>>().join("; "))]
    Invalidated(Vec<Problem>),
    /// An error in one entry of a transaction or batch Bundle.
    #[error("Bundle.entry[{index}]: {inner}")]
    AtEntry { index: usize, inner: Box<FhirError> },
    /// 503: a statement ran past the server's time limit (`--query-timeout-ms`).
    #[error("{0}")]
    QueryTimeout(String),
    /// 500 or 503: never the client's fault; details go to the log, not the client.
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl FhirError {
    pub fn invalid(message: impl Into<String>) -> Self {
        FhirError::Invalid {
            message: message.into(),
            expression: None,
        }
    }

    pub fn invalid_at(message: impl Into<String>, expression: impl Into<String>) -> Self {
        FhirError::Invalid {
            message: message.into(),
            expression: Some(expression.into()),
        }
    }

    pub fn structure(message: impl Into<String>, expression: Option<String>) -> Self {
        FhirError::Structure {
            message: message.into(),
            expression,
        }
    }

    pub fn state_conflict(message: impl Into<String>, expression: impl Into<String>) -> Self {
        FhirError::StateConflict {
            message: message.into(),
            expression: Some(expression.into()),
        }
    }

    pub fn unprocessable_at(message: impl Into<String>, expression: impl Into<String>) -> Self {
        FhirError::Unprocessable {
            message: message.into(),
            expression: Some(expression.into()),
        }
    }

    pub fn at_entry(self, index: usize) -> FhirError {
        FhirError::AtEntry {
            index,
            inner: Box::new(self),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            FhirError::AtEntry { inner, .. } => inner.status(),
            FhirError::Invalid { .. } | FhirError::Structure { .. } => 400,
            FhirError::Unauthorized(_) => 401,
            FhirError::Forbidden(_) => 403,
            FhirError::NotFound(_) => 404,
            FhirError::MethodNotAllowed(_) => 405,
            FhirError::NotAcceptable(_) => 406,
            FhirError::RequestTimeout(_) => 408,
            FhirError::Conflict(_) | FhirError::StateConflict { .. } => 409,
            FhirError::Gone(_) => 410,
            FhirError::PreconditionFailed(_) => 412,
            FhirError::PayloadTooLarge(_) => 413,
            FhirError::TooManyRequests { .. } => 429,
            FhirError::UnsupportedMediaType(_) => 415,
            FhirError::Unprocessable { .. } | FhirError::Invalidated(_) => 422,
            FhirError::Internal(_) => 500,
            FhirError::Unavailable(_) | FhirError::QueryTimeout(_) => 503,
        }
    }

    /// A fault of ours whose details stay in the log.
    fn is_internal(&self) -> bool {
        match self {
            FhirError::Internal(_) => true,
            FhirError::AtEntry { inner, .. } => inner.is_internal(),
            _ => false,
        }
    }

    /// Seconds the client should wait before trying again (`Retry-After`).
    pub fn retry_after(&self) -> Option<i64> {
        match self {
            FhirError::AtEntry { inner, .. } => inner.retry_after(),
            FhirError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            // Long queries come in bursts (a dashboard refresh, a batch of
            // polls); a short pause lets the database finish the others.
            FhirError::QueryTimeout(_) => Some(5),
            _ => None,
        }
    }

    fn issue_type(&self) -> IssueType {
        match self {
            FhirError::AtEntry { inner, .. } => inner.issue_type(),
            FhirError::Invalid { .. } => IssueType::Invalid,
            FhirError::Structure { .. } => IssueType::Structure,
            FhirError::Unauthorized(_) => IssueType::Login,
            FhirError::Forbidden(_) => IssueType::Forbidden,
            FhirError::NotFound(_) => IssueType::NotFound,
            FhirError::Gone(_) => IssueType::Deleted,
            FhirError::MethodNotAllowed(_)
            | FhirError::NotAcceptable(_)
            | FhirError::UnsupportedMediaType(_) => IssueType::NotSupported,
            FhirError::PreconditionFailed(_) | FhirError::Conflict(_) => IssueType::Conflict,
            FhirError::StateConflict { .. } => IssueType::BusinessRule,
            FhirError::PayloadTooLarge(_) | FhirError::QueryTimeout(_) => IssueType::TooCostly,
            FhirError::TooManyRequests { .. } => IssueType::Throttled,
            FhirError::RequestTimeout(_) => IssueType::Timeout,
            FhirError::Unprocessable { .. } | FhirError::Invalidated(_) => IssueType::Processing,
            FhirError::Internal(_) | FhirError::Unavailable(_) => IssueType::Exception,
        }
    }

    fn expression(&self) -> Option<String> {
        match self {
            FhirError::Invalid { expression, .. }
            | FhirError::Structure { expression, .. }
            | FhirError::StateConflict { expression, .. }
            | FhirError::Unprocessable { expression, .. } => expression.clone(),
            // `Patient.name[0]` inside entry 3 is `Bundle.entry[3].resource.name[0]`.
            FhirError::AtEntry { index, inner } => {
                let entry = format!("Bundle.entry[{index}]");
                Some(match inner.expression() {
                    Some(e) if e.starts_with(|c: char| c.is_ascii_uppercase()) => {
                        match e.split_once('.') {
                            Some((_, rest)) => format!("{entry}.resource.{rest}"),
                            None => format!("{entry}.resource"),
                        }
                    }
                    _ => entry,
                })
            }
            _ => None,
        }
    }

    /// The OperationOutcome a client sees. Internal details are not leaked.
    pub fn to_outcome(&self) -> Value {
        if let Some(o) = self.problems_outcome() {
            return o;
        }
        let diagnostics = match self {
            e if e.is_internal() => "internal server error; the request was not applied".into(),
            other => other.to_string(),
        };
        outcome(
            "error",
            self.issue_type(),
            &diagnostics,
            self.expression().as_deref(),
        )
    }
}

/// One problem of a resource against a profile (`FhirError::Invalidated`).
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: IssueType,
    pub diagnostics: String,
    pub expression: String,
}

impl FhirError {
    /// For `Invalidated` (also inside a Bundle entry): one issue per problem.
    fn problems_outcome(&self) -> Option<Value> {
        let (index, problems) = match self {
            FhirError::Invalidated(p) => (None, p),
            FhirError::AtEntry { index, inner } => match &**inner {
                FhirError::Invalidated(p) => (Some(*index), p),
                _ => return None,
            },
            _ => return None,
        };
        let issues: Vec<Value> = problems
            .iter()
            .map(|p| {
                let at = FhirError::unprocessable_at("", p.expression.clone());
                let expression = match index {
                    Some(i) => at.at_entry(i).expression(),
                    None => at.expression(),
                };
                json!({"severity": "error", "code": p.code.code(),
                       "diagnostics": p.diagnostics, "expression": expression.into_iter().collect::<Vec<_>>()})
            })
            .collect();
        Some(json!({"resourceType": "OperationOutcome", "issue": issues}))
    }
}

pub fn outcome(
    severity: &str,
    code: IssueType,
    diagnostics: &str,
    expression: Option<&str>,
) -> Value {
    let mut issue = json!({
        "severity": severity,
        "code": code.code(),
        "diagnostics": diagnostics,
    });
    if let Some(e) = expression {
        issue["expression"] = json!([e]);
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]})
}

pub type FhirResult<T> = Result<T, FhirError>;
