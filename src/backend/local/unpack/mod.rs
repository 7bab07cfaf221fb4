//! Unpacking one layer (a tar, gzip or zstd compressed or not) into a directory in the
//! form overlayfs expects of a lower dir, safely: the layer is untrusted input.
//!
//! - Compression is sniffed from the magic bytes (media types lie); memory does not grow
//!   with the layer: fixed buffers, entries are streamed, tar headers are held to a budget.
//! - The tar stream is framed exactly as Go's archive/tar frames it (tar_stream/;
//!   docs/design.md, "Layers read as Go reads them"): what containerd and the scanners
//!   read is what is mounted, or the layer is refused.
//! - The whole uncompressed stream, to its very end, is hashed and checked against the
//!   layer's diff_id.
//! - Every entry name is normalized (leading `/` and `./` dropped, `..` and NUL refused)
//!   and its parent resolved inside the destination with openat2 `RESOLVE_IN_ROOT`, so a
//!   symlink an earlier entry made is followed within the destination, never out of it.
//!   The final component is created relative to its parent's fd without following a
//!   symlink; metadata goes through the created fd or non-following `*at` calls.
//! - Whiteouts become overlayfs whiteouts: `.wh.NAME` a 0/0 character device, and
//!   `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. A whiteout of an
//!   entry of the same layer is refused: whiteouts hide what layers below have.
//!
//! The caller gives an empty directory and discards it on any error, so a failed unpack
//! is not rolled back here.

mod erofs;
#[cfg(test)]
mod go_differential;
mod stream;
mod tar_stream;
#[cfg(test)]
mod tests;
mod tree;

use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;

use rustix::fs::FileType;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use stream::{Compression, HashOn, Shared, Uncompressed};
use tar_stream::{flag, Header, TarStream};
use tree::{show, Meta, Tree};

use erofs::Image;

