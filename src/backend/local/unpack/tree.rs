//! The filesystem side of unpacking: every path is resolved inside the destination with the
//! kernel's help (openat2 `RESOLVE_IN_ROOT`), every final component is created relative to
//! its parent's fd without following symlinks, and metadata goes through the fd that was
//! created or through `*at` calls that do not follow symlinks.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, Dev, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
    Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// Mode of parent directories the layer does not list (what containerd and docker use).
pub(super) const IMPLICIT_DIR_MODE: u32 = 0o755;

/// How often to retry an openat2 that the kernel asks to retry (a rename raced with it).
const OPENAT2_RETRIES: usize = 16;

/// Ownership, permissions, time and extended attributes of one entry.
pub(super) struct Meta<'a> {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    pub mtime: (i64, u32),
    /// Extended attributes, already filtered.
    pub xattrs: &'a [(&'a [u8], &'a [u8])],
}

impl Meta<'_> {
    fn uid(&self) -> Uid {
        // The caller rejects u32::MAX (chown's "leave unchanged").
        Uid::from_raw(self.uid)
    }
    fn gid(&self) -> Gid {
        Gid::from_raw(self.gid)
    }
    fn perms(&self) -> Mode {
        Mode::from_raw_mode(self.mode & 0o7777)
    }
}

