//! Importing images into the content store: an OCI image layout directory, an OCI archive
//! (a tar of such a directory, optionally gzip- or zstd-compressed; newer `docker save`
//! output is one too), or a legacy `docker save` tarball.
//!
//! Every blob is verified against its digest on the way in, and every descriptor reachable
//! from `index.json` is checked (digest and size) before an image is reported. Nothing is
//! recorded here: the caller records the returned images, so a failed import leaves only
//! verified, unreferenced blobs that the store's garbage collection removes.

mod archive;
mod graph;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Deserialize;

use crate::backend::local::content::{ContentStore, MAX_JSON_SIZE};
use crate::backend::{ImageRecord, Progress};
use crate::error::{Error, IoContext, Result};

/// Annotation containerd (and newer `docker save`) put on `index.json` entries: the full
/// image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation on `index.json` entries: a full reference, or often only a tag.
pub use oci_spec::image::ANNOTATION_REF_NAME;

/// How an import names the images it finds, and which it takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// The name of the one image the source holds (or the one `tag` picks); more than one
    /// is InvalidArgument.
    pub name: Option<String>,
    /// A repository (`example.com/imgs`, no tag or digest) naming every image that is
    /// tagged with a bare tag (`org.opencontainers.image.ref.name` = `one`, as umoci,
    /// `skopeo copy oci:DIR:TAG` and buildah write): `<base_name>:<tag>`, as
    /// `ctr images import --base-name` does. Images named in full keep their names.
    pub base_name: Option<String>,
    /// Take only the image(s) tagged `tag` (the `org.opencontainers.image.ref.name` of an
    /// OCI layout's entry, or a `docker save` RepoTag's tag), as skopeo's `oci:DIR:TAG`.
    /// NotFound, listing the tags there are, when none is.
    pub tag: Option<String>,
}

impl ImportOptions {
    /// Options that only name the image (or not).
    pub fn named(name: Option<&str>) -> Self {
        ImportOptions {
            name: name.map(str::to_owned),
            ..Default::default()
        }
    }
}

