//! A volume mounted again from its twin: another sandbox's volume mounted from the same
//! specs (docs/design.md, "Twin volumes"). An overlay of an image's layers costs a new
//! superblock (its lower dirs resolved, checked and cloned one by one: docs/design.md has
//! the figures); a clone of a mount already showing those very files costs two system
//! calls and shares the superblock, which is read-only like every image volume.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{statx, AtFlags, StatxFlags};
use rustix::mount::{open_tree, MountAttrFlags, OpenTreeFlags};

use super::fscontext::{attach, set_attributes};
use super::MountRoot;
use crate::error::{Error, Result};

/// Mount at `target` a clone of the mount at `twin`, if that is still the mount `root`
/// describes (the same file system instance and root directory). `Ok(false)` when it is
/// not, or cannot be cloned (unmounted meanwhile, say): the caller then mounts from the
/// specs, as it would have without a twin. Errors are those of attaching the clone.
///
/// The clone is checked, not the twin before it: `twin` may be unmounted by its
/// sandbox's cleanup at any moment, and then the clone is of the directory beneath it,
/// whose device and inode differ (an overlay's device is its own while it lives; a bound
/// layer's root is the layer's directory, not a volume directory).
pub fn mount_twin(twin: &Path, root: &MountRoot, target: &Path) -> Result<bool> {
    // Not recursive: nothing is mounted inside a volume, and nothing should come along.
    let Ok(tree) = open_tree(
        rustix::fs::CWD,
        twin,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
    ) else {
        return Ok(false);
    };
    let Ok(st) = statx(
        &tree,
        "",
        AtFlags::EMPTY_PATH | AtFlags::NO_AUTOMOUNT,
        StatxFlags::TYPE | StatxFlags::INO,
    ) else {
        return Ok(false);
    };
    if (st.stx_dev_major, st.stx_dev_minor) != root.dev || st.stx_ino != root.ino {
        return Ok(false);
    }
    // A clone of a shared mount joins its peer group; a volume mounted from its specs is
    // private until attached, and so is this one.
    if set_attributes(
        tree.as_fd(),
        false,
        MountAttrFlags::empty(),
        MountAttrFlags::empty(),
        libc::MS_PRIVATE,
    )
    .is_err()
    {
        return Ok(false);
    }
    attach(&tree, target).map_err(|e| {
        Error::io(
            &format!("attach a clone of {} at", twin.display()),
            target,
            e.into(),
        )
    })?;
    Ok(true)
}
