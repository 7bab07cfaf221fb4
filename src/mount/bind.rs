//! Bind mounts: `open_tree(OPEN_TREE_CLONE)` makes a detached copy of the source tree,
//! `mount_setattr` makes it read-only (nosuid, ...) while still detached, `move_mount`
//! attaches it. Unlike `mount(MS_BIND)` + remount, the mount is never visible writable.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::mount::{open_tree, OpenTreeFlags};

use super::fscontext::{attach, set_attributes};
use super::options::Options;
use super::{errno_error, MountSpec};
use crate::error::{Error, Result};

/// Bind `spec.source` at `target`; recursively (submounts included) for `rbind`.
pub(crate) fn mount_bind(spec: &MountSpec, o: &Options, target: &Path) -> Result<()> {
    if let Some(opt) = o.fs.first() {
        return Err(Error::invalid(format!(
            "mount {} {} at {}: option {opt:?} does not apply to a bind mount",
            spec.kind,
            spec.source,
            target.display()
        )));
    }
    let recursive = o.recursive_bind || spec.kind == "rbind";
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = open_tree(rustix::fs::CWD, spec.source.as_str(), flags)
        .map_err(|e| errno_error(spec, target, "open_tree", "", e))?;
    set_attributes(
        tree.as_fd(),
        recursive,
        o.attr_set,
        o.attr_clr,
        o.propagation.unwrap_or(0),
    )
    .map_err(|e| {
        errno_error(
            spec,
            target,
            &format!("mount_setattr {:?}", spec.options),
            "",
            e,
        )
    })?;
    attach(&tree, target).map_err(|e| errno_error(spec, target, "move_mount", "", e))
}
