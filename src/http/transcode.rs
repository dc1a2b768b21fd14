//! HTTP/JSON to the API's proto calls and back (AIP-127 transcoding).
//!
//! The table of bindings is generated at build time from the `google.api.http` annotations
//! (`build/http.rs`). A request is matched against it by verb and path; the path's variables, the
//! query string and the body are merged into one proto3-JSON object, which pbjson reads into the
//! method's request message; the method runs on the very service implementation the gRPC edge
//! serves (so both edges share one conversion, one use-case layer, one audit trail), and its answer
//! is written back as proto3 JSON — or, for the one server-streaming method, as NDJSON.

use std::future::Future;

use axum::{
    body::Body as HttpBody,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::{
    domain::Violation,
    error::{Error, status_json},
    proto::v1 as pb,
};

use super::Apis;

/// How a binding's request body fills the request message.
#[derive(Debug)]
pub(crate) enum Body {
    /// No body: every field not in the path comes from the query string.
    None,
    /// `body: "*"`: the body is the request (without the path's fields).
    Whole,
    /// `body: "<field>"`: the body is that field; the rest comes from the query string.
    Field { json_name: &'static str },
}

/// One segment of a binding's path.
#[derive(Debug)]
pub(crate) enum Segment {
    Literal(&'static str),
    /// One path segment, the value of `field` with `prefix` before it (`referrals/` + id).
    Variable {
        field: &'static str,
        prefix: &'static str,
    },
}

/// How a query parameter's text becomes proto3 JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QueryKind {
    /// `true` / `false`.
    Bool,
    /// A JSON string: strings, enums, numbers (proto3 JSON takes them as strings), timestamps,
    /// durations.
    Text,
}

#[derive(Debug)]
pub(crate) struct QueryField {
    pub name: &'static str,
    pub json_name: &'static str,
    pub kind: QueryKind,
    pub repeated: bool,
}

/// One way a method is reached over HTTP.
#[derive(Debug)]
pub(crate) struct Binding {
    /// `<Service>.<Method>`, as in the OpenAPI document.
    pub operation_id: &'static str,
    /// The gRPC method path, as the audit trail records it.
    pub grpc_method: &'static str,
    pub verb: &'static str,
    /// The annotation's template, e.g. `/v1/{name=referrals/*}:accept`: the route label of logs,
    /// traces and metrics (a URL would carry resource ids).
    pub template: &'static str,
    pub segments: &'static [Segment],
    pub custom: Option<&'static str>,
    pub body: Body,
    pub query: &'static [QueryField],
}

include!(concat!(env!("OUT_DIR"), "/http_bindings.rs"));

/// What a matched request brings to its method.
pub(crate) struct Input {
    /// The request message as proto3 JSON.
    pub message: Value,
    /// Carries the caller's [`crate::access::Claims`] to the service.
    pub extensions: axum::http::Extensions,
    /// `traceparent` and the like, as gRPC metadata.
    pub metadata: tonic::metadata::MetadataMap,
}

/// The answer of one call: a response, or a refusal to be answered (and audited) by the edge.
pub(crate) type Answer = Result<Response, Refusal>;

/// A refusal before the method ran: its request could not be read as its message.
pub(crate) struct Refusal {
    pub error: Error,
    pub extensions: axum::http::Extensions,
}

/// The fields a matched path binds, with their values (`name` → `referrals/…`).
pub(crate) type PathFields = Vec<(&'static str, String)>;

/// The binding `path` and `verb` reach (its index in [`BINDINGS`]), with the fields the path binds;
/// otherwise the verbs the path takes (none: no such path).
pub(crate) fn route(verb: &str, path: &str) -> Result<(usize, PathFields), Vec<&'static str>> {
    let (path, custom) = split_custom(path);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut other_verbs = Vec::new();
    for (index, binding) in BINDINGS.iter().enumerate() {
        if binding.custom != custom || binding.segments.len() != parts.len() {
            continue;
        }
        let mut fields = Vec::new();
        let matched = binding
            .segments
            .iter()
            .zip(&parts)
            .all(|(s, part)| match s {
                Segment::Literal(text) => text == part,
                Segment::Variable { field, prefix } => {
                    let ok = !part.is_empty() && !part.contains('%');
                    fields.push((*field, format!("{prefix}{part}")));
                    ok
                }
            });
        if !matched {
            continue;
        }
        if binding.verb == verb {
            return Ok((index, fields));
        }
        other_verbs.push(binding.verb);
    }
    Err(other_verbs)
}

/// `/v1/referrals/x:accept` → (`/v1/referrals/x`, `accept`).
fn split_custom(path: &str) -> (&str, Option<&str>) {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    match path[last..].rfind(':') {
        Some(i) => (&path[..last + i], Some(&path[last + i + 1..])),
        None => (path, None),
    }
}

/// The request message of `binding` as proto3 JSON, from its path fields, query string and body.
pub(crate) fn message(
    binding: &Binding,
    path_fields: PathFields,
    query: Option<&str>,
    body: &[u8],
) -> Result<Value, Error> {
    let mut message = match &binding.body {
        Body::None => Map::new(),
        Body::Whole => match json_body(body)? {
            Value::Object(map) => map,
            _ => return Err(body_violation("", "the body must be a JSON object")),
        },
        Body::Field { json_name, .. } => {
            let mut map = Map::new();
            map.insert((*json_name).to_owned(), json_body(body)?);
            map
        }
    };
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
            Error::invalid_field(
                "query",
                "form_urlencoded",
                "the query string is not form-urlencoded",
            )
        })?;
        let mut violations = Vec::new();
        for (key, text) in pairs {
            let Some(field) = binding
                .query
                .iter()
                .find(|f| f.name == key || f.json_name == key)
            else {
                violations.push(unknown_parameter(binding, &key));
                continue;
            };
            let value = match field.kind {
                QueryKind::Bool => match text.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        violations.push(Violation::new(
                            field.name,
                            "bool",
                            "must be true or false",
                        ));
                        continue;
                    }
                },
                QueryKind::Text => Value::String(text),
            };
            if field.repeated {
                let list = message
                    .entry(field.json_name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(value);
                }
            } else if message.insert(field.json_name.to_owned(), value).is_some() {
                violations.push(Violation::new(
                    field.name,
                    "once",
                    "must be given at most once",
                ));
            }
        }
        if !violations.is_empty() {
            return Err(Error::invalid(violations));
        }
    }
    // The path wins over the body, as in Google's transcoding: the URL names the resource.
    for (field, value) in path_fields {
        message.remove(field);
        message.insert(field.to_owned(), Value::String(value));
    }
    Ok(Value::Object(message))
}

