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
//!
//! Here: the tree being built, as a [`Sink`] of tar entries. `node`: its nodes. `layout`:
//! placing and writing the metadata at the end. `format`: EROFS's on-disk structures.

mod format;
mod layout;
mod node;
#[cfg(test)]
pub(super) mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Dev, FileType};
use rustix::io::Errno;

use super::tree::{show, Meta, IMPLICIT_DIR_MODE};
use super::{whiteout_of_own_entry, Sink};
use crate::error::{Error, IoContext, Result};
use format::BLOCK;
use node::{Body, Node};

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
