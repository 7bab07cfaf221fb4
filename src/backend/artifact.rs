//! OCI artifacts as volumes (models, Helm charts, anything pushed with `oras`): which
//! manifests are artifacts, what their layers become, and the rules for the files they
//! show. docs/design.md, "Artifacts", says why it is done this way.
//!
//! A manifest is an artifact when it has an `artifactType`, or a config whose media type is
//! not an OCI or Docker image config (the empty `application/vnd.oci.empty.v1+json`,
//! ModelPack's `application/vnd.cncf.model.config.v1+json`, ...). Its volume stacks:
//!
//! - its tar layers (see `is_tar`: by media type, with oras's conventions), in manifest
//!   order, each unpacked with the same rules as an image layer; their config lists no
//!   diff IDs, so the blob's digest, verified when the blob was stored, names each one in
//!   the chain;
//! - on top, one layer for all its other layers (raw blobs): each a file at the path its
//!   annotations give, the stored blob itself where the store allows (a hard link), never
//!   a copy of it otherwise if it can be helped (see `place`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::digest::Digest;
use crate::error::{shown, Error, ErrorKind, IoContext, Result};
use crate::media_type;

/// ModelPack's annotation of a layer's file path (model-spec v0.0.7 and later).
pub const ANNOTATION_MODEL_FILEPATH: &str = "org.cncf.model.filepath";
/// The same annotation before ModelPack moved to the CNCF (model-spec v0.0.4).
pub const ANNOTATION_MODEL_FILEPATH_V0: &str = "org.cnai.model.filepath";
/// The OCI annotation of a blob's file name (what `oras push` sets).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// The annotations that name a raw layer's file, in the order they are asked.
pub const NAME_ANNOTATIONS: [&str; 3] = [
    ANNOTATION_MODEL_FILEPATH,
    ANNOTATION_MODEL_FILEPATH_V0,
    ANNOTATION_TITLE,
];

/// Longest file path an artifact may give (Linux's PATH_MAX, less the NUL).
pub const MAX_PATH_LEN: usize = 4095;
/// Longest component of such a path (NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;
/// Most files one artifact may show: each is a directory entry made at the first mount.
pub const MAX_FILES: usize = 65_536;

/// The mode of a file that is a copy of a blob, as the content stores keep blobs.
const FILE_MODE: u32 = 0o444;
/// The mode of the directories a file path implies.
const DIR_MODE: u32 = 0o755;

/// Whether a manifest with this `artifactType` and config media type is an artifact.
pub(crate) fn is_artifact(artifact_type: Option<&str>, config_media_type: &str) -> bool {
    artifact_type.is_some_and(|t| !t.is_empty())
        || !(config_media_type.is_empty()
            || config_media_type == media_type::OCI_CONFIG
            || config_media_type == media_type::DOCKER_CONFIG)
}

/// What an artifact is said to be: its `artifactType`, else its config's media type (the
/// OCI image spec's rule for manifests without one).
pub(crate) fn artifact_type(artifact_type: Option<&str>, config_media_type: &str) -> String {
    match artifact_type {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => config_media_type.to_owned(),
    }
}

/// oras's annotation on a layer it packed from a directory (a gzipped tar to unpack,
/// `"true"`); `oras pull` unpacks only layers that carry it.
pub const ANNOTATION_ORAS_UNPACK: &str = "io.deis.oras.content.unpack";

/// Whether an artifact layer is a tar to unpack (else a raw file), by what its descriptor
/// says, in this order:
///
/// 1. oras's unpack annotation, where present: `"true"` is a tar, anything else a file;
/// 2. the plain OCI layer media type (`application/vnd.oci.image.layer.v1.tar`) with a
///    title: a file, because that is the media type `oras push` gives every file it is not
///    told one for (`oras pull` writes such a layer as the file its title names);
/// 3. the media type: one ending in `.tar`, `.tar+gzip`, `.tar+zstd` (or Docker's
///    `.tar.gzip`) is a tar, any other a file.
pub(crate) fn is_tar(media_type: &str, annotations: Option<&HashMap<String, String>>) -> bool {
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    if let Some(unpack) = annotation(ANNOTATION_ORAS_UNPACK) {
        return unpack == "true";
    }
    if media_type == media_type::OCI_LAYER && annotation(ANNOTATION_TITLE).is_some() {
        return false;
    }
    [".tar", ".tar+gzip", ".tar+zstd", ".tar.gzip"]
        .iter()
        .any(|suffix| media_type.ends_with(suffix))
}

