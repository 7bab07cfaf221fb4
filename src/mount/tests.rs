//! Tests with real mounts, each in its own temporary directory. [`Scratch`] unmounts
//! everything under its directory (lazily if it must) and removes it on drop, also when
//! an assertion failed; it never touches anything outside its directory.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::error::ErrorKind;

/// A temporary directory that is cleaned of mounts before it is removed.
struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("imv-mount-test-")
            .tempdir()
            .expect("tempdir");
        Scratch { dir: Some(dir) }
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// `mkdir -p <scratch>/<rel>`.
    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// Write `<scratch>/<rel>`, making its parent.
    fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).expect("mkdir");
        fs::write(&p, content).expect("write");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let path = dir.path().to_path_buf();
        let _ = unmount_recursive(&path);
        // If the code under test is what broke, detach whatever is left by hand.
        for _ in 0..16 {
            let left = mountinfo::under(&path).unwrap_or_default();
            if left.is_empty() {
                break;
            }
            for m in left.iter().rev() {
                let _ = rustix::mount::unmount(&m.mount_point, rustix::mount::UnmountFlags::DETACH);
            }
        }
        if mountinfo::under(&path)
            .map(|l| l.is_empty())
            .unwrap_or(false)
        {
            drop(dir);
        } else {
            // Removing through a mount would delete what it shows: leave the directory.
            eprintln!(
                "leaving {} in place: mounts remain under it",
                path.display()
            );
            let _ = dir.keep();
        }
    }
}

fn spec(kind: &str, source: &str, options: &[&str]) -> MountSpec {
    MountSpec {
        kind: kind.to_string(),
        source: source.to_string(),
        options: options.iter().map(|s| s.to_string()).collect(),
    }
}

fn lowerdir(dirs: &[PathBuf]) -> String {
    let joined: Vec<String> = dirs
        .iter()
        .map(|d| d.display().to_string().replace(':', "\\:"))
        .collect();
    format!("lowerdir={}", joined.join(":"))
}

fn assert_erofs(path: &Path) {
    let err = fs::write(path, "x").expect_err("write to a read-only mount succeeded");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "write {}: {err}",
        path.display()
    );
}

fn assert_nothing_mounted(path: &Path) {
    let left = mountinfo::under(path).unwrap();
    assert!(
        left.is_empty(),
        "still mounted under {}: {left:?}",
        path.display()
    );
}

#[test]
fn overlay_three_lower_dirs_topmost_wins_read_only() {
    let s = Scratch::new();
    let (l1, l2, l3) = (s.dir("l1"), s.dir("l2"), s.dir("l3"));
    s.file("l1/a", "1");
    s.file("l2/a", "2");
    s.file("l3/a", "3");
    s.file("l2/c", "c from 2");
    s.file("l3/c", "c from 3");
    s.file("l3/sub/b", "b from 3");
    let target = s.dir("target");

    let opts = [
        "ro",
        "nosuid",
        "nodev",
        "index=off",
        &lowerdir(&[l1, l2, l3]),
    ];
    mount_all(&[spec("overlay", "overlay", &opts)], &target).unwrap();

    assert_eq!(fs::read_to_string(target.join("a")).unwrap(), "1");
    assert_eq!(fs::read_to_string(target.join("c")).unwrap(), "c from 2");
    assert_eq!(
        fs::read_to_string(target.join("sub/b")).unwrap(),
        "b from 3"
    );
    assert_erofs(&target.join("new"));
    assert_erofs(&target.join("a"));

    let m = mountinfo::lookup(&target)
        .unwrap()
        .expect("overlay in mountinfo");
    assert_eq!(m.fs_type, "overlay");
    assert_eq!(m.source, "overlay");
    for opt in ["ro", "nosuid", "nodev"] {
        assert!(
            m.has_mount_option(opt),
            "{opt} missing from {}",
            m.mount_options
        );
    }
    assert!(
        m.has_super_option("lowerdir+") || m.has_super_option("lowerdir"),
        "{}",
        m.super_options
    );
    assert!(is_mountpoint(&target).unwrap());

    unmount_recursive(&target).unwrap();
    assert!(!is_mountpoint(&target).unwrap());
    assert_nothing_mounted(s.path());
}