/// The times to set for `mtime`; atime is set to the mtime (overlay lower dirs have no use
/// for an archive's atime, and it keeps unpacks reproducible).
fn timestamps((sec, nsec): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// A path as bytes, for messages.
pub(super) fn show(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// The destination directory being filled.
pub(super) struct Tree {
    root: Rc<OwnedFd>,
    dest: PathBuf,
    /// The last parent resolved (tar entries come grouped by directory): its path and fd.
    /// Shared (`Rc`) so a caller can hold a parent while the tree changes.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories whose times to set at the end, after all their children are written.
    dir_times: Vec<(Vec<u8>, (i64, u32))>,
}

impl Tree {
    /// Open `dest`, the caller's existing directory.
    pub(super) fn open(dest: &Path) -> Result<Tree> {
        let root = rfs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open unpack destination", dest)?;
        Ok(Tree {
            root: Rc::new(root),
            dest: dest.to_owned(),
            cache: None,
            dir_times: Vec::new(),
        })
    }

    /// Resolve `path` (relative, normalized) inside the root, following symlinks within it.
    fn resolve(&self, path: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let mut tries = 0;
        loop {
            match rfs::openat2(
                &*self.root,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
                r => return r,
            }
        }
    }

    /// Error for a failed resolution of `parent` for `entry`.
    fn parent_error(&self, what: &str, parent: &[u8], entry: &[u8], e: Errno) -> Error {
        match e {
            Errno::NOSYS => Error::precondition(format!(
                "entry {}: openat2 is not available (Linux 5.6 or later is needed to unpack safely)",
                show(entry).display()
            )),
            Errno::NOTDIR | Errno::LOOP | Errno::NOENT => Error::invalid(format!(
                "entry {}: {what} {:?} is not a directory inside the layer ({})",
                show(entry).display(),
                show(parent),
                std::io::Error::from(e)
            )),
            e => Error::io(what, &self.dest.join(show(parent)), e.into())
                .context(format!("entry {}", show(entry).display())),
        }
    }

    /// Walk `parent` from the root, making each missing component a directory.
    fn create_parents(&self, parent: &[u8], entry: &[u8]) -> Result<OwnedFd> {
        let mut dir: Option<OwnedFd> = None;
        let mut end = 0;
        while end < parent.len() {
            let start = if end == 0 { 0 } else { end + 1 };
            end = parent[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(parent.len(), |i| start + i);
            let prefix = &parent[..end];
            let name = &parent[start..end];
            let flags = OFlags::PATH | OFlags::DIRECTORY;
            let fd = match self.resolve(prefix, flags) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let at = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
                    match rfs::mkdirat(at, name, Mode::from_raw_mode(IMPLICIT_DIR_MODE)) {
                        // EEXIST: a dangling symlink is there; resolving again reports it.
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(self.parent_error("create directory", prefix, entry, e))
                        }
                    }
                    let fd = self
                        .resolve(prefix, flags)
                        .map_err(|e| self.parent_error("parent directory", prefix, entry, e))?;
                    // mkdirat's mode went through the process umask, which is not ours to
                    // change: set the mode explicitly, through a real fd of the new dir.
                    let real = rfs::openat(
                        &fd,
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .at("open directory", &self.dest.join(show(prefix)))?;
                    rfs::fchmod(&real, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                        .at("chmod directory", &self.dest.join(show(prefix)))?;
                    fd
                }
                Err(e) => return Err(self.parent_error("parent directory", prefix, entry, e)),
            };
            dir = Some(fd);
        }
        dir.ok_or_else(|| Error::internal("create_parents called with an empty path"))
    }

    /// Make room for a new entry `name` in `dir`: nothing to do when it is absent; an
    /// existing directory is kept when `keep_dir` (the entry is a directory too), removed
    /// with its content otherwise; anything else is unlinked. Returns whether a directory
    /// was kept.
    pub(super) fn clear(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
        entry: &[u8],
    ) -> Result<bool> {
        let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.entry_io("stat", entry, e)),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir && keep_dir {
            return Ok(true);
        }
        if is_dir {
            remove_all(dir, name).map_err(|e| self.entry_io("remove directory", entry, e))?;
        } else {
            rfs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| self.entry_io("remove", entry, e))?;
        }
        // A cached parent may have been (or gone through) what was just removed.
        self.cache = None;
        Ok(false)
    }

    /// Run `make` to create `name` in `dir`; when an earlier entry left something there
    /// (EEXIST), clear it as [`Tree::clear`] does and run `make` again. With `keep_dir`, a
    /// directory there is kept instead and `None` returned. Creating first, rather than
    /// looking first, saves a lookup per entry: in a layer, names are nearly always new.
    fn create<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
        path: &[u8],
        what: &str,
        mut make: impl FnMut() -> rustix::io::Result<T>,
    ) -> Result<Option<T>> {
        match make() {
            Ok(made) => return Ok(Some(made)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(self.entry_io(what, path, e)),
        }
        if self.clear(dir, name, keep_dir, path)? {
            return Ok(None);
        }
        make().map(Some).map_err(|e| self.entry_io(what, path, e))
    }

    /// An I/O error on entry `entry`.
    pub(super) fn entry_io(&self, what: &str, entry: &[u8], e: Errno) -> Error {
        let err = Error::io(what, &self.dest.join(show(entry)), e.into());
        // A name or symlink target the kernel finds too long is the layer's fault.
        if e == Errno::NAMETOOLONG {
            err.with_kind(crate::error::ErrorKind::InvalidArgument)
        } else {
            err
        }
    }

    /// Owner, then mode (chown clears setuid/setgid), then xattrs (chown also clears
    /// security.capability), through an fd of the object itself.
    fn fd_meta(&self, fd: &OwnedFd, path: &[u8], meta: &Meta<'_>) -> Result<()> {
        rfs::fchown(fd, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| self.entry_io("chown", path, e))?;
        rfs::fchmod(fd, meta.perms()).map_err(|e| self.entry_io("chmod", path, e))?;
        for &(name, value) in meta.xattrs {
            let r = rfs::fsetxattr(fd, name, value, XattrFlags::empty());
            self.xattr_result(r, name, path)?;
        }
        Ok(())
    }

    /// Errors the filesystem gives for xattrs it cannot hold (ENOTSUP; EPERM for user.* on
    /// symlinks and devices) are logged and skipped, as containerd does; others fail.
    fn xattr_result(&self, r: rustix::io::Result<()>, name: &[u8], path: &[u8]) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(Errno::NOTSUP | Errno::PERM) => {
                tracing::warn!(
                    entry = %show(path).display(),
                    xattr = %String::from_utf8_lossy(name),
                    "xattr not supported here, skipped"
                );
                Ok(())
            }
            Err(e) => Err(self
                .entry_io("set xattr", path, e)
                .context(format!("xattr {}", String::from_utf8_lossy(name)))),
        }
    }

    /// An O_PATH fd of `name` in `dir` (never of a symlink: O_NOFOLLOW), checked with
    /// `is_it` to be what was just made there: opening a device or fifo for real would run
    /// its driver or block.
    fn path_fd(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        what: &str,
        is_it: impl Fn(&rfs::Stat) -> bool,
    ) -> Result<OwnedFd> {
        let fd = rfs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.entry_io(&format!("open {what}"), path, e))?;
        let st = rfs::fstat(&fd).map_err(|e| self.entry_io("stat", path, e))?;
        if !is_it(&st) {
            return Err(Error::internal(format!(
                "entry {}: {what} changed while being created",
                show(path).display()
            )));
        }
        Ok(fd)
    }

    /// Set the mode of the inode `fd` (an O_PATH fd) holds, through /proc; after chown,
    /// which clears setuid and setgid.
    fn chmod_through(&self, fd: &OwnedFd, path: &[u8], meta: &Meta<'_>) -> Result<()> {
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
        rfs::chmod(proc.as_str(), meta.perms()).map_err(|e| self.entry_io("chmod", path, e))
    }

    /// Owner, xattrs and times of `name` in `dir`, none of which follows a symlink.
    fn at_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        rfs::chownat(
            dir,
            name,
            Some(meta.uid()),
            Some(meta.gid()),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.entry_io("chown", path, e))?;
        if !meta.xattrs.is_empty() {
            // No fd can carry xattrs for a symlink or a node we must not open: lsetxattr,
            // which does not follow the last component, on a path whose directory part is
            // our own resolved fd.
            let mut at =
                format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(&dir)).into_bytes();
            at.extend_from_slice(name);
            for &(xname, value) in meta.xattrs {
                let r = rfs::lsetxattr(at.as_slice(), xname, value, XattrFlags::empty());
                self.xattr_result(r, xname, path)?;
            }
        }
        rfs::utimensat(
            dir,
            name,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.entry_io("set times of", path, e))
    }
}

