//! The tests' own view of the mount table, and the few mounts tests make themselves.
//!
//! Written apart from the library's `mount` module on purpose: a test that asks imv's own
//! mountinfo reader whether imv mounted something checks the code with itself. These read
//! /proc/self/mountinfo directly, the way `findmnt` does, and panic on what a test cannot
//! go on from.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::{mount, mount_bind_recursive, unmount, MountFlags, UnmountFlags};

/// One line of /proc/self/mountinfo, the fields tests look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The directory of the filesystem at the root of this mount (`/` unless a bind).
    pub root: PathBuf,
    /// Per-mount options: `ro`, `nosuid`, `nodev`, ...
    pub mount_options: String,
    /// The filesystem type: `overlay`, `tmpfs`, `erofs`, ...
    pub fs_type: String,
    /// The mount source.
    pub source: String,
    /// The filesystem's (superblock) options: `lowerdir=...`, `uidmap=...`, ...
    pub super_options: String,
}

/// Every mount in this mount namespace, in mount order.
pub fn all() -> Vec<MountPoint> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
    text.lines()
        .map(|l| parse(l).unwrap_or_else(|| panic!("mountinfo line {l:?}")))
        .collect()
}

/// The mounts at `path` or below it (`path` made absolute and its symlinks resolved, as
/// the kernel spells mount points).
pub fn under(path: &Path) -> Vec<MountPoint> {
    let Ok(path) = fs::canonicalize(path) else {
        return Vec::new();
    };
    all()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&path))
        .collect()
}

/// Whether something is mounted exactly at `path`. False for a path that does not exist.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(path) = fs::canonicalize(path) else {
        return false;
    };
    all().iter().any(|m| m.mount_point == path)
}

/// Unmount everything at or below `path`, deepest first, detached (a test's cleanup:
/// nothing it mounted may outlive it). Errors are ignored: what is left shows up in the
/// next assertion or the next run's temp dir, never outside it.
pub fn unmount_under(path: &Path) {
    let mut mounts = under(path);
    mounts.reverse();
    for m in mounts {
        let _ = unmount(&m.mount_point, UnmountFlags::DETACH);
    }
}

/// Mount a fresh tmpfs of `size` (tmpfs's syntax: `4m`) at `target`.
pub fn tmpfs(target: &Path, size: &str) -> io::Result<()> {
    let data = CString::new(format!("size={size}")).map_err(io::Error::other)?;
    mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )?;
    Ok(())
}

/// Bind-mount `source` at `target`, with what is mounted below `source` (`rbind`).
pub fn bind(source: &Path, target: &Path) -> io::Result<()> {
    mount_bind_recursive(source, target)?;
    Ok(())
}

/// Whether this host runs SELinux (its filesystem is mounted where libselinux looks).
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

fn parse(line: &str) -> Option<MountPoint> {
    // id parent major:minor root mount-point options [optional fields...] - type source super
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.splitn(3, ' ').collect();
    Some(MountPoint {
        root: unescape(left.get(3)?),
        mount_point: unescape(left.get(4)?),
        mount_options: left.get(5)?.to_string(),
        fs_type: right.first()?.to_string(),
        source: right.get(1)?.to_string(),
        super_options: right.get(2).copied().unwrap_or("").to_string(),
    })
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal.
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_line_with_optional_fields_and_escapes() {
        let m = parse(
            "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.mount_point, Path::new("/mnt/a b"));
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.mount_options, "rw,noatime");
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.super_options, "rw,errors=continue");
    }

    #[test]
    fn the_root_is_a_mountpoint() {
        assert!(is_mountpoint(Path::new("/")));
        assert!(!is_mountpoint(Path::new("/no/such/path/here")));
    }
}
