//! Is a path the root of a mount?

use std::path::Path;

use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use super::mountinfo;
use crate::error::{IoContext, Result};

/// Whether `path` is the root of a mount. A missing path is `false`, and so is a symbolic
/// link, wherever it points (a link planted at a volume's path must not pass for it).
///
/// Uses `statx`'s `STATX_ATTR_MOUNT_ROOT` (Linux 5.8), which is also right for a bind
/// mount of a directory on its own filesystem, where comparing the device with the
/// parent's is not; falls back to mountinfo when the kernel does not report it.
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    match statx(
        rustix::fs::CWD,
        path,
        // A symbolic link is never a mountpoint, whatever it points at.
        AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::TYPE,
    ) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        Ok(_) | Err(Errno::NOSYS) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Ok(false);
            }
            Ok(mountinfo::lookup(path)?.is_some())
        }
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e).at("statx", path),
    }
}

/// The mount whose root `path` is: its mount ID (as in mountinfo's first field) and the
/// device and inode of its root directory; `None` when `path` is no mountpoint (missing,
/// a symbolic link, or a plain directory). One `statx`, so a caller can tell "the mount
/// made a moment ago is still there" without reading mountinfo.
pub fn mount_root(path: &Path) -> Result<Option<MountRoot>> {
    let st = match statx(
        rustix::fs::CWD,
        path,
        AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::TYPE | StatxFlags::INO | StatxFlags::MNT_ID,
    ) {
        Ok(st) => st,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e).at("statx", path),
    };
    let known = st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID);
    if !known {
        // A kernel older than 5.8: the slower way.
        if !is_mountpoint(path)? {
            return Ok(None);
        }
        let Some(info) = mountinfo::lookup(path)? else {
            return Ok(None);
        };
        return Ok(Some(MountRoot {
            id: info.id,
            dev: (st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
        }));
    }
    if !st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(None);
    }
    Ok(Some(MountRoot {
        id: st.stx_mnt_id,
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
    }))
}

/// What [`mount_root`] tells of a mountpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountRoot {
    /// The mount's ID (mountinfo's first field; reused by the kernel after an unmount).
    pub id: u64,
    /// Device (major, minor) of the mount's root directory.
    pub dev: (u32, u32),
    /// Inode of the mount's root directory.
    pub ino: u64,
}
