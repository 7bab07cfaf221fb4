//! The embedded default backend: content store, unpacker, overlay snapshots, and a
//! transactional metadata database, all under one root directory, no daemon.

pub mod content;
pub mod import;
pub mod unpack;

use std::path::Path;

use crate::backend::{ImageRecord, Progress};
use crate::error::Result;

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcStats {
    /// Snapshots removed.
    pub snapshots: usize,
    /// Blobs removed.
    pub blobs: usize,
}

/// The embedded store.
pub struct LocalBackend {
    _private: (),
}

impl LocalBackend {
    /// Open (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let _ = root;
        todo!()
    }

    /// Import the image(s) at `path` (OCI layout directory, OCI archive, `docker save`
    /// tarball); `name` overrides the name when the source holds one image.
    pub fn import(&self, path: &Path, name: Option<&str>, progress: &dyn Progress) -> Result<Vec<ImageRecord>> {
        let _ = (path, name, progress);
        todo!()
    }

    /// Remove the image `reference` names, then collect garbage.
    pub fn remove_image(&self, reference: &str) -> Result<ImageRecord> {
        let _ = reference;
        todo!()
    }

    /// Remove snapshots and blobs that no image, lease or view references.
    pub fn gc(&self) -> Result<GcStats> {
        todo!()
    }
}
