//! The OpenAPI document of the HTTP face, made from the same descriptors and bindings.

use prost_reflect::DescriptorPool;
use serde_json::{Value, json};

use crate::http::Binding;

pub fn document(_pool: &DescriptorPool, bindings: &[Binding]) -> Result<Value, String> {
    let mut paths = serde_json::Map::new();
    for b in bindings {
        paths.insert(
            b.openapi_path(),
            json!({ b.verb.to_lowercase(): { "operationId": b.operation_id } }),
        );
    }
    Ok(json!({ "openapi": "3.1.0", "paths": paths }))
}
