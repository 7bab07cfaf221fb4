//! A small, deterministic OCI image writer for tests, demos and benchmarks.
//!
//! This is the project's own writer, independent of the importer in `backend::local`: its
//! tests check its output with `umoci` and `skopeo`, so the reader is never only checked
//! against the writer.
//!
//! - [`Entry`] and [`LayerBuilder`] write a layer tar (directories, files, links, devices,
//!   whiteouts, opaque directories, owners, mtimes, xattrs) and compress it (none, gzip,
//!   zstd). [`Entry::raw`] writes header bytes unchecked, to craft malicious layers.
//! - [`ImageBuilder`] turns layers, a platform and a few config fields into a config blob
//!   and a manifest (OCI or Docker schema2 media types).
//! - [`artifact`] builds OCI artifacts (models, raw files, tars) for the same layouts.
//! - [`OciLayout`] collects images (and multi-platform indexes) into an OCI image layout
//!   and writes it as a directory or as an OCI archive; [`write_docker_archive`] writes a
//!   legacy `docker save` tarball.
//!
//! Everything is deterministic: the same input gives the same bytes and digests. Times
//! default to [`DEFAULT_MTIME`] / [`DEFAULT_CREATED`], JSON keys have a fixed order, and
//! gzip headers carry no time or file name.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use imv::{Digest, Error, IoContext, Platform, Result};

/// Media types written by this module: imv's one list.
pub use imv::media_type;

/// The annotation OCI layouts use for a reference name (umoci and skopeo read it).
pub use oci_spec::image::ANNOTATION_REF_NAME;
/// The annotation containerd's export and import use for the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The mtime of tar entries that set none: 2024-01-01T00:00:00Z. Not 0, because some tools
/// treat a zero mtime as "unset".
pub const DEFAULT_MTIME: u64 = 1_704_067_200;
/// The `created` time of configs and history entries that set none (same instant as
/// [`DEFAULT_MTIME`]).
pub const DEFAULT_CREATED: &str = "2024-01-01T00:00:00Z";

// tar entry types (POSIX ustar typeflag values).
const TYPE_FILE: u8 = b'0';
const TYPE_HARDLINK: u8 = b'1';
const TYPE_SYMLINK: u8 = b'2';
const TYPE_CHAR: u8 = b'3';
const TYPE_BLOCK: u8 = b'4';
const TYPE_DIR: u8 = b'5';
const TYPE_FIFO: u8 = b'6';
const TYPE_PAX: u8 = b'x';

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (the default: what registries mostly serve).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The layer media type for this compression, OCI or Docker schema2. Docker has no
    /// zstd media type, so zstd layers always use the OCI one.
    pub fn layer_media_type(self, docker: bool) -> &'static str {
        match (self, docker) {
            (Compression::None, false) => media_type::OCI_LAYER,
            (Compression::Gzip, false) => media_type::OCI_LAYER_GZIP,
            (Compression::Zstd, _) => media_type::OCI_LAYER_ZSTD,
            (Compression::None, true) => media_type::DOCKER_LAYER,
            (Compression::Gzip, true) => media_type::DOCKER_LAYER_GZIP,
        }
    }

    /// Compress `tar`. gzip is written with no mtime and no file name so the output is
    /// a pure function of the input.
    pub fn compress(self, tar: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(tar.to_vec()),
            Compression::Gzip => {
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::default());
                enc.write_all(tar)?;
                enc.finish()
            }
            Compression::Zstd => zstd::encode_all(tar, 3),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    Fifo,
    Raw {
        entry_type: u8,
        data: Vec<u8>,
        linkname: Vec<u8>,
    },
}

/// One tar entry of a layer, with its options (owner, mtime, xattrs).
///
/// Constructors take the path inside the image (relative, `/`-separated, e.g.
/// `etc/hostname`); setters return the entry so they chain:
/// `Entry::file("etc/shadow", 0o600, "x").owner(0, 42).xattr("user.k", "v")`.
/// Paths are checked when the layer is built (relative, no `..`, no NUL), except for
/// [`Entry::raw`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
    raw_name: Vec<u8>,
}

impl Entry {
    fn new(path: &str, kind: Kind, mode: u32) -> Self {
        Entry {
            path: path.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
            raw_name: Vec::new(),
        }
    }

    /// A directory with permission bits `mode`.
    pub fn dir(path: &str, mode: u32) -> Self {
        Self::new(path, Kind::Dir, mode)
    }

