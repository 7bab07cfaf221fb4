//! Mounting and unmounting on the host: what a backend's mount list turns into.
//!
//! Everything is mounted with the new mount API (`fsopen`/`fsconfig`/`fsmount`,
//! `open_tree`, `mount_setattr`, `move_mount`): a mount is configured completely while
//! detached and only then attached, so a volume is never visible writable or half made.
//!
//! - [`mount_all`]: a snapshotter's mounts, at a target.
//! - [`unmount_recursive`]: everything at and under a target.
//! - [`is_mountpoint`]: whether a directory is a mount root (not "whether it exists").
//! - [`mount_root`], [`is_mounted_from`]: which mount it is, and whether a spec made it.
//! - [`mountinfo`]: the kernel's mount table.
//! - [`idmap`], [`selinux`]: volumes for pods in user namespaces, and labelled ones.

mod bind;
mod fscontext;
mod identity;
pub mod idmap;
pub mod mountinfo;
mod mountpoint;
mod options;
mod overlay;
pub mod selinux;
mod table;
mod twin;
mod unmount;

#[cfg(test)]
mod tests;

use std::os::fd::AsFd;
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::MountAttrFlags;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use fscontext::{attach, set_attributes, FsContext};

pub use identity::is_mounted_from;
pub(crate) use identity::lower_dirs;
pub use mountpoint::{is_mountpoint, mount_root, MountRoot};
pub(crate) use table::{Kernel, MountTable};
pub use twin::mount_twin;
pub use unmount::unmount_recursive;

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

impl MountSpec {
    /// Whether this is a bind mount: type `bind` or `rbind`, or `bind`/`rbind` among the
    /// options (how containerd's snapshotters and `mount(8)` say it).
    pub fn is_bind(&self) -> bool {
        self.kind == "bind"
            || self.kind == "rbind"
            || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }
}

/// Mount `mounts` at `target` (an existing directory), in order, each on top of the
/// previous one. If one fails, the ones this call mounted are unmounted again and the
/// error names the type, source, target and the option or step that failed.
///
/// - `overlay`: one `fsconfig lowerdir+` per layer (no one-page limit on the number of
///   layers); on kernels older than 6.8, a classic `mount(2)` with lower dirs relative to
///   their common parent.
/// - `bind`, `rbind` (or `bind`/`rbind` among the options): a detached clone of the
///   source, its attributes (`ro`, `nosuid`, ...) set before it is attached.
/// - anything else (`tmpfs`, `erofs`, ...): `fsopen(type)`, `source`, `key[=value]`
///   parameters, per-mount attributes from the VFS flags.
pub fn mount_all(mounts: &[MountSpec], target: &Path) -> Result<()> {
    for (done, spec) in mounts.iter().enumerate() {
        if let Err(err) = mount_one(spec, target) {
            rollback(target, done);
            return Err(err);
        }
    }
    Ok(())
}

/// Mount one spec at `target`.
fn mount_one(spec: &MountSpec, target: &Path) -> Result<()> {
    let o = options::parse(&spec.options);
    if spec.is_bind() {
        return bind::mount_bind(spec, &o, target);
    }
    if spec.kind == "overlay" {
        return if overlay::kernel_has_lowerdir_plus() {
            overlay::mount_overlay(spec, target)
        } else {
            overlay::mount_overlay_classic(spec, target)
        };
    }
    mount_fs(spec, &o, target)
}

/// Any other filesystem: `fsopen(type)`, `source`, the parameters, `fsmount`, attach.
fn mount_fs(spec: &MountSpec, o: &options::Options, target: &Path) -> Result<()> {
    if spec.kind.is_empty() {
        return Err(Error::invalid(format!(
            "mount at {}: no filesystem type",
            target.display()
        )));
    }
    let fc = FsContext::open(&spec.kind).map_err(|e| errno_error(spec, target, "fsopen", "", e))?;
    let fail = |step: &str, e: Errno| errno_error(spec, target, step, &fc.log(), e);
    if !spec.source.is_empty() {
        fc.set_string("source", &spec.source)
            .map_err(|e| fail(&format!("source={}", spec.source), e))?;
    }
    if o.read_only {
        fc.set_flag("ro").map_err(|e| fail("ro", e))?;
    }
    for opt in &o.fs {
        fc.set_option(opt).map_err(|e| fail(opt, e))?;
    }
    fc.create().map_err(|e| fail("create", e))?;
    let mnt = fc
        .mount(o.attr_set)
        .map_err(|e| fail(&format!("fsmount {:?}", o.attr_set), e))?;
    if let Some(p) = o.propagation {
        set_attributes(
            mnt.as_fd(),
            o.propagation_recursive,
            MountAttrFlags::empty(),
            MountAttrFlags::empty(),
            p,
        )
        .map_err(|e| fail("propagation", e))?;
    }
    attach(&mnt, target).map_err(|e| fail("move_mount", e))
}

/// Undo the `count` mounts this call stacked on `target`, newest (topmost) first.
fn rollback(target: &Path, count: usize) {
    for _ in 0..count {
        if let Err(e) = rustix::mount::unmount(target, rustix::mount::UnmountFlags::NOFOLLOW) {
            tracing::warn!(target = %target.display(), error = %e, "rollback: unmount failed, detaching");
            let _ = rustix::mount::unmount(
                target,
                rustix::mount::UnmountFlags::NOFOLLOW | rustix::mount::UnmountFlags::DETACH,
            );
        }
    }
}

/// An error for a failed mount step: what (type, source, step or option, what the kernel
/// logged), where (the target), and the errno (which also sets the kind).
pub(crate) fn errno_error(
    spec: &MountSpec,
    target: &Path,
    step: &str,
    log: &str,
    e: Errno,
) -> Error {
    let kernel = if log.is_empty() {
        String::new()
    } else {
        format!(" [kernel: {log}]")
    };
    Error::io(
        &format!(
            "mount {} (source {:?}, failed at {step}){kernel} on",
            spec.kind, spec.source
        ),
        target,
        e.into(),
    )
}
