//! Every host path imv creates, in one place.
//!
//! State (volumes, runtime only; default `/run/imv`):
//!   `<state>/image-volumes/<sandbox id>/<image digest hex>`   one mounted volume
//! Root of the embedded store (persistent; default `/var/lib/imv`):
//!   `<root>/content/blobs/sha256/<hex>`     blobs
//!   `<root>/content/ingest/`                blobs being written
//!   `<root>/snapshots/<chain id hex>/fs`    one unpacked layer (an overlay lower dir)
//!   `<root>/snapshots/empty`                the view of an image without layers
//!   `<root>/snapshots/.tmp-*`               layers being unpacked
//!   `<root>/meta.redb`                      images, snapshots, leases

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{shown, Error, Result};

/// Longest sandbox ID accepted. The sandbox ID is also the lease ID, and containerd caps
/// identifiers at 76 characters; CRI sandbox IDs are 64 hex digits.
pub const MAX_SANDBOX_ID_LEN: usize = 76;

/// Check that `id` can be a sandbox (and lease) ID: it becomes a path component under the
/// state directory, so only containerd's identifier grammar is accepted: ASCII letters and
/// digits, with single `.`, `_` or `-` between them, at most 76 characters. That rules
/// out `/`, `..`, NUL, empty and overlong IDs.
pub fn validate_sandbox_id(id: &str) -> Result<()> {
    let shown = || shown(id);
    if id.is_empty() {
        return Err(Error::invalid("sandbox ID is empty"));
    }
    if id.len() > MAX_SANDBOX_ID_LEN {
        return Err(Error::invalid(format!(
            "sandbox ID {} is longer than {MAX_SANDBOX_ID_LEN} characters",
            shown()
        )));
    }
    let bytes = id.as_bytes();
    let separator = |b: u8| matches!(b, b'.' | b'_' | b'-');
    let ok = bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || separator(b))
        && !separator(bytes[0])
        && !separator(bytes[bytes.len() - 1])
        && !bytes.windows(2).any(|w| separator(w[0]) && separator(w[1]));
    if !ok {
        return Err(Error::invalid(format!(
            "sandbox ID {}: want letters and digits with single '.', '_' or '-' between them \
             (it names a directory and a lease)",
            shown()
        )));
    }
    Ok(())
}

/// Paths under the state directory.
#[derive(Clone, Debug)]
pub struct StateLayout {
    state: PathBuf,
}

impl StateLayout {
    /// Layout under `state` (absolute).
    pub fn new(state: PathBuf) -> Self {
        StateLayout { state }
    }

    /// `<state>/image-volumes`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.state.join("image-volumes")
    }

    /// `<state>/image-volumes/<sandbox>`; `sandbox` must be validated.
    pub fn sandbox_dir(&self, sandbox: &str) -> PathBuf {
        self.volumes_dir().join(sandbox)
    }

    /// `<state>/image-volumes/<sandbox>/<image digest hex>`: where one volume is mounted,
    /// and the key of its view snapshot. The image digest is that of the image's target
    /// ([`ResolvedImage::digest`](crate::backend::ResolvedImage::digest)), as containerd's
    /// CRI plugin names the directory.
    pub fn target(&self, sandbox: &str, image_digest: &Digest) -> PathBuf {
        self.sandbox_dir(sandbox).join(image_digest.hex())
    }

    /// `<state>/idmap-staging/<sandbox>/<volume>` for the volume at `target`: where the
    /// idmapped layers of its overlay are attached while it is mounted (and named in its
    /// mount options afterwards, which is how a restart recognizes the volume).
    pub fn idmap_staging(&self, target: &Path) -> PathBuf {
        let volume = target.file_name().unwrap_or_default();
        let sandbox = target
            .parent()
            .and_then(Path::file_name)
            .unwrap_or_default();
        self.idmap_staging_dir(&sandbox.to_string_lossy())
            .join(volume)
    }

    /// `<state>/empty`: an empty directory, the second layer of a labelled one-layer
    /// volume (see mount/selinux.rs).
    pub fn empty_lower(&self) -> PathBuf {
        self.state.join("empty")
    }

    /// `<state>/idmap-staging/<sandbox>`: empty but while a volume of the sandbox is being
    /// mounted idmapped (or after a crash then); `sandbox` must be validated.
    pub fn idmap_staging_dir(&self, sandbox: &str) -> PathBuf {
        self.state.join("idmap-staging").join(sandbox)
    }
}

/// Paths under the embedded store's root.
#[derive(Clone, Debug)]
pub struct RootLayout {
    root: PathBuf,
}

impl RootLayout {
    /// Layout under `root` (absolute).
    pub fn new(root: PathBuf) -> Self {
        RootLayout { root }
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/content`.
    pub fn content_dir(&self) -> PathBuf {
        self.root.join("content")
    }

    /// `<root>/snapshots`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `<root>/snapshots/<chain id hex>`: one committed layer snapshot.
    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(chain_id.hex())
    }

    /// `<root>/snapshots/<chain id hex>/fs`: its files, an overlay lower dir.
    pub fn snapshot_fs(&self, chain_id: &Digest) -> PathBuf {
        self.snapshot_dir(chain_id).join("fs")
    }

    /// `<root>/snapshots/empty`: an empty directory, the view of an image without layers.
    pub fn empty_dir(&self) -> PathBuf {
        self.snapshots_dir().join("empty")
    }

    /// Prefix of the temporary directories layers are unpacked into.
    pub const TMP_PREFIX: &'static str = ".tmp-";

    /// A fresh temporary directory name for unpacking `chain_id`.
    pub fn snapshot_tmp(&self, chain_id: &Digest, unique: u64) -> PathBuf {
        self.snapshots_dir().join(format!(
            "{}{}-{}-{unique}",
            Self::TMP_PREFIX,
            chain_id.hex(),
            std::process::id()
        ))
    }

    /// `<root>/meta.redb`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("meta.redb")
    }
}

/// Refuse `path` when something other than a directory (or nothing) is there: a root or a
/// state directory named by mistake for a file is bad input (InvalidArgument), not a
/// directory that "already exists".
pub(crate) fn expect_directory(path: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(Error::invalid(format!(
            "{what} {} is not a directory",
            path.display()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids() {
        for good in [
            "a",
            "0123456789abcdef",
            "pod-1.x_y",
            &"f".repeat(64),
            &"a".repeat(76),
        ] {
            validate_sandbox_id(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/a",
            "a\0b",
            "a..b",
            "-a",
            "a-",
            "a b",
            "é",
            &"a".repeat(77),
            &"x".repeat(4096),
        ] {
            let err = validate_sandbox_id(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
        }
        let long = validate_sandbox_id(&"x".repeat(4096)).unwrap_err();
        assert!(long.message().contains("4096 bytes"), "{long}");
    }
}
