//! Manifests, indexes and configs read straight from containerd's local content store.
//!
//! Resolving an image reads two or three small blobs, one after the other; over the
//! content service each is a round trip on containerd's socket (most of a millisecond on a
//! small machine, before any work), while containerd's CRI plugin reads them as files. When
//! containerd's content plugin says where its store is (it exports `root` in the plugin
//! list) and that directory is visible to this process (same host, same mount namespace),
//! a blob is read from `<root>/blobs/sha256/<hex>` instead: the store's layout, the one
//! `ctr content` and every containerd since 1.0 share. The bytes are checked against the
//! digest as with the service, so nothing read this way can be other than what was asked;
//! a blob that is missing, too large or does not match is read through the service, which
//! then gives the answer (and the error) it always gave. Which blobs are read is unchanged:
//! those the namespace's image records name.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::ContainerdBackend;
use crate::digest::Digest;

/// The type of containerd's content plugins.
const CONTENT_PLUGIN_TYPE: &str = "io.containerd.content.v1";

/// Where containerd's local content store is, if its content plugin says and the
/// directory is visible here. Failures mean "not known": the service is used then.
pub(super) fn discover(be: &ContainerdBackend) -> Option<PathBuf> {
    let plugins = super::plugins::list(
        be,
        "listing containerd's content plugins",
        format!("type=={CONTENT_PLUGIN_TYPE}"),
    );
    let plugins = match plugins {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "containerd's content store location is unknown; reading blobs through its content service");
            return None;
        }
    };
    let root = plugins
        .iter()
        .filter(|p| p.r#type == CONTENT_PLUGIN_TYPE && p.init_err.is_none())
        .find_map(|p| p.exports.get("root"))
        .map(PathBuf::from)
        // The directory, not yet its `blobs/` (made with the first blob).
        .filter(|root| root.is_absolute() && root.is_dir());
    match &root {
        Some(root) => {
            tracing::debug!(root = %root.display(), "reading blobs from containerd's content store")
        }
        None => tracing::debug!(
            "containerd's content store is not visible here; reading blobs through its content service"
        ),
    }
    root
}

/// Where blob `digest` is in the store at `root` (`<root>/blobs/sha256/<hex>`).
pub(super) fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    // A parsed digest is `sha256:` and 64 hex digits: nothing in it can leave the store.
    root.join("blobs").join("sha256").join(digest.hex())
}

/// Blob `digest` from the store at `root`, if it is there, at most `max` bytes and
/// matches its digest; `None` otherwise (the caller asks the service).
pub(super) fn read(root: &Path, digest: &Digest, max: u64) -> Option<Vec<u8>> {
    let path = blob_path(root, digest);
    let file = std::fs::File::open(&path).ok()?;
    let mut data = Vec::new();
    // One byte more than allowed tells "too large" from "exactly the limit".
    file.take(max.saturating_add(1))
        .read_to_end(&mut data)
        .ok()?;
    if data.len() as u64 > max {
        return None;
    }
    if &Digest::of(&data) != digest {
        tracing::debug!(path = %path.display(), "blob in containerd's content store does not match its digest; asking the content service");
        return None;
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(blobs: &[(&Digest, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let sha = dir.path().join("blobs").join("sha256");
        std::fs::create_dir_all(&sha).unwrap();
        for (digest, data) in blobs {
            std::fs::write(sha.join(digest.hex()), data).unwrap();
        }
        dir
    }

    #[test]
    fn a_blob_that_matches_its_digest_is_read() {
        let data = br#"{"schemaVersion":2}"#;
        let digest = Digest::of(data);
        let dir = store(&[(&digest, data)]);
        assert_eq!(read(dir.path(), &digest, 1024).as_deref(), Some(&data[..]));
        // Exactly the limit is fine; one byte less is not.
        let len = data.len() as u64;
        assert!(read(dir.path(), &digest, len).is_some());
        assert!(read(dir.path(), &digest, len - 1).is_none());
    }

    #[test]
    fn missing_or_altered_blobs_are_left_to_the_service() {
        let digest = Digest::of(b"the real content");
        let dir = store(&[(&digest, b"something else")]);
        assert!(read(dir.path(), &digest, 1024).is_none());
        let absent = Digest::of(b"never stored");
        assert!(read(dir.path(), &absent, 1024).is_none());
        assert!(read(Path::new("/nonexistent/imv/store"), &digest, 1024).is_none());
    }
}
