//! imv: Kubernetes image volumes (KEP-4639) for container runtimes.
//!
//! Given the mounts of a container, imv mounts the OCI image named by each image mount
//! read-only at `<state>/image-volumes/<sandbox>/<image digest hex>` and sets the
//! mount's `host_path` there, as containerd's CRI plugin does; cleanup of a sandbox unmounts
//! and removes it all. See [`ImageVolumes`].

// Unsafe code is held to one standard: every unsafe operation in its own block, each
// block with a SAFETY comment saying why it holds (the C ABI is where nearly all of it is).
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod backend;
mod crash_points;
mod cri;
mod digest;
mod engine;
mod error;
mod events;
mod ffi;
mod layout;
mod locks;
pub mod media_type;
mod mount;
mod platform;
mod reference;
// The ttrpc service and its client: see the `ttrpc` feature in Cargo.toml.
#[cfg(feature = "ttrpc")]
pub mod service;
mod status;
mod subpath;
mod volumes;

pub use backend::local::import::ImportOptions;
pub use backend::{Backend, GcStats, Progress, DEFAULT_SNAPSHOTTER};
#[doc(hidden)]
pub use crash_points::CRASH_POINTS;
pub use cri::{IdMapping, ImageSpec, Mount, MountPropagation};
pub use digest::Digest;
pub use engine::Engine;
pub use error::{Error, ErrorKind, IoContext, Result};
pub use events::{VolumeEvent, VolumeEventKind, VolumeEvents};
pub use platform::Platform;
pub use status::Status;
pub use volumes::{
    BackendConfig, Config, ImageVolumes, MountOutcome, MutateOptions, VolumeInfo,
    DEFAULT_LOCK_TIMEOUT, MAX_CONTAINER_PATH_LEN, MAX_IMAGE_LEN, MAX_MOUNTS, MAX_SNAPSHOTTER_LEN,
};

/// The parsers and unpackers the workspace's property tests (cli/tests/properties/) feed
/// untrusted input to directly. Not part of imv's API: hidden, unstable, and kept to
/// exactly what those tests call, so the rest of the crate stays private and the compiler
/// still finds dead code in it.
#[doc(hidden)]
pub mod __property_tests {
    pub use crate::backend::local::content::ContentStore;
    pub use crate::backend::local::import::import;
    pub use crate::backend::local::unpack::unpack_layer;
    pub use crate::layout::{validate_sandbox_id, MAX_SANDBOX_ID_LEN};
    pub use crate::reference::{normalize as normalize_reference, Reference};
    pub use crate::subpath::{resolve as resolve_sub_path, validate as validate_sub_path};
}