    /// A regular file holding `data`.
    pub fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Self::new(path, Kind::File(data.into()), mode)
    }

    /// A symbolic link to `target` (stored as is: relative or absolute).
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::Symlink(target.to_owned()), 0o777)
    }

    /// A hard link to `target`, a path inside the image (as in the tar, not `/`-rooted).
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::Hardlink(target.to_owned()), 0o644)
    }

    /// A character device.
    pub fn char_device(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::CharDevice(major, minor), 0o666)
    }

    /// A block device.
    pub fn block_device(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::BlockDevice(major, minor), 0o660)
    }

    /// A named pipe.
    pub fn fifo(path: &str) -> Self {
        Self::new(path, Kind::Fifo, 0o644)
    }

    /// A whiteout deleting `path` from lower layers: an empty file `.wh.<name>` in the
    /// parent directory of `path`.
    pub fn whiteout(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        let (parent, name) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path),
        };
        Self::file(&format!("{parent}.wh.{name}"), 0o644, Vec::new())
    }

    /// An opaque marker for directory `dir`: `dir/.wh..wh..opq`, which hides everything
    /// lower layers put in `dir`. Add the directory itself before it.
    pub fn opaque(dir: &str) -> Self {
        let dir = dir.trim_end_matches('/');
        Self::file(&format!("{dir}/.wh..wh..opq"), 0o644, Vec::new())
    }

    /// A raw entry for tests of hostile input: `name` and `linkname` go into the header
    /// bytes as given (no validation at all: `../x`, `/etc/passwd`, `.wh..` and NULs are
    /// all written), `entry_type` is the ustar typeflag byte (`b'0'` file, `b'1'` hard
    /// link, `b'2'` symlink, `b'5'` directory, ...), and `data` follows the header with
    /// its length as the size. Names longer than the 100-byte header field go into a PAX
    /// `path`/`linkpath` record.
    pub fn raw(name: &[u8], entry_type: u8, data: &[u8], linkname: &[u8]) -> Self {
        let mut e = Self::new(
            "",
            Kind::Raw {
                entry_type,
                data: data.to_vec(),
                linkname: linkname.to_vec(),
            },
            0o644,
        );
        e.raw_name = name.to_vec();
        e
    }

    /// Set the permission bits (and setuid/setgid/sticky).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Set the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Set the modification time (seconds since the epoch).
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Add an extended attribute, written as a PAX `SCHILY.xattr.<name>` record.
    pub fn xattr(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.xattrs.push((name.to_owned(), value.into()));
        self
    }

    /// Write this entry's headers and data to `out`.
    fn write_to(&self, out: &mut Vec<u8>) -> Result<()> {
        // Raw entries keep their bytes; the others are checked, and directories get the
        // trailing `/` layer tars conventionally have.
        let name = match &self.kind {
            Kind::Raw { .. } => self.raw_name.clone(),
            Kind::Dir if !self.path.ends_with('/') => {
                check_path(&self.path)?;
                format!("{}/", self.path).into_bytes()
            }
            _ => {
                check_path(&self.path)?;
                self.path.clone().into_bytes()
            }
        };
        let none: &[u8] = b"";
        let (entry_type, data, link, dev) = match &self.kind {
            Kind::Raw {
                entry_type,
                data,
                linkname,
            } => (*entry_type, &data[..], &linkname[..], (0, 0)),
            Kind::Dir => (TYPE_DIR, none, none, (0, 0)),
            Kind::File(d) => (TYPE_FILE, &d[..], none, (0, 0)),
            Kind::Symlink(t) => (TYPE_SYMLINK, none, t.as_bytes(), (0, 0)),
            Kind::Hardlink(t) => {
                check_path(t)?;
                (TYPE_HARDLINK, none, t.as_bytes(), (0, 0))
            }
            Kind::CharDevice(ma, mi) => (TYPE_CHAR, none, none, (*ma, *mi)),
            Kind::BlockDevice(ma, mi) => (TYPE_BLOCK, none, none, (*ma, *mi)),
            Kind::Fifo => (TYPE_FIFO, none, none, (0, 0)),
        };
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if name.len() > 100 {
            pax.push(("path".into(), name.clone()));
        }
        if link.len() > 100 {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        for (k, v) in &self.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        let fields = HeaderFields {
            name: &name,
            entry_type,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            size: data.len() as u64,
            link,
            dev,
        };
        if !pax.is_empty() {
            let records = pax_records(&pax);
            // The extended header's own name is informational; keep it short and stable.
            let pax_name = [b"PaxHeaders/".as_slice(), &name[..name.len().min(80)]].concat();
            write_header(
                out,
                &HeaderFields {
                    name: &pax_name,
                    entry_type: TYPE_PAX,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: self.mtime,
                    size: records.len() as u64,
                    link: b"",
                    dev: (0, 0),
                },
            )?;
            write_data(out, &records);
        }
        write_header(out, &fields)?;
        write_data(out, data);
        Ok(())
    }
}