/// Where a layer's entries go: a directory tree (`tree::Tree`) or an EROFS image
/// (`erofs::Image`). `apply` turns each tar entry into calls on it; both apply the same
/// rules, so a layer comes out the same either way.
trait Sink {
    /// A directory resolved inside the layer.
    type Dir;
    /// The directory `parent` (relative, normalized, empty for the root), made with mode
    /// 0755 where missing; symlinks on the way are followed inside the layer only.
    fn parent(&mut self, parent: &[u8], entry: &[u8]) -> Result<Self::Dir>;
    /// The directory of hardlink target `target` (`parent` is its directory part),
    /// making nothing.
    fn target_parent(&mut self, parent: &[u8], target: &[u8], entry: &[u8]) -> Result<Self::Dir>;
    /// Mark a directory opaque for overlayfs (`.wh..wh..opq`).
    fn opaque(&mut self, dir: &Self::Dir, path: &[u8]) -> Result<()>;
    /// Apply `meta` to the layer's root (the `./` entry).
    fn root_meta(&mut self, meta: &Meta<'_>) -> Result<()>;
    /// Make directory `name` in `dir`, or keep the one there, and apply `meta`.
    fn directory(
        &mut self,
        dir: &Self::Dir,
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()>;
    /// Make regular file `name` in `dir` from `content` (exactly `size` bytes, read
    /// through `buf`), replacing what is there, and apply `meta`.
    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        dir: &Self::Dir,
        name: &[u8],
        path: &[u8],
        content: &mut dyn Read,
        size: u64,
        buf: &mut [u8],
        meta: &Meta<'_>,
    ) -> Result<()>;
    /// Make symlink `name` -> `target` in `dir` and apply owner, xattrs and times.
    fn symlink(
        &mut self,
        dir: &Self::Dir,
        name: &[u8],
        path: &[u8],
        target: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()>;
    /// Make a device node, fifo or (`whiteout`: a 0/0 character device with mode 0, the
    /// owner and nothing else of `meta`) an overlayfs whiteout.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        dir: &Self::Dir,
        name: &[u8],
        path: &[u8],
        kind: FileType,
        dev: rustix::fs::Dev,
        meta: &Meta<'_>,
        whiteout: bool,
    ) -> Result<()>;
    /// Link `name` in `dir` to the inode `target_name` in `target_dir` is (which must exist
    /// and not be a directory), then apply `meta` to that inode.
    #[allow(clippy::too_many_arguments)]
    fn hardlink(
        &mut self,
        target_dir: &Self::Dir,
        target_name: &[u8],
        target_path: &[u8],
        dir: &Self::Dir,
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()>;
    /// Complete the layer once every entry is applied.
    fn finish(self) -> Result<()>;
}

/// Size of the buffer file contents are copied through: the size of the chunks the
/// decompressing thread hands over, more would never be filled.
const COPY_BUFFER: usize = 256 * 1024;

/// Most bytes the headers of one entry (PAX records, GNU long names, sparse maps) may take.
/// The tar reader buffers those in memory; real ones are a few KiB (xattrs included).
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// What one unpack did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries applied (files, directories, links, nodes, whiteouts; PAX and GNU
    /// extension headers are part of the entry they describe and not counted).
    pub entries: u64,
    /// Length of the uncompressed stream, the bytes the diff_id covers.
    pub uncompressed_bytes: u64,
}

/// Unpack one layer blob into `dest` (an existing, empty directory created by the caller),
/// in the form overlayfs expects of a lower dir, verifying the uncompressed stream against
/// `diff_id` (`None`: an artifact's tar layer, which has none, is not hashed at all).
///
/// The compression (gzip, zstd or none) is taken from the content; `media_type` is only
/// used in messages. `on_progress(n)` is called as the blob is read, with the number of
/// compressed bytes just consumed (a delta, as [`crate::backend::Progress::advance`] takes).
///
/// Errors: InvalidArgument for a malformed or unsafe layer (the message names the entry)
/// and for `layer content does not match diff_id`; Internal for I/O failures. On error,
/// `dest` holds a partial unpack the caller must discard; nothing outside `dest` is
/// written in any case. Needs root (it sets owners, device nodes and trusted.* xattrs) and
/// Linux 5.6 or later (openat2).
pub fn unpack_layer(
    blob: impl Read + Send,
    media_type: &str,
    diff_id: Option<&Digest>,
    dest: &Path,
    on_progress: &mut dyn FnMut(u64),
) -> Result<UnpackStats> {
    unpack(
        blob,
        media_type,
        diff_id,
        dest,
        on_progress,
        Whiteouts::Overlay,
    )
}

/// [`unpack_layer`] for a layer with nothing below it, into a directory that is mounted
/// as it is (a bind, not an overlay lower dir): what containerd's differ leaves for an
/// image's first layer. There a whiteout has nothing to hide and is no file either, so a
/// layer that has one is refused (FailedPrecondition, naming the entry), for a caller that
/// then has it applied elsewhere.
pub fn unpack_base_layer(
    blob: impl Read + Send,
    media_type: &str,
    diff_id: Option<&Digest>,
    dest: &Path,
    on_progress: &mut dyn FnMut(u64),
) -> Result<UnpackStats> {
    unpack(
        blob,
        media_type,
        diff_id,
        dest,
        on_progress,
        Whiteouts::Refuse,
    )
}

/// What becomes of a whiteout entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whiteouts {
    /// An overlayfs whiteout (a lower dir).
    Overlay,
    /// Refused (a base layer; see `unpack_base_layer`).
    Refuse,
}

fn unpack(
    blob: impl Read + Send,
    media_type: &str,
    diff_id: Option<&Digest>,
    dest: &Path,
    on_progress: &mut dyn FnMut(u64),
    whiteouts: Whiteouts,
) -> Result<UnpackStats> {
    unpack_into(
        blob,
        media_type,
        diff_id,
        on_progress,
        whiteouts,
        diff_id.map_or(HashOn::Nowhere, |_| HashOn::Decompressor),
        || Tree::open(dest),
    )
}

