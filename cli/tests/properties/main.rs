//! Property-based tests of the code that takes untrusted input: image references,
//! platforms, sandbox IDs, sub paths, layer tars and image archives.
//!
//! One module per kind of input. Each property runs a bounded number of random cases so
//! the whole binary stays within a few seconds in a debug build; set `PROPTEST_CASES=N` to
//! run N cases of every property instead (a longer local run). A failure is shrunk to a
//! small case and its seed written next to its module, `<module>.proptest-regressions`
//! (commit that file: the case is then replayed first on every run).
//!
//! Most of what they feed is crate-private (the reference parser, the unpacker, the
//! importer); the library names those few functions for them in `imv::__property_tests`.
//!
//! Run as root: the unpacker sets owners, makes device nodes and trusted.* xattrs.

use proptest::test_runner::{Config, FileFailurePersistence};

mod archives;
mod platforms;
mod references;
mod sandbox_ids;
mod sub_paths;
mod unpacker;

/// `default` cases, or `PROPTEST_CASES` when set (the runner's own variable, which an
/// explicit case count would otherwise override).
fn cases(default: u32) -> Config {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases: n,
        // Next to the module, as documented above (the default for code under src/ is a
        // separate proptest-regressions/ tree).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
