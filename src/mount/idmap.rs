//! Idmapped mounts: a volume for a pod in a user namespace (`hostUsers: false`) shows the
//! image's owners mapped (container 0 is host 100000, ...), done by the kernel at mount
//! time (`mount_setattr` `MOUNT_ATTR_IDMAP` with a user namespace that carries the
//! mapping), not by chowning copies of the layers.
//!
//! A user namespace with a given mapping is had the way containerd has one
//! (core/mount/mount_idmapped_utils_linux.go, `getUsernsFD`): a child process made in a
//! new user namespace that does nothing, its `uid_map` and `gid_map` written from here,
//! `/proc/<pid>/ns/user` opened, the child killed. The child is made with
//! `clone3(CLONE_NEWUSER | CLONE_PIDFD)` and runs no Rust code beyond two raw system calls
//! (`prctl(PR_SET_PDEATHSIG)` and `pause` in a loop): after a fork in a multithreaded host
//! (containerd through cgo, with the Go runtime's threads) only async-signal-safe calls
//! are allowed, and these are. The pidfd makes sure the process whose namespace is opened
//! is the one made (a pid can be reused). A few namespace fds are kept, by mapping.
//!
//! An idmapped bind is a clone of the layer directory (`open_tree(OPEN_TREE_CLONE)`) with
//! the idmap and read-only set, attached at the target. An overlay gets an idmapped clone
//! of each lower directory, attached in a staging directory (overlayfs takes its layers by
//! path), mounted over, then detached: the overlay keeps its own references to them.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;
use rustix::mount::{open_tree, MountAttrFlags, OpenTreeFlags, UnmountFlags};

use super::fscontext::{attach, set_attributes_idmapped, FsContext};
use super::overlay::Overlay;
use super::{errno_error, MountSpec};
use crate::error::{Error, Result};
use crate::locks::lock;

/// Lines of a `uid_map` or `gid_map` the kernel accepts (since Linux 4.15).
pub const MAX_MAPPING_LINES: usize = 340;

/// One line of a mapping: `len` IDs from `container` inside map to `host` outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// The snapshot label asking for a view whose files show uid mapped (containerd's
/// `snapshots.LabelSnapshotUIDMapping`); snapshotters that declare `remap-ids` honour it.
pub const LABEL_UID_MAPPING: &str = "containerd.io/snapshot/uidmapping";
/// The same for gids (`snapshots.LabelSnapshotGIDMapping`).
pub const LABEL_GID_MAPPING: &str = "containerd.io/snapshot/gidmapping";

/// The user and group ID mappings of a volume (CRI `uidMappings`, `gidMappings`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdMap {
    pub uid: Vec<IdRange>,
    pub gid: Vec<IdRange>,
}

