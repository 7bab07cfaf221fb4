//! EROFS on-disk structures, as Linux reads them (fs/erofs/erofs_fs.h): the superblock,
//! the 64-byte extended inode, directory entries and inline extended attributes. Only
//! what an uncompressed image needs: 4 KiB blocks, no compression, no shared xattrs, no
//! chunked files, no extra devices, no checksums.

use rustix::fs::FileType;

/// Block size: 4 KiB, the page size, so every kernel that mounts EROFS can read it.
pub(super) const BLOCK: u64 = 4096;
const BLOCK_BITS: u8 = 12;

/// Where the superblock starts in block 0.
pub(super) const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_SIZE: usize = 128;
const MAGIC: u32 = 0xE0F5_E1E2;

/// Inodes are addressed by NID, their offset from the metadata area in 32-byte slots.
pub(super) const SLOT: u64 = 32;
/// An extended inode: 32-bit owners, 64-bit size, its own mtime.
pub(super) const INODE_SIZE: u64 = 64;

/// Where the root inode goes: right after the superblock, in block 0, so that its NID
/// fits the superblock's 16-bit field wherever the rest of the metadata ends up.
pub(super) const ROOT_OFFSET: u64 = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64;

/// A directory entry: NID (8), name offset (2), file type (1), reserved (1).
pub(super) const DIRENT_SIZE: usize = 12;
/// Longest name in a directory.
pub(super) const NAME_MAX: usize = 255;

/// Inline xattr area header: name filter (4), shared count (1), reserved (7).
const XATTR_HEADER: usize = 12;
/// Entry header: name length (1), name index (1), value size (2).
const XATTR_ENTRY: usize = 4;

/// How an inode's data is laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Layout {
    /// Whole blocks from `raw_blkaddr`.
    FlatPlain,
    /// All of it right after the inode and its xattrs, in the same block.
    FlatInline,
}

/// One inode's fields.
pub(super) struct Inode {
    pub layout: Layout,
    pub xattr_bytes: usize,
    /// File type and permission bits.
    pub mode: u32,
    pub size: u64,
    /// First data block (FlatPlain), or the device number (devices).
    pub u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub nlink: u32,
}

/// The 64 bytes of an extended inode.
pub(super) fn inode(i: &Inode) -> [u8; INODE_SIZE as usize] {
    let mut b = [0u8; INODE_SIZE as usize];
    let layout: u16 = match i.layout {
        Layout::FlatPlain => 0,
        Layout::FlatInline => 2,
    };
    // Bit 0: extended; bits 1-3: the data layout.
    put16(&mut b, 0, 1 | (layout << 1));
    put16(&mut b, 2, xattr_icount(i.xattr_bytes));
    // i_mode is 16 bits wide; file type and permissions fit.
    put16(&mut b, 4, i.mode as u16);
    put64(&mut b, 8, i.size);
    put32(&mut b, 16, i.u);
    put32(&mut b, 20, i.ino);
    put32(&mut b, 24, i.uid);
    put32(&mut b, 28, i.gid);
    put64(&mut b, 32, i.mtime.0 as u64);
    put32(&mut b, 40, i.mtime.1);
    put32(&mut b, 44, i.nlink);
    b
}

/// The superblock's fields.
pub(super) struct Superblock {
    pub root_nid: u16,
    pub inodes: u64,
    pub build_time: (i64, u32),
    pub blocks: u32,
}

/// The 128 bytes of the superblock; the metadata area starts at block 0 (NIDs are
/// offsets in the whole image), and there are no shared xattrs.
pub(super) fn superblock(s: &Superblock) -> [u8; SUPERBLOCK_SIZE] {
    let mut b = [0u8; SUPERBLOCK_SIZE];
    put32(&mut b, 0, MAGIC);
    b[12] = BLOCK_BITS;
    put16(&mut b, 14, s.root_nid);
    put64(&mut b, 16, s.inodes);
    put64(&mut b, 24, s.build_time.0 as u64);
    put32(&mut b, 32, s.build_time.1);
    put32(&mut b, 36, s.blocks);
    // meta_blkaddr (40) and xattr_blkaddr (44) are 0.
    b
}

/// The file type a directory entry records.
pub(super) fn dirent_type(kind: FileType) -> u8 {
    match kind {
        FileType::RegularFile => 1,
        FileType::Directory => 2,
        FileType::CharacterDevice => 3,
        FileType::BlockDevice => 4,
        FileType::Fifo => 5,
        FileType::Socket => 6,
        FileType::Symlink => 7,
        FileType::Unknown => 0,
    }
}

