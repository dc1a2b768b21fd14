//! The OpenAPI 3.1 document of the HTTP face, made from the same descriptors and bindings the HTTP
//! edge routes by, so that it cannot drift from what is served. Never written by hand.
//!
//! Schemas follow the proto3 JSON mapping as pbjson writes it (<https://protobuf.dev/programming-guides/json/>):
//! fields by `json_name`, 64-bit integers as decimal strings, enums by value name, bytes in base64,
//! `Timestamp` as RFC 3339, `Duration` as `1.5s`, default values left out (so no response field is
//! `required`). Descriptions come from the comments in `proto/`. Anything this file cannot map fails
//! the build instead of producing a document that says something false.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
};
use serde_json::{Map, Value, json};

use crate::http::{Binding, GRPC_ONLY, Segment};

const SCHEMAS: &str = "#/components/schemas/";
/// pbjson writes `int64`, `sint64` and `sfixed64` as decimal strings.
const INT64_PATTERN: &str = "^-?[0-9]+$";
/// … and `uint64` and `fixed64` too.
const UINT64_PATTERN: &str = "^[0-9]+$";
/// `google.protobuf.Duration`: seconds with up to nine fractional digits and an `s`.
const DURATION_PATTERN: &str = r"^-?[0-9]+(\.[0-9]{1,9})?s$";
/// A path variable is one segment.
const SEGMENT_PATTERN: &str = "^[^/]+$";
/// `x-user-id` and `x-correlation-id`: at most 128 printable ASCII characters, no spaces.
const HEADER_PATTERN: &str = "^[!-~]{0,128}$";
/// Where a comment marks a field the server sets (AIP-203's wording).
const OUTPUT_ONLY: &str = "Output only.";

pub fn document(pool: &DescriptorPool, bindings: &[Binding]) -> Result<Value, String> {
    let mut schemas = Schemas::new(pool);
    let mut paths = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    for (i, b) in bindings.iter().enumerate() {
        if bindings[..i]
            .iter()
            .any(|o| o.operation_id == b.operation_id)
        {
            return Err(format!(
                "two bindings have the operationId {}",
                b.operation_id
            ));
        }
        let operation = operation(b, bindings, &mut schemas)?;
        let path = b.openapi_path();
        let item = paths
            .entry(path.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or("a path item is not an object")?;
        let verb = b.verb.to_lowercase();
        if let Some(other) = item.get(&verb) {
            return Err(format!(
                "{} and {} are both {} {path}",
                other["operationId"], b.operation_id, b.verb
            ));
        }
        item.insert(verb, operation);
        let service = b.method.parent_service();
        if !tags.iter().any(|t| t["name"] == service.name()) {
            let mut tag = json!({ "name": service.name() });
            if let Some(text) = schemas.comments.get(&service.parent_file(), service.path()) {
                tag["description"] = json!(text);
            }
            tags.push(tag);
        }
    }
    if paths.contains_key("/openapi.json") {
        return Err("/openapi.json is the document itself: no binding may use it".to_owned());
    }
    paths.insert("/openapi.json".to_owned(), document_operation());
    tags.push(json!({ "name": "OpenApi", "description": "This document." }));

    let mut components = schemas.finish()?;
    for (name, schema) in rpc_schemas() {
        if components.insert(name.clone(), schema).is_some() {
            return Err(format!("schema {name} is defined twice"));
        }
    }

    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "referral-exchange",
            "version": "v1",
            "summary": "Closed-loop referrals from Kela to social welfare organisers, as REST/JSON",
            "description": info_description(),
            "license": { "name": env!("CARGO_PKG_LICENSE"), "identifier": env!("CARGO_PKG_LICENSE") },
        },
        "servers": [{
            "url": "https://127.0.0.1:8443",
            "description": "The default `--http-listen` address, with the development PKI",
        }],
        "security": [{ "mutualTLS": [] }],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components,
            "parameters": header_parameters(),
            "responses": { "Error": error_response() },
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "A client certificate, either the calling organisation's (URI SAN \
                        `urn:referral-exchange:organizations/<id>`, optionally with a personal \
                        `urn:referral-exchange:users/<id>`) or a pinned X-Road security server's, \
                        which then names the organisation in `X-Road-Client`. See the introduction.",
                },
            },
        },
    }))
}

