//! The one error type of the service and the one place it becomes a `tonic::Status`.
//!
//! Every refusal carries an `ErrorInfo` whose `reason` is one of the closed set in [`Reason`], so a
//! client can branch on it without parsing messages (AIP-193). Bad input additionally carries a
//! `BadRequest` with one field violation per broken rule; consent problems a `PreconditionFailure`
//! naming the consent. Internal errors are logged with an id and reach the client as that id only.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::domain::{Violation, consent::ConsentRefusal};

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "referral-exchange";

/// Why a call was refused: the closed set of `ErrorInfo.reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidArgument,
    InvalidPageToken,
    NotFound,
    CertificateWithoutOrganization,
    UnknownOrganization,
    UserIdMissing,
    UserIdInvalid,
    /// A personal certificate names another person than `x-user-id`.
    UserIdMismatch,
    /// An X-Road call that may not be honoured (see `access::Unidentified::XRoad`).
    XRoadRefused,
    RoleNotAllowed,
    IllegalTransition,
    ReferralForwardedAway,
    ConsentNotFound,
    ConsentAlreadyWithdrawn,
    Consent(ConsentRefusal),
    EtagMismatch,
    RequestIdReused,
    /// Another call with the same `request_id` recorded it first, while this one ran: retry to
    /// get its response.
    RequestInProgress,
    /// The audit log has no signed checkpoint yet (the sequencer has not run).
    NoCheckpointYet,
    /// A subject access report would be larger than one response: narrow the time range.
    ReportTooLarge,
    /// The database could not be reached or refused the connection: try again shortly.
    DatabaseUnavailable,
    /// The request is larger than the server reads.
    RequestTooLarge,
    /// The console was asked for without a personal certificate (one naming the person).
    PersonalCertificateRequired,
    /// A console form came without a valid CSRF token.
    CsrfTokenInvalid,
    /// The calling organisation is over its calls per second (`crate::limits`).
    RateLimited,
    /// The calling organisation (or the exchange as a whole) has as many calls running as it may.
    TooManyConcurrentCalls,
    Internal,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Reason::NotFound => "NOT_FOUND",
            Reason::CertificateWithoutOrganization => "CERTIFICATE_WITHOUT_ORGANIZATION",
            Reason::UnknownOrganization => "UNKNOWN_ORGANIZATION",
            Reason::UserIdMissing => "USER_ID_MISSING",
            Reason::UserIdInvalid => "USER_ID_INVALID",
            Reason::UserIdMismatch => "USER_ID_MISMATCH",
            Reason::XRoadRefused => "X_ROAD_REFUSED",
            Reason::RoleNotAllowed => "ROLE_NOT_ALLOWED",
            Reason::IllegalTransition => "ILLEGAL_TRANSITION",
            Reason::ReferralForwardedAway => "REFERRAL_FORWARDED_AWAY",
            Reason::ConsentNotFound => "CONSENT_NOT_FOUND",
            Reason::ConsentAlreadyWithdrawn => "CONSENT_ALREADY_WITHDRAWN",
            Reason::Consent(refusal) => refusal.reason(),
            Reason::EtagMismatch => "ETAG_MISMATCH",
            Reason::RequestIdReused => "REQUEST_ID_REUSED",
            Reason::RequestInProgress => "REQUEST_IN_PROGRESS",
            Reason::NoCheckpointYet => "NO_CHECKPOINT_YET",
            Reason::ReportTooLarge => "REPORT_TOO_LARGE",
            Reason::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Reason::RequestTooLarge => "REQUEST_TOO_LARGE",
            Reason::PersonalCertificateRequired => "PERSONAL_CERTIFICATE_REQUIRED",
            Reason::CsrfTokenInvalid => "CSRF_TOKEN_INVALID",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::TooManyConcurrentCalls => "TOO_MANY_CONCURRENT_CALLS",
            Reason::Internal => "INTERNAL",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the request is invalid")]
    InvalidArgument {
        reason: Reason,
        violations: Vec<Violation>,
    },
    /// The caller may not learn whether the resource exists, or it does not.
    #[error("{resource} was not found")]
    NotFound { resource: String },
    #[error("{message}")]
    Unauthenticated { reason: Reason, message: String },
    #[error("{message}")]
    PermissionDenied { reason: Reason, message: String },
    #[error("{message}")]
    FailedPrecondition {
        reason: Reason,
        message: String,
        subject: Option<String>,
    },
    #[error("{message}")]
    Aborted { reason: Reason, message: String },
    #[error("{message}")]
    AlreadyExists { reason: Reason, message: String },
    #[error("{message}")]
    ResourceExhausted { reason: Reason, message: String },
    /// Over a limit of the calling organisation or of the exchange (`crate::limits`): the same call
    /// may succeed after `retry_after`.
    #[error("{message}")]
    Overloaded {
        reason: Reason,
        message: String,
        retry_after: std::time::Duration,
    },
    /// A passing condition (the database is unreachable): the same call may succeed after
    /// `retry_after`. The source is logged, never sent.
    #[error("the service is unavailable for a moment; retry")]
    Unavailable {
        reason: Reason,
        retry_after: std::time::Duration,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Anything the caller cannot fix. The source is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(violations: Vec<Violation>) -> Self {
        Error::InvalidArgument {
            reason: Reason::InvalidArgument,
            violations,
        }
    }

    pub fn invalid_field(
        field: impl Into<String>,
        rule: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Error::invalid(vec![Violation::new(field, rule, description)])
    }

    pub fn not_found(resource: impl Into<String>) -> Self {
        Error::NotFound {
            resource: resource.into(),
        }
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Error::PermissionDenied {
            reason: Reason::RoleNotAllowed,
            message: message.into(),
        }
    }

    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(source.into())
    }

    pub fn consent(refusal: ConsentRefusal, consent: String) -> Self {
        Error::FailedPrecondition {
            reason: Reason::Consent(refusal),
            message: refusal.to_string(),
            subject: Some(consent),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::Aborted { .. } => Code::Aborted,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::ResourceExhausted { .. } | Error::Overloaded { .. } => Code::ResourceExhausted,
            Error::Unavailable { .. } => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        }
    }

    pub fn reason(&self) -> Reason {
        match self {
            Error::InvalidArgument { reason, .. }
            | Error::Unauthenticated { reason, .. }
            | Error::PermissionDenied { reason, .. }
            | Error::FailedPrecondition { reason, .. }
            | Error::Aborted { reason, .. }
            | Error::AlreadyExists { reason, .. }
            | Error::ResourceExhausted { reason, .. }
            | Error::Overloaded { reason, .. } => *reason,
            Error::NotFound { .. } => Reason::NotFound,
            Error::Unavailable { reason, .. } => *reason,
            Error::Internal(_) => Reason::Internal,
        }
    }
}