/// One raw layer of an artifact, shown as a file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactFile {
    /// Its path inside the volume: relative, normalized, checked (see `file_path`).
    pub path: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The layer's media type.
    pub media_type: String,
    /// The annotation its path comes from (`None`: the digest's hex).
    pub named_by: Option<String>,
}

impl ArtifactFile {
    /// How messages name it: its layer, its path and where the path comes from.
    fn describe(&self) -> String {
        match &self.named_by {
            Some(key) => format!(
                "artifact layer {} (named {} by {key})",
                self.digest,
                shown(&self.path)
            ),
            None => format!(
                "artifact layer {} (named {} by its digest)",
                self.digest,
                shown(&self.path)
            ),
        }
    }
}

/// The raw layers of an artifact, as one layer on top of its tar layers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilesLayer {
    /// What names this layer in the chain (see [`FilesLayer::new`]).
    pub id: Digest,
    /// The files, sorted by path.
    pub files: Vec<ArtifactFile>,
}

/// The first 512 bytes hashed into a files layer's ID. They are no tar header (the
/// checksum field holds no octal digits), so no tar, hence no image layer's diff ID, can
/// ever have the digest of what is hashed: a chain of image layers never names the same
/// snapshot as an artifact's files. The version says how the files are laid out.
fn id_preamble() -> [u8; 512] {
    let mut block = [0xffu8; 512];
    let tag = b"imv artifact files v1\n";
    block[..tag.len()].copy_from_slice(tag);
    block
}

impl FilesLayer {
    /// The layer of `files` (paths already checked and distinct): its ID is the digest of
    /// a preamble (see `id_preamble`) and each file's path, digest and size, sorted by
    /// path, so it changes with anything that changes what the layer holds.
    pub fn new(mut files: Vec<ArtifactFile>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut listing = id_preamble().to_vec();
        for f in &files {
            listing.extend_from_slice(f.path.as_bytes());
            listing.push(0);
            listing.extend_from_slice(f.digest.to_string().as_bytes());
            listing.push(0);
            listing.extend_from_slice(f.size.to_string().as_bytes());
            listing.push(b'\n');
        }
        FilesLayer {
            id: Digest::of(&listing),
            files,
        }
    }

    /// The bytes of all its files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The path of the file a raw layer `digest` is shown as, from `annotations`, and the
/// annotation it comes from: the first of [`NAME_ANNOTATIONS`] present, else the digest's
/// hex (and none). Checked: relative, no `..`, no NUL, at most [`MAX_PATH_LEN`] bytes and
/// [`MAX_NAME_LEN`] per component; `.` and empty components are dropped (`./a//b` is
/// `a/b`). InvalidArgument names the layer and the annotation.
pub(crate) fn file_path(
    digest: &Digest,
    annotations: Option<&HashMap<String, String>>,
) -> Result<(String, Option<&'static str>)> {
    let named = annotations.and_then(|a| {
        NAME_ANNOTATIONS
            .iter()
            .find_map(|key| a.get(*key).map(|v| (*key, v.as_str())))
    });
    let Some((key, value)) = named else {
        return Ok((digest.hex().to_owned(), None));
    };
    let bad = |why: &str| {
        Error::invalid(format!(
            "artifact layer {digest}: annotation {key} = {}: {why}",
            shown(value)
        ))
    };
    if value.len() > MAX_PATH_LEN {
        return Err(bad(&format!("longer than {MAX_PATH_LEN} bytes")));
    }
    if value.contains('\0') {
        return Err(bad("holds a NUL byte"));
    }
    if value.starts_with('/') {
        return Err(bad("an absolute path; it must be relative to the volume"));
    }
    let mut parts = Vec::new();
    for part in value.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("holds `..`; it must stay inside the volume")),
            p if p.len() > MAX_NAME_LEN => {
                return Err(bad(&format!(
                    "a component is longer than {MAX_NAME_LEN} bytes"
                )))
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("names no file"));
    }
    Ok((parts.join("/"), Some(key)))
}

/// Check that no two files of an artifact have one path, and that no file's path is a
/// directory another's implies (`a` and `a/b`).
pub(crate) fn check_distinct(files: &[ArtifactFile]) -> Result<()> {
    if files.len() > MAX_FILES {
        return Err(Error::invalid(format!(
            "the artifact has {} raw layers; imv shows at most {MAX_FILES}",
            files.len()
        )));
    }
    let by_path: BTreeMap<&str, &ArtifactFile> = {
        let mut map = BTreeMap::new();
        for f in files {
            if let Some(other) = map.insert(f.path.as_str(), f) {
                return Err(Error::invalid(format!(
                    "{} and {} are both named {}",
                    other.describe(),
                    f.describe(),
                    shown(&f.path)
                )));
            }
        }
        map
    };
    for f in files {
        let mut dir = f.path.as_str();
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if let Some(other) = by_path.get(parent) {
                return Err(Error::invalid(format!(
                    "{} is inside {}, the file of {}",
                    f.describe(),
                    shown(parent),
                    other.describe()
                )));
            }
            dir = parent;
        }
    }
    Ok(())
}