fn info_description() -> String {
    let grpc_only: Vec<String> = GRPC_ONLY
        .iter()
        .map(|(name, _, why)| {
            let (service, method) = name.rsplit_once('.').unwrap_or((name, ""));
            let short = service.rsplit('.').next().unwrap_or(service);
            format!("- `{short}.{method}` (gRPC `/{service}/{method}`): {why}.")
        })
        .collect();
    format!(
        "The HTTP/JSON face of the referral exchange, for Suomi.fi Palveluväylä (X-Road) and other \
HTTP/1.1 clients: the gRPC API as REST/JSON (but for the methods under *gRPC only* below), \
transcoded by the `google.api.http` annotations of the protos (AIP-127). Each `operationId` is \
the `<Service>.<Method>` it calls; a second binding of a method adds its custom verb \
(`ReferralService.ListReferrals.search`). Each description names the gRPC method, as the audit \
log does. Bodies and answers are proto3 JSON as protobuf defines it: \
fields in lowerCamelCase (the proto field names are accepted on input too), 64-bit integers as \
decimal strings, enums by name, bytes in base64, timestamps in RFC 3339. A field at its default \
value (empty, zero, false, the `…_UNSPECIFIED` enum value) is left out of an answer.

## Calling

Mutual TLS only. The caller is identified in one of two ways, never both:

1. **Directly**: a client certificate with the URI SAN `urn:referral-exchange:organizations/<id>` \
names the organisation. The person acting goes in the `x-user-id` header. A certificate may also \
name the person with a second URI SAN `urn:referral-exchange:users/<id>`; that is then the acting \
user, and an `x-user-id` that differs is `PERMISSION_DENIED`.
2. **Through X-Road**: the client certificate is one of the provider security server certificates \
the exchange pins. The organisation is then the subsystem in the `X-Road-Client` header \
(`INSTANCE/MEMBERCLASS/MEMBERCODE/SUBSYSTEMCODE`) as the exchange's client map names it (unmapped \
or malformed: `PERMISSION_DENIED`); `X-Road-UserId` names the person (as `x-user-id`), \
`X-Road-Id` is the correlation id and `X-Road-Represented-Party` is recorded in the audit event. \
`X-Road-*` headers over any other certificate are refused (`PERMISSION_DENIED`), never honoured, \
and answers never set them.

A personal identity code (henkilötunnus) only ever travels in a POST body, never in a path or a \
query string, where it would end up in access logs: a list filtered by person is the `:search` \
binding of the list method.

## Errors

Every error is a JSON `google.rpc.Status` with the HTTP status of Google's mapping (see the \
`default` response of each operation). Its `details` carry a `google.rpc.ErrorInfo` whose \
`reason` is a stable code to branch on, a `google.rpc.BadRequest` listing the broken rules of \
an invalid request, or a `google.rpc.PreconditionFailure` naming the consent a refusal is about.

## gRPC only

{}",
        grpc_only.join("\n")
    )
}