impl IdMap {
    /// Check the mapping as the kernel will, so that a bad one is an InvalidArgument that
    /// names it before anything is made: both lists present, at most
    /// [`MAX_MAPPING_LINES`] lines each, no empty range, no range past 2^32, and no two
    /// ranges overlapping inside or outside.
    pub fn validate(&self) -> Result<()> {
        for (what, ranges) in [("uid", &self.uid), ("gid", &self.gid)] {
            if ranges.is_empty() {
                return Err(Error::invalid(format!(
                    "{what} mappings are empty: an idmapped volume needs both uid and gid mappings"
                )));
            }
            if ranges.len() > MAX_MAPPING_LINES {
                return Err(Error::invalid(format!(
                    "{} {what} mappings: the kernel takes at most {MAX_MAPPING_LINES}",
                    ranges.len()
                )));
            }
            for r in ranges {
                let fits = |start: u32| u64::from(start) + u64::from(r.len) <= 1 << 32;
                if r.len == 0 || !fits(r.container) || !fits(r.host) {
                    return Err(Error::invalid(format!(
                        "{what} mapping {r:?}: an empty range, or one past 2^32"
                    )));
                }
            }
            for side in ["container", "host"] {
                let mut spans: Vec<(u64, u64)> = ranges
                    .iter()
                    .map(|r| {
                        let start = u64::from(if side == "host" { r.host } else { r.container });
                        (start, start + u64::from(r.len))
                    })
                    .collect();
                spans.sort_unstable();
                if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
                    return Err(Error::invalid(format!(
                        "{what} mappings overlap on the {side} side: IDs {}..{} and {}..{}",
                        w[0].0, w[0].1, w[1].0, w[1].1
                    )));
                }
            }
        }
        Ok(())
    }

    /// The snapshot labels that ask a snapshotter for a view with this mapping, as
    /// containerd's CRI plugin sets them for an image volume of a pod in a user namespace
    /// (`WithUserNSRemapperLabels`): every line, `container:host:length`, comma-separated.
    pub fn remap_labels(&self) -> [(String, String); 2] {
        [
            (LABEL_UID_MAPPING.to_owned(), Self::joined(&self.uid)),
            (LABEL_GID_MAPPING.to_owned(), Self::joined(&self.gid)),
        ]
    }

    /// The mapping `uidmap=` and `gidmap=` options carry (the labels' values, as
    /// containerd's snapshotters put them on a remapped view's mounts), taken off
    /// `mounts`; None when there are none. Both or neither, the same on every mount, and
    /// valid (see [`validate`](Self::validate)): InvalidArgument naming the option otherwise.
    pub fn take_from_options(mounts: &mut [MountSpec]) -> Result<Option<IdMap>> {
        let mut found: Option<IdMap> = None;
        for spec in mounts.iter_mut() {
            let (mut uid, mut gid) = (None, None);
            let mut bad = None;
            spec.options.retain(|o| {
                let (slot, value) = if let Some(v) = o.strip_prefix("uidmap=") {
                    (&mut uid, v)
                } else if let Some(v) = o.strip_prefix("gidmap=") {
                    (&mut gid, v)
                } else {
                    return true;
                };
                match Self::parse_ranges(value) {
                    Ok(ranges) if slot.is_none() => *slot = Some(ranges),
                    Ok(_) => bad = Some(Error::invalid(format!("{o:?}: given twice"))),
                    Err(e) => bad = Some(e.context(format!("mount option {o:?}"))),
                }
                false
            });
            if let Some(e) = bad {
                return Err(e);
            }
            let map = match (uid, gid) {
                (None, None) => continue,
                (Some(uid), Some(gid)) => IdMap { uid, gid },
                _ => {
                    return Err(Error::invalid(format!(
                        "{} mount of {:?}: uidmap= and gidmap= go together",
                        spec.kind, spec.source
                    )))
                }
            };
            map.validate()?;
            match &found {
                Some(other) if *other != map => {
                    return Err(Error::invalid(format!(
                        "the mounts of one volume carry different mappings: {other:?} and {map:?}"
                    )))
                }
                _ => found = Some(map),
            }
        }
        Ok(found)
    }

    fn joined(ranges: &[IdRange]) -> String {
        let lines: Vec<String> = ranges
            .iter()
            .map(|r| format!("{}:{}:{}", r.container, r.host, r.len))
            .collect();
        lines.join(",")
    }

    /// `container:host:length` lines, comma-separated (containerd's `IDMap.Unmarshal`).
    fn parse_ranges(value: &str) -> Result<Vec<IdRange>> {
        value
            .split(',')
            .map(|line| {
                let bad = || {
                    Error::invalid(format!(
                        "mapping {line:?}: not container:host:length in decimal"
                    ))
                };
                let fields: Vec<&str> = line.split(':').collect();
                let [container, host, len] = fields[..] else {
                    return Err(bad());
                };
                let number = |f: &str| f.parse::<u32>().map_err(|_| bad());
                Ok(IdRange {
                    container: number(container)?,
                    host: number(host)?,
                    len: number(len)?,
                })
            })
            .collect()
    }

    /// `ranges` as `/proc/<pid>/uid_map` takes them: one `inside outside length` line each.
    fn proc_lines(ranges: &[IdRange]) -> String {
        ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
            .collect()
    }
}

