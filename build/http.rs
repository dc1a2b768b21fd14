//! The HTTP bindings of the API, read from the `google.api.http` annotations in `proto/` (AIP-127).
//!
//! One model serves two outputs made at build time: the transcoding table the HTTP edge routes by
//! (`http_bindings.rs`, see [`rust_table`]) and the OpenAPI document (`openapi.rs`). A method without
//! an annotation fails the build, unless it is a streaming method the HTTP face cannot carry
//! ([`GRPC_ONLY`]).

use std::fmt::Write as _;

use prost_reflect::{
    DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value,
};

/// Methods served over gRPC only: each with the path an HTTP client would look for it at (answered
/// 501 with the reason) and the reason.
pub const GRPC_ONLY: &[(&str, &str, &str)] = &[(
    "referral_exchange.v1.MailboxService.StreamMessages",
    "/v1/mailbox/messages:stream",
    "a server stream of leased messages needs HTTP/2 end to end; over HTTP/1.1 and X-Road, long-poll PullMessages",
)];

/// One way a method is reached over HTTP.
pub struct Binding {
    pub method: MethodDescriptor,
    /// `<Service>.<Method>`; an additional binding gets a suffix naming its verb (`.search`).
    pub operation_id: String,
    pub primary: bool,
    /// Upper case: `GET`, `POST`, …
    pub verb: String,
    /// As annotated: `/v1/{name=referrals/*}:accept`.
    pub template: String,
    pub segments: Vec<Segment>,
    /// The custom verb after the last `:` (`accept`), if any.
    pub custom: Option<String>,
    /// `None`: no body; `Some("*")`: the whole request; `Some(field)`: that field only.
    pub body: Option<String>,
    /// The request fields taken from the query string: those neither bound by the path nor in the body.
    pub query: Vec<FieldDescriptor>,
}

/// One segment of a path template.
pub enum Segment {
    Literal(String),
    /// `*` inside `{field=prefix/*}`: one segment, the field's value is `prefix` + the segment.
    Variable {
        field: String,
        prefix: String,
        /// The OpenAPI parameter name: the collection's singular (`referrals/*` → `referral`).
        parameter: String,
    },
}

impl Binding {
    pub fn service(&self) -> &str {
        self.method.parent_service().name()
    }

    /// The path as an OpenAPI template: `/v1/referrals/{referral}:accept`.
    pub fn openapi_path(&self) -> String {
        let mut path = String::new();
        for segment in &self.segments {
            path.push('/');
            match segment {
                Segment::Literal(text) => path.push_str(text),
                Segment::Variable { parameter, .. } => write!(path, "{{{parameter}}}").unwrap(),
            }
        }
        if let Some(custom) = &self.custom {
            write!(path, ":{custom}").unwrap();
        }
        path
    }

    /// The fields bound by the path.
    pub fn path_fields(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Variable { field, .. } => Some(field.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }
}

/// Every binding of every method of the `referral_exchange` services, in declaration order.
pub fn bindings(pool: &DescriptorPool) -> Result<Vec<Binding>, String> {
    let http = pool
        .get_extension_by_name("google.api.http")
        .ok_or("google/api/annotations.proto is not compiled")?;
    let mut out = Vec::new();
    for service in pool.services() {
        if !service.full_name().starts_with("referral_exchange.") {
            continue;
        }
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                if method.is_client_streaming()
                    || GRPC_ONLY
                        .iter()
                        .any(|(name, _, _)| *name == method.full_name())
                {
                    continue;
                }
                return Err(format!(
                    "{} has no google.api.http annotation: every unary method is served over HTTP",
                    method.full_name()
                ));
            }
            let Value::Message(rule) = options.get_extension(&http).into_owned() else {
                return Err(format!(
                    "{}: google.api.http is not a message",
                    method.full_name()
                ));
            };
            let operation_id = format!("{}.{}", service.name(), method.name());
            out.push(binding(&method, &rule, operation_id.clone(), true)?);
            if let Some(Value::List(more)) = rule
                .get_field_by_name("additional_bindings")
                .map(|v| v.into_owned())
            {
                for extra in more {
                    let Value::Message(extra) = extra else {
                        continue;
                    };
                    let mut b = binding(&method, &extra, String::new(), false)?;
                    let suffix = b.custom.clone().unwrap_or_else(|| b.verb.to_lowercase());
                    b.operation_id = format!("{operation_id}.{suffix}");
                    out.push(b);
                }
            }
        }
    }
    Ok(out)
}