/// The operation of one binding.
fn operation(b: &Binding, all: &[Binding], schemas: &mut Schemas) -> Result<Value, String> {
    let method = &b.method;
    let input = method.input();
    let comment = schemas.comments.get(&method.parent_file(), method.path());
    // The method's name, not the comment's first sentence: the comments in `proto/` explain rather
    // than title ("Kela sees every referral; a receiver only those routed to it …").
    let mut summary = words(method.name());
    let mut description = comment.clone().unwrap_or_default();
    let siblings: Vec<&Binding> = all
        .iter()
        .filter(|o| o.method.full_name() == method.full_name() && o.operation_id != b.operation_id)
        .collect();
    for other in &siblings {
        let how = if b.primary {
            "Also served as"
        } else {
            "The same method as"
        };
        push_paragraph(
            &mut description,
            &format!(
                "{how} `{} {}` (`{}`).",
                other.verb,
                other.openapi_path(),
                other.operation_id
            ),
        );
    }
    if !b.primary && b.body.as_deref() == Some("*") {
        summary = format!("{summary} (request in the body)");
    }
    // Request fields neither in the path, the body nor the query: identity codes (see `http.rs`).
    if b.body.is_none() {
        let path_fields = b.path_fields();
        let left_out: Vec<String> = input
            .fields()
            .filter(|f| {
                !path_fields.contains(&f.name()) && !b.query.iter().any(|q| q.name() == f.name())
            })
            .map(|f| format!("`{}`", f.json_name()))
            .collect();
        if !left_out.is_empty() {
            let instead = siblings
                .iter()
                .find(|o| o.body.as_deref() == Some("*"))
                .map(|o| format!(": to use it, call `{} {}`", o.verb, o.openapi_path()))
                .unwrap_or_default();
            push_paragraph(
                &mut description,
                &format!(
                    "{} is never taken from the query string, where it would end up in access logs{instead}.",
                    left_out.join(", ")
                ),
            );
        }
    }
    push_paragraph(
        &mut description,
        &format!(
            "gRPC: `/{}/{}`.",
            method.parent_service().full_name(),
            method.name()
        ),
    );

    let mut parameters = Vec::new();
    for segment in &b.segments {
        let Segment::Variable {
            field,
            prefix,
            parameter,
        } = segment
        else {
            continue;
        };
        let json_name = input
            .get_field_by_name(field)
            .ok_or_else(|| format!("{}: no field {field}", b.operation_id))?
            .json_name()
            .to_owned();
        parameters.push(json!({
            "name": parameter,
            "in": "path",
            "required": true,
            "description": format!(
                "The request's `{json_name}` is `{prefix}` followed by this segment: `{prefix}{{{parameter}}}`."
            ),
            "schema": { "type": "string", "pattern": SEGMENT_PATTERN },
        }));
    }
    for field in &b.query {
        let mut parameter = json!({
            "name": field.json_name(),
            "in": "query",
            "required": false,
            "schema": schemas.query_schema(field)?,
        });
        if field.is_list() {
            parameter["style"] = json!("form");
            parameter["explode"] = json!(true);
        }
        if let Some(text) = schemas.field_description(field) {
            parameter["description"] = json!(text);
        }
        if deprecated(field) {
            parameter["deprecated"] = json!(true);
        }
        parameters.push(parameter);
    }
    parameters.push(json!({ "$ref": "#/components/parameters/UserId" }));
    parameters.push(json!({ "$ref": "#/components/parameters/CorrelationId" }));

    let mut operation = json!({
        "operationId": b.operation_id,
        "tags": [b.service()],
        "summary": summary,
        "description": description,
        "parameters": parameters,
    });
    match b.body.as_deref() {
        None => {}
        Some("*") => {
            let path_fields = b.path_fields();
            let schema = if path_fields.is_empty() {
                schemas.message_ref(&input)?
            } else {
                // The request without the fields the path carries, as its own component.
                let name = format!("{}.Body", b.operation_id);
                let mut schema = schemas.message_schema(&input, &path_fields)?;
                let carried: Vec<String> = path_fields
                    .iter()
                    .filter_map(|f| input.get_field_by_name(f))
                    .map(|f| format!("`{}`", f.json_name()))
                    .collect();
                schema["description"] = json!(format!(
                    "The body of `{}`: the fields of `{}` but {}, which the path carries.",
                    b.operation_id,
                    input.name(),
                    carried.join(", ")
                ));
                schemas.add_synthetic(&name, schema)?;
                json!({ "$ref": format!("{SCHEMAS}{name}") })
            };
            // Every field of a proto3 request is optional, so an empty body is the empty message,
            // as in Google's transcoding.
            operation["requestBody"] = json!({
                "required": false,
                "description": "Proto3 JSON; an empty body is the empty message (every field unset).",
                "content": { "application/json": { "schema": schema } },
            });
        }
        Some(field) => {
            let field = input
                .get_field_by_name(field)
                .ok_or_else(|| format!("{}: no body field {field}", b.operation_id))?;
            let mut body = json!({
                "required": true,
                "content": { "application/json": { "schema": schemas.field_schema(&field)? } },
            });
            body["description"] = json!(format!(
                "The request's `{}`.{}",
                field.json_name(),
                schemas
                    .field_description(&field)
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default()
            ));
            operation["requestBody"] = body;
        }
    }

    let output = method.output();
    let output_schema = schemas.message_ref(&output)?;
    let output_name = schemas.key(output.full_name(), output.package_name())?;
    let ok = if b.server_streaming() {
        json!({
            "description": format!(
                "A stream of `{output_name}`: newline-delimited JSON, one JSON object per line, \
                 each line as `application/json` would have it."
            ),
            "content": { "application/x-ndjson": { "schema": output_schema } },
        })
    } else {
        json!({
            "description": format!("The `{output_name}`."),
            "content": { "application/json": { "schema": output_schema } },
        })
    };
    operation["responses"] = json!({
        "200": ok,
        "default": { "$ref": "#/components/responses/Error" },
    });
    if method
        .method_descriptor_proto()
        .options
        .as_ref()
        .and_then(|o| o.deprecated)
        .unwrap_or(false)
    {
        operation["deprecated"] = json!(true);
    }
    Ok(operation)
}