/// `count` lower dirs with long names under `<scratch>/layers`, each holding its own
/// file and a `who` file that says which layer it is; returns them topmost first.
fn many_layers(s: &Scratch, count: usize, parent: &str, pad: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let name = format!("{parent}/layer-{i:04}-{}", "x".repeat(pad));
            s.file(&format!("{name}/only-{i}"), &i.to_string());
            s.file(&format!("{name}/who"), &i.to_string());
            s.path().join(name)
        })
        .collect()
}

fn check_many_layers(target: &Path, count: usize) {
    assert_eq!(
        fs::read_to_string(target.join("who")).unwrap(),
        "0",
        "topmost layer must win"
    );
    for i in 0..count {
        assert_eq!(
            fs::read_to_string(target.join(format!("only-{i}"))).unwrap(),
            i.to_string()
        );
    }
    assert_erofs(&target.join("new"));
}

#[test]
fn overlay_with_more_layers_than_one_page_via_lowerdir_plus() {
    assert!(
        overlay::kernel_has_lowerdir_plus(),
        "this test needs Linux >= 6.8"
    );
    let s = Scratch::new();
    let layers = many_layers(&s, 120, "layers", 32);
    let lower = lowerdir(&layers);
    assert!(
        lower.len() > 4096 + 1024,
        "only {} bytes of lowerdir",
        lower.len()
    );
    let target = s.dir("target");

    mount_all(
        &[spec(
            "overlay",
            "overlay",
            &["ro", "nosuid", "nodev", &lower],
        )],
        &target,
    )
    .unwrap();
    check_many_layers(&target, layers.len());
    unmount_recursive(&target).unwrap();
    assert_nothing_mounted(s.path());
}

#[test]
fn overlay_with_more_layers_than_one_page_via_classic_fallback() {
    let s = Scratch::new();
    // Long common parent, shorter layer names: relative to the parent they fit a page.
    let parent = format!("{}/{}", "p".repeat(100), "q".repeat(100));
    let layers = many_layers(&s, 110, &parent, 14);
    let lower = lowerdir(&layers);
    assert!(
        lower.len() > 4096 + 1024,
        "only {} bytes of lowerdir",
        lower.len()
    );
    let target = s.dir("target");

    overlay::mount_overlay_classic(
        &spec("overlay", "overlay", &["ro", "nosuid", "nodev", &lower]),
        &target,
    )
    .unwrap();
    check_many_layers(&target, layers.len());
    let m = mountinfo::lookup(&target)
        .unwrap()
        .expect("overlay in mountinfo");
    assert!(
        m.has_mount_option("ro") && m.has_mount_option("nosuid") && m.has_mount_option("nodev")
    );
    // The caller's cwd is untouched: the chdir happened on a thread of its own.
    assert_ne!(std::env::current_dir().unwrap(), s.path().join(&parent));
    unmount_recursive(&target).unwrap();
    assert_nothing_mounted(s.path());
}

#[test]
fn overlay_classic_fallback_says_when_layers_do_not_fit() {
    let s = Scratch::new();
    let layers: Vec<PathBuf> = (0..120)
        .map(|i| s.dir(&format!("l/{i:03}-{}", "y".repeat(40))))
        .collect();
    let target = s.dir("target");
    let err = overlay::mount_overlay_classic(
        &spec("overlay", "overlay", &["ro", &lowerdir(&layers)]),
        &target,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("one page"), "{err}");
    assert!(
        err.message().contains(&target.display().to_string()),
        "{err}"
    );
    assert_nothing_mounted(s.path());
}

#[test]
fn overlay_layer_path_longer_than_fsconfig_takes() {
    let s = Scratch::new();
    let deep = format!(
        "{}/{}/{}",
        "d".repeat(100),
        "e".repeat(100),
        "f".repeat(100)
    );
    let long = s.dir(&deep);
    assert!(long.as_os_str().len() > 256);
    s.file(&format!("{deep}/deep"), "deep");
    let top = s.dir("top");
    s.file("top/top", "top");
    let target = s.dir("target");
    mount_all(
        &[spec("overlay", "overlay", &["ro", &lowerdir(&[top, long])])],
        &target,
    )
    .unwrap();
    assert_eq!(fs::read_to_string(target.join("deep")).unwrap(), "deep");
    assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "top");
}

