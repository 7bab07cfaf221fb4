//! `/proc/self/mountinfo`: what is mounted where, as the kernel sees it.
//!
//! Format (proc(5)), one mount per line:
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! id par maj:min root mount-point mount-options optional... - fs-type source super-options
//! ```
//!
//! The kernel escapes space, tab, newline and backslash in paths and sources as `\NNN`
//! (octal), so a path can never contain the field separator.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Where the kernel publishes the mount table of the caller's mount namespace.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount ID (unique in the namespace while mounted; may be reused afterwards).
    pub id: u64,
    /// Mount ID of the parent mount (itself for the root of the namespace).
    pub parent: u64,
    /// Major number of the device the filesystem lives on (`st_dev`).
    pub major: u32,
    /// Minor number of the device the filesystem lives on (`st_dev`).
    pub minor: u32,
    /// The directory of the filesystem that is the root of this mount (`/` unless bind).
    pub root: PathBuf,
    /// Where it is mounted, relative to the caller's root.
    pub mount_point: PathBuf,
    /// Per-mount (VFS) options: `ro`, `nosuid`, `nodev`, `relatime`, ...
    pub mount_options: String,
    /// Optional fields (`shared:N`, `master:N`, `propagate_from:N`, `unbindable`).
    pub optional: Vec<String>,
    /// Filesystem type (`overlay`, `ext4`, `tmpfs`, ...).
    pub fs_type: String,
    /// Filesystem-specific source (`/dev/sda1`, `overlay`, `tmpfs`, ...).
    pub source: String,
    /// Per-superblock options (`lowerdir=...`, `size=...`, ...).
    pub super_options: String,
}

// What the mount tests ask of a line.
#[cfg(test)]
impl MountInfo {
    /// Whether the per-mount options contain `option` exactly (`ro`, `nosuid`, ...).
    pub fn has_mount_option(&self, option: &str) -> bool {
        self.mount_options.split(',').any(|o| o == option)
    }

    /// Whether the per-superblock options contain `option` exactly, or as `option=...`
    /// when `option` has no `=` itself.
    pub fn has_super_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| {
            o == option
                || (!option.contains('=') && o.split_once('=').is_some_and(|(k, _)| k == option))
        })
    }
}

/// All mounts of the caller's mount namespace, in the kernel's order (a mount stacked
/// on another mountpoint comes after the one it hides).
pub fn read() -> Result<Vec<MountInfo>> {
    let path = Path::new(MOUNTINFO);
    let data = std::fs::read(path).at("read", path)?;
    parse(&data).map_err(|e| e.context(format!("parse {MOUNTINFO}")))
}

/// The mounts whose mountpoint is `path` or lies under it (component-wise: `/a/bc` is
/// not under `/a/b`), in the kernel's order.
pub fn under(path: &Path) -> Result<Vec<MountInfo>> {
    under_resolved(&absolute(path)?)
}

/// [`under`] for a path already spelled as mountinfo spells it (no resolution here).
pub(crate) fn under_resolved(path: &Path) -> Result<Vec<MountInfo>> {
    Ok(read()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(path))
        .collect())
}

/// The topmost mount whose mountpoint is exactly `path`, if any. When mounts are stacked
/// on one mountpoint this is the one a lookup of `path` reaches.
pub fn lookup(path: &Path) -> Result<Option<MountInfo>> {
    let path = absolute(path)?;
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Parse the contents of a mountinfo file.
pub fn parse(data: &[u8]) -> Result<Vec<MountInfo>> {
    data.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(parse_line)
        .collect()
}

/// Parse one mountinfo line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<MountInfo> {
    let bad = |why: &str| {
        Error::internal(format!(
            "malformed mountinfo line ({why}): {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let mut fields = line.split(|&b| b == b' ');
    let mut next = |name: &str| fields.next().ok_or_else(|| bad(&format!("no {name}")));

    let id = number(next("mount ID")?).ok_or_else(|| bad("mount ID"))?;
    let parent = number(next("parent ID")?).ok_or_else(|| bad("parent ID"))?;
    let (major, minor) = std::str::from_utf8(next("major:minor")?)
        .ok()
        .and_then(|s| s.split_once(':'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| bad("major:minor"))?;
    let root = PathBuf::from(OsString::from_vec(unescape(next("root")?)));
    let mount_point = PathBuf::from(OsString::from_vec(unescape(next("mount point")?)));
    let mount_options = text(next("mount options")?);
    let mut optional = Vec::new();
    loop {
        let field = next("'-' separator")?;
        if field == b"-" {
            break;
        }
        optional.push(text(field));
    }
    let fs_type = text(&unescape(next("filesystem type")?));
    let source = text(&unescape(next("source")?));
    // Older kernels may leave super options out; treat that as none.
    let super_options = fields
        .next()
        .map(|f| text(&unescape(f)))
        .unwrap_or_default();
    Ok(MountInfo {
        id,
        parent,
        major,
        minor,
        root,
        mount_point,
        mount_options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

fn number(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

/// Undo the kernel's `\NNN` octal escapes (`\040` is a space). Anything else is kept
/// as is, so a stray backslash does not lose data.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() && is_octal3(&field[i + 1..i + 4]) {
            let d = &field[i + 1..i + 4];
            out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

fn is_octal3(d: &[u8]) -> bool {
    // The first digit is at most 3: a byte is at most \377.
    matches!(d, [a, b, c] if (b'0'..=b'3').contains(a) && (b'0'..=b'7').contains(b) && (b'0'..=b'7').contains(c))
}

/// Like [`absolute`], but a symlink in the last component is not followed: the result
/// names the link itself, under which nothing can be mounted. Used where acting on the
/// link's destination could touch mounts that are not the caller's (unmounting).
pub(crate) fn absolute_nofollow(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).at("make absolute", path)?;
    let is_link = std::fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink());
    match (is_link, abs.parent(), abs.file_name()) {
        (true, Some(parent), Some(name)) => Ok(absolute(parent)?.join(name)),
        _ => absolute(&abs),
    }
}

/// `path` as mountinfo would spell it: absolute and with symlinks resolved. For a path
/// that does not exist (nothing can be mounted on it) the longest existing ancestor is
/// resolved and the rest appended, after folding `.` and `..` lexically.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => return Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("resolve", path, e)),
    }
    let abs = std::path::absolute(path).at("make absolute", path)?;
    let mut folded = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => folded.push(n),
            Component::ParentDir => {
                folded.pop();
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    let mut existing = folded.as_path();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut p) => {
                p.extend(missing.iter().rev());
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("resolve", existing, e)),
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            // "/" always exists; be safe anyway.
            _ => return Ok(folded.clone()),
        }
    }
}

/// The mounts of every mount namespace on the host (each read once, through one of its
/// processes), with the pid it was read through. Namespaces whose processes go meanwhile,
/// or that this process may not read, are skipped. For questions a single namespace cannot
/// answer, such as "does a container still hold this directory?".
pub fn all_namespaces() -> Vec<(i32, Vec<MountInfo>)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if !seen.insert((ns.dev(), ns.ino())) {
            continue;
        }
        if let Ok(data) = std::fs::read(format!("/proc/{pid}/mountinfo")) {
            if let Ok(mounts) = parse(&data) {
                out.push((pid, mounts));
            }
        }
    }
    out
}