/// The kernel's `struct clone_args`, up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A new user namespace carrying `map` (see the module's documentation).
fn new_userns(map: &IdMap) -> Result<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_NEWUSER | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this thread's
    // memory and stack. It runs only the two raw system calls below and never returns
    // from this block (no destructor, no allocation, no lock: async-signal-safe), until
    // the parent kills it; the parent goes on as after any system call. `args` outlives
    // the call and its size is passed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // The child.
        // SAFETY: plain system calls with integer arguments (both of them).
        unsafe {
            libc::syscall(
                libc::SYS_prctl,
                libc::c_long::from(libc::PR_SET_PDEATHSIG),
                libc::SIGKILL,
            );
            loop {
                libc::syscall(libc::SYS_pause);
            }
        }
    }
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::internal(format!(
            "making a user namespace for an idmapped volume (clone3): {e}"
        )));
    }
    // SAFETY: with CLONE_PIDFD the kernel stored a new file descriptor, ours to own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let result = (|| {
        for (file, ranges) in [("uid_map", &map.uid), ("gid_map", &map.gid)] {
            let path = format!("/proc/{pid}/{file}");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("opening", Path::new(&path), e))?;
            // One write: the kernel takes a map in a single write only.
            let lines = IdMap::proc_lines(ranges);
            f.write_all(lines.as_bytes()).map_err(|e| {
                Error::invalid(format!(
                    "the kernel refused the {file} {:?}: {e}",
                    lines.trim_end()
                ))
            })?;
        }
        let path = format!("/proc/{pid}/ns/user");
        let ns =
            std::fs::File::open(&path).map_err(|e| Error::io("opening", Path::new(&path), e))?;
        // Still our child: the pid was not reused between the clone and the open.
        // SAFETY: a plain system call on a descriptor we own, no pointer but NULL.
        let alive = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if alive != 0 {
            return Err(Error::internal(
                "the process made for a user namespace went away before its namespace was opened",
            ));
        }
        Ok(OwnedFd::from(ns))
    })();
    // SAFETY: as above.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    );
    result
}

/// How many user namespaces [`UserNamespaces`] keeps.
const KEPT_NAMESPACES: usize = 16;

/// User namespaces by mapping, the most recently used kept (a pod's containers share one
/// mapping; the kubelet gives each pod its own).
#[derive(Default)]
pub struct UserNamespaces {
    kept: Mutex<VecDeque<(IdMap, Arc<OwnedFd>)>>,
}

impl UserNamespaces {
    /// A user namespace carrying `map` (validated first).
    pub fn get(&self, map: &IdMap) -> Result<Arc<OwnedFd>> {
        map.validate()?;
        {
            let mut kept = lock(&self.kept);
            if let Some(i) = kept.iter().position(|(m, _)| m == map) {
                let entry = kept.remove(i).expect("found above");
                let fd = Arc::clone(&entry.1);
                kept.push_front(entry);
                return Ok(fd);
            }
        }
        let fd = Arc::new(new_userns(map)?);
        let mut kept = lock(&self.kept);
        kept.push_front((map.clone(), Arc::clone(&fd)));
        kept.truncate(KEPT_NAMESPACES);
        Ok(fd)
    }
}

/// A read-only clone of the directory `dir` with `userns`'s mapping, detached.
fn idmapped_clone(dir: &Path, userns: BorrowedFd<'_>) -> Result<OwnedFd> {
    let tree = open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| Error::io("cloning (open_tree) for an idmapped mount", dir, e.into()))?;
    set_attributes_idmapped(
        tree.as_fd(),
        MountAttrFlags::MOUNT_ATTR_IDMAP | MountAttrFlags::MOUNT_ATTR_RDONLY,
        userns,
    )
    .map_err(|e| match e {
        Errno::INVAL | Errno::PERM | Errno::NOSYS => Error::invalid(format!(
            "{}: its filesystem cannot be idmapped on this kernel ({e})",
            dir.display()
        )),
        e => Error::io("idmapping (mount_setattr)", dir, e.into()),
    })?;
    Ok(tree)
}