#[test]
fn overlay_with_a_colon_in_a_layer_path() {
    let s = Scratch::new();
    let odd = s.dir("with:colon");
    s.file("with:colon/f", "colon");
    // Without an upper dir overlayfs wants at least two lower dirs.
    let other = s.dir("other");
    let target = s.dir("target");
    let opts = ["ro", &lowerdir(&[odd, other])];
    mount_all(&[spec("overlay", "overlay", &opts)], &target).unwrap();
    assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "colon");
    unmount_recursive(&target).unwrap();
    overlay::mount_overlay_classic(&spec("overlay", "overlay", &opts), &target).unwrap();
    assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "colon");
}

#[test]
fn bind_read_only() {
    let s = Scratch::new();
    let src = s.dir("src");
    s.file("src/f", "hello");
    let target = s.dir("target");

    mount_all(
        &[spec(
            "bind",
            src.to_str().unwrap(),
            &["rbind", "ro", "nosuid", "nodev"],
        )],
        &target,
    )
    .unwrap();
    assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "hello");
    assert_erofs(&target.join("f"));
    assert_erofs(&target.join("g"));
    // The source itself stays writable.
    fs::write(src.join("g"), "g").unwrap();
    assert_eq!(fs::read_to_string(target.join("g")).unwrap(), "g");
    let m = mountinfo::lookup(&target)
        .unwrap()
        .expect("bind in mountinfo");
    for opt in ["ro", "nosuid", "nodev"] {
        assert!(
            m.has_mount_option(opt),
            "{opt} missing from {}",
            m.mount_options
        );
    }
    assert!(is_mountpoint(&target).unwrap());
}

#[test]
fn bind_rejects_filesystem_options() {
    let s = Scratch::new();
    let src = s.dir("src");
    let target = s.dir("target");
    let err = mount_all(
        &[spec("bind", src.to_str().unwrap(), &["ro", "size=1m"])],
        &target,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("size=1m"), "{err}");
    assert_nothing_mounted(s.path());
}

#[test]
fn tmpfs_with_options() {
    let s = Scratch::new();
    let target = s.dir("target");
    mount_all(
        &[spec(
            "tmpfs",
            "imv-test",
            &["ro", "nosuid", "noexec", "size=1m", "mode=0700"],
        )],
        &target,
    )
    .unwrap();
    let m = mountinfo::lookup(&target)
        .unwrap()
        .expect("tmpfs in mountinfo");
    assert_eq!(
        (m.fs_type.as_str(), m.source.as_str()),
        ("tmpfs", "imv-test")
    );
    assert!(
        m.has_mount_option("ro") && m.has_mount_option("noexec"),
        "{}",
        m.mount_options
    );
    assert!(m.has_super_option("size=1024k"), "{}", m.super_options);
    assert_erofs(&target.join("x"));
}

#[test]
fn failed_mount_leaves_nothing_mounted_and_names_the_path() {
    let s = Scratch::new();
    let l1 = s.dir("l1");
    let missing = s.path().join("no-such-layer");
    let target = s.dir("target");
    let mounts = [
        spec("tmpfs", "tmpfs", &["size=1m"]),
        spec(
            "overlay",
            "overlay",
            &["ro", &lowerdir(&[l1, missing.clone()])],
        ),
    ];
    let err = mount_all(&mounts, &target).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.message();
    for part in [
        "overlay",
        &missing.display().to_string(),
        &target.display().to_string(),
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }
    // The tmpfs mounted before the failure was undone.
    assert_nothing_mounted(s.path());

    // The same through the classic path, which has no kernel log to quote.
    let err = overlay::mount_overlay_classic(&mounts[1], &target).unwrap_err();
    assert!(
        err.message().contains(&missing.display().to_string()),
        "{err}"
    );
    assert_nothing_mounted(s.path());
}

