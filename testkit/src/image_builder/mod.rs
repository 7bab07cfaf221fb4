//! A small, deterministic OCI image writer for tests, demos and benchmarks.
//!
//! This is the project's own writer, independent of the importer in `backend::local`: its
//! tests check its output with `umoci` and `skopeo`, so the reader is never only checked
//! against the writer.
//!
//! - [`Entry`] and [`LayerBuilder`] write a layer tar (directories, files, links, devices,
//!   whiteouts, opaque directories, owners, mtimes, xattrs) and compress it (none, gzip,
//!   zstd). [`Entry::raw`] writes header bytes unchecked, to craft malicious layers.
//! - [`ImageBuilder`] turns layers, a platform and a few config fields into a config blob
//!   and a manifest (OCI or Docker schema2 media types).
//! - [`artifact`] builds OCI artifacts (models, raw files, tars) for the same layouts.
//! - [`OciLayout`] collects images (and multi-platform indexes) into an OCI image layout
//!   and writes it as a directory or as an OCI archive; [`write_docker_archive`] writes a
//!   legacy `docker save` tarball.
//!
//! Everything is deterministic: the same input gives the same bytes and digests. Times
//! default to [`DEFAULT_MTIME`] / [`DEFAULT_CREATED`], JSON keys have a fixed order, and
//! gzip headers carry no time or file name.
//!
//! The parts, one file each: `entry` (tar entries and their headers), `layer` (layers and
//! their compression), `image` (config, manifest and the JSON shapes), `layout` (OCI image
//! layouts and archives), `docker` (`docker save` tarballs), `samples` (sample images),
//! and [`artifact`]. Everything public is re-exported here.

/// Media types written by this module: imv's one list.
pub use imv::media_type;

/// The annotation OCI layouts use for a reference name (umoci and skopeo read it).
pub use oci_spec::image::ANNOTATION_REF_NAME;
/// The annotation containerd's export and import use for the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The mtime of tar entries that set none: 2024-01-01T00:00:00Z. Not 0, because some tools
/// treat a zero mtime as "unset".
pub const DEFAULT_MTIME: u64 = 1_704_067_200;
/// The `created` time of configs and history entries that set none (same instant as
/// [`DEFAULT_MTIME`]).
pub const DEFAULT_CREATED: &str = "2024-01-01T00:00:00Z";

mod docker;
mod entry;
mod image;
mod layer;
mod layout;
mod samples;

pub use docker::write_docker_archive;
pub use entry::Entry;
pub use image::{BuiltImage, ImageBuilder, ImageDigests};
pub use layer::{chain_id, Compression, Layer, LayerBuilder};
pub use layout::{
    write_oci_archive, write_oci_archive_with, write_oci_layout, write_oci_layout_index,
    write_oci_layout_with, IndexDigests, LayoutOptions, OciLayout, RefName,
};
pub use samples::{many_layers, sample_image};

// The crate-private pieces the parts (and `artifact`, and the tests) share.
use image::{to_json, Descriptor, Index, Manifest, PlatformJson};
use layout::tag_of;

pub mod artifact;
#[cfg(test)]
mod tests;
