//! Layers: [`LayerBuilder`] writes its entries as a tar and compresses it
//! ([`Compression`]) into a [`Layer`] blob; [`chain_id`] of a stack of layers.

use std::io::Write;

use imv::{Digest, Error, Result};

use super::{media_type, Entry};

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

/// Builds one layer: entries are written in the order they are added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    pub(super) compression: Compression,
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