#[test]
fn rejected_option_is_named_with_the_kernel_log() {
    let s = Scratch::new();
    let target = s.dir("target");
    let err = mount_all(
        &[spec("tmpfs", "tmpfs", &["size=1m", "bogus_option=1"])],
        &target,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let msg = err.message();
    assert!(
        msg.contains("failed at bogus_option=1") && msg.contains("[kernel: "),
        "{msg}"
    );
    assert!(msg.contains(&target.display().to_string()), "{msg}");
    assert_nothing_mounted(s.path());
}

#[test]
fn unknown_filesystem_is_an_error_naming_it() {
    let s = Scratch::new();
    let target = s.dir("target");
    let err = mount_all(&[spec("no-such-fs", "x", &[])], &target).unwrap_err();
    assert!(
        err.message().contains("no-such-fs") && err.message().contains("fsopen"),
        "{err}"
    );
    assert_nothing_mounted(s.path());
}

#[test]
fn unmount_recursive_nested_mounts_and_sibling_with_shared_prefix() {
    let s = Scratch::new();
    let target = s.dir("a/b");
    let sibling = s.dir("a/bc");
    let elsewhere = s.dir("elsewhere");
    s.file("elsewhere/f", "f");

    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &target).unwrap();
    let inner_tmpfs = s.dir("a/b/tmp");
    let inner_bind = s.dir("a/b/bind");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &inner_tmpfs).unwrap();
    mount_all(
        &[spec("bind", elsewhere.to_str().unwrap(), &["rbind", "ro"])],
        &inner_bind,
    )
    .unwrap();
    let deeper = s.dir("a/b/tmp/deeper");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &deeper).unwrap();
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &sibling).unwrap();
    assert_eq!(mountinfo::under(&target).unwrap().len(), 4);

    // A plain unmount of the target fails with EBUSY: that is what recursive is for.
    assert_eq!(
        rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()),
        Err(Errno::BUSY)
    );
    unmount_recursive(&target).unwrap();
    assert_nothing_mounted(&target);
    assert!(
        is_mountpoint(&sibling).unwrap(),
        "sibling /a/bc must stay mounted"
    );
    assert_eq!(fs::read_to_string(elsewhere.join("f")).unwrap(), "f");
    unmount_recursive(&sibling).unwrap();
    assert_nothing_mounted(s.path());
}

#[test]
fn unmount_recursive_stacked_mounts() {
    let s = Scratch::new();
    let target = s.dir("target");
    let stack = [
        spec("tmpfs", "first", &["size=1m"]),
        spec("tmpfs", "second", &["size=1m"]),
        spec("tmpfs", "third", &["size=1m"]),
    ];
    mount_all(&stack, &target).unwrap();
    let mounts = mountinfo::under(&target).unwrap();
    assert_eq!(
        mounts.iter().map(|m| m.source.as_str()).collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    assert_eq!(mountinfo::lookup(&target).unwrap().unwrap().source, "third");
    unmount_recursive(&target).unwrap();
    assert_nothing_mounted(s.path());
}

#[test]
fn unmount_recursive_with_a_hidden_submount() {
    let s = Scratch::new();
    let target = s.dir("target");
    mount_all(&[spec("tmpfs", "bottom", &["size=1m"])], &target).unwrap();
    let sub = s.dir("target/sub");
    mount_all(&[spec("tmpfs", "sub", &["size=1m"])], &sub).unwrap();
    // Stack a mount on the target that hides `sub`.
    mount_all(&[spec("tmpfs", "top", &["size=1m"])], &target).unwrap();
    assert_eq!(mountinfo::under(&target).unwrap().len(), 3);
    unmount_recursive(&target).unwrap();
    assert_nothing_mounted(s.path());
}

#[test]
fn unmount_recursive_busy_mount_is_detached() {
    let s = Scratch::new();
    let target = s.dir("target");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &target).unwrap();
    let open = fs::File::create(target.join("held-open")).unwrap();
    unmount_recursive(&target).unwrap();
    assert_nothing_mounted(s.path());
    drop(open);
}

#[test]
fn unmount_recursive_does_not_follow_a_symlinked_target() {
    let s = Scratch::new();
    let real = s.dir("real");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &real).unwrap();
    let link = s.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    unmount_recursive(&link).unwrap();
    assert!(
        is_mountpoint(&real).unwrap(),
        "the link's destination is not the target"
    );
    // A symlink above the target is followed, as a state dir under /var/lib may be.
    let via_parent = s.path().join("parent-link");
    std::os::unix::fs::symlink(s.path(), &via_parent).unwrap();
    unmount_recursive(&via_parent.join("real")).unwrap();
    assert!(!is_mountpoint(&real).unwrap());
}