/// Unpack one layer blob into a new EROFS image at `image` (a file that must not exist),
/// verifying the uncompressed stream against `diff_id`: what [`unpack_layer`] puts in a
/// directory, in one file that mounts as an overlay lower dir. Errors as `unpack_layer`;
/// the caller removes the file on error. Needs no privileges.
pub fn unpack_layer_image(
    blob: impl Read + Send,
    media_type: &str,
    diff_id: Option<&Digest>,
    image: &Path,
    on_progress: &mut dyn FnMut(u64),
) -> Result<UnpackStats> {
    unpack_into(
        blob,
        media_type,
        diff_id,
        on_progress,
        Whiteouts::Overlay,
        diff_id.map_or(HashOn::Nowhere, |_| HashOn::Reader),
        || Image::create(image),
    )
}

/// Write an EROFS image of an empty layer at `image` (a file that must not exist).
pub fn empty_image(image: &Path) -> Result<()> {
    Image::create(image)?.finish()
}

fn unpack_into<S: Sink>(
    blob: impl Read + Send,
    media_type: &str,
    diff_id: Option<&Digest>,
    on_progress: &mut dyn FnMut(u64),
    whiteouts: Whiteouts,
    hash_on: HashOn,
    open: impl FnOnce() -> Result<S>,
) -> Result<UnpackStats> {
    let shared = Shared::new();
    let layer = |e: Error| match diff_id {
        Some(diff_id) => e.context(format!("layer {diff_id} ({media_type})")),
        None => e.context(format!("layer ({media_type})")),
    };
    // The thread decompressing the blob ends when `decoded` is dropped (at the latest
    // when this closure returns), and the scope waits for it.
    std::thread::scope(|scope| {
        let (compression, decoded) =
            stream::decompress_on_thread(scope, blob, on_progress, &shared, hash_on).map_err(
                |e| {
                    layer(
                        Error::io("read", Path::new("layer blob"), e)
                            .with_kind(ErrorKind::Internal),
                    )
                },
            )?;
        let ctx = Ctx {
            shared: &shared,
            compression,
            media_type,
            whiteouts,
        };
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut archive = TarStream::new(Uncompressed::new(decoded, &shared));
        let entries = unpack_entries(&mut archive, &ctx, open()?, &mut buf).map_err(layer)?;
        let (got, len) = archive
            .into_inner()
            .finish(&mut buf)
            .map_err(|e| layer(ctx.stream("reading past the end of the tar", e)))?;
        if let Some(diff_id) = diff_id {
            if got.as_ref() != Some(diff_id) {
                return Err(Error::invalid(format!(
                    "layer content does not match diff_id {diff_id}: got {}",
                    got.map_or_else(|| "no digest".to_owned(), |d| d.to_string())
                )));
            }
        }
        Ok(UnpackStats {
            entries,
            uncompressed_bytes: len,
        })
    })
}

/// What stream errors are reported with.
struct Ctx<'a> {
    shared: &'a Shared,
    compression: Compression,
    media_type: &'a str,
    whiteouts: Whiteouts,
}

impl Ctx<'_> {
    /// An error from reading the stream, while doing `what`: Internal when the blob itself
    /// failed to read, InvalidArgument when its content is bad.
    fn stream(&self, what: impl std::fmt::Display, e: io::Error) -> Error {
        if self.shared.source_failed() {
            Error::internal(format!("{what}: reading the layer blob: {e}"))
        } else if self.shared.budget_hit() {
            Error::invalid(format!(
                "{what}: the tar headers of one entry take more than {} MiB",
                MAX_HEADER_BYTES >> 20
            ))
        } else {
            Error::invalid(format!(
                "{what}: {e} (content is {}, media type {})",
                self.compression.as_str(),
                self.media_type
            ))
        }
    }

    /// An error from applying an entry: the same, except that a failed blob read is
    /// Internal whatever the error says.
    fn entry(&self, e: Error) -> Error {
        if self.shared.source_failed() {
            e.with_kind(ErrorKind::Internal)
        } else {
            e
        }
    }
}

