//! The OpenAPI document of the HTTP face (`GET /openapi.json`), as `build/openapi.rs` generates it:
//! it parses as OpenAPI 3.1, covers every method of the protos (which is where a method without a
//! `google.api.http` annotation is caught), keeps identity codes out of URLs, and says what the
//! protos say.

use std::collections::BTreeSet;

use oas3::spec::{ObjectOrReference, ObjectSchema, ParameterIn, Schema};
use prost_reflect::DescriptorPool;
use referral_exchange::{http::OPENAPI_JSON, proto::v1::FILE_DESCRIPTOR_SET};
use serde_json::Value;

/// Methods the HTTP face does not carry (`GRPC_ONLY` in `build/http.rs`): server streams only.
const GRPC_ONLY: &[&str] = &["MailboxService.StreamMessages"];

fn spec() -> oas3::Spec {
    oas3::from_json(OPENAPI_JSON).expect("openapi.json parses as OpenAPI 3.1")
}

fn json() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

/// A component schema, `$ref`s followed.
fn schema(spec: &oas3::Spec, name: &str) -> ObjectSchema {
    let schema = spec
        .components
        .as_ref()
        .and_then(|c| c.schemas.get(name))
        .unwrap_or_else(|| panic!("no schema {name}"));
    object(spec, schema)
}

fn object(spec: &oas3::Spec, schema: &Schema) -> ObjectSchema {
    match schema.resolve(spec).expect("the schema resolves") {
        Schema::Object(o) => match *o {
            ObjectOrReference::Object(o) => o,
            ObjectOrReference::Ref { ref_path, .. } => panic!("{ref_path} is still a reference"),
        },
        Schema::Boolean(b) => panic!("a boolean schema ({b:?})"),
    }
}

#[test]
fn parses_as_openapi_3_1_with_every_operation_answering() {
    let spec = spec();
    let version = spec.validate_version().expect("a supported version");
    assert_eq!((version.major, version.minor), (3, 1));
    assert_eq!(spec.info.version, "v1");
    assert_eq!(spec.servers[0].url, "https://127.0.0.1:8443");
    let mut ids = BTreeSet::new();
    for (path, method, operation) in spec.operations() {
        let id = operation
            .operation_id
            .clone()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.clone()), "operationId {id} twice");
        let responses = operation.responses.as_ref().expect("responses");
        assert!(responses.contains_key("200"), "{id}: no 200 answer");
        if id != "OpenApi.GetDocument" {
            assert!(responses.contains_key("default"), "{id}: no error answer");
            let headers: BTreeSet<String> = operation
                .parameters
                .iter()
                .map(|p| p.resolve(&spec).expect("the parameter resolves"))
                .filter(|p| p.location == ParameterIn::Header)
                .map(|p| p.name)
                .collect();
            assert_eq!(
                headers,
                BTreeSet::from(["x-correlation-id".to_owned(), "x-user-id".to_owned()]),
                "{id}"
            );
        }
    }
}

