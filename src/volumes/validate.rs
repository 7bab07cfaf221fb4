//! Checks of a mutate's input, all made before anything is done: CRI mounts come from the
//! kubelet, and the C ABI and the socket from anyone who can reach them.

use crate::backend::DEFAULT_SNAPSHOTTER;
use crate::cri::{IdMapping, Mount};
use crate::error::{shown, Error, Result};
use crate::mount::idmap::{IdMap, IdRange};
use crate::mount::selinux;
use crate::subpath;

use super::config::MutateOptions;

/// Longest image reference a mount may carry (a reference is at most 255 bytes of name
/// plus tag and digest; an image ID is 71).
pub const MAX_IMAGE_LEN: usize = 4096;
/// Longest `container_path` (Linux's PATH_MAX).
pub const MAX_CONTAINER_PATH_LEN: usize = 4096;
/// Most mounts one call may carry, image or not (a container has tens).
pub const MAX_MOUNTS: usize = 4096;

/// Longest snapshotter name (containerd's are plugin IDs: `overlayfs`, `native`, ...).
pub const MAX_SNAPSHOTTER_LEN: usize = 255;

/// Check one image mount before anything is done for it.
pub(super) fn validate_mount(m: &Mount) -> Result<()> {
    let spec = m.image.as_ref().expect("image mounts only");
    validate_container_path(&m.container_path)?;
    if spec.image.len() > MAX_IMAGE_LEN {
        return Err(Error::invalid(format!(
            "image {}: longer than {MAX_IMAGE_LEN} bytes",
            shown(&spec.image)
        )));
    }
    // The first words are containerd's (container_image_mount.go), so a message matched on
    // stock containerd matches here too.
    if !m.host_path.is_empty() {
        return Err(Error::invalid(format!(
            "hostpath must be empty while mount image: host_path {:?} is set; an image \
             volume's host path is chosen by the runtime",
            m.host_path
        )));
    }
    if !m.readonly {
        return Err(Error::invalid(format!(
            "readonly must be true while mount image: image volume {:?} is read-write; image \
             volumes are read-only (KEP-4639)",
            spec.image
        )));
    }
    if spec.image.is_empty() {
        return Err(Error::invalid(
            "image not specified: the mount's image is empty",
        ));
    }
    if !m.image_sub_path.is_empty() {
        // containerd's phrase first, as for the sub path's resolution (mutate.rs).
        subpath::validate(&m.image_sub_path)
            .map_err(|e| e.context("failed to ensure image subpath"))?;
    }
    Ok(())
}

/// `snapshotter`, or the default when empty; InvalidArgument for a name no snapshotter
/// can have (too long, or with control characters).
pub(super) fn snapshotter_or_default(snapshotter: &str) -> Result<&str> {
    if snapshotter.is_empty() {
        return Ok(DEFAULT_SNAPSHOTTER);
    }
    if snapshotter.len() > MAX_SNAPSHOTTER_LEN || snapshotter.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "snapshotter {}: not a snapshotter name (at most {MAX_SNAPSHOTTER_LEN} bytes, no control characters)",
            shown(snapshotter)
        )));
    }
    Ok(snapshotter)
}

/// Where an image volume goes in the container: an absolute path, as the runtime will
/// join it to the container's root.
fn validate_container_path(path: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid(format!("container path {}: {why}", shown(path)));
    if path.is_empty() {
        return Err(Error::invalid(
            "container path is empty: an image volume needs the path it is mounted at",
        ));
    }
    if path.len() > MAX_CONTAINER_PATH_LEN {
        return Err(bad(&format!("longer than {MAX_CONTAINER_PATH_LEN} bytes")));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(bad("not absolute"));
    }
    Ok(())
}

/// The mount's uid/gid mappings (CRI `uidMappings`, `gidMappings`), checked; None when it
/// has none (a pod in the host's user namespace).
pub(super) fn idmap_of(m: &Mount) -> Result<Option<IdMap>> {
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(None);
    }
    let ranges = |v: &[IdMapping]| {
        v.iter()
            .map(|r| IdRange {
                container: r.container_id,
                host: r.host_id,
                len: r.length,
            })
            .collect()
    };
    let idmap = IdMap {
        uid: ranges(&m.uid_mappings),
        gid: ranges(&m.gid_mappings),
    };
    idmap.validate()?;
    Ok(Some(idmap))
}

/// The label a call's volumes get: None without one, or when SELinux is off and the caller
/// said to ignore it then; FailedPrecondition when it is off and the caller did not.
pub(super) fn mount_label(options: &MutateOptions) -> Result<Option<String>> {
    let label = &options.mount_label;
    if label.is_empty() {
        return Ok(None);
    }
    if selinux::is_enabled() {
        return Ok(Some(label.clone()));
    }
    if options.ignore_label_without_selinux {
        tracing::debug!(label = %label, "SELinux is off: the mount label is ignored, as asked");
        return Ok(None);
    }
    Err(Error::precondition(format!(
        "SELinux mount label {label:?}: SELinux is not enabled on this host (no selinuxfs at \
         /sys/fs/selinux), so no filesystem takes a context= option; send no label, or ask \
         for it to be ignored without SELinux (ignore_label_without_selinux; `imv mutate \
         --ignore-label-without-selinux`)"
    )))
}