/// Refuse paths a well-formed layer never has, so only [`Entry::raw`] writes hostile ones.
fn check_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|c| c == "..");
    if bad {
        return Err(Error::invalid(format!(
            "layer entry path {path:?}: want a relative path without `..` or NUL (use Entry::raw for hostile names)"
        )));
    }
    Ok(())
}

struct HeaderFields<'a> {
    name: &'a [u8],
    entry_type: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: &'a [u8],
    dev: (u32, u32),
}

/// Write one 512-byte ustar header. Names and link names longer than the field are
/// truncated here; the caller put the full value in a PAX record before.
fn write_header(out: &mut Vec<u8>, f: &HeaderFields<'_>) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    // The typeflag byte as given: `set_entry_type` would write `\0` (old tars' regular
    // file, or directory with a trailing `/`) as `0`, and raw entries must keep it.
    h.as_old_mut().linkflag = [f.entry_type];
    h.set_mode(f.mode);
    h.set_uid(f.uid);
    h.set_gid(f.gid);
    h.set_mtime(f.mtime);
    h.set_size(f.size);
    if matches!(f.entry_type, TYPE_CHAR | TYPE_BLOCK) {
        h.set_device_major(f.dev.0)
            .and_then(|()| h.set_device_minor(f.dev.1))
            .map_err(|e| Error::internal(format!("tar device numbers: {e}")))?;
    }
    {
        let old = h.as_old_mut();
        let n = f.name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&f.name[..n]);
        let n = f.link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&f.link[..n]);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(())
}

/// Append `data` padded with zeros to a multiple of 512 bytes.
fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.resize(out.len() + pad, 0);
}

/// Encode PAX records: `"<len> <key>=<value>\n"` where `<len>` counts the whole record,
/// its own digits included.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Builds one layer: entries are written in the order they are added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    compression: Compression,
    created_by: Option<String>,
}

impl LayerBuilder {
    /// An empty, gzip-compressed layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Choose the compression of the blob.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The text of this layer's history entry in the config (`created_by`).
    pub fn created_by(mut self, text: &str) -> Self {
        self.created_by = Some(text.to_owned());
        self
    }

    /// Add an entry (with its options).
    pub fn entry(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// Add a directory. See [`Entry::dir`].
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(Entry::dir(path, mode))
    }

    /// Add a regular file. See [`Entry::file`].
    pub fn file(self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        self.entry(Entry::file(path, mode, data))
    }

    /// Add a symlink. See [`Entry::symlink`].
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::symlink(path, target))
    }

    /// Add a hard link. See [`Entry::hardlink`]. Its header repeats the owner, mode, time
    /// and xattrs of the latest entry at `target` in this layer, as tar writers do (an
    /// unpacker applies a link's header to the inode both names share).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        let mut link = Entry::hardlink(path, target);
        if let Some(t) = self.entries.iter().rev().find(|e| e.path == target) {
            link.mode = t.mode;
            link.uid = t.uid;
            link.gid = t.gid;
            link.mtime = t.mtime;
            link.xattrs = t.xattrs.clone();
        }
        self.entry(link)
    }

    /// Add a character device. See [`Entry::char_device`].
    pub fn char_device(self, path: &str, major: u32, minor: u32) -> Self {
        self.entry(Entry::char_device(path, major, minor))
    }

    /// Add a block device. See [`Entry::block_device`].
    pub fn block_device(self, path: &str, major: u32, minor: u32) -> Self {
        self.entry(Entry::block_device(path, major, minor))
    }

    /// Add a named pipe. See [`Entry::fifo`].
    pub fn fifo(self, path: &str) -> Self {
        self.entry(Entry::fifo(path))
    }

    /// Add a whiteout for `path`. See [`Entry::whiteout`].
    pub fn whiteout(self, path: &str) -> Self {
        self.entry(Entry::whiteout(path))
    }

    /// Make `dir` opaque. See [`Entry::opaque`].
    pub fn opaque(self, dir: &str) -> Self {
        self.entry(Entry::opaque(dir))
    }

    /// Add a raw, unchecked entry. See [`Entry::raw`].
    pub fn raw(self, name: &[u8], entry_type: u8, data: &[u8], linkname: &[u8]) -> Self {
        self.entry(Entry::raw(name, entry_type, data, linkname))
    }

    /// The uncompressed tar: the entries, then the two zero blocks that end an archive.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for e in &self.entries {
            e.write_to(&mut out)?;
        }
        out.resize(out.len() + 1024, 0);
        Ok(out)
    }

    /// Build the blob: tar, compress, digest.
    pub fn build(&self) -> Result<Layer> {
        let tar = self.tar()?;
        let diff_id = Digest::of(&tar);
        let blob = self
            .compression
            .compress(&tar)
            .map_err(|e| Error::internal(format!("compressing layer: {e}")))?;
        Ok(Layer {
            digest: Digest::of(&blob),
            blob,
            diff_id,
            compression: self.compression,
            created_by: self.created_by.clone(),
        })
    }
}

