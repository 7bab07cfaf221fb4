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
pub mod cri;
pub mod digest;
pub mod error;
pub mod ffi;
pub mod image_builder;
pub mod layout;
mod locks;
pub mod media_type;
pub mod mount;
pub mod platform;
pub mod reference;
// The ttrpc service and its client: see the `ttrpc` feature in Cargo.toml.
#[cfg(feature = "ttrpc")]
pub mod service;
mod status;
pub mod subpath;
pub mod volumes;

pub use backend::local::import::ImportOptions;
pub use backend::{Backend, GcStats, Progress, DEFAULT_SNAPSHOTTER};
pub use cri::{IdMapping, ImageSpec, Mount, MountPropagation};
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use platform::Platform;
pub use status::Status;
pub use volumes::{
    BackendConfig, Config, ImageVolumes, MutateOptions, VolumeInfo, MAX_CONTAINER_PATH_LEN,
    MAX_IMAGE_LEN, MAX_MOUNTS, MAX_SNAPSHOTTER_LEN,
};
