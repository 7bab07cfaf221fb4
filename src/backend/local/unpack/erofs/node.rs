//! The tree an EROFS image is built from: one node per inode, its metadata and xattrs as
//! the inode will carry them.

use std::collections::BTreeMap;

use rustix::fs::FileType;

use super::format;
use crate::backend::local::unpack::tree::{show, Meta};
use crate::error::{Error, Result};

/// An extended attribute: name and value.
pub(super) type Xattr = (Box<[u8]>, Box<[u8]>);

/// One inode of the tree.
pub(super) struct Node {
    pub(super) body: Body,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Permission bits (with setuid, setgid, sticky).
    pub(super) perms: u32,
    pub(super) mtime: (i64, u32),
    /// Full names (`user.x`, `security.capability`), in the order set.
    pub(super) xattrs: Vec<Xattr>,
    /// Bytes their entries take in the inline xattr area (its header not counted).
    pub(super) xattr_len: usize,
}

pub(super) enum Body {
    Dir(BTreeMap<Box<[u8]>, u32>),
    /// `start`: byte offset of the content in the image (block-aligned).
    File {
        start: u64,
        size: u64,
    },
    Symlink(Box<[u8]>),
    /// Device, fifo or whiteout; `rdev` encoded as the inode stores it.
    Special {
        kind: FileType,
        rdev: u32,
    },
}

impl Node {
    pub(super) fn kind(&self) -> FileType {
        match &self.body {
            Body::Dir(_) => FileType::Directory,
            Body::File { .. } => FileType::RegularFile,
            Body::Symlink(_) => FileType::Symlink,
            Body::Special { kind, .. } => *kind,
        }
    }

    pub(super) fn set_meta(&mut self, meta: &Meta<'_>, path: &[u8]) -> Result<()> {
        self.uid = meta.uid;
        self.gid = meta.gid;
        if !matches!(self.body, Body::Symlink(_)) {
            self.perms = meta.mode & 0o7777;
        }
        self.mtime = meta.mtime;
        // The kernel admits user.* only on files and directories (EPERM elsewhere, which
        // the directory form logs and skips): the same here, so both forms hold the same.
        let user_ok = matches!(self.body, Body::Dir(_) | Body::File { .. });
        // A new inode takes the entry's xattrs as they come (their names are distinct):
        // no lookup per xattr, which a flood of them would make quadratic.
        let fresh = self.xattrs.is_empty();
        for &(name, value) in meta.xattrs {
            if name.starts_with(b"user.") && !user_ok {
                tracing::warn!(
                    entry = %show(path).display(),
                    xattr = %String::from_utf8_lossy(name),
                    "xattr not supported here, skipped"
                );
                continue;
            }
            self.set_xattr(name, value, path, fresh)?;
        }
        Ok(())
    }

    /// Set xattr `name`; with `new`, known not to be set yet.
    pub(super) fn set_xattr(
        &mut self,
        name: &[u8],
        value: &[u8],
        path: &[u8],
        new: bool,
    ) -> Result<()> {
        if !format::xattr_storable(name, value) {
            return Err(Error::invalid(format!(
                "entry {}: xattr {} ({} bytes) cannot be stored",
                super::super::quoted(path),
                super::super::quoted(name),
                value.len()
            )));
        }
        let len = format::xattr_entry_len(name, value);
        let old = match new {
            true => None,
            false => self.xattrs.iter().position(|(n, _)| &**n == name),
        };
        let old_len = old.map_or(0, |i| {
            format::xattr_entry_len(&self.xattrs[i].0, &self.xattrs[i].1)
        });
        let total = self.xattr_len - old_len + len;
        if format::MAX_XATTR_AREA < total + 12 {
            return Err(Error::invalid(format!(
                "entry {}: its xattrs take more than the {} bytes an EROFS inode holds",
                super::super::quoted(path),
                format::MAX_XATTR_AREA
            )));
        }
        self.xattr_len = total;
        match old {
            Some(i) => self.xattrs[i].1 = value.into(),
            None => self.xattrs.push((name.into(), value.into())),
        }
        Ok(())
    }
}