/// A built layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The blob as stored (compressed as asked).
    pub blob: Vec<u8>,
    /// The digest of [`Layer::blob`].
    pub digest: Digest,
    /// The digest of the uncompressed tar (what goes in `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// How [`Layer::blob`] is compressed.
    pub compression: Compression,
    /// The history text given with [`LayerBuilder::created_by`].
    pub created_by: Option<String>,
}

impl Layer {
    /// The blob size in bytes.
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }
}

/// The chain ID of a stack of layers (`rootfs.diff_ids` order, bottom first), as the OCI
/// image spec defines it: `chain(0) = diff_id(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff_id(n))`. `None` for no layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut it = diff_ids.iter();
    let mut chain = it.next()?.clone();
    for d in it {
        chain = Digest::of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

/// OCI name of this host's CPU architecture (Rust's `target_arch` spelled as Go's
/// GOARCH), with its usual variant. Kept here so this module does not depend on
/// `Platform::host`.
fn host_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "x86" => ("386", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
        "loongarch64" => ("loong64", ""),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", ""),
        other => (other, ""),
    }
}

/// Builds an image: layers, platform and a few config fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageBuilder {
    os: String,
    architecture: String,
    variant: String,
    layers: Vec<LayerBuilder>,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    docker: bool,
    created: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// An image with no layers, for `linux` and this host's architecture, OCI media types.
    pub fn new() -> Self {
        let (arch, variant) = host_arch();
        ImageBuilder {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.into(),
            layers: Vec::new(),
            env: Vec::new(),
            cmd: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            docker: false,
            created: DEFAULT_CREATED.into(),
        }
    }

    /// Set the platform (written as given; `variant` may be empty).
    pub fn platform(mut self, os: &str, architecture: &str, variant: &str) -> Self {
        self.os = os.into();
        self.architecture = architecture.into();
        self.variant = variant.into();
        self
    }

    /// Set the platform from a [`Platform`] (os, architecture, variant are used).
    pub fn with_platform(self, platform: &Platform) -> Self {
        self.platform(&platform.os, &platform.architecture, &platform.variant)
    }

    /// The platform this image is for.
    pub fn platform_value(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            ..Platform::default()
        }
    }

    /// Add a layer on top.
    pub fn layer(mut self, layer: LayerBuilder) -> Self {
        self.layers.push(layer);
        self
    }

    /// Add a `KEY=value` to the config's `Env`.
    pub fn env(mut self, key_value: &str) -> Self {
        self.env.push(key_value.into());
        self
    }

    /// Set the config's `Cmd`.
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Add a config label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Add a manifest annotation (ignored with Docker media types, which have none).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Use Docker schema2 media types for manifest, config and layers instead of OCI.
    pub fn docker_media_types(mut self, docker: bool) -> Self {
        self.docker = docker;
        self
    }

    /// Set the `created` time of the config and history (RFC 3339).
    pub fn created(mut self, rfc3339: &str) -> Self {
        self.created = rfc3339.into();
        self
    }

    /// Set the compression of every layer added so far (e.g. to build the same content
    /// as gzip and zstd).
    pub fn compress_all(mut self, compression: Compression) -> Self {
        for l in &mut self.layers {
            l.compression = compression;
        }
        self
    }

    /// Build layers, config and manifest.
    pub fn build(&self) -> Result<BuiltImage> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| l.build().map_err(|e| e.context(format!("layer {i}"))))
            .collect::<Result<Vec<_>>>()?;
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();

        let mut container = serde_json::Map::new();
        if !self.env.is_empty() {
            container.insert("Env".into(), json!(self.env));
        }
        if let Some(cmd) = &self.cmd {
            container.insert("Cmd".into(), json!(cmd));
        }
        if !self.labels.is_empty() {
            container.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let by = l
                    .created_by
                    .clone()
                    .unwrap_or_else(|| format!("imv image_builder: layer {i}"));
                json!({ "created": self.created, "created_by": by })
            })
            .collect();
        // serde_json's default map is sorted, so key order (and the digest) is fixed.
        let mut config = json!({
            "created": self.created,
            "architecture": self.architecture,
            "os": self.os,
            "config": container,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if !self.variant.is_empty() {
            config["variant"] = json!(self.variant);
        }
        let config = to_json(&config)?;
        let config_digest = Digest::of(&config);

        let (manifest_type, config_type) = if self.docker {
            (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG)
        } else {
            (media_type::OCI_MANIFEST, media_type::OCI_CONFIG)
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: manifest_type,
            artifact_type: None,
            config: Descriptor::new(config_type, &config_digest, config.len() as u64),
            layers: layers
                .iter()
                .map(|l| {
                    Descriptor::new(
                        l.compression.layer_media_type(self.docker),
                        &l.digest,
                        l.size(),
                    )
                })
                .collect(),
            annotations: if self.docker {
                BTreeMap::new()
            } else {
                self.annotations.clone()
            },
        };
        let manifest = to_json(&manifest)?;
        Ok(BuiltImage {
            manifest_digest: Digest::of(&manifest),
            manifest,
            manifest_media_type: manifest_type,
            config_digest,
            config,
            layers,
            platform: self.platform_value(),
        })
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(format!("encoding JSON: {e}")))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    /// An artifact's (see [`artifact`]); images have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Descriptor {
    fn new(media_type: &str, digest: &Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_string(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize)]
struct PlatformJson {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    variant: String,
}

impl PlatformJson {
    fn of(p: &Platform) -> Self {
        PlatformJson {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone(),
        }
    }
}

/// A built image: every blob, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The config blob (JSON).
    pub config: Vec<u8>,
    /// The digest of [`BuiltImage::config`]: the image ID.
    pub config_digest: Digest,
    /// The manifest blob (JSON).
    pub manifest: Vec<u8>,
    /// The digest of [`BuiltImage::manifest`].
    pub manifest_digest: Digest,
    /// The manifest's media type (OCI or Docker schema2).
    pub manifest_media_type: &'static str,
    /// The platform the config names.
    pub platform: Platform,
}

