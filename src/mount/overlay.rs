//! overlayfs: one `fsconfig lowerdir+` per layer (Linux ≥ 6.8), or on older kernels a
//! classic `mount(2)` whose lower dirs are relative to their common parent, made from a
//! thread of our own that unshared its cwd and changed into that parent.
//!
//! `mount(2)` copies at most one page of option data, which is about 40 layers of
//! snapshotter paths; `lowerdir+` has no such limit (overlayfs stacks up to 500).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{MountAttrFlags, MountFlags};

use super::fscontext::{attach, set_attributes, FsContext};
use super::options::{self, Options};
use super::{errno_error, MountSpec};
use crate::error::{Error, Result};

/// An overlay's options, its layers taken out of `lowerdir=`/`upperdir=`/`workdir=`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Overlay {
    /// Lower dirs, topmost first.
    pub lower: Vec<PathBuf>,
    /// Data-only lower dirs (after `::` in `lowerdir=`), in order.
    pub data: Vec<PathBuf>,
    /// `upperdir=`, if writable.
    pub upper: Option<PathBuf>,
    /// `workdir=`, with `upperdir=`.
    pub work: Option<PathBuf>,
    /// Everything else: VFS flags and other overlay parameters.
    pub options: Options,
}

impl Overlay {
    /// Take an overlay's options apart.
    pub(crate) fn parse(spec_options: &[String]) -> Result<Self> {
        let o = options::parse(spec_options);
        let mut overlay = Overlay {
            lower: Vec::new(),
            data: Vec::new(),
            upper: None,
            work: None,
            options: o,
        };
        let mut rest = Vec::new();
        for opt in std::mem::take(&mut overlay.options.fs) {
            if let Some(list) = opt.strip_prefix("lowerdir=") {
                (overlay.lower, overlay.data) = split_lowerdir(list);
            } else if let Some(dir) = opt.strip_prefix("upperdir=") {
                overlay.upper = Some(PathBuf::from(unescape(dir)));
            } else if let Some(dir) = opt.strip_prefix("workdir=") {
                overlay.work = Some(PathBuf::from(unescape(dir)));
            } else {
                rest.push(opt);
            }
        }
        overlay.options.fs = rest;
        if overlay.lower.is_empty() {
            return Err(Error::invalid(format!(
                "overlay options {spec_options:?} have no lowerdir"
            )));
        }
        Ok(overlay)
    }
}