fn unknown_parameter(binding: &Binding, key: &str) -> Violation {
    if key == "personal_identity_code" || key == "personalIdentityCode" {
        // A URL ends up in proxies' access logs and browser histories.
        let search = BINDINGS
            .iter()
            .find(|b| b.grpc_method == binding.grpc_method && matches!(b.body, Body::Whole));
        let hint = search.map_or(String::new(), |b| {
            format!(": use {} {}", b.verb, b.template)
        });
        return Violation::new(
            "personal_identity_code",
            "not_in_url",
            format!("an identity code is never sent in a URL, only in a POST body{hint}"),
        );
    }
    Violation::new(
        if field_like(key) { key } else { "query" },
        "unknown_parameter",
        format!(
            "not a query parameter of {}; it takes {}",
            binding.operation_id,
            binding
                .query
                .iter()
                .map(|f| f.json_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn json_body(body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's message may quote the input; the position is enough to find the mistake.
        body_violation(
            "",
            &format!(
                "the body is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn body_violation(field: &str, description: &str) -> Error {
    Error::invalid(vec![Violation::new(
        if field.is_empty() { "body" } else { field },
        "proto3_json",
        description,
    )])
}

/// Reads `value` as the request message `T`; a violation names the field that did not fit.
fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut field = String::new();
        for segment in e.path().iter() {
            use serde_path_to_error::Segment as S;
            match segment {
                S::Map { key } => {
                    let key = if field_like(key) {
                        crate::grpc::snake_case(key)
                    } else {
                        "?".to_owned()
                    };
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(&key);
                }
                S::Seq { index } => field.push_str(&format!("[{index}]")),
                S::Enum { .. } | S::Unknown => {}
            }
        }
        // serde's message may quote the value (an identity code in the wrong field): not repeated.
        body_violation(
            &field,
            "not valid proto3 JSON for this field: an unknown field, a wrong type, or a value out of range",
        )
    })
}

/// Whether a key from the client looks like a field name, and so may be repeated in an answer (an
/// unknown key may be anything, an identity code included).
fn field_like(key: &str) -> bool {
    key.len() <= 64 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The method's request, read from `input`'s proto3 JSON; a refusal (to be audited by the edge) if
/// it does not fit the message.
fn read<T: DeserializeOwned>(input: Input) -> Result<tonic::Request<T>, Refusal> {
    match decode::<T>(input.message) {
        Ok(message) => Ok(tonic::Request::from_parts(
            input.metadata,
            input.extensions,
            message,
        )),
        Err(error) => Err(Refusal {
            error,
            extensions: input.extensions,
        }),
    }
}

/// A unary method: one JSON answer.
pub(crate) async fn unary<Req, Resp, F, Fut>(input: Input, call: F) -> Answer
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    Ok(match call(read(input)?).await {
        Ok(response) => json_response(StatusCode::OK, &response.into_inner()),
        Err(status) => status_response(&status),
    })
}

/// A unary method whose answer `render` writes from the request and the response (JSON, or
/// another representation of the same method such as CSV).
pub(crate) async fn unary_rendered<Req, Resp, F, Fut>(
    input: Input,
    call: F,
    render: impl FnOnce(&Req, Resp) -> Response,
) -> Answer
where
    Req: DeserializeOwned + Clone,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let request = read::<Req>(input)?;
    let asked = request.get_ref().clone();
    Ok(match call(request).await {
        Ok(response) => render(&asked, response.into_inner()),
        Err(status) => status_response(&status),
    })
}

/// A server-streaming method: NDJSON, one message per line. An error after the first line ends the
/// stream with a line `{"error": <google.rpc.Status>}` (the HTTP status is already sent).
pub(crate) async fn server_streaming<Req, Resp, F, Fut>(input: Input, call: F) -> Answer
where
    Req: DeserializeOwned,
    Resp: Serialize + Send + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<
        Output = Result<
            tonic::Response<
                std::pin::Pin<Box<dyn futures::Stream<Item = Result<Resp, tonic::Status>> + Send>>,
            >,
            tonic::Status,
        >,
    >,
{
    let stream = match call(read(input)?).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(status_response(&status)),
    };
    let lines = stream.map(|item| {
        let mut line = match item {
            Ok(message) => serde_json::to_vec(&message),
            Err(status) => {
                serde_json::to_vec(&serde_json::json!({ "error": status_json(&status) }))
            }
        }
        .unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line))
    });
    let mut response = HttpBody::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => status_response(&tonic::Status::from(Error::internal(
            "a response could not be written as JSON",
        ))),
    }
}

/// A refusal as JSON `google.rpc.Status` with the HTTP status of Google's mapping.
pub(crate) fn status_response(status: &tonic::Status) -> Response {
    let code = StatusCode::from_u16(crate::error::http_status(status.code()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &status_json(status))
}

fn unknown_binding(index: usize) -> Answer {
    Ok(status_response(&tonic::Status::from(Error::internal(
        format!("no HTTP binding {index}"),
    ))))
}