/// `GET /openapi.json`: this document, without authentication.
fn document_operation() -> Value {
    json!({
        "get": {
            "operationId": "OpenApi.GetDocument",
            "tags": ["OpenApi"],
            "summary": "This OpenAPI document",
            "description": "Served without authentication: no client certificate is needed.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document of the HTTP face.",
                    "content": { "application/json": { "schema": { "type": "object" } } },
                },
            },
        },
    })
}

fn header_parameters() -> Value {
    json!({
        "UserId": {
            "name": "x-user-id",
            "in": "header",
            "required": false,
            "description": "The person acting for the calling organisation, recorded in the audit log \
                (never used for authorisation). Required for Kela and receivers (`UNAUTHENTICATED`, \
                reason `USER_ID_MISSING`, without it); auditors may leave it out. At most 128 printable \
                ASCII characters without spaces, and never a personal identity code. With a personal \
                certificate it must equal the certificate's user. Through X-Road, `X-Road-UserId` \
                names the person instead.",
            "schema": { "type": "string", "pattern": HEADER_PATTERN, "maxLength": 128 },
        },
        "CorrelationId": {
            "name": "x-correlation-id",
            "in": "header",
            "required": false,
            "description": "The caller's id for the call, recorded as the audit event's \
                `correlationId`. Same rules as `x-user-id`. Through X-Road, `X-Road-Id` takes its place.",
            "schema": { "type": "string", "pattern": HEADER_PATTERN, "maxLength": 128 },
        },
    })
}

fn error_response() -> Value {
    json!({
        "description": "An error, as a `google.rpc.Status`. The HTTP status follows from its `code` \
            (Google's mapping):\n\n\
            | `code` | HTTP status |\n\
            |---|---|\n\
            | `INVALID_ARGUMENT` (3), `FAILED_PRECONDITION` (9) | 400 |\n\
            | `UNAUTHENTICATED` (16) | 401 |\n\
            | `PERMISSION_DENIED` (7) | 403 |\n\
            | `NOT_FOUND` (5) | 404 |\n\
            | `ABORTED` (10), `ALREADY_EXISTS` (6) | 409 |\n\
            | the request is too large | 413 |\n\
            | `RESOURCE_EXHAUSTED` (8) | 429 |\n\
            | `INTERNAL` (13) | 500 |\n\
            | `UNAVAILABLE` (14) | 503 |\n\
            | `DEADLINE_EXCEEDED` (4) | 504 |",
        "content": {
            "application/json": { "schema": { "$ref": format!("{SCHEMAS}google.rpc.Status") } },
        },
    })
}