/// Split `lowerdir=` (`a:b\:c::d`): `:` separates layers, `\` escapes the next character,
/// and an empty element (`::`) starts the data-only layers.
pub(crate) fn split_lowerdir(list: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut lower, mut data) = (Vec::new(), Vec::new());
    let mut in_data = false;
    let mut current = String::new();
    let mut chars = list.chars();
    let mut push = |current: &mut String, in_data: &mut bool| {
        if current.is_empty() {
            *in_data = true;
        } else if *in_data {
            data.push(PathBuf::from(std::mem::take(current)));
        } else {
            lower.push(PathBuf::from(std::mem::take(current)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ':' => push(&mut current, &mut in_data),
            c => current.push(c),
        }
    }
    push(&mut current, &mut in_data);
    (lower, data)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// Escape what overlayfs's option parser treats specially in a classic mount's data.
fn escape(path: &Path) -> Result<String> {
    let s = path.to_str().ok_or_else(|| {
        Error::invalid(format!(
            "overlay layer path {} is not UTF-8",
            path.display()
        ))
    })?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

/// Whether the running kernel's overlayfs takes `lowerdir+` (Linux 6.8). Kernels from
/// before the new mount API conversion (6.5) would accept any key on the fs context and
/// fail only at create time, so probing is less reliable than the version.
pub(crate) fn kernel_has_lowerdir_plus() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 8)
}

/// Mount an overlay with the new mount API, one layer per `fsconfig`.
pub(crate) fn mount_overlay(spec: &MountSpec, target: &Path) -> Result<()> {
    let overlay = Overlay::parse(&spec.options)
        .map_err(|e| e.context(format!("mount overlay at {}", target.display())))?;
    let o = &overlay.options;
    let fail = |fc: Option<&FsContext>, step: String, e: Errno| {
        let log = fc.map(FsContext::log).unwrap_or_default();
        errno_error(spec, target, &step, &log, e)
    };
    let fc = FsContext::open("overlay").map_err(|e| fail(None, "fsopen".into(), e))?;
    let fc = &fc;
    if !spec.source.is_empty() {
        fc.set_string("source", &spec.source)
            .map_err(|e| fail(Some(fc), format!("source={}", spec.source), e))?;
    }
    for (key, dirs) in [("lowerdir+", &overlay.lower), ("datadir+", &overlay.data)] {
        for dir in dirs {
            fc.set_path(key, dir)
                .map_err(|e| fail(Some(fc), format!("{key}={}", dir.display()), e))?;
        }
    }
    for (key, dir) in [("upperdir", &overlay.upper), ("workdir", &overlay.work)] {
        if let Some(dir) = dir {
            fc.set_path(key, dir)
                .map_err(|e| fail(Some(fc), format!("{key}={}", dir.display()), e))?;
        }
    }
    for opt in &o.fs {
        fc.set_option(opt)
            .map_err(|e| fail(Some(fc), opt.clone(), e))?;
    }
    if o.read_only {
        fc.set_flag("ro")
            .map_err(|e| fail(Some(fc), "ro".into(), e))?;
    }
    fc.create()
        .map_err(|e| fail(Some(fc), "create".into(), e))?;
    let mnt = fc
        .mount(o.attr_set)
        .map_err(|e| fail(Some(fc), format!("fsmount {:?}", o.attr_set), e))?;
    if let Some(p) = o.propagation {
        set_attributes(
            std::os::fd::AsFd::as_fd(&mnt),
            o.propagation_recursive,
            MountAttrFlags::empty(),
            MountAttrFlags::empty(),
            p,
        )
        .map_err(|e| fail(None, "propagation".into(), e))?;
    }
    attach(&mnt, target).map_err(|e| fail(None, "move_mount".into(), e))
}

/// The classic `mount(2)` of an overlay, for kernels without `lowerdir+`: the lower dirs
/// are made relative to their common parent directory and the mount is made from a
/// spawned thread that unshared its filesystem context (cwd) and changed into that
/// directory, so the caller's process never sees its cwd change. If the data still does
/// not fit in one page, an InvalidArgument error says so.
pub(crate) fn mount_overlay_classic(spec: &MountSpec, target: &Path) -> Result<()> {
    let overlay = Overlay::parse(&spec.options)
        .map_err(|e| e.context(format!("mount overlay at {}", target.display())))?;
    let o = &overlay.options;
    let all: Vec<&PathBuf> = overlay.lower.iter().chain(&overlay.data).collect();
    // The mount is made from another cwd: a relative layer would resolve elsewhere.
    let dirs = all
        .iter()
        .copied()
        .chain(&overlay.upper)
        .chain(&overlay.work);
    if let Some(rel) = dirs.into_iter().find(|p| !p.is_absolute()) {
        return Err(Error::invalid(format!(
            "overlay layer {} is not absolute (mount at {})",
            rel.display(),
            target.display()
        )));
    }
    let parent = common_parent(&all);
    let relative = |p: &Path| -> Result<String> { escape(p.strip_prefix(&parent).unwrap_or(p)) };
    let join = |dirs: &[PathBuf]| -> Result<String> {
        Ok(dirs
            .iter()
            .map(|p| relative(p))
            .collect::<Result<Vec<_>>>()?
            .join(":"))
    };
    let mut lowerdir = join(&overlay.lower)?;
    if !overlay.data.is_empty() {
        // Data-only layers follow an empty element: `a:b::c:d`.
        lowerdir = format!("{lowerdir}::{}", join(&overlay.data)?);
    }
    let mut data = vec![format!("lowerdir={lowerdir}")];
    if let Some(upper) = &overlay.upper {
        data.push(format!("upperdir={}", escape(upper)?));
    }
    if let Some(work) = &overlay.work {
        data.push(format!("workdir={}", escape(work)?));
    }
    data.extend(o.fs.iter().cloned());
    let data = data.join(",");
    let page = page_size();
    if data.len() + 1 > page {
        return Err(Error::invalid(format!(
            "overlay mount at {}: {} lower dirs need {} bytes of mount data even relative to {}, \
             more than one page ({page} bytes); this kernel lacks lowerdir+ (Linux 6.8)",
            target.display(),
            all.len(),
            data.len() + 1,
            parent.display()
        )));
    }
    let data =
        CString::new(data).map_err(|_| Error::invalid("overlay options contain a NUL byte"))?;
    let target_abs =
        std::path::absolute(target).map_err(|e| Error::io("make absolute", target, e))?;
    let flags = classic_flags(o);

    let result = std::thread::scope(|s| {
        s.spawn(|| -> std::result::Result<(), (&'static str, Errno)> {
            // SAFETY: CLONE_FS only gives this thread its own cwd/root/umask; it shares
            // no file descriptors it could not see before (that would be CLONE_FILES).
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| ("unshare(CLONE_FS)", e))?;
            rustix::process::chdir(&parent).map_err(|e| ("chdir", e))?;
            rustix::mount::mount(
                spec.source.as_str(),
                &target_abs,
                "overlay",
                flags,
                data.as_c_str(),
            )
            .map_err(|e| ("mount", e))
        })
        .join()
    });
    let step_error = |step: &str, e: Errno| {
        // mount(2) has no error log: on ENOENT name the first layer that is missing.
        let missing = all
            .iter()
            .copied()
            .chain(&overlay.upper)
            .chain(&overlay.work)
            .find(|p| !p.exists());
        let step = match (e, missing) {
            (Errno::NOENT, Some(m)) => format!("{step} (missing {})", m.display()),
            _ => format!(
                "{step} with {} lower dirs relative to {}",
                all.len(),
                parent.display()
            ),
        };
        errno_error(spec, target, &step, "", e)
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err((step, e))) => return Err(step_error(step, e)),
        Err(_) => {
            return Err(Error::internal(format!(
                "overlay mount thread for {} panicked",
                target.display()
            )))
        }
    }
    if let Some(p) = o.propagation {
        let mut flags = rustix::mount::MountPropagationFlags::from_bits_retain(p as _);
        if o.propagation_recursive {
            flags |= rustix::mount::MountPropagationFlags::REC;
        }
        if let Err(e) = rustix::mount::mount_change(target, flags) {
            let err = errno_error(spec, target, "propagation", "", e);
            let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
            return Err(err);
        }
    }
    Ok(())
}