/// Append one directory block's entries (already sorted, all fitting: see [`pack`]).
pub(super) fn dir_block(out: &mut Vec<u8>, entries: &[(&[u8], u64, u8)]) {
    let mut name_off = DIRENT_SIZE * entries.len();
    for &(name, nid, kind) in entries {
        out.extend_from_slice(&nid.to_le_bytes());
        out.extend_from_slice(&(name_off as u16).to_le_bytes());
        out.push(kind);
        out.push(0);
        name_off += name.len();
    }
    for &(name, _, _) in entries {
        out.extend_from_slice(name);
    }
}

/// Split directory entries (their name lengths, in order) into blocks: how many entries
/// each block holds, and the bytes the last one uses. An entry never spans two blocks.
pub(super) fn pack(name_lens: impl Iterator<Item = usize>) -> (Vec<usize>, usize) {
    let mut blocks = Vec::new();
    let (mut count, mut used) = (0usize, 0usize);
    for len in name_lens {
        if used + DIRENT_SIZE + len > BLOCK as usize {
            blocks.push(count);
            (count, used) = (0, 0);
        }
        count += 1;
        used += DIRENT_SIZE + len;
    }
    blocks.push(count);
    (blocks, used)
}

/// The name index and suffix EROFS stores an xattr name as; `None` for a namespace it
/// has no index for (the unpack keeps none of those).
fn xattr_name(name: &[u8]) -> Option<(u8, &[u8])> {
    match name {
        b"system.posix_acl_access" => Some((2, b"")),
        b"system.posix_acl_default" => Some((3, b"")),
        _ => [(&b"user."[..], 1u8), (b"trusted.", 4), (b"security.", 6)]
            .into_iter()
            .find_map(|(prefix, index)| {
                name.strip_prefix(prefix)
                    .filter(|s| !s.is_empty())
                    .map(|s| (index, s))
            }),
    }
}

/// Whether an xattr can be stored: a known namespace, a name suffix of at most 255 bytes
/// and a value of at most 64 KiB - 1.
pub(super) fn xattr_storable(name: &[u8], value: &[u8]) -> bool {
    xattr_name(name).is_some_and(|(_, suffix)| suffix.len() <= 255) && value.len() <= 0xFFFF
}

/// The most bytes an inode's inline xattr area may take: its header and 65,534 4-byte
/// units, what `i_xattr_icount` (16 bits) can count. Beyond that the count wraps and the
/// kernel reads the area short (EUCLEAN from the xattrs past it).
pub(super) const MAX_XATTR_AREA: usize = XATTR_HEADER + (u16::MAX as usize - 1) * 4;

/// Bytes one xattr takes in an inline xattr area, its alignment included.
pub(super) fn xattr_entry_len(name: &[u8], value: &[u8]) -> usize {
    let suffix = xattr_name(name).map_or(0, |(_, s)| s.len());
    align4(XATTR_ENTRY + suffix + value.len())
}

/// Bytes the inline xattr area of these xattrs takes (0 without any).
pub(super) fn xattr_area_len<'a>(xattrs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    let mut len = 0;
    for (name, value) in xattrs {
        len += xattr_entry_len(name, value);
    }
    if len == 0 {
        0
    } else {
        XATTR_HEADER + len
    }
}

/// Append the inline xattr area; each xattr must be [`xattr_storable`].
pub(super) fn xattr_area<'a>(
    out: &mut Vec<u8>,
    xattrs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; XATTR_HEADER]);
    for (name, value) in xattrs {
        let Some((index, suffix)) = xattr_name(name) else {
            continue;
        };
        let entry = out.len();
        out.push(suffix.len() as u8);
        out.push(index);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(suffix);
        out.extend_from_slice(value);
        out.resize(entry + align4(out.len() - entry), 0);
    }
    if out.len() == start + XATTR_HEADER {
        out.truncate(start);
    }
}

/// The inode's `i_xattr_icount` for an xattr area of `bytes`: the header counts as one
/// 4-byte unit, everything after it in units.
fn xattr_icount(bytes: usize) -> u16 {
    if bytes == 0 {
        0
    } else {
        u16::try_from(1 + (bytes - XATTR_HEADER) / 4)
            .expect("xattr areas are held to MAX_XATTR_AREA")
    }
}

/// A device number as the kernel's `new_encode_dev`.
pub(super) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
