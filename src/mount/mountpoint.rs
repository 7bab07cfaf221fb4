//! Is a path the root of a mount?

use std::path::Path;

use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use super::mountinfo;
use crate::error::{IoContext, Result};

/// Whether `path` is the root of a mount (symlinks followed). A missing path is `false`.
///
/// Uses `statx`'s `STATX_ATTR_MOUNT_ROOT` (Linux 5.8), which is also right for a bind
/// mount of a directory on its own filesystem, where comparing the device with the
/// parent's is not; falls back to mountinfo when the kernel does not report it.
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    match statx(
        rustix::fs::CWD,
        path,
        AtFlags::NO_AUTOMOUNT,
        StatxFlags::TYPE,
    ) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        Ok(_) | Err(Errno::NOSYS) => Ok(mountinfo::lookup(path)?.is_some()),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e).at("statx", path),
    }
}