/// `google.rpc.Status` and the details this service puts in it, written out here: they are not
/// compiled from `proto/`, and their JSON is fixed by the proto3 mapping.
fn rpc_schemas() -> Vec<(String, Value)> {
    let schema = |name: &str| json!({ "$ref": format!("{SCHEMAS}{name}") });
    vec![
        (
            "google.rpc.Status".to_owned(),
            json!({
                "type": "object",
                "description": "An error (AIP-193).",
                "properties": {
                    "code": {
                        "type": "integer",
                        "format": "int32",
                        "description": "The gRPC status code (`google.rpc.Code`), e.g. 3 for `INVALID_ARGUMENT`.",
                    },
                    "message": {
                        "type": "string",
                        "description": "For developers, in English. Never a personal identity code; an \
                            internal error gives only an id to look up in the server's log.",
                    },
                    "details": {
                        "type": "array",
                        "items": schema("google.protobuf.Any"),
                    },
                },
            }),
        ),
        (
            "google.protobuf.Any".to_owned(),
            json!({
                "type": "object",
                "description": "A detail of an error: `@type` names its message, whose fields sit beside it. \
                    This service sends `google.rpc.ErrorInfo` with every error, `google.rpc.BadRequest` \
                    with `INVALID_ARGUMENT`, and `google.rpc.PreconditionFailure` with some consent \
                    refusals; ignore types you do not know.",
                "required": ["@type"],
                "properties": {
                    "@type": {
                        "type": "string",
                        "examples": [
                            "type.googleapis.com/google.rpc.ErrorInfo",
                            "type.googleapis.com/google.rpc.BadRequest",
                            "type.googleapis.com/google.rpc.PreconditionFailure",
                        ],
                    },
                },
                "anyOf": [
                    schema("google.rpc.ErrorInfo"),
                    schema("google.rpc.BadRequest"),
                    schema("google.rpc.PreconditionFailure"),
                ],
            }),
        ),
        (
            "google.rpc.ErrorInfo".to_owned(),
            json!({
                "type": "object",
                "description": "`@type`: `type.googleapis.com/google.rpc.ErrorInfo`. Why the call failed, \
                    as a code to branch on.",
                "properties": {
                    "reason": {
                        "type": "string",
                        "description": "A stable UPPER_SNAKE_CASE code, e.g. `ETAG_MISMATCH`, `ROLE_NOT_ALLOWED`.",
                    },
                    "domain": {
                        "type": "string",
                        "description": "`referral-exchange` for the errors of this service.",
                    },
                    "metadata": {
                        "type": "object",
                        "additionalProperties": { "type": "string" },
                        "description": "More about the error, e.g. `omittedFieldViolations`: how many broken \
                            rules `BadRequest` does not list.",
                    },
                },
            }),
        ),
        (
            "google.rpc.BadRequest".to_owned(),
            json!({
                "type": "object",
                "description": "`@type`: `type.googleapis.com/google.rpc.BadRequest`. The broken rules of an \
                    invalid request, one violation each (the first ones, if there are many).",
                "properties": {
                    "fieldViolations": {
                        "type": "array",
                        "items": schema("google.rpc.BadRequest.FieldViolation"),
                    },
                },
            }),
        ),
        (
            "google.rpc.BadRequest.FieldViolation".to_owned(),
            json!({
                "type": "object",
                "properties": {
                    "field": {
                        "type": "string",
                        "description": "The field, as a path into the request, e.g. `referral.subject.personal_identity_code`.",
                    },
                    "description": { "type": "string", "description": "What is wrong, for developers." },
                    "reason": {
                        "type": "string",
                        "description": "The broken rule as a code, e.g. `REQUIRED`.",
                    },
                },
            }),
        ),
        (
            "google.rpc.PreconditionFailure".to_owned(),
            json!({
                "type": "object",
                "description": "`@type`: `type.googleapis.com/google.rpc.PreconditionFailure`. What must \
                    change before the call can succeed.",
                "properties": {
                    "violations": {
                        "type": "array",
                        "items": schema("google.rpc.PreconditionFailure.Violation"),
                    },
                },
            }),
        ),
        (
            "google.rpc.PreconditionFailure.Violation".to_owned(),
            json!({
                "type": "object",
                "properties": {
                    "type": { "type": "string", "description": "The kind of precondition, as a code." },
                    "subject": { "type": "string", "description": "What failed it, e.g. `consents/{uuid}`." },
                    "description": { "type": "string" },
                },
            }),
        ),
    ]
}