#[test]
fn every_method_is_annotated_and_has_an_operation() {
    let spec = spec();
    let pool = pool();
    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("google/api/annotations.proto is in the descriptor set");
    let description = spec.info.description.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut methods = BTreeSet::new();
    for service in pool
        .services()
        .filter(|s| s.package_name().starts_with("referral_exchange."))
    {
        for method in service.methods() {
            let id = format!("{}.{}", service.name(), method.name());
            methods.insert(id.clone());
            if GRPC_ONLY.contains(&id.as_str()) {
                assert!(
                    method.is_server_streaming() && !method.is_client_streaming(),
                    "{id} is gRPC-only but not a server stream"
                );
                assert!(spec.operation_by_id(&id).is_none(), "{id} is gRPC-only");
                assert!(
                    description.contains(&id),
                    "the introduction does not name {id}"
                );
                continue;
            }
            if !method.options().has_extension(&http) {
                problems.push(format!("{id} has no google.api.http annotation"));
            }
            if spec.operation_by_id(&id).is_none() {
                problems.push(format!("{id} has no operation"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(methods.len() > 20, "only {} methods found", methods.len());
    // And the other way: every operation is a method (an additional binding adds `.<verb>`).
    for (_, _, operation) in spec.operations() {
        let id = operation.operation_id.clone().unwrap_or_default();
        let method = id.split('.').take(2).collect::<Vec<_>>().join(".");
        assert!(
            methods.contains(&method) || id == "OpenApi.GetDocument",
            "operation {id} is no method"
        );
    }
}

#[test]
fn paths_are_plain_templates_with_their_parameters() {
    let spec = spec();
    for (path, method, operation) in spec.operations() {
        assert!(
            !path.contains(['=', '*']),
            "{path} is not an OpenAPI template"
        );
        let declared: BTreeSet<String> = operation
            .parameters
            .iter()
            .map(|p| p.resolve(&spec).expect("the parameter resolves"))
            .filter(|p| p.location == ParameterIn::Path)
            .map(|p| {
                assert_eq!(p.required, Some(true), "{method} {path}: {}", p.name);
                p.name
            })
            .collect();
        let templated: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .map(|rest| rest.split('}').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(declared, templated, "{method} {path}");
    }
}

#[test]
fn identity_codes_are_never_in_a_url() {
    let spec = spec();
    let mut searchable = 0;
    for (path, method, operation) in spec.operations() {
        for parameter in &operation.parameters {
            let parameter = parameter.resolve(&spec).expect("the parameter resolves");
            let name = parameter.name.to_ascii_lowercase().replace('_', "");
            assert!(
                !name.contains("identitycode"),
                "{method} {path} takes {} from the URL",
                parameter.name
            );
        }
        // Filtering by person is still possible: in the body of a POST.
        if let Some(ObjectOrReference::Object(body)) = &operation.request_body
            && let Some(schema) = body
                .content
                .get("application/json")
                .and_then(|m| m.schema.as_ref())
            && object(&spec, schema)
                .properties
                .contains_key("personalIdentityCode")
        {
            assert_eq!(method, "POST", "{path}");
            searchable += 1;
        }
    }
    assert!(
        searchable >= 4,
        "{searchable} operations take an identity code"
    );
}

#[test]
fn every_ref_resolves() {
    fn walk(value: &Value, document: &Value, refs: &mut usize) {
        match value {
            Value::Object(map) => {
                if let Some(target) = map.get("$ref") {
                    let target = target.as_str().expect("a $ref is a string");
                    let pointer = target
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("{target} points outside the document"));
                    assert!(
                        document.pointer(pointer).is_some(),
                        "{target} does not resolve"
                    );
                    *refs += 1;
                }
                map.values().for_each(|v| walk(v, document, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, document, refs)),
            _ => {}
        }
    }
    let document = json();
    let mut refs = 0;
    walk(&document, &document, &mut refs);
    assert!(refs > 100, "only {refs} references");
}

#[test]
fn schemas_follow_the_protos_and_their_json_mapping() {
    let spec = spec();
    let pool = pool();

    let state = pool
        .get_enum_by_name("referral_exchange.v1.Referral.State")
        .expect("Referral.State");
    let names: Vec<Value> = state.values().map(|v| Value::from(v.name())).collect();
    assert_eq!(schema(&spec, "Referral.State").enum_values, names);

    let referral = schema(&spec, "Referral");
    let municipality = object(&spec, &referral.properties["homeMunicipalityCode"]);
    assert_eq!(
        municipality.description.as_deref(),
        Some("Three-digit Statistics Finland code; decides the recipient.")
    );
    let name = object(&spec, &referral.properties["name"]);
    assert_eq!(name.read_only, Some(true), "`name` is output only");
    assert!(referral.required.is_empty(), "pbjson leaves out defaults");
    assert!(!referral.properties.contains_key("home_municipality_code"));

    // pbjson writes 64-bit integers as strings, bytes in base64, timestamps in RFC 3339.
    let document = json();
    // Each field also takes `null` (its default), as proto3 JSON readers do; the value's own schema
    // is the first choice.
    let event = &document["components"]["schemas"]["AuditEvent"]["properties"];
    let value = |field: &str| {
        let choices = &event[field]["anyOf"];
        assert_eq!(choices[1], serde_json::json!({ "type": "null" }), "{field}");
        choices[0].clone()
    };
    assert_eq!(value("sequence")["type"], "string");
    assert_eq!(value("sequence")["pattern"], "^-?[0-9]+$");
    assert_eq!(value("leafHash")["contentEncoding"], "base64");
    assert_eq!(value("time")["format"], "date-time");
    assert_eq!(value("statusCode")["type"], "integer");
    // An enum field takes its value names and their numbers.
    let state = &document["components"]["schemas"]["Referral"]["properties"]["state"]["anyOf"][0];
    assert_eq!(
        state["anyOf"][0]["$ref"],
        "#/components/schemas/Referral.State"
    );
    assert_eq!(state["anyOf"][1]["type"], "integer");

    // The server stream answers NDJSON, one AuditEvent a line.
    let export = &document["paths"]["/v1/auditEvents:export"]["get"]["responses"]["200"];
    assert_eq!(
        export["content"]["application/x-ndjson"]["schema"]["$ref"],
        "#/components/schemas/AuditEvent"
    );

    // Errors are google.rpc.Status; the document itself needs no certificate.
    let error = &document["components"]["responses"]["Error"]["content"]["application/json"];
    assert_eq!(
        error["schema"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
    for detail in ["google.rpc.ErrorInfo", "google.rpc.BadRequest"] {
        schema(&spec, detail);
    }
    assert_eq!(
        document["security"],
        serde_json::json!([{ "mutualTLS": [] }])
    );
    assert_eq!(
        document["components"]["securitySchemes"]["mutualTLS"]["type"],
        "mutualTLS"
    );
    assert_eq!(
        document["paths"]["/openapi.json"]["get"]["security"],
        serde_json::json!([])
    );
}