fn binding(
    method: &MethodDescriptor,
    rule: &prost_reflect::DynamicMessage,
    operation_id: String,
    primary: bool,
) -> Result<Binding, String> {
    let name = method.full_name();
    let mut pattern = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        if rule.has_field_by_name(verb)
            && let Some(Value::String(path)) = rule.get_field_by_name(verb).map(|v| v.into_owned())
        {
            pattern = Some((verb.to_uppercase(), path));
        }
    }
    let (verb, template) = pattern.ok_or_else(|| format!("{name}: the HTTP rule has no verb"))?;
    let body = match rule.get_field_by_name("body").map(|v| v.into_owned()) {
        Some(Value::String(body)) if !body.is_empty() => Some(body),
        _ => None,
    };
    if verb == "GET" && body.is_some() {
        return Err(format!("{name}: a GET binding has no body"));
    }
    let (segments, custom) = parse_template(&template).map_err(|e| format!("{name}: {e}"))?;
    let input = method.input();
    let path_fields: Vec<String> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Variable { field, .. } => Some(field.clone()),
            Segment::Literal(_) => None,
        })
        .collect();
    for field in &path_fields {
        match input.get_field_by_name(field) {
            Some(f) if f.kind() == Kind::String && !f.is_list() => {}
            _ => {
                return Err(format!(
                    "{name}: path variable {field} is not a string field of {}",
                    input.name()
                ));
            }
        }
    }
    let query = match body.as_deref() {
        Some("*") => Vec::new(),
        Some(field) => {
            if input.get_field_by_name(field).is_none() {
                return Err(format!(
                    "{name}: body field {field} is not in {}",
                    input.name()
                ));
            }
            query_fields(&input, &path_fields, Some(field))?
        }
        None => query_fields(&input, &path_fields, None)?,
    };
    Ok(Binding {
        method: method.clone(),
        operation_id,
        primary,
        verb,
        template,
        segments,
        custom,
        body,
        query,
    })
}

/// Fields a query string can carry: scalars, enums, timestamps and durations, once or repeated.
/// An identity code is never one of them: it would end up in access logs and browser histories.
fn query_fields(
    input: &MessageDescriptor,
    path_fields: &[String],
    body: Option<&str>,
) -> Result<Vec<FieldDescriptor>, String> {
    let mut out = Vec::new();
    for field in input.fields() {
        if path_fields.iter().any(|p| p == field.name()) || Some(field.name()) == body {
            continue;
        }
        if field.name() == "personal_identity_code" {
            continue;
        }
        match field.kind() {
            Kind::Message(m)
                if m.full_name() != "google.protobuf.Timestamp"
                    && m.full_name() != "google.protobuf.Duration" =>
            {
                return Err(format!(
                    "{}.{} is a message: it cannot be a query parameter; bind it to the body",
                    input.name(),
                    field.name()
                ));
            }
            _ => out.push(field),
        }
    }
    Ok(out)
}

/// `/v1/{name=referrals/*}:accept` → literal `v1`, literal `referrals`, variable, custom `accept`.
/// Only `{field=collection/*}` variables are supported: what AIP-127 resource paths need.
fn parse_template(template: &str) -> Result<(Vec<Segment>, Option<String>), String> {
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| format!("template {template} does not start with /"))?;
    let (path, custom) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('}') && !rest[i..].contains('/') => {
            (&rest[..i], Some(rest[i + 1..].to_owned()))
        }
        _ => (rest, None),
    };
    let mut segments = Vec::new();
    let mut chars = path;
    while !chars.is_empty() {
        if let Some(inner) = chars.strip_prefix('{') {
            let end = inner.find('}').ok_or("unclosed {")?;
            let (field, pattern) = inner[..end]
                .split_once('=')
                .ok_or("a variable must be {field=collection/*}")?;
            let collection = pattern
                .strip_suffix("/*")
                .filter(|c| !c.is_empty() && !c.contains('/') && !c.contains('*'))
                .ok_or("a variable must be {field=collection/*}")?;
            segments.push(Segment::Literal(collection.to_owned()));
            segments.push(Segment::Variable {
                field: field.to_owned(),
                prefix: format!("{collection}/"),
                parameter: collection
                    .strip_suffix('s')
                    .unwrap_or(collection)
                    .to_owned(),
            });
            chars = inner[end + 1..]
                .strip_prefix('/')
                .unwrap_or(&inner[end + 1..]);
        } else {
            let end = chars.find('/').unwrap_or(chars.len());
            let literal = &chars[..end];
            if literal.is_empty() || literal.contains(['{', '}', '*']) {
                return Err(format!("bad segment in {template}"));
            }
            segments.push(Segment::Literal(literal.to_owned()));
            chars = chars[end..].strip_prefix('/').unwrap_or(&chars[end..]);
        }
    }
    Ok((segments, custom))
}

