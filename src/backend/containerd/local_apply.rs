//! An image's first layer applied by this process, straight into the directory of the
//! snapshot it is extracted into, instead of by containerd's diff service.
//!
//! For a layer with no parent, containerd's snapshotters that keep layers as directories
//! (overlayfs, native) prepare an empty directory and hand back a read-write bind of it;
//! the diff service then mounts that bind somewhere, reads the blob from the content store,
//! untars it into the mount and reports the digest of the tar. Done here, the same bytes
//! land in the same directory with imv's own unpacker (the one the embedded store uses:
//! hardened against hostile layers, the tar checked against the layer's diff ID to its
//! end), without the call and the temporary mount: for the small one-layer images image
//! volumes often are, the diff service's call is a good part of a cold mount.
//!
//! Only when everything is as described: the extraction is a single `bind` with `rw` of an
//! empty directory this process sees, and the blob is in containerd's local content store
//! as this process sees it (see `local_content`). Anything else, and any failure here, goes
//! to the diff service as before, into the same directory emptied again; so the diff
//! service stays the one that says why a layer cannot be applied. A whiteout in a first
//! layer (nothing to hide) is one such case: containerd's differ drops it, imv's unpacker
//! would make an overlay whiteout, so it is left to the differ.
//!
//! What differs from containerd's differ on success: the extended attributes imv's
//! unpacker does not apply (`security.*` other than file capabilities, `trusted.overlay*`:
//! see `local::unpack`), which containerd's differ would set.

use std::fs;
use std::path::{Path, PathBuf};

use super::api::containerd::types::Mount;

use super::{local_content, ContainerdBackend};
use crate::backend::local::unpack::unpack_base_layer;
use crate::backend::TarLayer;
use crate::error::{Error, Result};

/// Apply `layer` into the directory `mounts` binds, if it is the case described above,
/// checked against its diff ID if it has one: whether it was applied here (if not, the
/// directory is untouched, or emptied again after a failure); an error only when the
/// directory could not be emptied (the extraction is spoiled).
pub(super) fn apply(be: &ContainerdBackend, layer: &TarLayer, mounts: &[Mount]) -> Result<bool> {
    let Some(dir) = empty_bind_source(mounts) else {
        return Ok(false);
    };
    let Some(root) = be.content_store() else {
        return Ok(false);
    };
    let Ok(file) = fs::File::open(local_content::blob_path(root, &layer.digest)) else {
        return Ok(false);
    };
    let unpacked = unpack_base_layer(
        // Unbuffered: the unpacker reads it through a buffer of its own.
        file,
        &layer.media_type,
        layer.diff_id.as_ref(),
        &dir,
        &mut |_| {},
    );
    match unpacked {
        Ok(stats) => {
            tracing::debug!(layer = %layer.digest, dir = %dir.display(), entries = stats.entries, "applied the first layer here");
            Ok(true)
        }
        Err(e) => {
            tracing::debug!(layer = %layer.digest, error = %e, "applying the first layer here failed; containerd's differ applies it");
            empty(&dir).map_err(|e| e.context("emptying the extraction after a failed apply"))?;
            Ok(false)
        }
    }
}

/// The directory of a single read-write bind, if it is an empty directory here.
fn empty_bind_source(mounts: &[Mount]) -> Option<PathBuf> {
    let [m] = mounts else {
        return None;
    };
    if m.r#type != "bind" || !m.target.is_empty() || !m.options.iter().any(|o| o == "rw") {
        return None;
    }
    let dir = Path::new(&m.source);
    if !dir.is_absolute() {
        return None;
    }
    // Not following a link: the snapshotter made a directory.
    let meta = fs::symlink_metadata(dir).ok()?;
    if !meta.is_dir() || fs::read_dir(dir).ok()?.next().is_some() {
        return None;
    }
    Some(dir.to_owned())
}

/// Remove everything in `dir` (not following links), leaving it empty.
fn empty(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))? {
        let entry = entry.map_err(|e| Error::io("reading", dir, e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| Error::io("reading", &path, e))?
            .is_dir();
        let removed = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io("removing", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &Path, options: &[&str]) -> Mount {
        Mount {
            r#type: "bind".to_owned(),
            source: source.to_string_lossy().into_owned(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_single_read_write_bind_of_an_empty_directory_is_applied_here() {
        let tmp = tempfile::tempdir().unwrap();
        let empty_dir = tmp.path().join("empty");
        let full = tmp.path().join("full");
        fs::create_dir(&empty_dir).unwrap();
        fs::create_dir(&full).unwrap();
        fs::write(full.join("x"), "x").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&empty_dir, &link).unwrap();
        assert_eq!(
            empty_bind_source(&[bind(&empty_dir, &["rw", "rbind"])]),
            Some(empty_dir.clone())
        );
        for mounts in [
            vec![bind(&empty_dir, &["ro", "rbind"])],
            vec![bind(&full, &["rw", "rbind"])],
            vec![bind(&link, &["rw", "rbind"])],
            vec![bind(Path::new("relative"), &["rw"])],
            vec![bind(&tmp.path().join("missing"), &["rw"])],
            vec![bind(&empty_dir, &["rw"]), bind(&empty_dir, &["rw"])],
            vec![Mount {
                r#type: "overlay".to_owned(),
                source: "overlay".to_owned(),
                options: vec!["upperdir=/u".to_owned(), "rw".to_owned()],
                ..Default::default()
            }],
            vec![],
        ] {
            assert_eq!(empty_bind_source(&mounts), None, "{mounts:?}");
        }
    }

    #[test]
    fn emptying_removes_everything_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "k").unwrap();
        fs::write(dir.join("a/b/f"), "f").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("a/link")).unwrap();
        empty(&dir).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert!(outside.join("keep").exists());
    }
}
