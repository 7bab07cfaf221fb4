//! Laying out an EROFS image once its tree is complete: every node the root reaches gets
//! its inode slot and, for directories and symlinks that do not fit inline, its blocks;
//! then everything but the file contents (already written) goes out, block 0 last.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;

use rustix::fs::FileType;

use super::format::{self, Inode, Layout, BLOCK, INODE_SIZE, ROOT_OFFSET, SLOT};
use super::node::{Body, Node};
use super::{Image, ROOT};
use crate::error::{Error, IoContext, Result};

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
    pub(super) fn write_metadata(mut self) -> Result<()> {
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