#[test]
fn unmount_recursive_with_nothing_mounted() {
    let s = Scratch::new();
    let plain = s.dir("plain");
    unmount_recursive(&plain).unwrap();
    unmount_recursive(&s.path().join("missing/deeper")).unwrap();
    assert!(plain.is_dir());
}

#[test]
fn is_mountpoint_cases() {
    let s = Scratch::new();
    let plain = s.dir("plain");
    assert!(!is_mountpoint(&plain).unwrap());
    assert!(!is_mountpoint(&s.path().join("missing")).unwrap());
    assert!(!is_mountpoint(&s.file("file", "x").join("below-a-file")).unwrap());

    let tmp = s.dir("tmp");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &tmp).unwrap();
    assert!(is_mountpoint(&tmp).unwrap());
    assert!(!is_mountpoint(&s.dir("tmp/inside")).unwrap());

    // A bind mount of a directory onto itself: same device as its parent, still a mount.
    let selfbind = s.dir("self");
    mount_all(
        &[spec("bind", selfbind.to_str().unwrap(), &["bind"])],
        &selfbind,
    )
    .unwrap();
    assert!(is_mountpoint(&selfbind).unwrap());
    let other = s.dir("other");
    mount_all(
        &[spec("bind", plain.to_str().unwrap(), &["bind", "ro"])],
        &other,
    )
    .unwrap();
    assert!(is_mountpoint(&other).unwrap());
    assert!(!is_mountpoint(&plain).unwrap());
    // The mountinfo fallback agrees.
    assert!(mountinfo::lookup(&selfbind).unwrap().is_some());
    assert!(mountinfo::lookup(&plain).unwrap().is_none());
}

#[test]
fn mountinfo_of_a_path_with_a_space() {
    let s = Scratch::new();
    let target = s.dir("with space\tand tab");
    mount_all(&[spec("tmpfs", "my source", &["size=1m"])], &target).unwrap();
    let m = mountinfo::lookup(&target)
        .unwrap()
        .expect("mount with a space in mountinfo");
    assert_eq!(m.mount_point, target);
    assert_eq!(m.source, "my source");
    let raw = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        raw.contains("with\\040space\\011and\\040tab"),
        "kernel escapes changed?"
    );
    assert_eq!(mountinfo::under(s.path()).unwrap().len(), 1);
}

#[test]
fn mountinfo_parses_sample_lines() {
    let sample = b"36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n\
        27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n\
        99 27 0:50 / /var/lib/a\\040b\\134c ro,nosuid,nodev - overlay overlay ro,lowerdir=/x\\054y:/z\n";
    let m = mountinfo::parse(sample).unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(
        (m[0].id, m[0].parent, m[0].major, m[0].minor),
        (36, 35, 98, 0)
    );
    assert_eq!(m[0].root, PathBuf::from("/mnt1"));
    assert_eq!(m[0].mount_point, PathBuf::from("/mnt/parent"));
    assert_eq!(m[0].optional, ["master:1", "shared:7"]);
    assert_eq!(
        (m[0].fs_type.as_str(), m[0].source.as_str()),
        ("ext3", "/dev/root")
    );
    assert_eq!(m[0].super_options, "rw,errors=continue");
    assert!(m[1].optional.is_empty());
    assert_eq!(m[2].mount_point, PathBuf::from("/var/lib/a b\\c"));
    assert!(
        m[2].has_mount_option("ro")
            && m[2].has_mount_option("nodev")
            && !m[2].has_mount_option("no")
    );
    assert!(m[2].has_super_option("lowerdir"));
    assert_eq!(m[2].super_options, "ro,lowerdir=/x,y:/z");

    assert!(
        mountinfo::parse_line(b"1 2 3:4 / /x rw shared:1").is_err(),
        "no separator"
    );
    assert!(
        mountinfo::parse_line(b"x 2 3:4 / /x rw - t s o").is_err(),
        "bad id"
    );
    assert_eq!(mountinfo::unescape(b"a\\040b\\9\\"), b"a b\\9\\");
}

#[test]
fn mountinfo_read_sees_the_root() {
    let all = mountinfo::read().unwrap();
    assert!(all.iter().any(|m| m.mount_point == Path::new("/")));
}