impl BuiltImage {
    /// The digests tests assert on.
    pub fn digests(&self) -> ImageDigests {
        let diff_ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        ImageDigests {
            manifest: self.manifest_digest.clone(),
            manifest_size: self.manifest.len() as u64,
            config: self.config_digest.clone(),
            layers: self.layers.iter().map(|l| l.digest.clone()).collect(),
            chain_id: chain_id(&diff_ids),
            diff_ids,
            platform: self.platform.clone(),
        }
    }
}

/// What was written for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDigests {
    /// The manifest digest (the `name@digest` of the image, and the directory name of
    /// its volume target).
    pub manifest: Digest,
    /// The manifest size in bytes.
    pub manifest_size: u64,
    /// The config digest (the image ID).
    pub config: Digest,
    /// The layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// The diff IDs (digests of the uncompressed layer tars), bottom first.
    pub diff_ids: Vec<Digest>,
    /// The chain ID of the top layer; `None` for an image without layers.
    pub chain_id: Option<Digest>,
    /// The image's platform.
    pub platform: Platform,
}

/// What was written for a multi-platform image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDigests {
    /// The digest of the image index blob the name points to.
    pub index: Digest,
    /// The index size in bytes.
    pub index_size: u64,
    /// Each platform's image, in the order given.
    pub manifests: Vec<ImageDigests>,
}