/// Import the image(s) at `path` into `store` and return what was found, one record per
/// image: its name, and the digest, media type and size of its target (a manifest, or an
/// index for a multi-platform image, kept whole).
///
/// `path` is an OCI image layout directory, or a file holding an OCI archive or a
/// `docker save` tarball, plain, gzip- or zstd-compressed. `options` pick images by tag and
/// name them (see [`ImportOptions`]); otherwise names come from the
/// `io.containerd.image.name` annotation, a full `org.opencontainers.image.ref.name`, or a
/// `docker save` RepoTag, normalized (`busybox` → `docker.io/library/busybox:latest`).
///
/// Malformed or inconsistent input (bad digests, sizes, missing referenced blobs, unsafe
/// member names, oversized metadata, unnamed images) is InvalidArgument naming the value
/// and `path`. Progress is reported per blob, in bytes.
pub fn import(
    store: &ContentStore,
    path: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>> {
    import_inner(store, path, options, progress)
        .map_err(|e| e.context(format!("import {}", path.display())))
}

fn import_inner(
    store: &ContentStore,
    path: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>> {
    // Checked first: a typo should fail before any byte is copied.
    let options = checked(options)?;
    let meta = fs::metadata(path).at("inspect", path)?;
    if meta.is_dir() {
        import_layout_dir(store, path, &options, progress)
    } else {
        archive::import_archive(store, path, &options, progress)
    }
}

/// `options` with the name normalized, the base name and the tag checked.
fn checked(options: &ImportOptions) -> Result<ImportOptions> {
    let name = options
        .name
        .as_deref()
        .map(crate::reference::normalize)
        .transpose()?;
    if let (Some(_), Some(_)) = (&name, &options.base_name) {
        return Err(Error::invalid(
            "a name and a base name: the name names one image, the base name the bare-tagged \
             ones; give one",
        ));
    }
    if let Some(base) = &options.base_name {
        let last = base.rsplit('/').next().unwrap_or(base);
        if base.contains('@') || last.contains(':') {
            return Err(Error::invalid(format!(
                "base name {base:?}: a repository, without tag or digest (example.com/imgs)"
            )));
        }
        crate::reference::normalize(&format!("{base}:latest"))
            .map_err(|e| e.context(format!("base name {base:?}")))?;
    }
    if let Some(tag) = &options.tag {
        if tag.is_empty() || tag.len() > 128 || tag.contains(['/', ':', '@']) {
            return Err(Error::invalid(format!(
                "tag {tag:?}: a tag alone (one, latest, v1.2), at most 128 bytes"
            )));
        }
    }
    Ok(ImportOptions {
        name,
        base_name: options.base_name.clone(),
        tag: options.tag.clone(),
    })
}

/// An OCI image layout directory: blobs are copied from `blobs/sha256/` as the walk from
/// `index.json` reaches them.
fn import_layout_dir(
    store: &ContentStore,
    dir: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>> {
    let layout = dir.join("oci-layout");
    let data = read_small_file(&layout).map_err(|e| match e.is_not_found() {
        true => Error::invalid(format!(
            "{} is not an OCI image layout: it has no oci-layout file",
            dir.display()
        )),
        false => e,
    })?;
    check_oci_layout(&data)?;
    let index_path = dir.join("index.json");
    let index = read_small_file(&index_path)?;
    let source = graph::DirSource { dir };
    graph::import_index(store, &source, &index, options, progress)
}

/// Read a metadata file of a layout (at most [`MAX_JSON_SIZE`] bytes), not following a
/// symlink at its name.
fn read_small_file(path: &Path) -> Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .at("open", path)?;
    read_limited(file, path)
}

/// Read all of `r`, refusing more than [`MAX_JSON_SIZE`] bytes (InvalidArgument naming
/// `what`), without ever holding more than that.
fn read_limited(r: impl Read, what: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    r.take(MAX_JSON_SIZE + 1)
        .read_to_end(&mut data)
        .at("read", what)?;
    if data.len() as u64 > MAX_JSON_SIZE {
        return Err(too_big(what));
    }
    Ok(data)
}

fn too_big(what: &Path) -> Error {
    Error::invalid(format!(
        "{} is larger than the {MAX_JSON_SIZE} bytes allowed",
        what.display()
    ))
}

/// `oci-layout` must say `{"imageLayoutVersion": "1.x.y"}`.
fn check_oci_layout(data: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct OciLayout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let layout: OciLayout = serde_json::from_slice(data)
        .map_err(|e| Error::invalid(format!("oci-layout is not valid: {e}")))?;
    if !layout.version.starts_with("1.") {
        return Err(Error::invalid(format!(
            "oci-layout: unsupported imageLayoutVersion {:?}",
            layout.version
        )));
    }
    Ok(())
}

/// Progress under another task name (an archive member's, when no digest is known yet).
struct Named<'a> {
    inner: &'a dyn Progress,
    name: &'a str,
}

impl Progress for Named<'_> {
    fn begin(&self, _task: &str, total: Option<u64>) {
        self.inner.begin(self.name, total)
    }
    fn advance(&self, _task: &str, bytes: u64) {
        self.inner.advance(self.name, bytes)
    }
    fn end(&self, _task: &str) {
        self.inner.end(self.name)
    }
}

/// Map an I/O error on untrusted input to InvalidArgument: a broken archive is the input's
/// fault, not the system's.
fn bad_input(what: &str, path: &Path, e: io::Error) -> Error {
    Error::invalid(format!("{what} {}: {e}", path.display()))
}

/// Open a source blob, not following a symlink at its name. `Ok(None)` when absent.
fn open_source_blob(path: &Path) -> Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::invalid(format!(
            "{} is a symlink; blobs must be regular files",
            path.display()
        ))),
        Err(e) => Err(Error::io("open", path, e)),
    }
}