/// `MS_*` flags for a classic mount from per-mount attributes.
fn classic_flags(o: &Options) -> MountFlags {
    let mut flags = MountFlags::empty();
    for (attr, flag) in [
        (MountAttrFlags::MOUNT_ATTR_RDONLY, MountFlags::RDONLY),
        (MountAttrFlags::MOUNT_ATTR_NOSUID, MountFlags::NOSUID),
        (MountAttrFlags::MOUNT_ATTR_NODEV, MountFlags::NODEV),
        (MountAttrFlags::MOUNT_ATTR_NOEXEC, MountFlags::NOEXEC),
        (
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            MountFlags::NODIRATIME,
        ),
        (
            MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW,
            MountFlags::NOSYMFOLLOW,
        ),
    ] {
        if o.attr_set.contains(attr) {
            flags |= flag;
        }
    }
    let atime = o.attr_set & MountAttrFlags::MOUNT_ATTR__ATIME;
    if atime == MountAttrFlags::MOUNT_ATTR_NOATIME {
        flags |= MountFlags::NOATIME;
    } else if atime == MountAttrFlags::MOUNT_ATTR_STRICTATIME {
        flags |= MountFlags::STRICTATIME;
    }
    if o.read_only {
        flags |= MountFlags::RDONLY;
    }
    flags
}

/// The deepest directory that contains every path's parent.
fn common_parent(paths: &[&PathBuf]) -> PathBuf {
    let mut common: Option<PathBuf> = None;
    for p in paths {
        let parent = p.parent().unwrap_or(Path::new("/"));
        common = Some(match common {
            None => parent.to_path_buf(),
            Some(c) => c
                .components()
                .zip(parent.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    common
        .filter(|c| !c.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escapes_and_data_layers() {
        let (lower, data) = split_lowerdir(r"/a/b:/c\:d:/e\\f::/g:/h");
        assert_eq!(
            lower,
            vec![
                PathBuf::from("/a/b"),
                PathBuf::from("/c:d"),
                PathBuf::from(r"/e\f")
            ]
        );
        assert_eq!(data, vec![PathBuf::from("/g"), PathBuf::from("/h")]);
    }

    #[test]
    fn common_parent_of_layers() {
        let a = PathBuf::from("/var/lib/s/1/fs");
        let b = PathBuf::from("/var/lib/s/22/fs");
        assert_eq!(common_parent(&[&a, &b]), PathBuf::from("/var/lib/s"));
        assert_eq!(common_parent(&[&a]), PathBuf::from("/var/lib/s/1"));
        let c = PathBuf::from("/x");
        assert_eq!(common_parent(&[&a, &c]), PathBuf::from("/"));
    }

    #[test]
    fn parse_takes_layers_out() {
        let opts: Vec<String> = [
            "index=off",
            "lowerdir=/l1:/l2",
            "upperdir=/u",
            "workdir=/w",
            "ro",
            "nosuid",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = Overlay::parse(&opts).unwrap();
        assert_eq!(o.lower, vec![PathBuf::from("/l1"), PathBuf::from("/l2")]);
        assert_eq!(o.upper, Some(PathBuf::from("/u")));
        assert_eq!(o.work, Some(PathBuf::from("/w")));
        assert_eq!(o.options.fs, vec!["index=off".to_string()]);
        assert!(o.options.read_only);
        assert!(Overlay::parse(&["ro".to_string()]).is_err());
    }
}
