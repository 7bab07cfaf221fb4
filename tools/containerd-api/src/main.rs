//! Generate the Rust code of the part of containerd's gRPC API imv uses (see Cargo.toml).
//!
//!     containerd-api PROTO_DIR OUT_DIR
//!
//! PROTO_DIR holds the protos under their import paths (proto/containerd/); OUT_DIR gets
//! one file per protobuf package and `mod.rs`, the module tree that includes them (a module
//! per package component, so the generated `super::` paths between packages resolve).

use std::path::PathBuf;
use std::process::ExitCode;

/// The services imv calls, and what they import.
const PROTOS: &[&str] = &[
    "github.com/containerd/containerd/api/services/content/v1/content.proto",
    "github.com/containerd/containerd/api/services/diff/v1/diff.proto",
    "github.com/containerd/containerd/api/services/images/v1/images.proto",
    "github.com/containerd/containerd/api/services/introspection/v1/introspection.proto",
    "github.com/containerd/containerd/api/services/leases/v1/leases.proto",
    "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto",
];

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [protos, out] = &args[..] else {
        eprintln!("usage: containerd-api PROTO_DIR OUT_DIR");
        return ExitCode::from(2);
    };
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| protos.join(p)).collect();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_arg("--experimental_allow_proto3_optional");
    // Comments are containerd's, written for Go: kept out of rustdoc's way.
    config.disable_comments(["."]);
    let result = tonic_prost_build::configure()
        .build_server(false)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .include_file("mod.rs")
        .compile_with_config(config, &files, &[protos.clone()]);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containerd-api: {e}");
            ExitCode::FAILURE
        }
    }
}
