//! Compiles `proto/` with protox (pure Rust, so no `protoc` is needed on the build machine), then
//! generates the tonic services, the prost messages, and serde impls in the canonical proto3 JSON
//! mapping (pbjson) that the CLI prints.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut files: Vec<PathBuf> = fs::read_dir("proto/referral_exchange/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    files.sort();

    let descriptors = protox::compile(&files, ["proto"])?;
    let descriptor_bytes = descriptors.encode_to_vec();
    // Served by gRPC reflection, so that grpcurl works without the .proto files.
    fs::write(
        out_dir.join("referral_exchange_descriptor.bin"),
        &descriptor_bytes,
    )?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".referral_exchange"])?;
    Ok(())
}