/// How `org.opencontainers.image.ref.name` is written in `index.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefName {
    /// The full name as given (`docker.io/library/busybox:1.36`), as containerd's export
    /// writes it.
    #[default]
    Full,
    /// Only the tag (`1.36`; `latest` when the name has none), as umoci and skopeo's
    /// `oci:DIR:TAG` expect.
    Tag,
}

/// Options of an OCI layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutOptions {
    /// How the ref name annotation is written.
    pub ref_name: RefName,
    /// Whether to write `io.containerd.image.name` with the full name as well.
    pub containerd_name: bool,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        LayoutOptions {
            ref_name: RefName::Full,
            containerd_name: true,
        }
    }
}

/// The tag of `name`: what follows the last `:` after the last `/`, else `latest`. A
/// `@digest` suffix is ignored.
fn tag_of(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rfind(':') {
        Some(i) => &last[i + 1..],
        None => "latest",
    }
}

/// An OCI image layout assembled in memory, then written as a directory or an archive.
///
/// ```no_run
/// # use imv_testkit::image_builder::*;
/// let mut layout = OciLayout::new(LayoutOptions::default());
/// let digests = layout.add_image("example.com/sample:1", &sample_image())?;
/// layout.write_dir(std::path::Path::new("/tmp/layout"))?;
/// # Ok::<(), imv::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct OciLayout {
    options: LayoutOptions,
    blobs: BTreeMap<String, Vec<u8>>,
    index: Vec<(String, Digest, u64, &'static str, Option<Platform>)>,
}

impl OciLayout {
    /// An empty layout.
    pub fn new(options: LayoutOptions) -> Self {
        OciLayout {
            options,
            ..Default::default()
        }
    }

    fn add_built(&mut self, img: &BuiltImage) {
        for l in &img.layers {
            self.blobs.insert(l.digest.hex().to_owned(), l.blob.clone());
        }
        self.blobs
            .insert(img.config_digest.hex().to_owned(), img.config.clone());
        self.blobs
            .insert(img.manifest_digest.hex().to_owned(), img.manifest.clone());
    }

    /// Add an image named `name` (an entry of `index.json`).
    pub fn add_image(&mut self, name: &str, image: &ImageBuilder) -> Result<ImageDigests> {
        let img = image.build()?;
        self.add_built(&img);
        self.index.push((
            name.to_owned(),
            img.manifest_digest.clone(),
            img.manifest.len() as u64,
            img.manifest_media_type,
            Some(img.platform.clone()),
        ));
        Ok(img.digests())
    }

    /// Add a multi-platform image named `name`: an image index blob listing one manifest
    /// per image (with its platform), pointed to by one `index.json` entry. The index is
    /// a Docker manifest list if every image uses Docker media types, else an OCI index.
    pub fn add_index(&mut self, name: &str, images: &[&ImageBuilder]) -> Result<IndexDigests> {
        let mut manifests = Vec::new();
        let mut descriptors = Vec::new();
        for image in images {
            let img = image.build()?;
            self.add_built(&img);
            let mut d = Descriptor::new(
                img.manifest_media_type,
                &img.manifest_digest,
                img.manifest.len() as u64,
            );
            d.platform = Some(PlatformJson::of(&img.platform));
            descriptors.push(d);
            manifests.push(img.digests());
        }
        let all_docker = !images.is_empty() && images.iter().all(|i| i.docker);
        let media_type = if all_docker {
            media_type::DOCKER_MANIFEST_LIST
        } else {
            media_type::OCI_INDEX
        };
        let index = to_json(&Index {
            schema_version: 2,
            media_type,
            artifact_type: None,
            manifests: descriptors,
        })?;
        let digest = Digest::of(&index);
        let size = index.len() as u64;
        self.blobs.insert(digest.hex().to_owned(), index);
        self.index
            .push((name.to_owned(), digest.clone(), size, media_type, None));
        Ok(IndexDigests {
            index: digest,
            index_size: size,
            manifests,
        })
    }

    /// The `index.json` bytes.
    pub fn index_json(&self) -> Result<Vec<u8>> {
        let manifests = self
            .index
            .iter()
            .map(|(name, digest, size, mt, platform)| {
                let mut d = Descriptor::new(mt, digest, *size);
                d.platform = platform.as_ref().map(PlatformJson::of);
                let ref_name = match self.options.ref_name {
                    RefName::Full => name.as_str(),
                    RefName::Tag => tag_of(name),
                };
                d.annotations
                    .insert(ANNOTATION_REF_NAME.into(), ref_name.into());
                if self.options.containerd_name {
                    d.annotations
                        .insert(ANNOTATION_CONTAINERD_NAME.into(), name.clone());
                }
                d
            })
            .collect();
        to_json(&Index {
            schema_version: 2,
            media_type: media_type::OCI_INDEX,
            artifact_type: None,
            manifests,
        })
    }