/// Buffers reused from entry to entry.
#[derive(Default)]
struct Scratch {
    /// The entry's normalized path.
    path: Vec<u8>,
    /// The link target (raw for a symlink, normalized for a hardlink).
    link: Vec<u8>,
    /// Kept xattrs: names and values back to back, and their ranges.
    xattr_bytes: Vec<u8>,
    xattrs: Vec<(Range<usize>, Range<usize>)>,
}

/// Apply every entry of `archive` to `dest`; returns how many were applied.
fn unpack_entries<R: Read, S: Sink>(
    archive: &mut TarStream<R>,
    ctx: &Ctx<'_>,
    mut tree: S,
    buf: &mut [u8],
) -> Result<u64> {
    let mut scratch = Scratch::default();
    let mut count = 0u64;
    loop {
        // The headers (PAX records, long names) are read into memory: hold them to a
        // budget so a hostile layer cannot make that grow without bound.
        ctx.shared.set_budget(Some(MAX_HEADER_BYTES));
        let next = archive.next();
        ctx.shared.set_budget(None);
        let header = match next {
            Ok(None) => break,
            Ok(Some(header)) => header,
            Err(e) => {
                let after = if count == 0 && scratch.path.is_empty() {
                    "reading the first tar header".to_owned()
                } else {
                    format!(
                        "reading the tar header after entry {}",
                        quoted(&scratch.path)
                    )
                };
                return Err(ctx.stream(after, e));
            }
        };
        if apply(
            &mut tree,
            &header,
            archive,
            buf,
            &mut scratch,
            ctx.whiteouts,
        )
        .map_err(|e| ctx.entry(e))?
        {
            count += 1;
        }
        // Whatever data an entry carries that was not used is skipped here, outside the
        // header budget.
        if let Err(e) = archive.skip_rest() {
            return Err(ctx.stream(format!("entry {}", quoted(&scratch.path)), e));
        }
    }
    tree.finish()?;
    Ok(count)
}

/// The error for a whiteout of `path` when the layer itself has an entry there: a
/// whiteout hides what layers below have (OCI image spec, "Whiteouts"), and containerd's
/// applier fails to make it over the entry.
fn whiteout_of_own_entry(path: &[u8]) -> Error {
    Error::invalid(format!(
        "a whiteout of an entry of its own layer, {}",
        quoted(path)
    ))
}

/// A name from a layer as messages quote it: whole when short, else its start and its
/// length (a 6 MiB PAX path must not make a 6 MiB error).
fn quoted(name: &[u8]) -> String {
    crate::error::shown(&String::from_utf8_lossy(name))
}

/// Read an entry's content (exactly `size` bytes) through `buf`, handing each chunk to
/// `write`; a layer that ends inside the entry is its fault (InvalidArgument).
fn copy_content(
    content: &mut dyn Read,
    buf: &mut [u8],
    size: u64,
    path: &[u8],
    mut write: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut written: u64 = 0;
    loop {
        let n = match content.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::invalid(format!(
                    "entry {}: reading content: {e}",
                    show(path).display()
                )))
            }
        };
        write(&buf[..n])?;
        written += n as u64;
    }
    if written != size {
        return Err(Error::invalid(format!(
            "entry {}: layer ends inside the entry ({written} of {size} bytes)",
            show(path).display()
        )));
    }
    Ok(())
}

