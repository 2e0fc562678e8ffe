//! Compiles the `watchtrail.v1` protos with a vendored `protoc`, so a fresh machine needs
//! nothing but the Rust toolchain.

use std::path::PathBuf;

const PROTOS: &[&str] = &["common", "metrics", "logs", "audit", "ingest", "query"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("protos");
    let files: Vec<PathBuf> = PROTOS
        .iter()
        .map(|name| root.join(format!("watchtrail/v1/{name}.proto")))
        .collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    // Order of preference: $PROTOC, then the vendored binary (a system protoc may be too old).
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&files, &[root])?;
    Ok(())
}