/// The components of the messages and enums the operations reach, made as they are first referred to.
struct Schemas {
    comments: Comments,
    done: BTreeMap<String, Value>,
    pending: Vec<Pending>,
    /// Component name → the full proto name it stands for, so that two never share one.
    owners: HashMap<String, String>,
}

enum Pending {
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

impl Schemas {
    fn new(pool: &DescriptorPool) -> Self {
        Schemas {
            comments: Comments::new(pool),
            done: BTreeMap::new(),
            pending: Vec::new(),
            owners: HashMap::new(),
        }
    }

    /// The component name of a message or enum: the full name without the package for ours
    /// (`Referral.State`), the full name for anything else.
    fn key(&mut self, full_name: &str, package: &str) -> Result<String, String> {
        let key = if package.starts_with("referral_exchange.") {
            full_name
                .strip_prefix(package)
                .and_then(|n| n.strip_prefix('.'))
                .unwrap_or(full_name)
        } else {
            full_name
        };
        match self.owners.get(key) {
            Some(owner) if owner != full_name => Err(format!(
                "{full_name} and {owner} would both be the schema {key}"
            )),
            Some(_) => Ok(key.to_owned()),
            None => {
                self.owners.insert(key.to_owned(), full_name.to_owned());
                Ok(key.to_owned())
            }
        }
    }

    /// A schema that stands for no proto type, such as a request body without its path fields.
    fn add_synthetic(&mut self, name: &str, schema: Value) -> Result<(), String> {
        self.key(name, "")?;
        if self.done.insert(name.to_owned(), schema).is_some() {
            return Err(format!("schema {name} is made twice"));
        }
        Ok(())
    }

    fn message_ref(&mut self, message: &MessageDescriptor) -> Result<Value, String> {
        if let Some(schema) = well_known(message)? {
            return Ok(schema);
        }
        let key = self.key(message.full_name(), message.package_name())?;
        if !self.done.contains_key(&key)
            && !self
                .pending
                .iter()
                .any(|p| matches!(p, Pending::Message(m) if m == message))
        {
            self.pending.push(Pending::Message(message.clone()));
        }
        Ok(json!({ "$ref": format!("{SCHEMAS}{key}") }))
    }

    fn enum_ref(&mut self, enumeration: &EnumDescriptor) -> Result<Value, String> {
        let key = self.key(enumeration.full_name(), enumeration.package_name())?;
        if !self.done.contains_key(&key)
            && !self
                .pending
                .iter()
                .any(|p| matches!(p, Pending::Enum(e) if e == enumeration))
        {
            self.pending.push(Pending::Enum(enumeration.clone()));
        }
        Ok(json!({ "$ref": format!("{SCHEMAS}{key}") }))
    }

    /// Makes every component referred to so far, and those they refer to.
    fn finish(mut self) -> Result<Map<String, Value>, String> {
        while let Some(next) = self.pending.pop() {
            match next {
                Pending::Message(message) => {
                    let key = self.key(message.full_name(), message.package_name())?;
                    // Taken before it is made, so that a message that contains itself is made once.
                    self.done.insert(key.clone(), Value::Null);
                    let schema = self.message_schema(&message, &[])?;
                    self.done.insert(key, schema);
                }
                Pending::Enum(enumeration) => {
                    let key = self.key(enumeration.full_name(), enumeration.package_name())?;
                    let schema = self.enum_schema(&enumeration);
                    self.done.insert(key, schema);
                }
            }
        }
        Ok(self.done.into_iter().collect())
    }

