//! Link arguments of the shared library, libimv.so: its soname carries the C ABI's major
//! version (so a loader never pairs a caller with an incompatible library), and a version
//! script exports the `imv_*` functions only.

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = dir.join("ffi/imv.map");
    let source = dir.join("src/ffi/mod.rs");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed={}", source.display());

    // One place holds the ABI major: the constant the header exports. Read it rather than
    // repeat it, so the soname cannot disagree with IMV_ABI_VERSION_MAJOR.
    let text = std::fs::read_to_string(&source).expect("reading src/ffi/mod.rs");
    let major: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("pub const IMV_ABI_VERSION_MAJOR: u32 = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .and_then(|n| n.parse().ok())
        .expect("src/ffi/mod.rs: `pub const IMV_ABI_VERSION_MAJOR: u32 = N;` not found");

    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libimv.so.{major}");
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
            script.display()
        );
    }
}
