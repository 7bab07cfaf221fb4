//! The engine's seam to the host's mounts: every mount, unmount and question about the
//! mount table the engine (`crate::volumes`) asks goes through [`MountTable`]. The kernel
//! answers in production ([`Kernel`]); the engine's root-free tests answer with a table
//! in memory (volumes/tests/fake_mounts.rs), so leases, planning, undo and ownership
//! decisions are tested without mounting anything. What the kernel does with a mount is
//! tested where it is done, in this module's own tests, with real mounts.

use std::os::fd::AsFd;
use std::path::Path;

use super::idmap::{self, IdMap, UserNamespaces};
use super::mountinfo::{self, MountInfo};
use super::{MountRoot, MountSpec};
use crate::error::Result;

/// What the engine does to, and asks of, the host's mount table.
pub(crate) trait MountTable: Send + Sync {
    /// Mount `mounts` at `target`, as [`super::mount_all`].
    fn mount_all(&self, mounts: &[MountSpec], target: &Path) -> Result<()>;

    /// Mount at `target` a clone of the mount at `twin` if it is still `root`, as
    /// [`super::mount_twin`].
    fn mount_twin(&self, twin: &Path, root: &MountRoot, target: &Path) -> Result<bool>;

    /// Mount `spec` at `target` with its owners shown through `idmap`, staging an
    /// overlay's layers under `staging`, as [`idmap::mount_idmapped`].
    fn mount_idmapped(
        &self,
        spec: &MountSpec,
        target: &Path,
        idmap: &IdMap,
        staging: &Path,
    ) -> Result<()>;

    /// Unmount everything at and under `target`, as [`super::unmount_recursive`].
    fn unmount_recursive(&self, target: &Path) -> Result<()>;

    /// Which mount `path` is the root of, as [`super::mount_root`].
    fn mount_root(&self, path: &Path) -> Result<Option<MountRoot>>;

    /// Whether `path` is the root of a mount, as [`super::is_mountpoint`].
    fn is_mountpoint(&self, path: &Path) -> Result<bool>;

    /// The mount table's entry for mount `id` (the topmost, if the kernel reused the ID).
    fn info(&self, id: u64) -> Result<Option<MountInfo>>;

    /// The mounts at or under `path`, as [`mountinfo::under`].
    fn under(&self, path: &Path) -> Result<Vec<MountInfo>>;
}

/// The host's own mount table, through the kernel. It keeps the user namespaces that
/// idmapped volumes are mounted through, by mapping.
#[derive(Default)]
pub(crate) struct Kernel {
    user_namespaces: UserNamespaces,
}

impl MountTable for Kernel {
    fn mount_all(&self, mounts: &[MountSpec], target: &Path) -> Result<()> {
        super::mount_all(mounts, target)
    }

    fn mount_twin(&self, twin: &Path, root: &MountRoot, target: &Path) -> Result<bool> {
        super::mount_twin(twin, root, target)
    }

    fn mount_idmapped(
        &self,
        spec: &MountSpec,
        target: &Path,
        idmap: &IdMap,
        staging: &Path,
    ) -> Result<()> {
        let userns = self.user_namespaces.get(idmap)?;
        idmap::mount_idmapped(spec, target, userns.as_fd(), staging)
    }

    fn unmount_recursive(&self, target: &Path) -> Result<()> {
        super::unmount_recursive(target)
    }

    fn mount_root(&self, path: &Path) -> Result<Option<MountRoot>> {
        super::mount_root(path)
    }

    fn is_mountpoint(&self, path: &Path) -> Result<bool> {
        super::is_mountpoint(path)
    }

    fn info(&self, id: u64) -> Result<Option<MountInfo>> {
        Ok(mountinfo::read()?.into_iter().rev().find(|m| m.id == id))
    }

    fn under(&self, path: &Path) -> Result<Vec<MountInfo>> {
        mountinfo::under(path)
    }
}