/// Normalize a tar name into `out`: `/`-separated components without empty ones and `.`
/// (so leading `/` and `./` are dropped: absolute names land inside the root); `..` and
/// NUL are refused. The root comes out empty.
fn normalize(raw: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), &'static str> {
    out.clear();
    if raw.contains(&0) {
        return Err("a NUL byte");
    }
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("a '..' component"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

/// Split a normalized path into parent and last component.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Which extended attributes from a layer are applied.
///
/// - `trusted.overlay*` and `user.overlay*` are dropped: they steer overlayfs (opaque,
///   redirect, metacopy, origin) when the lower dir is mounted, and a layer must not reach
///   into other layers through them; opacity comes only from `.wh..wh..opq`.
/// - `trusted.SGI_ACL*` is dropped: on XFS that is the raw on-disk ACL, bypassing the
///   checks `system.posix_acl_*` get.
/// - other `trusted.*` and `user.*` are kept: they are data of the image's files.
/// - `security.capability` is kept (file capabilities: `ping` and the like need them);
///   other `security.*` (SELinux, SMACK, IMA/EVM labels) are dropped: labels are the
///   host's policy, not something an image may choose.
/// - `system.posix_acl_access` / `system.posix_acl_default` are kept (they are part of a
///   file's permissions; the kernel validates them); any other namespace is dropped.
fn xattr_allowed(name: &[u8]) -> bool {
    if name.starts_with(b"trusted.overlay")
        || name.starts_with(b"user.overlay")
        || name.starts_with(b"trusted.SGI_ACL")
    {
        return false;
    }
    name.starts_with(b"trusted.")
        || name.starts_with(b"user.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Apply one entry, whose content `content` reads. Returns false when the entry is not
/// applied (global PAX headers, AUFS metadata).
fn apply<S: Sink>(
    tree: &mut S,
    header: &Header,
    content: &mut dyn Read,
    buf: &mut [u8],
    s: &mut Scratch,
    whiteouts: Whiteouts,
) -> Result<bool> {
    let shown = quoted(&header.name);
    let bad = |why: String| Error::invalid(format!("entry {shown}: {why}"));
    let kind = header.typeflag;
    if kind == flag::PAX_GLOBAL {
        return Ok(false);
    }
    // The name first: every later message names the entry.
    normalize(&header.name, &mut s.path).map_err(|why| bad(format!("name has {why}")))?;
    let (parent, name) = split(&s.path);
    // AUFS metadata (`.wh..wh.plnk` and such) and anything under it: not content.
    if s.path
        .split(|&b| b == b'/')
        .any(|c| c.starts_with(b".wh..wh."))
        && name != b".wh..wh..opq"
    {
        return Ok(false);
    }

    // Numbers from the header, PAX records already merged.
    // u32::MAX is chown's "leave unchanged", not an owner.
    let (uid, gid) = match (u32::try_from(header.uid), u32::try_from(header.gid)) {
        (Ok(u), Ok(g)) if u != u32::MAX && g != u32::MAX => (u, g),
        _ => {
            return Err(bad(format!(
                "uid/gid {}/{} out of range",
                header.uid, header.gid
            )))
        }
    };
    let mode = u32::try_from(header.mode)
        .map_err(|_| bad(format!("mode {} out of range", header.mode)))?;
    let device = match kind {
        flag::CHAR | flag::BLOCK => {
            if header.v7 {
                return Err(bad(
                    "device without device numbers (not a ustar header)".into()
                ));
            }
            match (
                u32::try_from(header.devmajor),
                u32::try_from(header.devminor),
            ) {
                (Ok(major), Ok(minor)) => rustix::fs::makedev(major, minor),
                _ => {
                    return Err(bad(format!(
                        "device numbers {}/{} out of range",
                        header.devmajor, header.devminor
                    )))
                }
            }
        }
        _ => 0,
    };
    let size = u64::try_from(header.size)
        .map_err(|_| bad(format!("size {} out of range", header.size)))?;

    // Link targets, checked like names for hardlinks.
    s.link.clear();
    if matches!(kind, flag::LINK | flag::SYMLINK) {
        let target = &header.linkname;
        if kind == flag::LINK {
            normalize(target, &mut s.link)
                .map_err(|why| bad(format!("hardlink target has {why}")))?;
            if s.link.is_empty() {
                return Err(bad("hardlink to the layer root".into()));
            }
        } else {
            if target.is_empty() || target.contains(&0) {
                return Err(bad("symlink target is empty or has a NUL byte".into()));
            }
            s.link.extend_from_slice(target);
        }
    }

    // PAX records: the xattrs. A sparse file in PAX form would come out as its sparse
    // map: refused, not corrupted (Go's reader expands it; containerd then writes it).
    if header.is_pax_sparse() {
        return Err(bad("PAX (GNU.sparse) sparse files are not supported".into()));
    }
    s.xattr_bytes.clear();
    s.xattrs.clear();
    for (key, value) in &header.pax {
        if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
            if xname.is_empty() || xname.contains(&0) {
                return Err(bad("xattr with an empty name or a NUL byte".into()));
            }
            if xattr_allowed(xname) {
                let n = s.xattr_bytes.len();
                s.xattr_bytes.extend_from_slice(xname);
                s.xattr_bytes.extend_from_slice(value);
                let m = n + xname.len();
                s.xattrs.push((n..m, m..m + value.len()));
            } else {
                tracing::debug!(entry = %shown, xattr = %quoted(xname), "xattr dropped");
            }
        }
    }
    let mtime = header.mtime;
    let xattrs: Vec<(&[u8], &[u8])> = s
        .xattrs
        .iter()
        .map(|(n, v)| (&s.xattr_bytes[n.clone()], &s.xattr_bytes[v.clone()]))
        .collect();
    let meta = Meta {
        uid,
        gid,
        mode,
        mtime,
        xattrs: &xattrs,
    };
    let path = s.path.as_slice();

    // Whiteouts, by name whatever their type.
    if let Some(hidden) = name.strip_prefix(b".wh.") {
        if whiteouts == Whiteouts::Refuse {
            return Err(Error::precondition(format!(
                "entry {shown:?}: a whiteout in a layer with nothing below it"
            )));
        }
        if hidden == b".wh..opq" {
            let dir = tree.parent(parent, path)?;
            tree.opaque(&dir, if parent.is_empty() { b"." } else { parent })?;
            return Ok(true);
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(bad(format!(
                "whiteout for {:?}",
                String::from_utf8_lossy(hidden)
            )));
        }
        let dir = tree.parent(parent, path)?;
        let mut target = parent.to_vec();
        if !target.is_empty() {
            target.push(b'/');
        }
        target.extend_from_slice(hidden);
        let dev = rustix::fs::makedev(0, 0);
        tree.node(
            &dir,
            hidden,
            &target,
            FileType::CharacterDevice,
            dev,
            &meta,
            true,
        )?;
        return Ok(true);
    }

    if path.is_empty() {
        if kind != flag::DIR {
            return Err(bad(format!(
                "the layer root as an entry of type {:?}",
                kind as char
            )));
        }
        tree.root_meta(&meta)?;
        return Ok(true);
    }

    match kind {
        flag::DIR => {
            let dir = tree.parent(parent, path)?;
            tree.directory(&dir, name, path, &meta)?;
        }
        flag::REG | flag::CONT | flag::GNU_SPARSE => {
            let dir = tree.parent(parent, path)?;
            tree.file(&dir, name, path, content, size, buf, &meta)?;
        }
        flag::SYMLINK => {
            let dir = tree.parent(parent, path)?;
            tree.symlink(&dir, name, path, &s.link, &meta)?;
        }
        flag::LINK => {
            // The link's own header then sets owner, xattrs, mode and times of the inode
            // both names share, as containerd's (and moby's) unpacker does: an image must
            // unpack to the same files whoever unpacks it. (Tar writers give a link the
            // metadata of its target, so this changes nothing for real images.)
            let (target_parent, target_name) = split(&s.link);
            let target_dir = tree.target_parent(target_parent, &s.link, path)?;
            let dir = tree.parent(parent, path)?;
            tree.hardlink(&target_dir, target_name, &s.link, &dir, name, path, &meta)?;
        }
        flag::CHAR | flag::BLOCK | flag::FIFO => {
            let file_type = match kind {
                flag::CHAR => FileType::CharacterDevice,
                flag::BLOCK => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let dir = tree.parent(parent, path)?;
            tree.node(&dir, name, path, file_type, device, &meta, false)?;
        }
        other => {
            return Err(bad(format!("unsupported entry type {:?}", other as char)));
        }
    }
    Ok(true)
}
