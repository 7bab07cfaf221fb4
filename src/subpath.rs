//! `image_sub_path`: resolve a path inside a mounted volume without escaping it.
//!
//! The kernel does the resolution (`openat2` with `RESOLVE_BENEATH`), so symlinks inside
//! the image are followed exactly as a container would see them, and any step that would
//! leave the volume is refused rather than followed.
//!
//! Why `RESOLVE_BENEATH` and not `RESOLVE_IN_ROOT`: `IN_ROOT` treats the volume as `/`,
//! so an absolute symlink or a `..` above the root is silently clamped back inside and
//! resolves to *something*, possibly not what the image author meant. `BENEATH` makes
//! each such escape an error (EXDEV), which is what KEP-4639 asks for ("symlinks that
//! leave the volume are errors") and what a user wants to hear about.
//!
//! Why returning a path (not an fd) is safe here: the volume is a read-only mount of an
//! image snapshot that nothing else writes to, so no component of the resolved path can be
//! swapped for a symlink between this check and the runtime's later bind mount of the
//! path. (CRI-O binds through `/proc/self/fd/N` because its volumes are not read-only.)

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{truncate, Error, IoContext, Result};

/// How often to retry `openat2` when the kernel answers EAGAIN: it does so when a
/// concurrent rename elsewhere on the system makes it unable to prove that `..` stayed
/// beneath the root. Nothing renames inside a read-only volume, so a retry succeeds.
const EAGAIN_RETRIES: usize = 16;

/// The kernel refuses paths longer than PATH_MAX (4096 bytes, NUL included) anyway.
const MAX_SUB_PATH_LEN: usize = 4095;