/// Mount `spec` (a read-only bind of one directory, or an overlay of lower directories
/// only) at `target` with `userns`'s mapping. `staging` is an empty directory of the
/// caller's for the overlay's idmapped layers while the overlay is made; it is emptied
/// again (the layers detached, their directories removed) whatever happens.
pub fn mount_idmapped(
    spec: &MountSpec,
    target: &Path,
    userns: BorrowedFd<'_>,
    staging: &Path,
) -> Result<()> {
    match spec.kind.as_str() {
        "bind" | "rbind" => {
            let tree = idmapped_clone(Path::new(&spec.source), userns)?;
            attach(&tree, target).map_err(|e| errno_error(spec, target, "move_mount", "", e))
        }
        "overlay" => {
            let overlay = Overlay::parse(&spec.options)?;
            if overlay.upper.is_some() || !overlay.data.is_empty() {
                return Err(Error::invalid(format!(
                    "an idmapped overlay takes lower directories only, not {:?}",
                    spec.options
                )));
            }
            let mut staged: Vec<PathBuf> = Vec::new();
            let result = (|| {
                for (i, lower) in overlay.lower.iter().enumerate() {
                    let tree = idmapped_clone(lower, userns)?;
                    let at = staging.join(i.to_string());
                    std::fs::create_dir(&at).map_err(|e| Error::io("creating", &at, e))?;
                    staged.push(at.clone());
                    attach(&tree, &at)
                        .map_err(|e| Error::io("attaching an idmapped layer at", &at, e.into()))?;
                    crate::crash_points::reached(crate::crash_points::IDMAP_LAYER_STAGED);
                }
                let fs = FsContext::open("overlay")
                    .map_err(|e| errno_error(spec, target, "fsopen", "", e))?;
                for at in &staged {
                    fs.set_path("lowerdir+", at)
                        .map_err(|e| errno_error(spec, target, "lowerdir+", &fs.log(), e))?;
                }
                for option in &overlay.options.fs {
                    fs.set_option(option)
                        .map_err(|e| errno_error(spec, target, option, &fs.log(), e))?;
                }
                fs.create()
                    .map_err(|e| errno_error(spec, target, "create", &fs.log(), e))?;
                let mnt = fs
                    .mount(MountAttrFlags::MOUNT_ATTR_RDONLY)
                    .map_err(|e| errno_error(spec, target, "fsmount", &fs.log(), e))?;
                attach(&mnt, target).map_err(|e| errno_error(spec, target, "move_mount", "", e))
            })();
            for at in staged.iter().rev() {
                // The overlay holds its own references to the layers.
                let _ = rustix::mount::unmount(at, UnmountFlags::DETACH);
                let _ = std::fs::remove_dir(at);
            }
            result
        }
        other => Err(Error::invalid(format!(
            "an idmapped volume of a {other} mount is not supported (bind and overlay are)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(uid: &[(u32, u32, u32)], gid: &[(u32, u32, u32)]) -> IdMap {
        let r = |v: &[(u32, u32, u32)]| {
            v.iter()
                .map(|&(container, host, len)| IdRange {
                    container,
                    host,
                    len,
                })
                .collect()
        };
        IdMap {
            uid: r(uid),
            gid: r(gid),
        }
    }

    #[test]
    fn mappings_are_checked_as_the_kernel_will() {
        let ok = map(&[(0, 100_000, 65_536)], &[(0, 100_000, 65_536)]);
        ok.validate().unwrap();
        map(&[(0, 100_000, 1), (1, 200_000, 10)], &[(0, 5, 1)])
            .validate()
            .unwrap();
        for (bad, says) in [
            (map(&[], &[(0, 1, 1)]), "uid mappings are empty"),
            (map(&[(0, 1, 1)], &[]), "gid mappings are empty"),
            (map(&[(0, 1, 0)], &[(0, 1, 1)]), "empty range"),
            (map(&[(0, u32::MAX, 2)], &[(0, 1, 1)]), "past 2^32"),
            (
                map(&[(0, 10, 5), (3, 100, 5)], &[(0, 1, 1)]),
                "overlap on the container side",
            ),
            (
                map(&[(0, 10, 5), (100, 12, 5)], &[(0, 1, 1)]),
                "overlap on the host side",
            ),
            (
                map(&[(0, 1, 1)], &vec![(0, 0, 1); MAX_MAPPING_LINES + 1]),
                "at most 340",
            ),
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::InvalidArgument);
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    /// Held by the tests that make user namespaces: one counts this process's children,
    /// which another test's namespace process would be, for a moment.
    static MAKING_NAMESPACES: Mutex<()> = Mutex::new(());

    /// The children of this process (all threads), from /proc.
    fn children() -> Vec<String> {
        let mut out = vec![];
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = task.unwrap().path().join("children");
            out.extend(
                std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        out
    }

    #[test]
    fn an_idmapped_bind_shows_owners_mapped_and_no_process_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layer");
        let target = tmp.path().join("target");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(dir.join("root-owned"), "r").unwrap();
        std::fs::write(dir.join("user-owned"), "u").unwrap();
        std::os::unix::fs::lchown(dir.join("user-owned"), Some(1000), Some(1001)).unwrap();
        let _alone = lock(&MAKING_NAMESPACES);
        let before = children();
        let namespaces = UserNamespaces::default();
        let m = map(&[(0, 100_000, 65_536)], &[(0, 200_000, 65_536)]);
        let fd = namespaces.get(&m).unwrap();
        assert_eq!(children(), before, "the namespace's process is reaped");
        assert!(
            Arc::ptr_eq(&fd, &namespaces.get(&m).unwrap()),
            "kept by mapping"
        );
        let spec = MountSpec {
            kind: "bind".into(),
            source: dir.to_string_lossy().into_owned(),
            options: vec!["ro".into(), "rbind".into()],
        };
        let staging = tmp.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        mount_idmapped(&spec, &target, fd.as_fd(), &staging).unwrap();
        let owner = |name: &str| {
            let md = std::fs::symlink_metadata(target.join(name)).unwrap();
            use std::os::unix::fs::MetadataExt;
            (md.uid(), md.gid())
        };
        let result = std::panic::catch_unwind(|| {
            assert_eq!(owner("root-owned"), (100_000, 200_000));
            assert_eq!(owner("user-owned"), (101_000, 201_001));
            let err = std::fs::write(target.join("new"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        });
        rustix::mount::unmount(&target, UnmountFlags::DETACH).unwrap();
        result.unwrap();
    }

    #[test]
    fn an_idmapped_overlay_shows_owners_mapped_and_leaves_no_staged_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        let target = tmp.path().join("target");
        let staging = tmp.path().join("staging");
        for d in [&top, &bottom, &target, &staging] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(bottom.join("shared"), "bottom").unwrap();
        std::fs::write(bottom.join("only-bottom"), "b").unwrap();
        std::os::unix::fs::lchown(bottom.join("only-bottom"), Some(7), Some(8)).unwrap();
        std::fs::write(top.join("shared"), "top").unwrap();
        let m = map(&[(0, 100_000, 65_536)], &[(0, 100_000, 65_536)]);
        let _alone = lock(&MAKING_NAMESPACES);
        let namespaces = UserNamespaces::default();
        let fd = namespaces.get(&m).unwrap();
        let spec = MountSpec {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "ro".into(),
                format!("lowerdir={}:{}", top.display(), bottom.display()),
            ],
        };
        mount_idmapped(&spec, &target, fd.as_fd(), &staging).unwrap();
        let result = std::panic::catch_unwind(|| {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                std::fs::read_to_string(target.join("shared")).unwrap(),
                "top"
            );
            let md = std::fs::metadata(target.join("only-bottom")).unwrap();
            assert_eq!((md.uid(), md.gid()), (100_007, 100_008));
            let md = std::fs::metadata(target.join("shared")).unwrap();
            assert_eq!((md.uid(), md.gid()), (100_000, 100_000));
            assert_eq!(
                std::fs::read_dir(&staging).unwrap().count(),
                0,
                "staging emptied"
            );
            let mounts = crate::mount::mountinfo::under(&staging).unwrap();
            assert!(mounts.is_empty(), "{mounts:?}");
        });
        rustix::mount::unmount(&target, UnmountFlags::DETACH).unwrap();
        result.unwrap();
        // An upper directory is refused, before anything is mounted.
        let rw = MountSpec {
            options: vec![
                format!("lowerdir={}", bottom.display()),
                format!("upperdir={}", top.display()),
                format!("workdir={}", staging.display()),
            ],
            ..spec
        };
        let err = mount_idmapped(&rw, &target, fd.as_fd(), &staging).unwrap_err();
        assert_eq!(
            err.kind(),
            crate::error::ErrorKind::InvalidArgument,
            "{err}"
        );
        assert!(!crate::mount::is_mountpoint(&target).unwrap());
    }

    #[test]
    fn several_mapping_lines_are_applied_each() {
        // The kernel takes several lines: IDs 0-999 to 100000+, 1000-1999 to 300000+.
        let tmp = tempfile::tempdir().unwrap();
        let (dir, target, staging) = (
            tmp.path().join("d"),
            tmp.path().join("t"),
            tmp.path().join("s"),
        );
        for d in [&dir, &target, &staging] {
            std::fs::create_dir(d).unwrap();
        }
        for (name, id) in [("low", 10), ("high", 1500), ("unmapped", 5000)] {
            std::fs::write(dir.join(name), name).unwrap();
            std::os::unix::fs::lchown(dir.join(name), Some(id), Some(id)).unwrap();
        }
        let m = map(
            &[(0, 100_000, 1000), (1000, 300_000, 1000)],
            &[(0, 100_000, 1000), (1000, 300_000, 1000)],
        );
        let _alone = lock(&MAKING_NAMESPACES);
        let fd = UserNamespaces::default().get(&m).unwrap();
        let spec = MountSpec {
            kind: "bind".into(),
            source: dir.to_string_lossy().into_owned(),
            options: vec!["ro".into()],
        };
        mount_idmapped(&spec, &target, fd.as_fd(), &staging).unwrap();
        let result = std::panic::catch_unwind(|| {
            use std::os::unix::fs::MetadataExt;
            let uid = |name: &str| std::fs::metadata(target.join(name)).unwrap().uid();
            assert_eq!(uid("low"), 100_010);
            assert_eq!(uid("high"), 300_500);
            // An ID outside every range shows as the overflow ID (nobody).
            assert_eq!(uid("unmapped"), 65_534);
        });
        rustix::mount::unmount(&target, UnmountFlags::DETACH).unwrap();
        result.unwrap();
    }

    #[test]
    fn remap_labels_say_every_line_as_containerd_writes_them() {
        let m = map(&[(0, 100_000, 1), (1, 200_000, 10)], &[(0, 5, 65_536)]);
        assert_eq!(
            m.remap_labels(),
            [
                (
                    "containerd.io/snapshot/uidmapping".to_owned(),
                    "0:100000:1,1:200000:10".to_owned()
                ),
                (
                    "containerd.io/snapshot/gidmapping".to_owned(),
                    "0:5:65536".to_owned()
                ),
            ]
        );
    }

    fn spec(options: &[&str]) -> MountSpec {
        MountSpec {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn mapping_options_are_taken_off_the_mounts_they_ride_on() {
        let m = map(&[(0, 100_000, 1), (1, 200_000, 10)], &[(0, 5, 65_536)]);
        let [(_, uid), (_, gid)] = m.remap_labels();
        let mut mounts = vec![spec(&[
            &format!("uidmap={uid}"),
            &format!("gidmap={gid}"),
            "lowerdir=/a:/b",
        ])];
        assert_eq!(IdMap::take_from_options(&mut mounts).unwrap(), Some(m));
        assert_eq!(mounts[0].options, ["lowerdir=/a:/b"]);

        let mut plain = vec![spec(&["lowerdir=/a:/b"])];
        assert_eq!(IdMap::take_from_options(&mut plain).unwrap(), None);
        assert_eq!(plain[0].options, ["lowerdir=/a:/b"]);
    }

    #[test]
    fn bad_mapping_options_are_refused_by_name() {
        for (options, says) in [
            (&["uidmap=0:1:1"][..], "go together"),
            (
                &["uidmap=0:1", "gidmap=0:1:1"],
                "\"0:1\": not container:host:length",
            ),
            (&["uidmap=0:1:x", "gidmap=0:1:1"], "\"0:1:x\""),
            (&["uidmap=0:1:1:4", "gidmap=0:1:1"], "\"0:1:1:4\""),
            (
                &["uidmap=0:1:1", "uidmap=0:1:1", "gidmap=0:1:1"],
                "given twice",
            ),
            (&["uidmap=0:1:0", "gidmap=0:1:1"], "empty range"),
        ] {
            let e = IdMap::take_from_options(&mut [spec(options)]).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{options:?}");
            assert!(e.to_string().contains(says), "{options:?}: {e}");
        }
        let mut two = [
            spec(&["uidmap=0:1:1", "gidmap=0:1:1"]),
            spec(&["uidmap=0:2:1", "gidmap=0:1:1"]),
        ];
        let e = IdMap::take_from_options(&mut two).unwrap_err();
        assert!(e.to_string().contains("different mappings"), "{e}");
    }
}