/// Check that no file of `files` collides with what the tar layers in `layer_dirs` (their
/// unpacked directories, as overlay lower dirs hold them, each with how a message names
/// it: `tar layer sha256:...`) have: its path must be absent
/// from each, whiteouts included, and each directory on the way a directory (or absent),
/// not a file or a symbolic link. Nothing is followed. InvalidArgument names the file, its
/// layer and what is in the way.
pub(crate) fn check_collisions(files: &FilesLayer, layer_dirs: &[(PathBuf, String)]) -> Result<()> {
    for (dir, layer) in layer_dirs {
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("opening layer", dir)?;
        for f in &files.files {
            if let Some(what) = in_the_way(&root, &f.path).at("looking into layer", dir)? {
                return Err(Error::invalid(format!(
                    "{} collides with {layer}, which has {what}",
                    f.describe()
                )));
            }
        }
    }
    Ok(())
}

/// What in the tree at `root` is in the way of a file at `path`, if anything.
fn in_the_way(root: &OwnedFd, path: &str) -> io::Result<Option<String>> {
    let parts: Vec<&str> = path.split('/').collect();
    let (name, dirs) = parts.split_last().expect("a checked path has a component");
    let mut at: Option<OwnedFd> = None;
    for (i, part) in dirs.iter().enumerate() {
        let parent = at.as_ref().unwrap_or(root);
        match rustix::fs::statat(parent, *part, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() => {}
            Ok(st) => {
                return Ok(Some(format!(
                    "{} {}",
                    kind_of(st.st_mode),
                    shown(&parts[..=i].join("/"))
                )))
            }
        }
        let next = rustix::fs::openat(
            parent,
            *part,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        at = Some(next);
    }
    let parent = at.as_ref().unwrap_or(root);
    match rustix::fs::statat(parent, *name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
        Ok(st) => Ok(Some(format!("{} {}", kind_of(st.st_mode), shown(path)))),
    }
}

/// How a message names a file of this mode (a whiteout is a 0/0 character device).
fn kind_of(mode: u32) -> &'static str {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(mode) {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::RegularFile => "a file",
        FileType::CharacterDevice => "a character device or whiteout",
        _ => "an entry",
    }
}

/// Where the bytes of a blob come from when the files of an artifact are placed.
pub(crate) enum BlobSource<'a> {
    /// A file of the store: linked, so the volume shows the blob itself.
    Path(PathBuf),
    /// A reader (the blob is not where this process can link it): copied.
    Reader(Box<dyn Read + 'a>),
}

/// How `place` put a file in the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placed {
    /// A hard link to the stored blob: no byte copied.
    Linked,
    /// A copy sharing the blob's extents (FICLONE): no byte copied, a file of its own.
    Cloned,
    /// A copy of the bytes (the blob is on another filesystem, or only readable).
    Copied,
}

/// Make the files of `layer` in the empty directory `dest`, with `source` giving each
/// blob. A blob at a path of the same filesystem is hard-linked (the file *is* the blob:
/// its mode, owner and times, 0444 root in both stores); otherwise it is cloned where the
/// filesystem can, and copied where not, into a file of mode 0444. Directories a path
/// implies are made with mode 0755. What each file became, in `files` order.
pub(crate) fn place<'a>(
    dest: &Path,
    layer: &FilesLayer,
    mut source: impl FnMut(&ArtifactFile) -> Result<BlobSource<'a>>,
) -> Result<Vec<Placed>> {
    let mut placed = Vec::with_capacity(layer.files.len());
    for f in &layer.files {
        let target = dest.join(&f.path);
        if let Some(parent) = target.parent() {
            make_dirs(dest, parent)?;
        }
        let how = match source(f)? {
            BlobSource::Path(blob) => match fs::hard_link(&blob, &target) {
                Ok(()) => Placed::Linked,
                // Another filesystem (EXDEV), or links refused (EPERM: protected_hardlinks
                // for a caller that does not own the blob): the bytes, then.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => {
                    copy_from_path(&blob, &target)?
                }
                Err(e) => return Err(Error::io("linking the blob to", &target, e)),
            },
            BlobSource::Reader(mut reader) => {
                copy_from_reader(&mut reader, &target, f.size)?;
                Placed::Copied
            }
        };
        check_placed_size(&target, f)?;
        placed.push(how);
    }
    Ok(placed)
}