/// Resolve `sub_path` (relative, no `..`) inside the directory `root` and return the host
/// path of the directory it names. Absolute paths, `..` components, symlinks that lead
/// out of `root`, paths that name a file and missing paths are errors (InvalidArgument for
/// the first four, NotFound for the last), each naming `sub_path` and `root`.
///
/// Directories only, as containerd does and as Kubernetes documents it ("mount a certain
/// subdirectory of an image volume"; KEP-4639 lists single files as a non-goal). The
/// messages carry containerd's phrases ("path escapes from parent", "only directory
/// subpath is supported", "no such file or directory"), so what a user or a test matches
/// on stock containerd matches here too.
///
/// The returned path is `root` canonicalized (symlinks in `root` itself resolved), or a
/// path below it.
pub fn resolve(root: &Path, sub_path: &str) -> Result<PathBuf> {
    validate(sub_path)?;
    let root = root.canonicalize().at("resolve image volume", root)?;
    let root_fd = rustix::fs::open(
        &root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open image volume", &root)?;
    let fd = open_beneath(&root_fd, &root, sub_path)?;
    let stat = rustix::fs::fstat(&fd).at("stat image sub path in", &root)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Directory {
        return Err(Error::invalid(format!(
            "image sub path {sub_path:?} in volume {} is not a directory: only directory \
             subpath is supported",
            root.display()
        )));
    }
    let resolved = fd_path(&fd)?;
    // The kernel has already kept the walk beneath the root; this check guards against
    // what it cannot see, e.g. a path that /proc reports differently (another mount
    // namespace, a detached mount).
    if !resolved.starts_with(&root) {
        return Err(Error::invalid(format!(
            "image sub path {sub_path:?} resolves to {}, outside the volume {}",
            resolved.display(),
            root.display()
        )));
    }
    Ok(resolved)
}

/// Refuse what is wrong before asking the kernel: it must be a relative path without
/// `..` and without NUL.
pub fn validate(sub_path: &str) -> Result<()> {
    if sub_path.len() > MAX_SUB_PATH_LEN {
        // Quote only the start: the message should name the value, not carry megabytes.
        return Err(Error::invalid(format!(
            "image sub path {:?}...: longer than {MAX_SUB_PATH_LEN} bytes",
            truncate(sub_path, 64)
        )));
    }
    let bad = |why: &str| Error::invalid(format!("image sub path {sub_path:?}: {why}"));
    if sub_path.is_empty() {
        return Err(bad("empty"));
    }
    if sub_path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if sub_path.starts_with('/') {
        return Err(bad(
            "path escapes from parent: it is absolute, and must be relative to the volume",
        ));
    }
    // '..' is refused even where it stays inside (the kubelet refuses it too); say which.
    let mut depth = 0usize;
    let mut dotdot = false;
    for c in Path::new(sub_path).components() {
        match c {
            Component::ParentDir if depth == 0 => {
                return Err(bad(
                    "path escapes from parent: '..' climbs out of the volume",
                ))
            }
            Component::ParentDir => {
                depth -= 1;
                dotdot = true;
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    if dotdot {
        return Err(bad("contains a '..' component"));
    }
    Ok(())
}

/// `openat2(root, sub_path, O_PATH|O_CLOEXEC, RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)`,
/// with errno turned into errors that name `sub_path` and `root`.
fn open_beneath(root_fd: &OwnedFd, root: &Path, sub_path: &str) -> Result<OwnedFd> {
    // NO_MAGICLINKS: a /proc magic link could point anywhere; it cannot be reached
    // beneath an image root anyway, but say so explicitly.
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let mut attempts = 0;
    let errno = loop {
        match rustix::fs::openat2(root_fd.as_fd(), sub_path, flags, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::AGAIN | Errno::INTR) if attempts < EAGAIN_RETRIES => attempts += 1,
            Err(e) => break e,
        }
    };
    let what = format!("image sub path {sub_path:?} in volume {}", root.display());
    Err(match errno {
        Errno::NOENT => Error::not_found(format!("{what}: no such file or directory")),
        Errno::NOTDIR => Error::not_found(format!(
            "{what}: a component of the path is not a directory"
        )),
        Errno::XDEV => Error::invalid(format!(
            "{what}: path escapes from parent (a symlink or '..' leaves the volume)"
        )),
        Errno::LOOP => Error::invalid(format!(
            "{what}: too many levels of symbolic links (a loop?) or a magic link"
        )),
        Errno::NAMETOOLONG => Error::invalid(format!("{what}: name too long")),
        Errno::NOSYS => Error::precondition(format!(
            "{what}: the kernel has no openat2 (Linux 5.6 or later is needed)"
        )),
        e => Error::io(
            &format!("resolve image sub path {sub_path:?} in volume"),
            root,
            io::Error::from(e),
        ),
    })
}

/// The path the kernel has for an open fd, read from `/proc/self/fd/N`.
fn fd_path(fd: &OwnedFd) -> Result<PathBuf> {
    let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let target = rustix::fs::readlink(&link, Vec::new()).at("read link", &link)?;
    let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
    // A relative answer ("anon_inode:...", or a path outside our root) is not a path
    // we can hand out. " (deleted)" cannot happen: nothing deletes in a read-only volume.
    if !target.is_absolute() {
        return Err(Error::internal(format!(
            "{} points at {}, not a usable path",
            link.display(),
            target.display()
        )));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A volume-like tree in a fresh temp dir (removed on drop, also when a test fails):
    ///
    /// ```text
    /// vol/usr/lib/libc.so      file
    /// vol/lib -> usr/lib       relative, stays inside
    /// vol/etc/conf             file
    /// vol/etc/link -> ../usr   relative with "..", stays inside
    /// vol/abs -> /etc          absolute: escapes
    /// vol/up -> ../../..       climbs out
    /// vol/etc/around -> ../../vol/usr   leaves and comes back: still an escape
    /// vol/loop1 <-> vol/loop2  loop
    /// vol/dangling -> nothing
    /// ```
    struct Volume {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    fn volume() -> Volume {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("usr/lib/libc.so"), b"elf").unwrap();
        fs::write(root.join("etc/conf"), b"x=1").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("../usr", root.join("etc/link")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../..", root.join("up")).unwrap();
        symlink("../../vol/usr", root.join("etc/around")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("nothing", root.join("dangling")).unwrap();
        Volume { _dir: dir, root }
    }

    impl Volume {
        /// Where `rel` really is, computed independently of `resolve`.
        fn real(&self, rel: &str) -> PathBuf {
            self.root.canonicalize().unwrap().join(rel)
        }
    }

    fn kind(root: &Path, sub_path: &str) -> ErrorKind {
        let err = resolve(root, sub_path).expect_err(sub_path);
        // Long values are quoted by their start only (test inputs are ASCII).
        let shown = format!("{:?}", &sub_path[..sub_path.len().min(64)]);
        let shown = shown.trim_end_matches('"');
        assert!(err.message().contains(shown), "{sub_path:?}: {err}");
        err.kind()
    }

    #[test]
    fn resolves_directories_and_inner_symlinks() {
        let v = volume();
        let cases = [
            ("usr", "usr"),
            ("usr/lib", "usr/lib"),
            ("usr/lib/", "usr/lib"),
            ("./usr//lib", "usr/lib"),
            ("lib", "usr/lib"),
            ("etc/link/lib", "usr/lib"),
        ];
        for (sub_path, want) in cases {
            let got = resolve(&v.root, sub_path).unwrap_or_else(|e| panic!("{sub_path}: {e}"));
            assert_eq!(got, v.real(want), "{sub_path}");
        }
        assert_eq!(resolve(&v.root, ".").unwrap(), v.real(""));
    }

    #[test]
    fn rejects_files() {
        let v = volume();
        for sub_path in ["etc/conf", "lib/libc.so", "usr/lib/libc.so"] {
            assert_eq!(kind(&v.root, sub_path), ErrorKind::InvalidArgument);
            let err = resolve(&v.root, sub_path).unwrap_err();
            assert!(
                err.message()
                    .contains("only directory subpath is supported"),
                "{err}"
            );
        }
    }

    #[test]
    fn escapes_say_what_containerd_says() {
        let v = volume();
        for sub_path in ["/etc", "..", "../vol/usr", "usr/../..", "abs", "up/etc"] {
            let err = resolve(&v.root, sub_path).unwrap_err();
            assert!(err.message().contains("path escapes from parent"), "{err}");
        }
        // Inside all along, but refused all the same, and not called an escape.
        let err = resolve(&v.root, "usr/../etc").unwrap_err();
        assert!(err.message().contains("'..' component"), "{err}");
        assert!(!err.message().contains("escapes"), "{err}");
    }

    #[test]
    fn root_given_through_a_symlink_is_canonicalized() {
        let v = volume();
        let alias = v.root.with_file_name("alias");
        symlink(&v.root, &alias).unwrap();
        assert_eq!(resolve(&alias, "lib").unwrap(), v.real("usr/lib"));
    }

    #[test]
    fn rejects_malformed_sub_paths() {
        let v = volume();
        for sub_path in [
            "",
            "/",
            "/usr",
            "..",
            "../vol/usr",
            "usr/..",
            "usr/../etc",
            "a/../b",
            "usr\0lib",
            &"a/".repeat(3000),
        ] {
            assert_eq!(
                kind(&v.root, sub_path),
                ErrorKind::InvalidArgument,
                "{sub_path:?}"
            );
        }
    }

    #[test]
    fn rejects_escaping_symlinks() {
        let v = volume();
        for sub_path in [
            "abs",
            "abs/passwd",
            "up",
            "up/etc",
            "etc/around",
            "etc/around/lib",
        ] {
            let err = resolve(&v.root, sub_path).expect_err(sub_path);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{sub_path}: {err}");
            assert!(
                err.message().contains("path escapes from parent"),
                "{sub_path}: {err}"
            );
            assert!(
                err.message()
                    .contains(&*v.root.canonicalize().unwrap().to_string_lossy()),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_loops() {
        let v = volume();
        assert_eq!(kind(&v.root, "loop1"), ErrorKind::InvalidArgument);
        assert_eq!(kind(&v.root, "loop2/x"), ErrorKind::InvalidArgument);
    }

    #[test]
    fn missing_is_not_found() {
        let v = volume();
        for sub_path in [
            "nope",
            "usr/nope",
            "dangling",
            "lib/nope/deeper",
            "etc/conf/x",
            "etc/conf/",
        ] {
            let err = resolve(&v.root, sub_path).expect_err(sub_path);
            assert_eq!(err.kind(), ErrorKind::NotFound, "{sub_path}: {err}");
            assert!(err.message().contains(&format!("{sub_path:?}")), "{err}");
            assert!(
                err.message()
                    .contains(&*v.root.canonicalize().unwrap().to_string_lossy()),
                "{err}"
            );
        }
        let gone = v.root.join("no-such-volume");
        assert_eq!(
            resolve(&gone, "usr").unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
