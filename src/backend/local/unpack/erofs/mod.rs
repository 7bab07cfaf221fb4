//! A layer unpacked into one EROFS image file instead of a directory tree
//! (docs/design.md, "Layers as EROFS images").
//!
//! The tar is applied to a tree in memory, with the same rules as the directory form
//! (`super::tree`): names resolve inside the layer, following the layer's own symlinks as
//! `RESOLVE_IN_ROOT` does; missing parents become 0755 directories; a later entry replaces
//! an earlier one; a hardlink shares its target's inode. File contents are not held: each
//! is written to the image as it streams by, block-aligned, into the data area. At the end
//! the directories, symlinks and inodes are laid out after the data and block 0 (the
//! superblock and the root inode) is written last.
//!
//! The image is then one file instead of thousands: creating it costs a sequential write,
//! where the directory form costs an inode, a few system calls and a journal entry per file.

mod format;
#[cfg(test)]
pub(super) mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Dev, FileType};
use rustix::io::Errno;

use super::tree::{show, Meta, IMPLICIT_DIR_MODE};
use super::{whiteout_of_own_entry, Sink};
use crate::error::{Error, IoContext, Result};
use format::{Inode, Layout, BLOCK, INODE_SIZE, ROOT_OFFSET, SLOT};

/// The root's index in [`Image::nodes`].
const ROOT: u32 = 0;

/// Most nodes (files, directories, links, whiteouts) one layer may make: the tree is held
/// in memory, about 100 bytes a node.
const MAX_NODES: usize = 1 << 22;

/// Most symlinks followed resolving one path (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// Longest symlink target (PATH_MAX less the NUL).
const MAX_SYMLINK: usize = 4095;

/// What writes go through: large, so data goes out in few system calls.
const WRITE_BUFFER: usize = 128 << 10;

/// Every this many bytes written, the kernel is asked to start writing them to disk (not
/// waited for): the sync that makes the layer durable then finds little left to write.
const WRITEBACK_EVERY: u64 = 4 << 20;

/// An extended attribute: name and value.
type Xattr = (Box<[u8]>, Box<[u8]>);

/// One inode of the tree.
struct Node {
    body: Body,
    uid: u32,
    gid: u32,
    /// Permission bits (with setuid, setgid, sticky).
    perms: u32,
    mtime: (i64, u32),
    /// Full names (`user.x`, `security.capability`), in the order set.
    xattrs: Vec<Xattr>,
    /// Bytes their entries take in the inline xattr area (its header not counted).
    xattr_len: usize,
}

enum Body {
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
    fn kind(&self) -> FileType {
        match &self.body {
            Body::Dir(_) => FileType::Directory,
            Body::File { .. } => FileType::RegularFile,
            Body::Symlink(_) => FileType::Symlink,
            Body::Special { kind, .. } => *kind,
        }
    }

