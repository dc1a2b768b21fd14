//! Compiles `proto/` with protox (pure Rust, so no `protoc` is needed on the build machine), then
//! generates the tonic services, the prost messages, serde impls in the canonical proto3 JSON mapping
//! (pbjson) that the HTTP face and the CLI speak, and, from the `google.api.http` annotations, the
//! HTTP face's transcoding table (`build/http.rs`) and its OpenAPI document (`build/openapi.rs`).

use std::{env, fs, path::PathBuf};

#[path = "build/http.rs"]
mod http;
#[path = "build/openapi.rs"]
mod openapi;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut files: Vec<PathBuf> = fs::read_dir("proto/referral_exchange/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    files.sort();

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    let descriptor_bytes = compiler.encode_file_descriptor_set();
    // Served by gRPC reflection, so that grpcurl works without the .proto files.
    fs::write(
        out_dir.join("referral_exchange_descriptor.bin"),
        &descriptor_bytes,
    )?;

    let pool = compiler.descriptor_pool();
    let bindings = http::bindings(&pool)?;
    fs::write(
        out_dir.join("http_bindings.rs"),
        http::rust_table(&bindings),
    )?;
    let document = openapi::document(&pool, &bindings)?;
    fs::write(
        out_dir.join("openapi.json"),
        serde_json::to_string_pretty(&document)?,
    )?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(compiler.file_descriptor_set())?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".referral_exchange"])?;
    Ok(())
}