/// How long a client should wait before retrying when the database is unreachable: about the time
/// a PostgreSQL restart or failover takes to accept connections again.
pub const DATABASE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if request_recorded_meanwhile(&e) {
            Error::Aborted {
                reason: Reason::RequestInProgress,
                message:
                    "another call with this request_id finished first: retry to get its result"
                        .into(),
            }
        } else if database_unreachable(&e) {
            Error::Unavailable {
                reason: Reason::DatabaseUnavailable,
                retry_after: DATABASE_RETRY_DELAY,
                source: Box::new(e),
            }
        } else {
            Error::internal(e)
        }
    }
}

impl Error {
    /// An error in opening a connection and its transaction, before any of the call's statements
    /// went: the database could not be had, whatever sqlx calls it. sqlx's pool retries only a
    /// refused connection; a server stopping or starting mid-handshake can also answer bytes that
    /// are no answer at all (a `Protocol` error, "unexpected response from SSLRequest"), and that
    /// is as passing as a refusal. Errors the server sends (wrong password, no such database) keep
    /// their usual mapping.
    pub fn connecting(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Protocol(_) => Error::Unavailable {
                reason: Reason::DatabaseUnavailable,
                retry_after: DATABASE_RETRY_DELAY,
                source: Box::new(e),
            },
            e => e.into(),
        }
    }
}

/// Whether `e` is the unique key of `idempotency_keys` refusing a second record of one request id:
/// two first tries of one request ran at once, and the other recorded it first (`store::idempotency`).
fn request_recorded_meanwhile(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.is_unique_violation()
        && (db.constraint() == Some("idempotency_keys_pkey")
            || db.message().contains("idempotency_keys."))
}

/// Whether `e` says the database could not be reached or dropped the connection, as opposed to a
/// statement that failed: a retry can succeed once it is back.
fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: class 08 (connection exception), shutting down or starting up, too many
            // connections. SQLite: the database is locked by another process (SQLITE_BUSY).
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "5" | "517")
        }),
        _ => false,
    }
}

