//! An artifact's files layer (backend/artifact.rs) made in a containerd snapshot: the
//! extraction's directory gets a hard link to each blob in containerd's local content
//! store, so the volume shows the stored blob and no byte is copied.
//!
//! The directory is the one the snapshotter prepared: a read-write bind's source (a base
//! layer, or a snapshotter such as `native` that copies the parent), or an overlay's
//! `upperdir` (a layer with tar layers below, whose `lowerdir`s are what the names are
//! checked against). Any other mounts are refused (FailedPrecondition naming them). A blob
//! that cannot be linked (containerd's content store on another filesystem than the
//! snapshotter's, or not visible to this process) is copied: cloned where the filesystem
//! shares extents, else read through the content service. The volume is the same; the
//! mount then takes the time of the copy and the disk holds the bytes twice. A log line
//! says so.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::api::containerd::types::Mount;
use super::{local_content, ContainerdBackend};
use crate::backend::artifact::{self, BlobSource, Placed};
use crate::backend::{FilesLayer, ResolvedImage};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Bytes asked of the content service per read when a blob is copied through it.
const CHUNK: u64 = 1 << 20;

/// Put the files of `files`, the top layer of `image`, in the extraction that `mounts`
/// mount (see the module's documentation).
pub(super) fn make(
    be: &ContainerdBackend,
    image: &ResolvedImage,
    files: &FilesLayer,
    mounts: &[Mount],
) -> Result<()> {
    let (dir, below) = writable_dir(image, mounts)?;
    artifact::check_collisions(files, &below)
        .map_err(|e| e.context(format!("image {:?}", image.name)))?;
    let store = be
        .content_store()
        .filter(|_| !super::test_hooks::copy_artifact_blobs(be.rpc.namespace()));
    let placed = artifact::place(&dir, files, |f| {
        // Asked of containerd first, even when the file is there: a blob of another
        // namespace, or one removed and not yet collected, is not this image's.
        if be.content_info(&f.digest)?.is_none() {
            return Err(Error::not_found(format!(
                "blob {} ({}, the file {}) is not in containerd's content store",
                f.digest,
                f.media_type,
                crate::error::shown(&f.path)
            )));
        }
        if let Some(root) = store {
            let path = local_content::blob_path(root, &f.digest);
            if path.is_file() {
                return Ok(BlobSource::Path(path));
            }
        }
        Ok(BlobSource::Reader(Box::new(ServiceBlob {
            be,
            digest: f.digest.clone(),
            offset: 0,
            size: f.size,
            chunk: io::Cursor::new(Vec::new()),
        })))
    })?;
    let copied = placed.iter().filter(|p| **p != Placed::Linked).count();
    if copied > 0 {
        tracing::warn!(
            image = %image.name,
            files = copied,
            "artifact files could not be linked to containerd's content store (not visible here, or on another filesystem than the snapshots): copied"
        );
    }
    Ok(())
}

/// The directory of the extraction `mounts` mount, where the files go, and the
/// directories to check their names against, each with how a message names it.
fn writable_dir(
    image: &ResolvedImage,
    mounts: &[Mount],
) -> Result<(PathBuf, Vec<(PathBuf, String)>)> {
    let refuse = |why: &str| {
        Error::precondition(format!(
            "the snapshotter's mounts for the artifact's files ({}) {why}; imv writes them into a read-write bind or an overlay's upperdir",
            mounts
                .iter()
                .map(|m| format!("{} {}", m.r#type, m.source))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    let [m] = mounts else {
        return Err(refuse("are not one mount"));
    };
    if !m.target.is_empty() {
        return Err(refuse("have a target"));
    }
    let option = |name: &str| {
        m.options
            .iter()
            .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
    };
    let (dir, below) = match m.r#type.as_str() {
        "bind" | "rbind" if m.options.iter().any(|o| o == "rw") => {
            // A base layer's empty directory, or (a copying snapshotter) the layers below
            // copied into it.
            let dir = PathBuf::from(&m.source);
            (
                dir.clone(),
                vec![(dir, "the tar layers below it".to_owned())],
            )
        }
        "overlay" => {
            let upper = option("upperdir").ok_or_else(|| refuse("have no upperdir"))?;
            let lowers: Vec<&str> = option("lowerdir")
                .map(|l| l.split(':').collect())
                .unwrap_or_default();
            // Top first; the tar layers of the image are below the files, base first.
            let tars = image.layers.len().saturating_sub(1);
            let named = lowers.len() == tars;
            let below = lowers
                .iter()
                .enumerate()
                .map(|(k, dir)| {
                    let name = match named {
                        true => format!("the tar {}", image.layers[tars - 1 - k]),
                        false => format!("the tar layer at {dir}"),
                    };
                    (PathBuf::from(dir), name)
                })
                .collect();
            (PathBuf::from(upper), below)
        }
        _ => return Err(refuse("are neither")),
    };
    let visible = |d: &Path| {
        d.is_absolute()
            && std::fs::symlink_metadata(d)
                .map(|m| m.is_dir())
                .unwrap_or(false)
    };
    if !visible(&dir) || !below.iter().all(|(d, _)| visible(d)) {
        return Err(refuse("name directories this process does not see"));
    }
    Ok((dir, below))
}

/// A blob read through containerd's content service, a chunk at a time.
struct ServiceBlob<'a> {
    be: &'a ContainerdBackend,
    digest: Digest,
    offset: u64,
    size: u64,
    chunk: io::Cursor<Vec<u8>>,
}

impl Read for ServiceBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.position() as usize == self.chunk.get_ref().len() {
            if self.offset >= self.size {
                return Ok(0);
            }
            let want = CHUNK.min(self.size - self.offset);
            let data = self
                .be
                .read_blob_range(&self.digest, self.offset, want)
                .map_err(io::Error::other)?;
            if data.is_empty() {
                return Ok(0);
            }
            self.offset += data.len() as u64;
            self.chunk = io::Cursor::new(data);
        }
        self.chunk.read(buf)
    }
}
