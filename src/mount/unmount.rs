//! Unmounting a target and everything mounted under it.

use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{unmount, UnmountFlags};

use super::mountinfo;
use crate::error::{Error, Result};

/// How many times to re-read mountinfo and retry: a mount hidden under another one on
/// the same mountpoint can only be reached once the one on top is gone.
const MAX_PASSES: usize = 8;

/// Unmount every mount at or under `target`, deepest first and, on one mountpoint, the
/// newest first. Nothing mounted is success; a mount that is already gone is fine; a busy
/// mount is detached lazily (with a warning) so nested or busy mounts never make a
/// sandbox's cleanup fail (containerd #14032). Mounts outside `target` are not touched:
/// if `target` itself is a symlink it is not followed (nothing is mounted on a link).
pub fn unmount_recursive(target: &Path) -> Result<()> {
    // The common case first, on the path as given: the kernel resolves it as the careful
    // way below would (only the last component unfollowed), and the resolution in
    // userspace (a readlink per component) is only needed to match mountinfo's lines.
    if target.is_absolute() && unmount_stack(target)? {
        return Ok(());
    }
    let target = mountinfo::absolute_nofollow(target)?;
    if unmount_stack(&target)? {
        return Ok(());
    }
    for _ in 0..MAX_PASSES {
        let mut mounts: Vec<(usize, mountinfo::MountInfo)> = mountinfo::under_resolved(&target)?
            .into_iter()
            .enumerate()
            .collect();
        if mounts.is_empty() {
            return Ok(());
        }
        // Deepest mountpoint first; on one mountpoint, later in mountinfo (newer) first.
        mounts.sort_by(|(ia, a), (ib, b)| {
            let depth = |m: &mountinfo::MountInfo| m.mount_point.components().count();
            depth(b).cmp(&depth(a)).then(ib.cmp(ia))
        });
        for (_, m) in &mounts {
            unmount_one(&m.mount_point)?;
        }
    }
    let left: Vec<String> = mountinfo::under_resolved(&target)?
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    Err(Error::internal(format!(
        "unmount {}: still mounted after {MAX_PASSES} passes: {}",
        target.display(),
        left.join(", ")
    )))
}

/// The common case without reading mountinfo (which, in a busy runtime's mount namespace,
/// has thousands of lines): unmount what is mounted at `target` until nothing is. True when
/// that did it: at least one unmount worked, and then the kernel said `target` is no
/// mountpoint any more, so nothing can be left under it (a mount with mounts under it is
/// busy). False when the careful way must look: `target` was not mounted at all (a mount may
/// still hide below it) or was busy (nested mounts).
fn unmount_stack(target: &Path) -> Result<bool> {
    let mut unmounted = false;
    for _ in 0..MAX_PASSES {
        match unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => unmounted = true,
            Err(Errno::INVAL) | Err(Errno::NOENT) => return Ok(unmounted),
            Err(Errno::BUSY) => return Ok(false),
            Err(e) => return Err(Error::io("unmount", target, e.into())),
        }
    }
    Ok(false)
}

/// Unmount the topmost mount at `path`; EBUSY falls back to a lazy detach.
fn unmount_one(path: &Path) -> Result<()> {
    // NOFOLLOW: a symlink planted at a mountpoint must not redirect the unmount.
    match unmount(path, UnmountFlags::NOFOLLOW) {
        // EINVAL: not (or no longer) a mountpoint; ENOENT: gone with its parent mount.
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::BUSY) => {
            tracing::warn!(path = %path.display(), "mount busy, detaching it lazily");
            match unmount(path, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH) {
                Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(Error::io("unmount (detach)", path, e.into())),
            }
        }
        Err(e) => Err(Error::io("unmount", path, e.into())),
    }
}