    /// Every file of the layout, relative path to content, in a fixed order.
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = vec![
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_owned(), self.index_json()?),
        ];
        for (hex, blob) in &self.blobs {
            files.push((format!("blobs/sha256/{hex}"), blob.clone()));
        }
        Ok(files)
    }

    /// Write the layout into `dir` (created if missing; an existing `index.json` is
    /// replaced, existing blobs are kept).
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).at("create directory", &blobs)?;
        for (rel, data) in self.files()? {
            let p = dir.join(&rel);
            fs::write(&p, data).at("write", &p)?;
        }
        Ok(())
    }

    /// The layout as an uncompressed tar (an OCI archive).
    pub fn archive_bytes(&self) -> Result<Vec<u8>> {
        let mut layer = LayerBuilder::new()
            .compression(Compression::None)
            .dir("blobs", 0o755)
            .dir("blobs/sha256", 0o755);
        for (rel, data) in self.files()? {
            layer = layer.file(&rel, 0o644, data);
        }
        layer.tar()
    }

    /// Write the layout as an OCI archive file at `path`.
    pub fn write_archive(&self, path: &Path) -> Result<()> {
        fs::write(path, self.archive_bytes()?).at("write", path)
    }
}

/// Write `images` (name, image) as an OCI image layout in `dir`, with full names in
/// both annotations. Returns each image's digests, in order.
pub fn write_oci_layout(dir: &Path, images: &[(&str, &ImageBuilder)]) -> Result<Vec<ImageDigests>> {
    write_oci_layout_with(dir, images, LayoutOptions::default())
}

/// [`write_oci_layout`] with options (e.g. [`RefName::Tag`] for umoci and skopeo).
pub fn write_oci_layout_with(
    dir: &Path,
    images: &[(&str, &ImageBuilder)],
    options: LayoutOptions,
) -> Result<Vec<ImageDigests>> {
    let (layout, digests) = layout_of(images, options)?;
    layout.write_dir(dir)?;
    Ok(digests)
}

/// Write a multi-platform image `name` (one manifest per image, in one image index) as
/// an OCI image layout in `dir`.
pub fn write_oci_layout_index(
    dir: &Path,
    name: &str,
    images: &[&ImageBuilder],
) -> Result<IndexDigests> {
    let mut layout = OciLayout::new(LayoutOptions::default());
    let digests = layout.add_index(name, images)?;
    layout.write_dir(dir)?;
    Ok(digests)
}

/// Write `images` as an OCI archive (a tar of the layout [`write_oci_layout`] writes).
pub fn write_oci_archive(
    path: &Path,
    images: &[(&str, &ImageBuilder)],
) -> Result<Vec<ImageDigests>> {
    write_oci_archive_with(path, images, LayoutOptions::default())
}

/// [`write_oci_archive`] with options.
pub fn write_oci_archive_with(
    path: &Path,
    images: &[(&str, &ImageBuilder)],
    options: LayoutOptions,
) -> Result<Vec<ImageDigests>> {
    let (layout, digests) = layout_of(images, options)?;
    layout.write_archive(path)?;
    Ok(digests)
}

fn layout_of(
    images: &[(&str, &ImageBuilder)],
    options: LayoutOptions,
) -> Result<(OciLayout, Vec<ImageDigests>)> {
    let mut layout = OciLayout::new(options);
    let digests = images
        .iter()
        .map(|(name, image)| layout.add_image(name, image))
        .collect::<Result<Vec<_>>>()?;
    Ok((layout, digests))
}