    /// An object with a property per field (`json_name`), leaving out `skip` (proto field names).
    fn message_schema(
        &mut self,
        message: &MessageDescriptor,
        skip: &[&str],
    ) -> Result<Value, String> {
        let mut properties = Map::new();
        for field in message.fields() {
            if skip.contains(&field.name()) {
                continue;
            }
            properties.insert(field.json_name().to_owned(), self.field_schema(&field)?);
        }
        let mut schema = json!({ "type": "object", "properties": properties });
        if let Some(text) = self.comments.get(&message.parent_file(), message.path()) {
            schema["description"] = json!(text);
        }
        Ok(schema)
    }

    fn enum_schema(&self, enumeration: &EnumDescriptor) -> Value {
        let names: Vec<String> = enumeration.values().map(|v| v.name().to_owned()).collect();
        let mut text = self
            .comments
            .get(&enumeration.parent_file(), enumeration.path())
            .unwrap_or_default();
        let values: Vec<String> = enumeration
            .values()
            .filter_map(|value| {
                let about = self.comments.get(&value.parent_file(), value.path())?;
                Some(format!(
                    "- `{}`: {}",
                    value.name(),
                    about.replace('\n', " ")
                ))
            })
            .collect();
        if !values.is_empty() {
            push_paragraph(&mut text, &values.join("\n"));
        }
        let mut schema = json!({ "type": "string", "enum": names });
        if !text.is_empty() {
            schema["description"] = json!(text);
        }
        schema
    }

    /// A field's schema in a JSON body or answer, with its description.
    /// [`Self::value_schema`], and for an enum its numbers too: a proto3 JSON reader takes either
    /// (pbjson writes names).
    fn lenient_value_schema(&mut self, kind: &Kind) -> Result<Value, String> {
        let schema = self.value_schema(kind)?;
        Ok(match kind {
            Kind::Enum(_) => json!({ "anyOf": [schema, { "type": "integer", "format": "int32" }] }),
            _ => schema,
        })
    }

    fn field_schema(&mut self, field: &FieldDescriptor) -> Result<Value, String> {
        let schema = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return Err(format!(
                    "map field {} has no entry message",
                    field.full_name()
                ));
            };
            let key = entry.map_entry_key_field();
            let value = entry.map_entry_value_field();
            let mut schema = json!({
                "type": "object",
                "additionalProperties": self.value_schema(&value.kind())?,
            });
            // JSON object keys are strings: integer and bool keys are written in decimal or as words.
            match key.kind() {
                Kind::String => {}
                Kind::Bool => schema["propertyNames"] = json!({ "enum": ["true", "false"] }),
                Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => {
                    schema["propertyNames"] = json!({ "pattern": UINT64_PATTERN })
                }
                Kind::Int32
                | Kind::Sint32
                | Kind::Sfixed32
                | Kind::Int64
                | Kind::Sint64
                | Kind::Sfixed64 => schema["propertyNames"] = json!({ "pattern": INT64_PATTERN }),
                other => {
                    return Err(format!(
                        "map field {} has keys of kind {other:?}",
                        field.full_name()
                    ));
                }
            }
            schema
        } else if field.is_list() {
            json!({ "type": "array", "items": self.lenient_value_schema(&field.kind())? })
        } else {
            self.lenient_value_schema(&field.kind())?
        };
        // A proto3 JSON reader takes `null` for any field, meaning its default (pbjson never
        // writes one).
        let mut schema = json!({ "anyOf": [schema, { "type": "null" }] });
        if let Some(text) = self.field_description(field) {
            if text.contains(OUTPUT_ONLY) {
                schema["readOnly"] = json!(true);
            }
            schema["description"] = json!(text);
        }
        if deprecated(field) {
            schema["deprecated"] = json!(true);
        }
        Ok(schema)
    }

    /// The JSON of one value of a field (an element, for a repeated one).
    fn value_schema(&mut self, kind: &Kind) -> Result<Value, String> {
        Ok(match kind {
            Kind::Double => json!({ "type": "number", "format": "double" }),
            Kind::Float => json!({ "type": "number", "format": "float" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX })
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "string", "pattern": INT64_PATTERN })
            }
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "pattern": UINT64_PATTERN }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Kind::Enum(enumeration) => self.enum_ref(enumeration)?,
            Kind::Message(message) => self.message_ref(message)?,
        })
    }

    /// A query parameter's schema: the text in the URL, so 64-bit integers are plain integers here.
    fn query_schema(&mut self, field: &FieldDescriptor) -> Result<Value, String> {
        let one = match field.kind() {
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "integer", "format": "int64" })
            }
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "integer", "minimum": 0 }),
            Kind::Message(ref message) => match well_known(message)? {
                Some(schema) => schema,
                None => {
                    return Err(format!(
                        "{} is a message: it cannot be a query parameter",
                        field.full_name()
                    ));
                }
            },
            ref kind => self.value_schema(kind)?,
        };
        if field.is_map() {
            return Err(format!(
                "{} is a map: it cannot be a query parameter",
                field.full_name()
            ));
        }
        Ok(if field.is_list() {
            json!({ "type": "array", "items": one })
        } else {
            one
        })
    }

    /// The field's comment, and, for a member of a oneof, which others it excludes.
    fn field_description(&self, field: &FieldDescriptor) -> Option<String> {
        let mut text = self
            .comments
            .get(&field.parent_file(), field.path())
            .unwrap_or_default();
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            let members: Vec<String> = oneof
                .fields()
                .map(|f| format!("`{}`", f.json_name()))
                .collect();
            let mut note = self
                .comments
                .get(&oneof.parent_file(), oneof.path())
                .map(|about| format!("{} ", about.replace('\n', " ")))
                .unwrap_or_default();
            note.push_str(&format!(
                "Oneof `{}`: at most one of {} is set.",
                oneof.name(),
                members.join(", ")
            ));
            push_paragraph(&mut text, &note);
        }
        (!text.is_empty()).then_some(text)
    }
}

