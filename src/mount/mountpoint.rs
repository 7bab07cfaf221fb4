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