/// Make the directories from `dest` down to `dir` (inside it), mode 0755.
fn make_dirs(dest: &Path, dir: &Path) -> Result<()> {
    let mut at = dest.to_path_buf();
    for part in dir.strip_prefix(dest).unwrap_or(dir).components() {
        at.push(part);
        match fs::create_dir(&at) {
            Ok(()) => {
                let perms = std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE);
                fs::set_permissions(&at, perms).at("setting the mode of", &at)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("creating", &at, e)),
        }
    }
    Ok(())
}

/// A new file at `target` of mode 0444 (written by root, who may).
fn create_file(target: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(target)
        .at("creating", target)
}

/// `blob` into a new file at `target`: cloned where the filesystem shares extents,
/// else copied (the kernel's copy_file_range, which may share them too).
fn copy_from_path(blob: &Path, target: &Path) -> Result<Placed> {
    let from = fs::File::open(blob).at("opening", blob)?;
    let mut to = create_file(target)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(Placed::Cloned);
    }
    let mut from = from;
    io::copy(&mut from, &mut to).at("copying the blob to", target)?;
    to.sync_data().at("syncing", target)?;
    Ok(Placed::Copied)
}

/// `size` bytes of `reader` into a new file at `target`.
fn copy_from_reader(reader: &mut dyn Read, target: &Path, size: u64) -> Result<()> {
    let mut to = create_file(target)?;
    let copied = io::copy(&mut reader.take(size.saturating_add(1)), &mut to)
        .at("copying the blob to", target)?;
    if copied != size {
        return Err(Error::invalid(format!(
            "{}: the blob gave {copied} bytes, its descriptor says {size}",
            target.display()
        )));
    }
    to.sync_data().at("syncing", target)?;
    Ok(())
}

