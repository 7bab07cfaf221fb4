//! The new mount API (Linux ≥ 5.2): a filesystem context from `fsopen(2)`, configured
//! one parameter at a time with `fsconfig(2)`, turned into a detached mount with
//! `fsmount(2)`; `mount_setattr(2)` on a detached mount; `move_mount(2)` to attach it.
//!
//! A detached mount is only an fd: if anything fails before `move_mount`, closing the fd
//! unmounts it, so nothing half-configured is ever visible at the target.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_fd, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen,
    move_mount, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
};

use super::options::unquote;

/// The longest string value `fsconfig(2)` copies in (`strndup_user(value, 256)`).
pub(crate) const FSCONFIG_MAX_STRING: usize = 255;

/// An open filesystem context (the fd `fsopen(2)` returns).
pub(crate) struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    /// `fsopen(fs_type, FSOPEN_CLOEXEC)`.
    pub(crate) fn open(fs_type: &str) -> Result<Self, Errno> {
        Ok(FsContext {
            fd: fsopen(fs_type, FsOpenFlags::FSOPEN_CLOEXEC)?,
        })
    }

    /// `FSCONFIG_SET_STRING key=value`.
    pub(crate) fn set_string(&self, key: &str, value: &str) -> Result<(), Errno> {
        fsconfig_set_string(&self.fd, key, value)
    }

    /// `FSCONFIG_SET_FLAG key`.
    pub(crate) fn set_flag(&self, key: &str) -> Result<(), Errno> {
        fsconfig_set_flag(&self.fd, key)
    }

    /// A `key[=value]` option as `mount(8)` spells it: a string or a flag. A value in
    /// double quotes is passed without them ([`unquote`]), as libmount does.
    pub(crate) fn set_option(&self, option: &str) -> Result<(), Errno> {
        match option.split_once('=') {
            Some((key, value)) => self.set_string(key, unquote(value)),
            None => self.set_flag(option),
        }
    }

    /// A path parameter (an overlay layer, ...). Paths longer than what `fsconfig` copies
    /// as a string are passed as an open directory fd instead (`FSCONFIG_SET_FD`, which
    /// overlayfs accepts for its layers since Linux 6.13). The fd is opened `O_RDONLY`,
    /// not `O_PATH`: the kernel's `fget` does not take `O_PATH` files.
    pub(crate) fn set_path(&self, key: &str, path: &Path) -> Result<(), Errno> {
        let Some(s) = path.to_str().filter(|s| s.len() <= FSCONFIG_MAX_STRING) else {
            let dir = rustix::fs::open(
                path,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            return fsconfig_set_fd(&self.fd, key, &dir);
        };
        self.set_string(key, s)
    }

    /// `FSCONFIG_CMD_CREATE`: make the superblock.
    pub(crate) fn create(&self) -> Result<(), Errno> {
        fsconfig_create(&self.fd)
    }

    /// `fsmount(2)`: a detached mount of the superblock, with per-mount attributes.
    pub(crate) fn mount(&self, attrs: MountAttrFlags) -> Result<OwnedFd, Errno> {
        fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
    }

    /// What the kernel logged on this context (`e `rrors, `w`arnings, `i`nfo), drained,
    /// joined with `; `. This is where overlayfs says *which* layer it could not resolve.
    pub(crate) fn log(&self) -> String {
        let mut messages = Vec::new();
        let mut buf = [0u8; 1024];
        // The kernel keeps at most a handful of messages per context; bound the loop anyway.
        for _ in 0..32 {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let line = String::from_utf8_lossy(&buf[..n]);
                    let line = line.trim_end();
                    let line = line
                        .strip_prefix("e ")
                        .or_else(|| line.strip_prefix("w "))
                        .or_else(|| line.strip_prefix("i "))
                        .unwrap_or(line);
                    messages.push(line.to_string());
                }
            }
        }
        messages.join("; ")
    }
}

/// `struct mount_attr` of `mount_setattr(2)` (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], ...)` on a (detached) mount:
/// set and clear per-mount attributes and change propagation (0 leaves it alone).
pub(crate) fn set_attributes(
    mount: BorrowedFd<'_>,
    recursive: bool,
    set: MountAttrFlags,
    clear: MountAttrFlags,
    propagation: u64,
) -> Result<(), Errno> {
    if set.is_empty() && clear.is_empty() && propagation == 0 {
        return Ok(());
    }
    mount_setattr(
        mount,
        recursive,
        &MountAttr {
            attr_set: set.bits().into(),
            attr_clr: clear.bits().into(),
            propagation,
            userns_fd: 0,
        },
    )
}

/// [`set_attributes`] setting `MOUNT_ATTR_IDMAP` (with `set`) and the user namespace
/// whose mapping the mount takes (`mount_setattr` needs both in one call).
pub(crate) fn set_attributes_idmapped(
    mount: BorrowedFd<'_>,
    set: MountAttrFlags,
    userns: BorrowedFd<'_>,
) -> Result<(), Errno> {
    mount_setattr(
        mount,
        false,
        &MountAttr {
            attr_set: set.bits().into(),
            attr_clr: 0,
            propagation: 0,
            userns_fd: u64::try_from(userns.as_raw_fd()).map_err(|_| Errno::BADF)?,
        },
    )
}

/// The `mount_setattr(2)` system call on `mount` itself (an empty path). rustix has no
/// wrapper for it, hence libc.
fn mount_setattr(mount: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> Result<(), Errno> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a valid NUL-terminated string, `attr` lives across the call
    // and its size is passed; the kernel only reads from both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
    }
    Ok(())
}

/// `move_mount(2)` a detached mount onto `target`.
pub(crate) fn attach(mount: impl AsFd, target: &Path) -> Result<(), Errno> {
    move_mount(
        mount,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}