/// Write `image` as a legacy `docker save` tarball: `manifest.json` (`Config`,
/// `RepoTags` = `[name]`, `Layers`), `repositories`, `<config hex>.json` and one
/// `<chain id hex>/layer.tar` (uncompressed) per layer.
///
/// Layers are stored uncompressed whatever their builders say, so the returned layer
/// digests equal the diff IDs; `manifest` is the digest of the Docker schema2 manifest of
/// those uncompressed layers (the archive itself holds no manifest blob).
pub fn write_docker_archive(path: &Path, name: &str, image: &ImageBuilder) -> Result<ImageDigests> {
    let img = image
        .clone()
        .compress_all(Compression::None)
        .docker_media_types(true)
        .build()?;
    let digests = img.digests();
    let config_name = format!("{}.json", img.config_digest.hex());
    let mut archive = LayerBuilder::new().compression(Compression::None);
    let mut layer_paths = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        // The chain ID is unique per position even when two layers are identical.
        let id = chain_id(&digests.diff_ids[..=i]).expect("at least one layer");
        let rel = format!("{}/layer.tar", id.hex());
        archive = archive
            .dir(id.hex(), 0o755)
            .file(&format!("{}/VERSION", id.hex()), 0o644, "1.0")
            .file(&rel, 0o644, l.blob.clone());
        layer_paths.push(rel);
    }
    let manifest = to_json(&json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": layer_paths,
    }]))?;
    let repo = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let top = digests.chain_id.as_ref().map(|c| c.hex().to_owned());
    let repositories = to_json(&json!({ (repo): { (tag_of(name)): top } }))?;
    archive = archive
        .file(&config_name, 0o644, img.config.clone())
        .file("manifest.json", 0o644, manifest)
        .file("repositories", 0o644, repositories);
    fs::write(path, archive.tar()?).at("write", path)?;
    Ok(digests)
}

/// A small two-layer image exercising links, whiteouts and an opaque directory.
///
/// Layer 0 (gzip): `etc/` with `hostname` (`imv\n`) and `os-release`; `data/` with
/// `hello.txt` (`hello from imv\n`), `remove-me.txt`, symlink `link -> hello.txt`,
/// hard link `hard` (to `data/hello.txt`), and `opaque/old.txt`.
/// Layer 1 (gzip): whiteout of `data/remove-me.txt`, `data/opaque/` made opaque (so
/// `old.txt` disappears) with a new `data/opaque/new.txt` (`added by layer 1\n`), and
/// `data/second.txt` (`layer 1\n`).
///
/// The unpacked root therefore has `data/hello.txt`, `data/link`, `data/hard`,
/// `data/second.txt`, `data/opaque/new.txt`, and neither `data/remove-me.txt` nor
/// `data/opaque/old.txt`.
pub fn sample_image() -> ImageBuilder {
    let base = LayerBuilder::new()
        .created_by("sample: base files")
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, "imv\n")
        .file("etc/os-release", 0o644, "NAME=imv-sample\nID=imv\n")
        .dir("data", 0o755)
        .file("data/hello.txt", 0o644, "hello from imv\n")
        .file("data/remove-me.txt", 0o644, "deleted by layer 1\n")
        .symlink("data/link", "hello.txt")
        .hardlink("data/hard", "data/hello.txt")
        .dir("data/opaque", 0o755)
        .file("data/opaque/old.txt", 0o644, "hidden by layer 1\n");
    let top = LayerBuilder::new()
        .created_by("sample: whiteout and opaque directory")
        .dir("data", 0o755)
        .whiteout("data/remove-me.txt")
        .dir("data/opaque", 0o755)
        .opaque("data/opaque")
        .file("data/opaque/new.txt", 0o644, "added by layer 1\n")
        .file("data/second.txt", 0o644, "layer 1\n");
    ImageBuilder::new()
        .env("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .cmd(["/bin/sh"])
        .label("org.opencontainers.image.title", "imv sample")
        .layer(base)
        .layer(top)
}

/// An image of `n` gzip layers: layer `i` adds the file `layer-<i>` (`layer <i>\n`);
/// layers 0, 3, 6, ... (re)write the file `shared` (`written by layer <i>\n`), so the
/// unpacked `shared` names the last multiple of 3 below `n`.
pub fn many_layers(n: usize) -> ImageBuilder {
    let mut image = ImageBuilder::new();
    for i in 0..n {
        let mut layer = LayerBuilder::new()
            .created_by(&format!("many_layers: layer {i}"))
            .file(&format!("layer-{i}"), 0o644, format!("layer {i}\n"));
        if i % 3 == 0 {
            layer = layer.file("shared", 0o644, format!("written by layer {i}\n"));
        }
        image = image.layer(layer);
    }
    image
}

pub mod artifact;
#[cfg(test)]
mod tests;