    fn set_meta(&mut self, meta: &Meta<'_>, path: &[u8]) -> Result<()> {
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
    fn set_xattr(&mut self, name: &[u8], value: &[u8], path: &[u8], new: bool) -> Result<()> {
        if !format::xattr_storable(name, value) {
            return Err(Error::invalid(format!(
                "entry {}: xattr {} ({} bytes) cannot be stored",
                super::quoted(path),
                super::quoted(name),
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
                super::quoted(path),
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

/// The image being built.
pub(in crate::backend::local) struct Image {
    out: BufWriter<File>,
    path: PathBuf,
    /// Bytes written so far: where the next data goes.
    pos: u64,
    /// Bytes handed to the kernel's writeback so far.
    written_back: u64,
    nodes: Vec<Node>,
    /// The last parent resolved (entries come grouped by directory).
    cache: Option<(Vec<u8>, u32)>,
    /// Time of implicit parents and whiteouts (the directory form's are made now too).
    now: (i64, u32),
}

impl Image {
    /// Start an image at `path`, a file that must not exist yet.
    pub(in crate::backend::local) fn create(path: &Path) -> Result<Image> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .at("creating", path)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now = (now.as_secs() as i64, now.subsec_nanos());
        let mut image = Image {
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            path: path.to_owned(),
            pos: 0,
            written_back: 0,
            nodes: Vec::new(),
            cache: None,
            now,
        };
        image.nodes.push(image.dir_node(0o755));
        // Block 0 (superblock, root inode) is written last; keep its place.
        image.write(&[0u8; BLOCK as usize])?;
        Ok(image)
    }

    /// A node made now, owned by root, without xattrs (until `Node::set_meta`).
    fn new_node(&self, body: Body, perms: u32) -> Node {
        Node {
            body,
            uid: 0,
            gid: 0,
            perms,
            mtime: self.now,
            xattrs: Vec::new(),
            xattr_len: 0,
        }
    }

    fn dir_node(&self, perms: u32) -> Node {
        self.new_node(Body::Dir(BTreeMap::new()), perms)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).at("writing", &self.path)?;
        self.pos += bytes.len() as u64;
        let in_file = self.pos - self.out.buffer().len() as u64;
        if in_file - self.written_back >= WRITEBACK_EVERY {
            // Best effort: without it the sync only takes longer.
            // SAFETY: a plain system call on an fd the BufWriter owns, with no pointers.
            unsafe {
                libc::sync_file_range(
                    self.out.get_ref().as_raw_fd(),
                    self.written_back as i64,
                    (in_file - self.written_back) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.written_back = in_file;
        }
        Ok(())
    }

    /// Zeros up to the next block boundary.
    fn pad(&mut self) -> Result<()> {
        let rest = (BLOCK - self.pos % BLOCK) % BLOCK;
        self.write(&[0u8; BLOCK as usize][..rest as usize])
    }

    fn children(&self, dir: u32) -> &BTreeMap<Box<[u8]>, u32> {
        match &self.nodes[dir as usize].body {
            Body::Dir(c) => c,
            _ => unreachable!("a Dir handle is always a directory"),
        }
    }

    fn children_mut(&mut self, dir: u32) -> &mut BTreeMap<Box<[u8]>, u32> {
        match &mut self.nodes[dir as usize].body {
            Body::Dir(c) => c,
            _ => unreachable!("a Dir handle is always a directory"),
        }
    }

    fn lookup(&self, dir: u32, name: &[u8]) -> Option<u32> {
        self.children(dir).get(name).copied()
    }

    fn is_dir(&self, id: u32) -> bool {
        matches!(self.nodes[id as usize].body, Body::Dir(_))
    }

    /// Add `node` as `name` in `dir` (where nothing is: the caller cleared it).
    fn add(&mut self, dir: u32, name: &[u8], node: Node, path: &[u8]) -> Result<u32> {
        check_name(name, path)?;
        if self.nodes.len() >= MAX_NODES {
            return Err(too_many_files(path));
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(node);
        self.children_mut(dir).insert(name.into(), id);
        Ok(id)
    }

    /// Resolve one component from the directory on top of `stack` (its ancestors below
    /// it), following a symlink inside the layer; the result must be a directory.
    fn step(&self, stack: &mut Vec<u32>, name: &[u8], links: &mut u32) -> Result<(), Errno> {
        match name {
            b"" | b"." => return Ok(()),
            b".." => {
                // At the root, `..` is the root (RESOLVE_IN_ROOT).
                if stack.len() > 1 {
                    stack.pop();
                }
                return Ok(());
            }
            _ => {}
        }
        let top = *stack.last().expect("the root is never popped");
        let child = self.lookup(top, name).ok_or(Errno::NOENT)?;
        match &self.nodes[child as usize].body {
            Body::Dir(_) => {
                stack.push(child);
                Ok(())
            }
            Body::Symlink(target) => {
                *links += 1;
                if *links > MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                for c in target.split(|&b| b == b'/') {
                    self.step(stack, c, links)?;
                }
                Ok(())
            }
            _ => Err(Errno::NOTDIR),
        }
    }

    /// The directory `path` (normalized, relative), symlinks followed inside the layer;
    /// with `create`, a missing component (the name itself absent) becomes a directory.
    fn resolve(&mut self, path: &[u8], create: bool) -> Result<u32, Errno> {
        let mut stack = vec![ROOT];
        let mut links = 0;
        for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match self.step(&mut stack, name, &mut links) {
                Ok(()) => {}
                Err(Errno::NOENT) if create => {
                    let top = *stack.last().expect("the root is never popped");
                    if self.lookup(top, name).is_some() {
                        // A dangling symlink is there.
                        return Err(Errno::NOENT);
                    }
                    if name.len() > format::NAME_MAX {
                        return Err(Errno::NAMETOOLONG);
                    }
                    if self.nodes.len() >= MAX_NODES {
                        return Err(Errno::NOSPC);
                    }
                    let node = self.dir_node(IMPLICIT_DIR_MODE);
                    let id = self.add(top, name, node, path).map_err(|_| Errno::NOSPC)?;
                    stack.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(*stack.last().expect("the root is never popped"))
    }

    fn parent_error(&self, what: &str, parent: &[u8], entry: &[u8], e: Errno) -> Error {
        if e == Errno::NOSPC {
            return too_many_files(entry);
        }
        Error::invalid(format!(
            "entry {}: {what} {:?} is not a directory inside the layer ({})",
            show(entry).display(),
            show(parent),
            std::io::Error::from(e)
        ))
    }

    /// Make room for `name` in `dir`: as the directory form's `Tree::clear`, a directory
    /// there is kept with `keep_dir`, anything else is taken out. Returns what is kept, or
    /// what was taken out.
    fn clear(&mut self, dir: u32, name: &[u8], keep_dir: bool) -> Cleared {
        match self.lookup(dir, name) {
            None => Cleared::Nothing,
            Some(id) if keep_dir && self.is_dir(id) => Cleared::KeptDir(id),
            Some(id) => {
                self.children_mut(dir).remove(name);
                self.cache = None;
                Cleared::Removed(id)
            }
        }
    }

    /// Whether `id` is `root` or under it.
    fn within(&self, root: u32, id: u32) -> bool {
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            if n == id {
                return true;
            }
            if let Body::Dir(c) = &self.nodes[n as usize].body {
                stack.extend(c.values().copied().filter(|&c| self.is_dir(c) || c == id));
            }
        }
        false
    }
}

/// What [`Image::clear`] found.
enum Cleared {
    Nothing,
    KeptDir(u32),
    Removed(u32),
}

/// A layer of more nodes than [`MAX_NODES`], found at `entry`.
fn too_many_files(entry: &[u8]) -> Error {
    Error::invalid(format!(
        "entry {}: the layer has more than {MAX_NODES} files",
        show(entry).display()
    ))
}

/// Names the kernel would refuse to create (ENAMETOOLONG): the layer's fault.
fn check_name(name: &[u8], path: &[u8]) -> Result<()> {
    if name.len() > format::NAME_MAX {
        return Err(Error::invalid(format!(
            "entry {}: a name longer than {} bytes",
            show(path).display(),
            format::NAME_MAX
        )));
    }
    Ok(())
}

impl Sink for Image {
    type Dir = u32;

    fn parent(&mut self, parent: &[u8], entry: &[u8]) -> Result<u32> {
        if parent.is_empty() {
            return Ok(ROOT);
        }
        if let Some((key, id)) = &self.cache {
            if key.as_slice() == parent {
                return Ok(*id);
            }
        }
        let id = self
            .resolve(parent, true)
            .map_err(|e| self.parent_error("parent directory", parent, entry, e))?;
        self.cache = Some((parent.to_vec(), id));
        Ok(id)
    }

    fn target_parent(&mut self, parent: &[u8], target: &[u8], entry: &[u8]) -> Result<u32> {
        self.resolve(parent, false).map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => Error::invalid(format!(
                "hardlink {}: target {} is not in the layer",
                show(entry).display(),
                show(target).display()
            )),
            e => self.parent_error("hardlink target directory", parent, entry, e),
        })
    }

    fn opaque(&mut self, dir: &u32, path: &[u8]) -> Result<()> {
        self.nodes[*dir as usize].set_xattr(b"trusted.overlay.opaque", b"y", path, false)
    }

    fn root_meta(&mut self, meta: &Meta<'_>) -> Result<()> {
        self.nodes[ROOT as usize].set_meta(meta, b".")
    }

    fn directory(&mut self, dir: &u32, name: &[u8], path: &[u8], meta: &Meta<'_>) -> Result<()> {
        let id = match self.clear(*dir, name, true) {
            Cleared::KeptDir(id) => id,
            _ => {
                let node = self.dir_node(0o700);
                self.add(*dir, name, node, path)?
            }
        };
        self.nodes[id as usize].set_meta(meta, path)
    }

    fn file(
        &mut self,
        dir: &u32,
        name: &[u8],
        path: &[u8],
        content: &mut dyn Read,
        size: u64,
        buf: &mut [u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        self.clear(*dir, name, false);
        if size > 0 {
            self.pad()?;
        }
        let start = self.pos;
        super::copy_content(content, buf, size, path, |chunk| self.write(chunk))?;
        let node = self.new_node(Body::File { start, size }, 0);
        let id = self.add(*dir, name, node, path)?;
        self.nodes[id as usize].set_meta(meta, path)
    }

    fn symlink(
        &mut self,
        dir: &u32,
        name: &[u8],
        path: &[u8],
        target: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        if target.len() > MAX_SYMLINK {
            return Err(Error::invalid(format!(
                "entry {}: a symlink target longer than {MAX_SYMLINK} bytes",
                show(path).display()
            )));
        }
        self.clear(*dir, name, false);
        let node = self.new_node(Body::Symlink(target.into()), 0o777);
        let id = self.add(*dir, name, node, path)?;
        self.nodes[id as usize].set_meta(meta, path)
    }

    fn node(
        &mut self,
        dir: &u32,
        name: &[u8],
        path: &[u8],
        kind: FileType,
        dev: Dev,
        meta: &Meta<'_>,
        whiteout: bool,
    ) -> Result<()> {
        if whiteout && self.lookup(*dir, name).is_some() {
            return Err(whiteout_of_own_entry(path));
        }
        self.clear(*dir, name, false);
        let rdev = format::encode_dev(rustix::fs::major(dev), rustix::fs::minor(dev));
        let mut node = self.new_node(Body::Special { kind, rdev }, 0);
        (node.uid, node.gid) = (meta.uid, meta.gid);
        let id = self.add(*dir, name, node, path)?;
        if whiteout {
            // As overlayfs's own: mode 0, the owner, no xattrs, made now.
            return Ok(());
        }
        self.nodes[id as usize].set_meta(meta, path)
    }

    fn hardlink(
        &mut self,
        target_dir: &u32,
        target_name: &[u8],
        target_path: &[u8],
        dir: &u32,
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        let target = self.lookup(*target_dir, target_name).ok_or_else(|| {
            Error::invalid(format!(
                "hardlink {}: target {} is not in the layer",
                show(path).display(),
                show(target_path).display()
            ))
        })?;
        if self.is_dir(target) {
            return Err(Error::invalid(format!(
                "hardlink {}: target {} is a directory",
                show(path).display(),
                show(target_path).display()
            )));
        }
        if self.lookup(*dir, name) != Some(target) {
            if let Cleared::Removed(gone) = self.clear(*dir, name, false) {
                if self.within(gone, *target_dir) {
                    return Err(Error::invalid(format!(
                        "hardlink {}: target {} is inside the directory the link replaces",
                        show(path).display(),
                        show(target_path).display()
                    )));
                }
            }
            check_name(name, path)?;
            self.children_mut(*dir).insert(name.into(), target);
        }
        self.nodes[target as usize].set_meta(meta, path)
    }

    fn finish(self) -> Result<()> {
        self.write_metadata()
    }
}

/// Where one reachable node goes in the image.
struct Placed {
    id: u32,
    nid: u64,
    /// Links to it (directories: 2 and one per subdirectory).
    nlink: u32,
    xattr_bytes: usize,
    layout: Layout,
    /// `i_size` (see `data_size`).
    size: usize,
    /// Bytes of data after the inode (FlatInline).
    inline: usize,
    /// First block of its data (FlatPlain directories and symlinks; files have theirs).
    block: u64,
    /// Directories: the parent's index in `placed`.
    parent: usize,
}

impl Image {
    /// Lay out and write everything but the file contents: directory and symlink blocks,
    /// then the inodes, then block 0.
    fn write_metadata(mut self) -> Result<()> {
        self.pad()?;
        // Every node the root reaches, once (hardlinks), in depth-first order.
        let mut placed: Vec<Placed> = Vec::new();
        let mut index: Vec<u32> = vec![u32::MAX; self.nodes.len()];
        let mut stack = vec![(ROOT, 0usize)];
        while let Some((id, parent)) = stack.pop() {
            let i = placed.len();
            index[id as usize] = i as u32;
            placed.push(Placed {
                id,
                nid: 0,
                nlink: if self.is_dir(id) { 2 } else { 0 },
                xattr_bytes: 0,
                layout: Layout::FlatPlain,
                size: 0,
                inline: 0,
                block: 0,
                parent,
            });
            if let Body::Dir(children) = &self.nodes[id as usize].body {
                for &child in children.values().rev() {
                    if self.is_dir(child) {
                        placed[i].nlink += 1;
                        stack.push((child, i));
                    } else if index[child as usize] == u32::MAX {
                        index[child as usize] = u32::MAX - 1; // queued
                        stack.push((child, i));
                    }
                }
            }
        }
        for id in 0..self.nodes.len() {
            if let Body::Dir(children) = &self.nodes[id].body {
                if index[id] == u32::MAX {
                    continue;
                }
                for &child in children.values() {
                    if !self.is_dir(child) {
                        placed[index[child as usize] as usize].nlink += 1;
                    }
                }
            }
        }

        // Sizes, and the blocks of what does not go inline.
        let mut next_block = self.pos / BLOCK;
        for (i, p) in placed.iter_mut().enumerate() {
            let node = &self.nodes[p.id as usize];
            p.xattr_bytes = format::xattr_area_len(node.xattrs.iter().map(|(n, v)| (&**n, &**v)));
            let room = (BLOCK - INODE_SIZE) as usize;
            let size = data_size(node);
            p.size = size;
            // The root's data never goes inline: block 0 has no room to spare.
            let inline_ok = i != 0 && p.xattr_bytes + size <= room;
            match &node.body {
                Body::Dir(_) | Body::Symlink(_) if inline_ok => {
                    p.layout = Layout::FlatInline;
                    p.inline = size;
                }
                Body::Dir(_) | Body::Symlink(_) => {
                    p.block = next_block;
                    next_block += (size as u64).div_ceil(BLOCK);
                }
                Body::File { start, .. } => p.block = start / BLOCK,
                Body::Special { .. } => {}
            }
        }
        let root_end = ROOT_OFFSET + INODE_SIZE + placed[0].xattr_bytes as u64;
        if root_end > BLOCK {
            return Err(Error::invalid(format!(
                "the layer root has {} bytes of xattrs, more than an EROFS root inode can carry",
                placed[0].xattr_bytes
            )));
        }
        placed[0].nid = ROOT_OFFSET / SLOT;
        let mut at = next_block * BLOCK;
        for p in placed.iter_mut().skip(1) {
            let len = INODE_SIZE + (p.xattr_bytes + p.inline) as u64;
            at = at.next_multiple_of(SLOT);
            // Inline data must not cross a block boundary; an inode that fits in a block is
            // kept in one.
            if at % BLOCK + len > BLOCK {
                at = at.next_multiple_of(BLOCK);
            }
            p.nid = at / SLOT;
            at += len;
        }
        let end = at.next_multiple_of(BLOCK);
        let blocks = u32::try_from(end / BLOCK).map_err(|_| {
            Error::invalid(format!(
                "the layer makes an image of {end} bytes, more than EROFS addresses"
            ))
        })?;

        // Directory and symlink blocks, in the order their blocks were given out.
        let mut bytes = Vec::with_capacity(BLOCK as usize);
        for p in placed.iter().filter(|p| p.layout == Layout::FlatPlain) {
            let node = &self.nodes[p.id as usize];
            if !matches!(node.body, Body::Dir(_) | Body::Symlink(_)) {
                continue;
            }
            debug_assert_eq!(self.pos, p.block * BLOCK);
            bytes.clear();
            self.data(p, &placed, &index, true, &mut bytes);
            self.write(&bytes)?;
            self.pad()?;
        }

        // The inodes, each with its xattrs and inline data.
        for (i, p) in placed.iter().enumerate().skip(1) {
            let gap = p.nid * SLOT - self.pos;
            self.write(&vec![0u8; gap as usize])?;
            bytes.clear();
            self.inode_bytes(p, i, &placed, &index, &mut bytes);
            self.write(&bytes)?;
        }
        self.pad()?;
        debug_assert_eq!(self.pos, end);

        // Block 0: the superblock and the root inode.
        bytes.clear();
        self.inode_bytes(&placed[0], 0, &placed, &index, &mut bytes);
        let sb = format::superblock(&format::Superblock {
            root_nid: (ROOT_OFFSET / SLOT) as u16,
            inodes: placed.len() as u64,
            build_time: self.now,
            blocks,
        });
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("writing", &self.path, e.into_error()))?;
        file.write_all_at(&sb, format::SUPERBLOCK_OFFSET)
            .at("writing", &self.path)?;
        file.write_all_at(&bytes, ROOT_OFFSET)
            .at("writing", &self.path)?;
        Ok(())
    }

    /// The data of a directory (its entries, with NIDs) or a symlink (its target).
    fn data(&self, p: &Placed, placed: &[Placed], index: &[u32], plain: bool, out: &mut Vec<u8>) {
        match &self.nodes[p.id as usize].body {
            Body::Symlink(target) => out.extend_from_slice(target),
            Body::Dir(children) => {
                let dir = format::dirent_type(FileType::Directory);
                let entries: Vec<(&[u8], u64, u8)> = sorted_entries(children)
                    .into_iter()
                    .map(|(name, child)| match child {
                        Some(c) => (
                            name,
                            placed[index[c as usize] as usize].nid,
                            format::dirent_type(self.nodes[c as usize].kind()),
                        ),
                        None if name == b"." => (name, p.nid, dir),
                        None => (name, placed[p.parent].nid, dir),
                    })
                    .collect();
                let (blocks, _) = format::pack(entries.iter().map(|e| e.0.len()));
                let mut rest = &entries[..];
                for count in blocks {
                    let start = out.len();
                    format::dir_block(out, &rest[..count]);
                    rest = &rest[count..];
                    if plain && !rest.is_empty() {
                        out.resize(start + BLOCK as usize, 0);
                    }
                }
            }
            _ => {}
        }
    }

    /// An inode, its xattrs and its inline data.
    fn inode_bytes(
        &self,
        p: &Placed,
        ino: usize,
        placed: &[Placed],
        index: &[u32],
        out: &mut Vec<u8>,
    ) {
        let node = &self.nodes[p.id as usize];
        let u = match &node.body {
            Body::Special { rdev, .. } => *rdev,
            // Below the image's block count, which was checked to fit 32 bits.
            _ if p.layout == Layout::FlatPlain => p.block as u32,
            _ => 0,
        };
        let inode = format::inode(&Inode {
            layout: p.layout,
            xattr_bytes: p.xattr_bytes,
            mode: node.kind().as_raw_mode() | node.perms,
            size: p.size as u64,
            u,
            ino: (ino + 1) as u32,
            uid: node.uid,
            gid: node.gid,
            mtime: node.mtime,
            nlink: p.nlink,
        });
        out.extend_from_slice(&inode);
        format::xattr_area(out, node.xattrs.iter().map(|(n, v)| (&**n, &**v)));
        if p.layout == Layout::FlatInline {
            self.data(p, placed, index, false, out);
        }
    }
}

/// A directory's entries, `.` and `..` among them, in the order EROFS keeps them: sorted
/// by name, bytewise (lookups bisect them).
fn sorted_entries(children: &BTreeMap<Box<[u8]>, u32>) -> Vec<(&[u8], Option<u32>)> {
    let mut entries: Vec<(&[u8], Option<u32>)> = Vec::with_capacity(children.len() + 2);
    entries.push((b".", None));
    entries.push((b"..", None));
    entries.extend(children.iter().map(|(name, &id)| (&**name, Some(id))));
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

/// `i_size`: a file's length, a symlink's target length, a directory's entry blocks (all
/// full but the last).
fn data_size(node: &Node) -> usize {
    match &node.body {
        Body::File { size, .. } => *size as usize,
        Body::Symlink(t) => t.len(),
        Body::Dir(children) => {
            let entries = sorted_entries(children);
            let (blocks, last) = format::pack(entries.iter().map(|e| e.0.len()));
            (blocks.len() - 1) * BLOCK as usize + last
        }
        Body::Special { .. } => 0,
    }
}