/// Remove `name` in `dir` and, if a directory, everything under it, never following a
/// symlink (each level is opened O_NOFOLLOW | O_DIRECTORY).
fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let fd = match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR | Errno::LOOP) => return rfs::unlinkat(dir, name, AtFlags::empty()),
        Err(e) => return Err(e),
    };
    // Read the names first: unlinking while reading a directory may skip entries.
    let mut children = Vec::new();
    for child in rfs::Dir::read_from(&fd)? {
        let child = child?;
        let n = child.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push((child.file_name().to_owned(), child.file_type()));
        }
    }
    for (child, kind) in children {
        match kind {
            FileType::Directory | FileType::Unknown => remove_all(fd.as_fd(), child.to_bytes())?,
            _ => rfs::unlinkat(&fd, child.as_c_str(), AtFlags::empty())?,
        }
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Whether `chunk` is all zero bytes; checked in blocks so that data stops the scan early
/// while each block's check stays vectorizable.
fn is_zero(chunk: &[u8]) -> bool {
    chunk
        .chunks(256)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

impl super::Sink for Tree {
    type Dir = Rc<OwnedFd>;

    /// The directory `parent` (relative, normalized, empty for the root), created with
    /// mode 0755 where missing; symlinks on the way are followed inside the root only.
    fn parent(&mut self, parent: &[u8], entry: &[u8]) -> Result<Rc<OwnedFd>> {
        if parent.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some((key, fd)) = &self.cache {
            if key.as_slice() == parent {
                return Ok(fd.clone());
            }
        }
        let fd = match self.resolve(parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.create_parents(parent, entry)?,
            Err(e) => return Err(self.parent_error("parent directory", parent, entry, e)),
        };
        let fd = Rc::new(fd);
        // Reuse the key's allocation when there is one.
        let mut key = self.cache.take().map(|(k, _)| k).unwrap_or_default();
        key.clear();
        key.extend_from_slice(parent);
        self.cache = Some((key, fd.clone()));
        Ok(fd)
    }

    /// Resolve the directory of hardlink target `target` (`parent` is its directory part)
    /// without creating anything.
    fn target_parent(&mut self, parent: &[u8], target: &[u8], entry: &[u8]) -> Result<Rc<OwnedFd>> {
        let at = if parent.is_empty() { &b"."[..] } else { parent };
        self.resolve(at, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| match e {
                Errno::NOENT | Errno::NOTDIR => Error::invalid(format!(
                    "hardlink {}: target {} is not in the layer",
                    show(entry).display(),
                    show(target).display()
                )),
                e => self.parent_error("hardlink target directory", parent, entry, e),
            })
            .map(Rc::new)
    }

    /// Mark directory `dir` opaque for overlayfs (`.wh..wh..opq`).
    fn opaque(&mut self, dir: &Rc<OwnedFd>, path: &[u8]) -> Result<()> {
        let dir = dir.as_fd();
        let fd = rfs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.entry_io("open directory", path, e))?;
        rfs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", XattrFlags::empty())
            .map_err(|e| self.entry_io("set trusted.overlay.opaque on", path, e))
    }

    /// Apply `meta` to the root itself (the `./` entry).
    fn root_meta(&mut self, meta: &Meta<'_>) -> Result<()> {
        self.fd_meta(&self.root, b".", meta)?;
        self.dir_times.push((Vec::new(), meta.mtime));
        Ok(())
    }

    /// Create directory `name` in `dir` (or keep the directory there) and apply `meta`; its
    /// times are set by `finish`. `path` is the entry's normalized path.
    fn directory(
        &mut self,
        dir: &Rc<OwnedFd>,
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        let dir = dir.as_fd();
        self.create(dir, name, true, path, "create directory", || {
            rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
        })?;
        // O_NOFOLLOW | O_DIRECTORY: this is the directory itself, never a symlink's target.
        let fd = rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.entry_io("open directory", path, e))?;
        self.fd_meta(&fd, path, meta)?;
        self.dir_times.push((path.to_vec(), meta.mtime));
        Ok(())
    }

    /// Create regular file `name` in `dir` from `content` (exactly `size` bytes, through
    /// `buf`), then apply `meta`. Runs of zeros become holes.
    fn file(
        &mut self,
        dir: &Rc<OwnedFd>,
        name: &[u8],
        path: &[u8],
        content: &mut dyn Read,
        size: u64,
        buf: &mut [u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        let dir = dir.as_fd();
        // O_EXCL | O_NOFOLLOW: a file is only ever created, never opened through a link.
        let fd = self
            .create(dir, name, false, path, "create file", || {
                rfs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
            })?
            .ok_or_else(|| Error::internal("a file entry kept a directory"))?;
        let mut file = File::from(fd);
        let shown = self.dest.join(show(path));
        let mut holes = false;
        super::copy_content(content, buf, size, path, |chunk| {
            if is_zero(chunk) {
                file.seek(SeekFrom::Current(chunk.len() as i64))
                    .at("seek in", &shown)?;
                holes = true;
            } else {
                file.write_all(chunk).at("write", &shown)?;
            }
            Ok(())
        })?;
        if holes {
            // Seeking past the end does not extend a file: set its length.
            file.set_len(size).at("truncate", &shown)?;
        }
        let fd = OwnedFd::from(file);
        self.fd_meta(&fd, path, meta)?;
        rfs::futimens(&fd, &timestamps(meta.mtime))
            .map_err(|e| self.entry_io("set times of", path, e))
    }

    /// Create symlink `name` -> `target` in `dir`, then apply owner, xattrs and times
    /// without following it (symlinks have no mode of their own on Linux).
    fn symlink(
        &mut self,
        dir: &Rc<OwnedFd>,
        name: &[u8],
        path: &[u8],
        target: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        let dir = dir.as_fd();
        self.create(dir, name, false, path, "create symlink", || {
            rfs::symlinkat(target, dir, name)
        })?;
        self.at_meta(dir, name, path, meta)
    }

    /// Create a device node or fifo `name` in `dir` and apply `meta`. `whiteout` nodes
    /// (0/0 character devices) get mode 0 and no xattrs or times, like overlayfs's own.
    fn node(
        &mut self,
        dir: &Rc<OwnedFd>,
        name: &[u8],
        path: &[u8],
        kind: FileType,
        dev: Dev,
        meta: &Meta<'_>,
        whiteout: bool,
    ) -> Result<()> {
        let dir = dir.as_fd();
        if whiteout {
            // The layer's directory started empty: what is there, this layer made.
            return match rfs::mknodat(dir, name, kind, Mode::empty(), dev) {
                Err(rustix::io::Errno::EXIST) => Err(super::whiteout_of_own_entry(path)),
                Err(e) => Err(self.entry_io("create whiteout", path, e)),
                Ok(()) => rfs::chownat(
                    dir,
                    name,
                    Some(meta.uid()),
                    Some(meta.gid()),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| self.entry_io("chown", path, e)),
            };
        }
        self.clear(dir, name, false, path)?;
        rfs::mknodat(dir, name, kind, meta.perms(), dev)
            .map_err(|e| self.entry_io("create node", path, e))?;
        // mknodat's mode went through the umask: chmod after the owner is set.
        let fd = self.path_fd(dir, name, path, "node", |st| {
            FileType::from_raw_mode(st.st_mode) == kind
        })?;
        self.at_meta(dir, name, path, meta)?;
        self.chmod_through(&fd, path, meta)
    }

    /// Hard link `name` in `dir` to `target_name` in `target_dir` (the link itself when it
    /// is a symlink: no AT_SYMLINK_FOLLOW), then apply `meta` to the inode they share. The
    /// target must exist and not be a directory.
    fn hardlink(
        &mut self,
        target_dir: &Rc<OwnedFd>,
        target_name: &[u8],
        target_path: &[u8],
        dir: &Rc<OwnedFd>,
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        let target_dir = target_dir.as_fd();
        let dir = dir.as_fd();
        let target = match rfs::statat(target_dir, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => {
                return Err(Error::invalid(format!(
                    "hardlink {}: target {} is not in the layer",
                    show(path).display(),
                    show(target_path).display()
                )))
            }
            Err(e) => return Err(self.entry_io("stat hardlink target", target_path, e)),
        };
        if FileType::from_raw_mode(target.st_mode) == FileType::Directory {
            return Err(Error::invalid(format!(
                "hardlink {}: target {} is a directory",
                show(path).display(),
                show(target_path).display()
            )));
        }
        // A link to itself (same inode already there) needs no new link.
        let linked = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_dev == target.st_dev && st.st_ino == target.st_ino);
        if !linked {
            self.clear(dir, name, false, path)?;
            rfs::linkat(target_dir, target_name, dir, name, AtFlags::empty()).map_err(
                |e| match e {
                    // The target was there a moment ago and nothing else writes here:
                    // clear() took it away, the link replacing a directory that holds its
                    // own target (`d/f`, then `d` linked to `d/f`). The layer's fault.
                    Errno::NOENT => Error::invalid(format!(
                        "hardlink {}: target {} is inside the directory the link replaces",
                        show(path).display(),
                        show(target_path).display()
                    )),
                    e => self.entry_io("create hardlink", path, e),
                },
            )?;
        }
        if FileType::from_raw_mode(target.st_mode) == FileType::Symlink {
            // Symlinks have no mode of their own on Linux.
            return self.at_meta(dir, name, path, meta);
        }
        let fd = self.path_fd(dir, name, path, "hardlink", |st| {
            (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)
        })?;
        self.at_meta(dir, name, path, meta)?;
        self.chmod_through(&fd, path, meta)
    }

    /// Set the times of the directories, now that nothing more is written into them.
    /// A directory a later entry replaced or removed is skipped.
    fn finish(mut self) -> Result<()> {
        self.cache = None;
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let times = timestamps(mtime);
            let r = if path.is_empty() {
                rfs::futimens(&*self.root, &times)
            } else {
                match self.resolve(&path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW) {
                    Ok(fd) => rfs::futimens(&fd, &times),
                    Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                    Err(e) => Err(e),
                }
            };
            r.map_err(|e| self.entry_io("set times of", &path, e))?;
        }
        Ok(())
    }
}
