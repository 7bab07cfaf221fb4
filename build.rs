//! Build script:
//! - with the `ttrpc` feature (a default), generates the ttrpc service
//!   `imv.v1.ImageVolumes` and its messages from proto/imv/v1/*.proto into OUT_DIR
//!   (src/service/ includes them); ttrpc-codegen parses the .proto files in pure Rust;
//! - sets the link arguments of the shared library, libimv.so: its soname carries the C
//!   ABI's major version (so a loader never pairs a caller with an incompatible library),
//!   and a version script exports the `imv_*` functions only.

use std::path::Path;
#[cfg(feature = "ttrpc")]
use std::path::PathBuf;

/// The C ABI's version constants (src/ffi/abi_version.rs).
#[allow(dead_code)]
mod abi_version {
    include!("src/ffi/abi_version.rs");
}

fn main() {
    #[cfg(feature = "ttrpc")]
    ttrpc_service();
    shared_library();
}

/// Link arguments of libimv.so.
fn shared_library() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = dir.join("ffi/imv.map");
    println!("cargo:rerun-if-changed={}", script.display());
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("src/ffi/abi_version.rs").display()
    );
    // One place holds the ABI major: the constant the header exports, included here, so
    // the soname cannot disagree with IMV_ABI_VERSION_MAJOR.
    let major = abi_version::IMV_ABI_VERSION_MAJOR;

    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libimv.so.{major}");
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
            script.display()
        );
    }
}

/// `imv.v1.ImageVolumes`: messages (rust-protobuf) and the sync server and client (ttrpc)
/// into `OUT_DIR/proto/`.
#[cfg(feature = "ttrpc")]
fn ttrpc_service() {
    let proto_dir = PathBuf::from("proto");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(proto_dir.join("imv/v1"))
        .expect("reading proto/imv/v1")
        .map(|e| e.expect("reading proto/imv/v1").path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    inputs.sort();
    println!("cargo:rerun-if-changed=proto");
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("proto");
    std::fs::create_dir_all(&out_dir).expect("creating OUT_DIR/proto");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out_dir)
        .inputs(&inputs)
        .include(&proto_dir)
        .rust_protobuf()
        // The defaults are what imv wants: the sync server (the engine is synchronous) and
        // the sync client, no mod.rs (src/service/ includes the files itself).
        .customize(ttrpc_codegen::Customize::default())
        .run()
        .expect("generating the ttrpc service from proto/");
    // The generated files start with inner attributes, which `include!` cannot take; a
    // module file of our own declares them instead (src/service/mod.rs includes it, and
    // rustc resolves these `mod` items next to it, in OUT_DIR/proto/).
    std::fs::write(
        out_dir.join("generated.rs"),
        "pub mod imv;\npub mod imv_ttrpc;\n",
    )
    .expect("writing OUT_DIR/proto/generated.rs");
}
