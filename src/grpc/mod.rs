//! The gRPC edge: one file per service. Proto messages become domain values here and nowhere else.
//!
//! Every handler goes through [`handle`]: it identifies the caller from the client certificate and
//! metadata, runs the use case, makes sure the call left its audit event (refusals included), and turns
//! errors into `tonic::Status` through [`crate::error`].

pub mod audit;
pub mod consents;
pub mod directory;
mod enums;
pub mod log_verify;
pub mod mailbox;
pub mod referrals;
pub mod reporting;
pub mod undecodable;

use std::{future::Future, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    access::{CORRELATION_ID_HEADER, Call, Claims, USER_ID_HEADER},
    domain::{PersonalIdentityCode, Violation},
    error::{Error, Reason, Result},
    exchange::{Exchange, RequestKey},
};

/// Runs `handler` for one RPC of `method` (full path, e.g. `/referral_exchange.v1.ReferralService/GetReferral`).
pub(crate) async fn handle<Req, Resp, F, Fut>(
    exchange: &Arc<Exchange>,
    request: Request<Req>,
    method: &'static str,
    handler: F,
) -> std::result::Result<Response<Resp>, Status>
where
    Req: Serialize,
    F: FnOnce(Arc<Exchange>, Arc<Call>, Req) -> Fut,
    Fut: Future<Output = Result<Resp>>,
{
    // A server span per the OpenTelemetry RPC conventions, continuing the caller's trace.
    let full = method.trim_start_matches('/');
    let (service, name) = full.split_once('/').unwrap_or(("", full));
    // The HTTP face calls the same methods in process, handing over the caller's claims.
    let edge = if request.extensions().get::<Claims>().is_some() {
        "http"
    } else {
        "grpc"
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = full,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = name,
        referral_exchange.edge = edge,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(crate::telemetry::parent_context(request.metadata()));
    let started = std::time::Instant::now();
    let result = async {
        let call = Arc::new(identify(exchange, &request, method));
        // Who may call the method is decided first, before the request is looked at: a caller
        // that may not call it learns nothing about its rules. Then admitted within its
        // organisation's limits (held until the handler returns), before any work; over them,
        // refused with when to come back, and audited.
        let result = match call.authorize() {
            Err(e) if call.caller().is_ok() => {
                // Refused for its role: whom it named is recorded all the same.
                for code in named_people(request.get_ref()) {
                    call.touch_subject(exchange.pseudonym(&code));
                }
                Err(e)
            }
            Ok(caller) => match exchange.limits().admit(caller.organization.as_str()) {
                Ok(_admission) => {
                    let request = request.into_inner();
                    let unstorable = control_characters(&request);
                    if unstorable.is_empty() {
                        handler(exchange.clone(), call.clone(), request).await
                    } else {
                        Err(Error::invalid(unstorable))
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let result = exchange.finish(&call, result).await;
        if let Err(e) = &result {
            log_refusal(method, e);
        }
        result
    }
    .instrument(span.clone())
    .await;
    let code = result.as_ref().err().map_or(tonic::Code::Ok, Error::code);
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
    crate::telemetry::metrics().rpc_duration.record(
        started.elapsed().as_secs_f64(),
        &[
            opentelemetry::KeyValue::new("rpc.system", "grpc"),
            opentelemetry::KeyValue::new("rpc.service", service),
            opentelemetry::KeyValue::new("rpc.method", name),
            opentelemetry::KeyValue::new("rpc.grpc.status_code", code as i64),
            opentelemetry::KeyValue::new("referral_exchange.edge", edge),
        ],
    );
    result.map(Response::new).map_err(Status::from)
}

fn identify<T>(exchange: &Exchange, request: &Request<T>, method: &'static str) -> Call {
    // The HTTP edge identifies its caller itself (certificate and headers, or X-Road) and hands the
    // claims over with the request; a gRPC request's extensions come from the server only.
    let claims = match request.extensions().get::<Claims>() {
        Some(claims) => claims.clone(),
        None => {
            let certs = request.peer_certs();
            let mut claims = crate::tls::claims_from_peer(certs.as_deref().map(Vec::as_slice));
            // A value that is not visible ASCII is passed on as such so that it is refused, not dropped.
            let header = |name: &str| {
                request
                    .metadata()
                    .get(name)
                    .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
            };
            claims.user_id = header(USER_ID_HEADER);
            claims.correlation_id = header(CORRELATION_ID_HEADER);
            claims
        }
    };
    Call::identify(method, claims, exchange.registry())
}

/// Logs a refusal: codes, reasons and the broken rules' field paths only. Messages may quote
/// resource names, never personal data, and a field path with its rule is what an operator needs to
/// tell a caller what to fix.
fn log_refusal(method: &str, e: &Error) {
    let fields = match e {
        Error::InvalidArgument { violations, .. } => violations
            .iter()
            .map(|v| format!("{} ({})", v.field, v.rule))
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    if fields.is_empty() {
        tracing::info!(method, code = ?e.code(), reason = e.reason().as_str(), "refused");
    } else {
        tracing::info!(
            method,
            code = ?e.code(),
            reason = e.reason().as_str(),
            fields,
            "refused"
        );
    }
}

/// A call refused before its handler could run (its request could not be read as its message, on
/// either edge; or the console's sign-in refused it): identified from `request`'s certificate,
/// metadata or claims, answered identity first, then `error` if it is about who the caller is,
/// then role, then `error`; logged and audited as [`handle`] does a refusal.
pub(crate) async fn refuse_unread(
    exchange: &Exchange,
    request: &Request<()>,
    method: &'static str,
    error: Error,
) -> Status {
    let call = identify(exchange, request, method);
    let error = match call.caller() {
        Err(identity) => identity,
        // Who the caller is was the problem (the console's sign-in): that, not its role.
        Ok(_) if error.code() == tonic::Code::Unauthenticated => error,
        Ok(_) => call.authorize().err().unwrap_or(error),
    };
    log_refusal(method, &error);
    match exchange.finish(&call, Err::<(), _>(error)).await {
        Err(error) => Status::from(error),
        Ok(()) => Status::from(Error::internal("a refusal turned into success")),
    }
}

/// The full method path of `method` on `service`.
macro_rules! method {
    ($service:literal, $method:literal) => {
        concat!("/referral_exchange.v1.", $service, "/", $method)
    };
}
pub(crate) use method;

/// AIP-155: a `request_id` is a UUID chosen by the client; a retry must send the same request again.
/// The fingerprint covers the method and the whole request, so a reused id with another body is caught.
pub(crate) fn request_key<M: Message>(
    method: &str,
    request_id: &str,
    request: &M,
    required: bool,
) -> Result<Option<RequestKey>> {
    if request_id.is_empty() {
        return if required {
            Err(Error::invalid(vec![Violation::required("request_id")]))
        } else {
            Ok(None)
        };
    }
    if uuid::Uuid::parse_str(request_id).is_err() {
        return Err(Error::invalid_field(
            "request_id",
            "uuid",
            "must be a UUID chosen by the client",
        ));
    }
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(request.encode_to_vec());
    Ok(Some(RequestKey {
        request_id: request_id.to_owned(),
        fingerprint: hex::encode(hash.finalize()),
    }))
}

pub(crate) const DEFAULT_PAGE_SIZE: i64 = 100;
pub(crate) const MAX_PAGE_SIZE: i64 = 1000;

/// AIP-158: 0 means the default; larger than the maximum is coerced to it; negative is an error.
pub(crate) fn page_size(value: i32) -> Result<i64> {
    match value {
        0 => Ok(DEFAULT_PAGE_SIZE),
        v if v < 0 => Err(Error::invalid_field(
            "page_size",
            "non_negative",
            "must not be negative",
        )),
        v => Ok(i64::from(v).min(MAX_PAGE_SIZE)),
    }
}

#[derive(Serialize, serde::Deserialize)]
struct PageToken<C> {
    /// Fingerprint of the query the token continues: a token only works with the same filters.
    q: String,
    c: C,
}

/// AIP-158 paging of one list request: the page size, where the page starts, and the token of the next.
pub(crate) struct Paging<C> {
    /// Fingerprint of the request with its paging fields cleared: a token continues only its own query.
    query: String,
    pub size: i64,
    pub after: Option<C>,
}

impl<C: Serialize + DeserializeOwned> Paging<C> {
    /// `cleared` is the request with `page_size` and `page_token` cleared.
    pub fn of<M: Message>(cleared: &M, page_size_value: i32, page_token: &str) -> Result<Self> {
        let query = hex::encode(&Sha256::digest(cleared.encode_to_vec())[..12]);
        let after = decode_page_token(&query, page_token)?;
        Ok(Self {
            query,
            size: page_size(page_size_value)?,
            after,
        })
    }

    /// The token of the page after `page`, or empty on the last page.
    pub fn next_token<T>(
        &self,
        page: &crate::exchange::Page<T>,
        cursor: impl Fn(&T) -> C,
    ) -> String {
        match (page.more, page.items.last()) {
            (true, Some(last)) => encode_page_token(&self.query, cursor(last)),
            _ => String::new(),
        }
    }
}

fn encode_page_token<C: Serialize>(query: &str, cursor: C) -> String {
    let token = PageToken {
        q: query.to_owned(),
        c: cursor,
    };
    serde_json::to_vec(&token)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .unwrap_or_default()
}

fn decode_page_token<C: DeserializeOwned>(query: &str, token: &str) -> Result<Option<C>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::InvalidArgument {
        reason: Reason::InvalidPageToken,
        violations: vec![Violation::new(
            "page_token",
            "page_token",
            "not a page token of this query: repeat the request with the same filters",
        )],
    };
    let json = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let token: PageToken<C> = serde_json::from_slice(&json).map_err(|_| invalid())?;
    if token.q != query {
        return Err(invalid());
    }
    Ok(Some(token.c))
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub(crate) fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<pbjson_types::Timestamp> {
    t.map(timestamp)
}

/// Calls `visit` with the path (as the proto names its fields, e.g. `referral.reasons[1]`) and the
/// value of every string in `request`. Walks the request's proto3 JSON form (the field names are
/// turned back into the proto's), so every field of every method is covered without a list.
fn visit_strings<T: Serialize>(request: &T, mut visit: impl FnMut(&str, &str)) {
    fn walk(value: &serde_json::Value, path: &mut String, visit: &mut dyn FnMut(&str, &str)) {
        match value {
            serde_json::Value::String(text) => visit(path, text),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, path, visit);
                    path.truncate(len);
                }
            }
            serde_json::Value::Object(fields) => {
                for (name, item) in fields {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&snake_case(name));
                    walk(item, path, visit);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    if let Ok(value) = serde_json::to_value(request) {
        walk(&value, &mut String::new(), &mut visit);
    }
}

/// Every string of `request` holding a control character other than tab, line feed and carriage
/// return, as a violation of its field. NUL cannot be stored by PostgreSQL at all (and SQLite would
/// store it), and no field of this API means one: refusing them all here, before any use case, makes
/// the answer the same on both engines.
pub(crate) fn control_characters<T: Serialize>(request: &T) -> Vec<Violation> {
    let mut out = Vec::new();
    visit_strings(request, |path, text| {
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            out.push(Violation::new(
                path,
                "control_character",
                "must not contain NUL or other control characters (tab and line breaks are \
                 allowed)",
            ));
        }
    });
    out
}

/// The people a request names by a valid identity code (in any `personal_identity_code` field,
/// nested or not): a call refused before its use case ran still belongs in their logs, as an
/// attempt.
fn named_people<T: Serialize>(request: &T) -> Vec<PersonalIdentityCode> {
    let mut out = Vec::new();
    visit_strings(request, |path, text| {
        if (path == "personal_identity_code" || path.ends_with(".personal_identity_code"))
            && let Ok(code) = PersonalIdentityCode::parse(text)
        {
            out.push(code);
        }
    });
    out
}

/// A proto3 JSON field name as the proto names it (`personalIdentityCode` →
/// `personal_identity_code`): field violations name fields the same way on both edges.
pub(crate) fn snake_case(json_name: &str) -> String {
    let mut out = String::with_capacity(json_name.len() + 4);
    for c in json_name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The range of `google.protobuf.Timestamp` (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z), which
/// both engines store; a time outside it is refused rather than left to one engine to reject.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A proto timestamp as a time, or a violation of `field`.
pub(crate) fn from_timestamp(
    t: Option<&pbjson_types::Timestamp>,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<DateTime<Utc>> {
    let t = t?;
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&t.seconds) {
        violations.push(Violation::new(
            field,
            "timestamp_range",
            "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ));
        return None;
    }
    let time = u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos));
    if time.is_none() {
        violations.push(Violation::new(field, "timestamp", "not a valid timestamp"));
    }
    time.map(crate::clock::truncate_to_micros)
}

pub(crate) fn from_duration(
    d: Option<&pbjson_types::Duration>,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<chrono::Duration> {
    let d = d?;
    // proto3 Duration: nanos below one second, with the sign of seconds.
    let well_formed = d.nanos.abs() < 1_000_000_000
        && (d.seconds == 0 || d.nanos == 0 || (d.seconds > 0) == (d.nanos > 0));
    let duration = well_formed
        .then(|| chrono::Duration::try_seconds(d.seconds))
        .flatten()
        .map(|s| s + chrono::Duration::nanoseconds(d.nanos.into()));
    if duration.is_none() {
        violations.push(Violation::new(field, "duration", "not a valid duration"));
    }
    duration
}

/// An identity code from a request field: canonical form only (refused, never repaired).
pub(crate) fn identity_code(
    value: &str,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<PersonalIdentityCode> {
    match PersonalIdentityCode::parse(value) {
        Ok(code) => Some(code),
        Err(broken) => {
            violations.extend(
                broken
                    .into_iter()
                    .map(|rule| Violation::new(field, rule.rule(), rule.description())),
            );
            None
        }
    }
}

/// An optional identity-code filter: empty means none.
pub(crate) fn optional_identity_code(
    value: &str,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<PersonalIdentityCode> {
    if value.is_empty() {
        None
    } else {
        identity_code(value, field, violations)
    }
}

/// An optional `organizations/{id}` filter: empty means none.
pub(crate) fn optional_organization(
    value: &str,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<crate::domain::OrganizationId> {
    if value.is_empty() {
        return None;
    }
    let org = crate::domain::OrganizationId::from_resource_name(value).ok();
    if org.is_none() {
        violations.push(crate::domain::organization::organization_name_violation(
            field, value,
        ));
    }
    org
}

/// The UUID in `collection/{uuid}`.
pub(crate) fn resource_id(
    name: &str,
    collection: &str,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<uuid::Uuid> {
    if name.is_empty() {
        violations.push(Violation::required(field));
        return None;
    }
    let id = name
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| uuid::Uuid::parse_str(id).ok());
    if id.is_none() {
        violations.push(Violation::new(
            field,
            "resource_name",
            format!("must be {collection}/{{uuid}}"),
        ));
    }
    id
}

/// Fails with every collected violation, if any.
pub(crate) fn check(violations: Vec<Violation>) -> Result<()> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(violations))
    }
}

fn none_if_empty(s: String) -> Option<String> {
    if s.trim().is_empty() { None } else { Some(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Whatever a client sends as a page token, it is refused as one (never a panic or
            /// another error) unless it is a token this query gave out.
            #[test]
            fn any_page_token_is_refused_unless_it_was_given_out(token in any::<String>()) {
                match decode_page_token::<(i64, String)>("q", &token) {
                    Ok(None) => prop_assert!(token.is_empty()),
                    Ok(Some(_)) => prop_assert!(false, "a made-up token was accepted"),
                    Err(e) => prop_assert_eq!(e.reason(), Reason::InvalidPageToken),
                }
            }

            /// Base64 of JSON that is not a token of this query: refused too.
            #[test]
            fn well_formed_tokens_of_other_queries_are_refused(
                query in "[0-9a-f]{24}",
                cursor in any::<(i64, String)>(),
            ) {
                let token = encode_page_token(&query, cursor.clone());
                let back: Option<(i64, String)> =
                    decode_page_token(&query, &token).expect("its own query");
                prop_assert_eq!(back, Some(cursor));
                let other = format!("{query}0");
                prop_assert!(decode_page_token::<(i64, String)>(&other, &token).is_err());
            }

            /// A timestamp is accepted exactly in the range both engines store.
            #[test]
            fn timestamps_are_accepted_exactly_in_range(seconds in any::<i64>(), nanos in any::<i32>()) {
                let mut v = Vec::new();
                let t = pbjson_types::Timestamp { seconds, nanos };
                let accepted = from_timestamp(Some(&t), "start_time", &mut v).is_some();
                let in_range = (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds)
                    && (0..1_000_000_000).contains(&nanos);
                prop_assert_eq!(accepted, in_range);
                prop_assert_eq!(v.is_empty(), in_range);
                prop_assert!(v.iter().all(|v| v.field == "start_time"));
            }
        }
    }

    #[test]
    fn page_tokens_only_continue_their_own_query() {
        let token = encode_page_token("abc", (5_i64, "x".to_string()));
        let back: Option<(i64, String)> = decode_page_token("abc", &token).expect("valid");
        assert_eq!(back, Some((5, "x".into())));
        assert!(decode_page_token::<(i64, String)>("other", &token).is_err());
        assert!(decode_page_token::<(i64, String)>("abc", "garbage!").is_err());
        assert_eq!(
            decode_page_token::<(i64, String)>("abc", "").expect("empty"),
            None
        );
    }

    #[test]
    fn page_size_is_defaulted_and_coerced() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5000).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn durations_and_timestamps_are_checked() {
        let mut v = Vec::new();
        let d = from_duration(
            Some(&pbjson_types::Duration {
                seconds: 10,
                nanos: 5,
            }),
            "d",
            &mut v,
        );
        assert_eq!(
            d,
            Some(chrono::Duration::seconds(10) + chrono::Duration::nanoseconds(5))
        );
        assert_eq!(
            from_duration(
                Some(&pbjson_types::Duration {
                    seconds: 1,
                    nanos: -5
                }),
                "d",
                &mut v
            ),
            None
        );
        assert_eq!(
            from_timestamp(
                Some(&pbjson_types::Timestamp {
                    seconds: 0,
                    nanos: -1
                }),
                "t",
                &mut v
            ),
            None
        );
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn request_ids_are_uuids_and_fingerprint_the_body() {
        let id = "5f0c7c1e-9d5e-4c43-9a6e-0d1f3c0f2a11";
        let a = request_key(
            "/m",
            id,
            &pbjson_types::Timestamp {
                seconds: 1,
                nanos: 0,
            },
            true,
        )
        .expect("ok");
        let b = request_key(
            "/m",
            id,
            &pbjson_types::Timestamp {
                seconds: 2,
                nanos: 0,
            },
            true,
        )
        .expect("ok");
        assert_ne!(a.map(|k| k.fingerprint), b.map(|k| k.fingerprint));
        assert!(
            request_key(
                "/m",
                "not-a-uuid",
                &pbjson_types::Timestamp::default(),
                false
            )
            .is_err()
        );
        assert!(request_key("/m", "", &pbjson_types::Timestamp::default(), true).is_err());
        assert_eq!(
            request_key("/m", "", &pbjson_types::Timestamp::default(), false).ok(),
            Some(None)
        );
    }
}