/// The well-known types that are not objects in JSON, written inline; `None` for other messages.
fn well_known(message: &MessageDescriptor) -> Result<Option<Value>, String> {
    Ok(match message.full_name() {
        "google.protobuf.Timestamp" => Some(json!({ "type": "string", "format": "date-time" })),
        "google.protobuf.Duration" => {
            Some(json!({ "type": "string", "pattern": DURATION_PATTERN }))
        }
        "google.protobuf.Empty" => Some(json!({ "type": "object" })),
        name if name.starts_with("google.protobuf.") => {
            return Err(format!(
                "{name} has a JSON mapping of its own that build/openapi.rs does not know yet"
            ));
        }
        _ => None,
    })
}

fn deprecated(field: &FieldDescriptor) -> bool {
    field
        .field_descriptor_proto()
        .options
        .as_ref()
        .and_then(|o| o.deprecated)
        .unwrap_or(false)
}

/// The leading comments of every element of every file, by file and `source_code_info` path.
struct Comments {
    by_file: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut by_file = HashMap::new();
        for file in pool.files() {
            let mut comments = HashMap::new();
            if let Some(info) = &file.file_descriptor_proto().source_code_info {
                for location in &info.location {
                    let raw = location
                        .leading_comments
                        .as_deref()
                        .or(location.trailing_comments.as_deref())
                        .unwrap_or_default();
                    let text = clean_comment(raw);
                    if !text.is_empty() {
                        comments.entry(location.path.clone()).or_insert(text);
                    }
                }
            }
            by_file.insert(file.name().to_owned(), comments);
        }
        Comments { by_file }
    }

    fn get(&self, file: &FileDescriptor, path: &[i32]) -> Option<String> {
        self.by_file.get(file.name())?.get(path).cloned()
    }
}

/// `// text` lines without the space after `//`, and without blank lines around.
fn clean_comment(raw: &str) -> String {
    raw.lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// `ListReferrals` → `List referrals`.
fn words(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn push_paragraph(text: &mut String, paragraph: &str) {
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(paragraph);
}