/// The file at `target` must have the blob's size: a store's blob of another size is not
/// the blob the manifest names.
fn check_placed_size(target: &Path, f: &ArtifactFile) -> Result<()> {
    let len = fs::symlink_metadata(target).at("inspecting", target)?.len();
    if len != f.size {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "artifact layer {}: the stored blob is {len} bytes, its descriptor says {}",
                f.digest, f.size
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn titled(v: &str) -> HashMap<String, String> {
        HashMap::from([(ANNOTATION_TITLE.to_owned(), v.to_owned())])
    }

    #[test]
    fn artifacts_are_told_from_images() {
        assert!(!is_artifact(None, media_type::OCI_CONFIG));
        assert!(!is_artifact(None, media_type::DOCKER_CONFIG));
        assert!(!is_artifact(Some(""), media_type::OCI_CONFIG));
        assert!(is_artifact(None, "application/vnd.oci.empty.v1+json"));
        assert!(is_artifact(
            None,
            "application/vnd.cncf.model.config.v1+json"
        ));
        assert!(is_artifact(
            Some("application/x.test"),
            media_type::OCI_CONFIG
        ));
        assert_eq!(
            artifact_type(None, "application/vnd.cncf.model.config.v1+json"),
            "application/vnd.cncf.model.config.v1+json"
        );
        assert_eq!(artifact_type(Some("a/b"), "c/d"), "a/b");
    }

    #[test]
    fn tar_layers_are_told_by_their_media_type() {
        for tar in [
            "application/vnd.cncf.model.weight.v1.tar",
            "application/vnd.cncf.model.weight.v1.tar+gzip",
            "application/vnd.cncf.model.dataset.v1.tar+zstd",
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            media_type::OCI_LAYER,
            media_type::OCI_LAYER_GZIP,
            media_type::DOCKER_LAYER_GZIP,
        ] {
            assert!(is_tar(tar, None), "{tar}");
        }
        for raw in [
            "application/vnd.cncf.model.weight.v1.raw",
            "application/octet-stream",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "text/plain",
            "",
        ] {
            assert!(!is_tar(raw, None), "{raw}");
        }
    }

    #[test]
    fn oras_layers_are_told_as_oras_pull_tells_them() {
        let with = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        // `oras push FILE`: the plain layer media type and a title, a file.
        let file = with(&[(ANNOTATION_TITLE, "hi.txt")]);
        assert!(!is_tar(media_type::OCI_LAYER, Some(&file)));
        // A title on a media type that says tar+gzip: the media type decides.
        assert!(is_tar(media_type::OCI_LAYER_GZIP, Some(&file)));
        // `oras push DIR`: a gzipped tar with the unpack annotation.
        let dir = with(&[
            (ANNOTATION_TITLE, "models"),
            (ANNOTATION_ORAS_UNPACK, "true"),
        ]);
        assert!(is_tar(media_type::OCI_LAYER_GZIP, Some(&dir)));
        let not = with(&[(ANNOTATION_ORAS_UNPACK, "false")]);
        assert!(!is_tar(media_type::OCI_LAYER_GZIP, Some(&not)));
    }

    #[test]
    fn names_come_from_the_annotations_in_order() {
        let digest = d("blob");
        assert_eq!(
            file_path(&digest, None).unwrap(),
            (digest.hex().to_owned(), None)
        );
        assert_eq!(
            file_path(&digest, Some(&titled("model.bin"))).unwrap(),
            ("model.bin".to_owned(), Some(ANNOTATION_TITLE))
        );
        let mut both = titled("title.bin");
        both.insert(
            ANNOTATION_MODEL_FILEPATH.into(),
            "weights/a.safetensors".into(),
        );
        both.insert(ANNOTATION_MODEL_FILEPATH_V0.into(), "old.bin".into());
        assert_eq!(
            file_path(&digest, Some(&both)).unwrap(),
            (
                "weights/a.safetensors".to_owned(),
                Some(ANNOTATION_MODEL_FILEPATH)
            )
        );
        both.remove(ANNOTATION_MODEL_FILEPATH);
        assert_eq!(
            file_path(&digest, Some(&both)).unwrap(),
            ("old.bin".to_owned(), Some(ANNOTATION_MODEL_FILEPATH_V0))
        );
        assert_eq!(
            file_path(&digest, Some(&titled("./a//b/"))).unwrap().0,
            "a/b"
        );
    }

    #[test]
    fn bad_names_are_refused_naming_layer_and_annotation() {
        let digest = d("blob");
        let long_part = "x".repeat(MAX_NAME_LEN + 1);
        let long_path = "a/".repeat(MAX_PATH_LEN);
        for (name, why) in [
            ("/etc/passwd", "absolute"),
            ("a/../../b", "`..`"),
            ("..", "`..`"),
            ("a/b/..", "`..`"),
            ("", "names no file"),
            ("./", "names no file"),
            ("a\0b", "NUL"),
            (long_part.as_str(), "component is longer"),
            (long_path.as_str(), "longer than 4095"),
        ] {
            let e = file_path(&digest, Some(&titled(name))).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name:?}");
            let msg = e.to_string();
            assert!(msg.contains(why), "{name:?}: {msg}");
            assert!(msg.contains(&digest.to_string()), "{msg}");
            assert!(msg.contains(ANNOTATION_TITLE), "{msg}");
            assert!(msg.len() < 400, "the name is quoted short: {msg}");
        }
    }

    fn file(path: &str, blob: &str) -> ArtifactFile {
        ArtifactFile {
            path: path.into(),
            digest: d(blob),
            size: blob.len() as u64,
            media_type: "application/octet-stream".into(),
            named_by: Some(ANNOTATION_TITLE.to_owned()),
        }
    }

    #[test]
    fn duplicates_and_files_inside_files_are_refused() {
        check_distinct(&[file("a", "1"), file("b/c", "2"), file("b/d", "2")]).unwrap();
        let e = check_distinct(&[file("a", "1"), file("a", "2")]).unwrap_err();
        assert!(e.to_string().contains("both named \"a\""), "{e}");
        assert!(e.to_string().contains(ANNOTATION_TITLE), "{e}");
        let e = check_distinct(&[file("a/b/c", "1"), file("a", "2")]).unwrap_err();
        assert!(e.to_string().contains("inside \"a\""), "{e}");
    }

    #[test]
    fn the_files_layer_id_follows_what_it_holds() {
        let one = FilesLayer::new(vec![file("a", "1"), file("b", "2")]);
        let same = FilesLayer::new(vec![file("b", "2"), file("a", "1")]);
        assert_eq!(one.id, same.id, "order does not matter");
        assert_eq!(one.files[0].path, "a");
        let renamed = FilesLayer::new(vec![file("a", "1"), file("c", "2")]);
        assert_ne!(one.id, renamed.id);
        let other_blob = FilesLayer::new(vec![file("a", "1"), file("b", "3")]);
        assert_ne!(one.id, other_blob.id);
        assert_eq!(one.size(), 2);
    }

    #[test]
    fn the_id_preamble_is_no_tar_header() {
        let block = id_preamble();
        let mut archive = tar::Archive::new(&block[..]);
        let first = archive.entries().unwrap().next();
        assert!(
            matches!(first, Some(Err(_))),
            "a tar reader must refuse the preamble"
        );
    }
}