/// The most field violations one answer lists; the rest are counted (`ErrorInfo.metadata`
/// `omittedFieldViolations`). Together with a byte budget for their text, an answer's details stay
/// under the 8 KB of metadata every gRPC client accepts (16 KB by default), however many fields a
/// request broke: a thousand broken recipients must not turn `INVALID_ARGUMENT` into the client's
/// own `RESOURCE_EXHAUSTED`.
pub const MAX_FIELD_VIOLATIONS: usize = 20;
/// The bytes of field paths, rules and descriptions one answer lists at most (base64 in the
/// `grpc-status-details-bin` header makes 4/3 of it).
const VIOLATION_BYTES: usize = 4500;
/// The longest field path and description an answer carries, in characters.
const MAX_FIELD_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 300;
/// The message names this many of them; the details carry up to [`MAX_FIELD_VIOLATIONS`].
const MESSAGE_FIELDS: usize = 5;

/// `text`, cut to `max` characters with an ellipsis when longer.
fn capped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => {
            let cut = text[..end].char_indices().last().map_or(0, |(i, _)| i);
            format!("{}…", &text[..cut])
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        // The violations the details list: the first ones, within the count and the byte budget.
        let listed: Vec<FieldViolation> = match &error {
            Error::InvalidArgument { violations, .. } => {
                let mut bytes = 0;
                violations
                    .iter()
                    .take(MAX_FIELD_VIOLATIONS)
                    .map(|v| {
                        let mut fv = FieldViolation::new(
                            capped(&v.field, MAX_FIELD_CHARS),
                            capped(&v.description, MAX_DESCRIPTION_CHARS),
                        );
                        fv.reason = v.rule.to_ascii_uppercase();
                        fv
                    })
                    .take_while(|fv| {
                        bytes += fv.field.len() + fv.description.len() + fv.reason.len();
                        bytes <= VIOLATION_BYTES
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let omitted = match &error {
            Error::InvalidArgument { violations, .. } => violations.len() - listed.len(),
            _ => 0,
        };
        let mut metadata = HashMap::new();
        if omitted > 0 {
            metadata.insert("omittedFieldViolations".to_owned(), omitted.to_string());
        }
        let mut details =
            ErrorDetails::with_error_info(error.reason().as_str(), ERROR_DOMAIN, metadata);
        let message = match &error {
            Error::InvalidArgument { violations, .. } => {
                details.set_bad_request(listed);
                let summary: Vec<String> = violations
                    .iter()
                    .take(MESSAGE_FIELDS)
                    .map(|v| format!("{} ({})", capped(&v.field, MAX_FIELD_CHARS), v.rule))
                    .collect();
                let unnamed = violations.len().saturating_sub(MESSAGE_FIELDS);
                let more = if unnamed > 0 {
                    format!(", and {unnamed} more")
                } else {
                    String::new()
                };
                format!("invalid request: {}{more}", summary.join(", "))
            }
            Error::FailedPrecondition {
                reason,
                message,
                subject,
            } => {
                if let Some(subject) = subject {
                    details.add_precondition_failure_violation(reason.as_str(), subject, message);
                }
                message.clone()
            }
            Error::Overloaded {
                message,
                retry_after,
                ..
            } => {
                details.set_retry_info(Some(*retry_after));
                message.clone()
            }
            Error::Unavailable {
                retry_after,
                source,
                ..
            } => {
                // Logged once per refused call: the operator sees the outage, the caller retries.
                tracing::warn!(error = %source, "the database is unavailable");
                details.set_retry_info(Some(*retry_after));
                error.to_string()
            }
            Error::Internal(source) => {
                let id = uuid::Uuid::new_v4();
                // The source may name tables or constraints; it goes to the log, the caller gets the id.
                tracing::error!(error_id = %id, error = %source, "internal error");
                format!("internal error {id}")
            }
            other => other.to_string(),
        };
        Status::with_error_details(error.code(), message, details)
    }
}

/// The HTTP status of a gRPC code, by Google's mapping (`google/rpc/code.proto`, as Google's REST APIs
/// and gRPC transcoding answer).
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::Aborted | Code::AlreadyExists => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// A status as proto3 JSON `google.rpc.Status`: `code`, `message` and the same `details` a gRPC client
/// decodes from `grpc-status-details-bin` (`ErrorInfo`, `BadRequest`, `PreconditionFailure`), each
/// with its `@type`.
pub fn status_json(status: &Status) -> serde_json::Value {
    use serde_json::json;
    const TYPE: &str = "type.googleapis.com/google.rpc.";
    let error = status.get_error_details();
    let mut details = Vec::new();
    if let Some(info) = error.error_info() {
        details.push(json!({
            "@type": format!("{TYPE}ErrorInfo"),
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }));
    }
    if let Some(bad) = error.bad_request() {
        let violations: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| json!({ "field": v.field, "description": v.description, "reason": v.reason }))
            .collect();
        details
            .push(json!({ "@type": format!("{TYPE}BadRequest"), "fieldViolations": violations }));
    }
    if let Some(retry) = error.retry_info()
        && let Some(delay) = retry.retry_delay
    {
        // google.protobuf.Duration in proto3 JSON: seconds with an `s`.
        details.push(json!({
            "@type": format!("{TYPE}RetryInfo"),
            "retryDelay": format!("{}s", delay.as_secs_f64()),
        }));
    }
    if let Some(failure) = error.precondition_failure() {
        let violations: Vec<_> = failure
            .violations
            .iter()
            .map(
                |v| json!({ "type": v.r#type, "subject": v.subject, "description": v.description }),
            )
            .collect();
        details.push(
            json!({ "@type": format!("{TYPE}PreconditionFailure"), "violations": violations }),
        );
    }
    json!({ "code": status.code() as i32, "message": status.message(), "details": details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbled_bytes_while_connecting_are_unavailable_and_elsewhere_internal() {
        // What a PostgreSQL going down or coming up answered a connection's SSLRequest with.
        let garbled = || sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        let connecting = Error::connecting(garbled());
        assert_eq!(connecting.code(), Code::Unavailable);
        assert_eq!(connecting.reason(), Reason::DatabaseUnavailable);
        let status = Status::from(connecting);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            !status.message().contains("SSLRequest"),
            "the cause is logged, not sent: {}",
            status.message()
        );
        // Mid-call, the same error is no passing condition the server can vouch for.
        assert_eq!(Error::from(garbled()).code(), Code::Internal);
        // An error that is no connection's stays what it was.
        assert_eq!(
            Error::connecting(sqlx::Error::RowNotFound).code(),
            Code::Internal
        );
    }

    /// The details of an answer to `violations`: how many listed, the omitted count, and the
    /// answer's metadata in bytes.
    fn bounded(violations: Vec<Violation>) -> (usize, String, usize, String) {
        let status = Status::from(Error::invalid(violations));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let listed = details
            .bad_request()
            .map_or(0, |b| b.field_violations.len());
        let omitted = details
            .error_info()
            .and_then(|i| i.metadata.get("omittedFieldViolations").cloned())
            .unwrap_or_default();
        let message = status.message().to_owned();
        let size: usize = status
            .into_http::<()>()
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        (listed, omitted, size, message)
    }

    #[test]
    fn an_answer_lists_at_most_twenty_violations_and_stays_under_8_kb() {
        let short: Vec<Violation> = (0..1000)
            .map(|i| Violation::required(format!("consent.recipients[{i}]")))
            .collect();
        let (listed, omitted, size, message) = bounded(short);
        assert_eq!((listed, omitted.as_str()), (MAX_FIELD_VIOLATIONS, "980"));
        assert!(message.ends_with("and 995 more"), "{message}");
        assert!(size < 8 * 1024, "{size} bytes of metadata");

        let long: Vec<Violation> = (0..1000)
            .map(|i| {
                Violation::new(
                    format!("consent.recipients[{i}]{}", ".x".repeat(200)),
                    "resource_name",
                    "must be organizations/{id} ".repeat(40),
                )
            })
            .collect();
        let (listed, omitted, size, _) = bounded(long);
        assert!((1..=MAX_FIELD_VIOLATIONS).contains(&listed), "{listed}");
        assert_eq!(omitted, (1000 - listed).to_string());
        assert!(size < 8 * 1024, "{size} bytes of metadata");
    }

    #[test]
    fn capped_text_keeps_whole_characters() {
        assert_eq!(capped("abc", 3), "abc");
        assert_eq!(capped("äöåäö", 3), "äö…");
    }

    #[test]
    fn invalid_argument_names_each_field_and_rule() {
        let status = Status::from(Error::invalid(vec![
            Violation::new(
                "referral.subject.personal_identity_code",
                "check_character",
                "wrong check",
            ),
            Violation::required("referral.kind"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations.len(), 2);
        assert_eq!(
            violations[0].field,
            "referral.subject.personal_identity_code"
        );
        assert_eq!(violations[0].reason, "CHECK_CHARACTER");
        assert_eq!(violations[1].reason, "REQUIRED");
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn internal_errors_do_not_leak_their_source() {
        let status = Status::from(Error::internal(
            "relation \"referrals\" violates constraint",
        ));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("referrals"));
        assert!(status.message().starts_with("internal error "));
    }
}
