//! Mounting and unmounting on the host: what a backend's mount list turns into.
//!
//! TO BE IMPLEMENTED (helper): `mount_all`, `unmount_recursive`, `is_mountpoint`,
//! `mountinfo`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One mount as a snapshotter describes it (containerd's `mount.Mount`): a filesystem
/// type, a source and options (`ro`, `nosuid`, `lowerdir=a:b`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Filesystem type: `overlay`, `bind` (`rbind`), `tmpfs`, `erofs`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Source: a directory for `bind`, `overlay` for overlay, ...
    pub source: String,
    /// Options, in `mount(8)` form.
    pub options: Vec<String>,
}

/// Mount `mounts` at `target` (an existing directory), in order.
pub fn mount_all(mounts: &[MountSpec], target: &Path) -> Result<()> {
    let _ = (mounts, target);
    unimplemented!()
}

/// Unmount everything at and under `target`, deepest first. Nothing mounted is success.
pub fn unmount_recursive(target: &Path) -> Result<()> {
    let _ = target;
    unimplemented!()
}

/// Whether `path` is the root of a mount.
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    let _ = path;
    unimplemented!()
}