/// `CreateReferral` → `create_referral`, as prost and tonic name methods.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// How a query parameter's text becomes a JSON value the proto3 JSON reader takes.
fn query_kind(field: &FieldDescriptor) -> &'static str {
    match field.kind() {
        Kind::Bool => "QueryKind::Bool",
        _ => "QueryKind::Text",
    }
}

/// The transcoding table and its dispatch, as Rust source for `src/http/`.
pub fn rust_table(bindings: &[Binding]) -> String {
    let mut out = String::from(
        "// Generated by build.rs from the google.api.http annotations in proto/. Do not edit.\n\n",
    );
    out.push_str("pub(crate) static BINDINGS: &[Binding] = &[\n");
    for b in bindings {
        let segments: Vec<String> = b
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(text) => format!("Segment::Literal({text:?})"),
                Segment::Variable { field, prefix, .. } => {
                    format!("Segment::Variable {{ field: {field:?}, prefix: {prefix:?} }}")
                }
            })
            .collect();
        let query: Vec<String> = b
            .query
            .iter()
            .map(|f| {
                format!(
                    "QueryField {{ name: {:?}, json_name: {:?}, kind: {}, repeated: {} }}",
                    f.name(),
                    f.json_name(),
                    query_kind(f),
                    f.is_list()
                )
            })
            .collect();
        let body = match b.body.as_deref() {
            None => "Body::None".to_owned(),
            Some("*") => "Body::Whole".to_owned(),
            Some(field) => format!(
                "Body::Field {{ json_name: {:?} }}",
                b.method
                    .input()
                    .get_field_by_name(field)
                    .map(|f| f.json_name().to_owned())
                    .unwrap_or_default()
            ),
        };
        writeln!(
            out,
            "    Binding {{ operation_id: {:?}, grpc_method: {:?}, verb: {:?}, template: {:?}, segments: &[{}], custom: {:?}, body: {body}, query: &[{}] }},",
            b.operation_id,
            format!("/{}/{}", b.method.parent_service().full_name(), b.method.name()),
            b.verb,
            b.template,
            segments.join(", "),
            b.custom,
            query.join(", "),
        )
        .unwrap();
    }
    out.push_str("];\n\n");
    out.push_str(
        "/// Runs binding `index` of [`BINDINGS`] on the same service implementation the gRPC edge serves.\n",
    );
    out.push_str(
        "pub(crate) async fn dispatch(apis: &Apis, index: usize, input: Input) -> Answer {\n    match index {\n",
    );
    for (i, b) in bindings.iter().enumerate() {
        let service = b.method.parent_service();
        let module = snake(service.name());
        let field = snake(service.name().trim_end_matches("Service"));
        let call = if b.server_streaming() {
            "server_streaming"
        } else {
            "unary"
        };
        writeln!(
            out,
            "        {i} => {call}(input, |r| pb::{module}_server::{}::{}(&apis.{field}, r)).await,",
            service.name(),
            snake(b.method.name()),
        )
        .unwrap();
    }
    out.push_str("        _ => unknown_binding(index),\n    }\n}\n\n");
    let grpc_only: Vec<String> = GRPC_ONLY
        .iter()
        .map(|(name, path, why)| {
            let (service, method) = name.rsplit_once('.').unwrap_or((name, ""));
            format!("({:?}, {path:?}, {why:?})", format!("/{service}/{method}"))
        })
        .collect();
    writeln!(
        out,
        "/// Methods the HTTP face does not carry: gRPC method, the path answered 501, why.\npub(crate) static GRPC_ONLY: &[(&str, &str, &str)] = &[{}];",
        grpc_only.join(", ")
    )
    .unwrap();
    out
}
