//! imv's test kit: what the project's tests, benchmarks and demo use and the library does
//! not. Kept out of the `imv` crate so that the library a runtime links carries none of it
//! (docs/design.md, "Crates").
//!
//! - [`image_builder`]: a deterministic OCI image writer, including hostile layers.
//! - [`mounts`]: the tests' own reading of the mount table, apart from the library's.

pub mod image_builder;
pub mod mounts;
