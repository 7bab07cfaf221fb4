//! Tests of the unpacker on real files in temporary directories (run as root: they set
//! owners, make device nodes and trusted.* xattrs).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::tar_stream::parse_pax_time;
use super::*;
use crate::digest::Hasher;

/// The form a layer is unpacked into.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    /// Files in a directory.
    Dirs,
    /// An EROFS image, mounted at the destination to be looked at.
    Erofs,
}

std::thread_local! {
    /// The form this test thread's scenes unpack into (see `on_both_forms!`).
    static FORM: std::cell::Cell<Form> = const { std::cell::Cell::new(Form::Dirs) };
}

/// A temp dir holding `dest` (the unpack destination) next to things that must stay
/// untouched; removed on drop, even when a test fails. In the EROFS form the image is made
/// in a temp dir of its own and mounted at `dest` (unmounted on drop).
struct Scene {
    tmp: tempfile::TempDir,
    form: Form,
    image_dir: tempfile::TempDir,
    mounted: std::cell::Cell<bool>,
}

impl Drop for Scene {
    fn drop(&mut self) {
        if self.mounted.get() {
            let _ = rustix::mount::unmount(self.dest(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("dest")).unwrap();
        Scene {
            tmp,
            form: FORM.get(),
            image_dir: tempfile::tempdir().unwrap(),
            mounted: std::cell::Cell::new(false),
        }
    }
    fn dirs(&self) -> bool {
        self.form == Form::Dirs
    }
    fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }
    fn outside(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    /// Unpack `blob` whose uncompressed form is `tar` (framed as Go frames it: checked).
    fn unpack_as(&self, blob: &[u8], tar: &[u8]) -> Result<UnpackStats> {
        let _ = super::go_differential::assert_frames_as_go(tar);
        let mut seen = 0u64;
        let media_type = "application/vnd.oci.image.layer.v1.tar";
        let r = match self.form {
            Form::Dirs => unpack_layer(
                blob,
                media_type,
                Some(&Digest::of(tar)),
                &self.dest(),
                &mut |n| seen += n,
            ),
            Form::Erofs => {
                assert!(!self.mounted.get(), "one unpack per scene");
                let image = self.image_dir.path().join("layer.erofs");
                let r = unpack_layer_image(
                    blob,
                    media_type,
                    Some(&Digest::of(tar)),
                    &image,
                    &mut |n| seen += n,
                );
                if r.is_ok() {
                    super::erofs::tests::fsck(&image);
                    super::erofs::tests::mount(&image, &self.dest());
                    self.mounted.set(true);
                    // What the kernel reads back is what the directory form holds.
                    let dirs = tempfile::tempdir().unwrap();
                    if unpack_layer(
                        blob,
                        media_type,
                        Some(&Digest::of(tar)),
                        dirs.path(),
                        &mut |_| {},
                    )
                    .is_ok()
                    {
                        let (want, got) = (
                            super::erofs::tests::walk(dirs.path()),
                            super::erofs::tests::walk(&self.dest()),
                        );
                        assert_eq!(want, got, "the image reads back differently from its layer");
                    }
                }
                r
            }
        };
        if r.is_ok() {
            assert_eq!(seen, blob.len() as u64, "progress must add up to the blob");
        }
        r
    }
    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats> {
        self.unpack_as(tar, tar)
    }
}

/// A ustar header with the usual fields set.
fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000_000);
    h
}

/// Append an entry with a raw `name` (and link name), bypassing the builder's checks, as a
/// hostile archive would.
fn raw(b: &mut Builder<Vec<u8>>, kind: EntryType, name: &[u8], link: &[u8], data: &[u8]) {
    let mut h = header(kind, 0o644, data.len() as u64);
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name);
    old.linkname = [0; 100];
    old.linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn file(b: &mut Builder<Vec<u8>>, name: &str, data: &[u8]) {
    raw(b, EntryType::Regular, name.as_bytes(), b"", data);
}

fn symlink(b: &mut Builder<Vec<u8>>, name: &str, target: &str) {
    raw(
        b,
        EntryType::Symlink,
        name.as_bytes(),
        target.as_bytes(),
        b"",
    );
}

fn finish(b: Builder<Vec<u8>>) -> Vec<u8> {
    b.into_inner().unwrap()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {name} on {}: {e}", path.display()),
    }
}

fn assert_invalid(r: Result<UnpackStats>, needle: &str) {
    match r {
        Ok(_) => panic!("accepted; wanted an error containing {needle:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            assert!(
                e.message().contains(needle),
                "{e} does not contain {needle:?}"
            );
        }
    }
}

/// A file capability (VFS_CAP_REVISION_2, effective, CAP_NET_RAW permitted).
fn cap_net_raw() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

fn every_entry_type_with_its_metadata() {
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    let mut h = header(EntryType::Directory, 0o1775, 0);
    h.set_path("d/").unwrap();
    h.set_uid(1000);
    h.set_gid(2000);
    h.set_mtime(1_500_000_000);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();

    let cap = cap_net_raw();
    b.append_pax_extensions([
        ("mtime", &b"1600000000.123456789"[..]),
        ("SCHILY.xattr.user.color", b"blue"),
        ("SCHILY.xattr.security.capability", &cap),
        ("SCHILY.xattr.trusted.kept", b"1"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/x"),
        (
            "SCHILY.xattr.security.selinux",
            b"system_u:object_r:shadow_t:s0",
        ),
    ])
    .unwrap();
    let mut h = header(EntryType::Regular, 0o4755, 5);
    h.set_path("d/f").unwrap();
    h.set_uid(1);
    h.set_gid(2);
    h.set_cksum();
    b.append(&h, &b"hello"[..]).unwrap();

    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.sym", &b"s"[..]),
        ("mtime", b"1234.5"),
    ])
    .unwrap();
    let mut h = header(EntryType::Symlink, 0o777, 0);
    h.set_path("d/s").unwrap();
    h.set_link_name("f").unwrap();
    h.set_uid(3);
    h.set_gid(4);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();

    // The link's header sets the shared inode's metadata, as containerd's unpacker does:
    // the same owner and mode here, a later time. (Its chown drops the file capability,
    // as any chown does; tar writers repeat it on the link, as here.)
    b.append_pax_extensions([
        ("SCHILY.xattr.security.capability", &cap[..]),
        ("SCHILY.xattr.user.color", b"blue"),
    ])
    .unwrap();
    let mut h = header(EntryType::Link, 0o4755, 0);
    h.set_path("d/h").unwrap();
    h.set_link_name("./d/f").unwrap();
    h.set_uid(1);
    h.set_gid(2);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();

    for (name, kind, mode, major, minor) in [
        ("d/c", EntryType::Char, 0o666, 1, 3),
        ("d/b", EntryType::Block, 0o2660, 7, 0),
        ("d/p", EntryType::Fifo, 0o640, 0, 0),
    ] {
        let mut h = header(kind, mode, 0);
        h.set_path(name).unwrap();
        h.set_uid(5);
        h.set_gid(6);
        h.set_mtime(1_400_000_000);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    let tar = finish(b);
    let stats = s.unpack(&tar).unwrap();
    assert_eq!(stats.entries, 7);
    assert_eq!(stats.uncompressed_bytes, tar.len() as u64);

    let d = s.dest().join("d");
    let md = fs::symlink_metadata(&d).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o1775, 1000, 2000)
    );
    // Set after the children were written into it.
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 0));

    let f = d.join("f");
    let mf = fs::symlink_metadata(&f).unwrap();
    assert!(mf.is_file());
    assert_eq!(fs::read(&f).unwrap(), b"hello");
    assert_eq!((mf.mode() & 0o7777, mf.uid(), mf.gid()), (0o4755, 1, 2));
    assert_eq!((mf.mtime(), mf.mtime_nsec()), (1_700_000_000, 0));
    assert_eq!(mf.nlink(), 2, "the hardlink shares the inode");
    assert_eq!(xattr(&f, "user.color").as_deref(), Some(&b"blue"[..]));
    assert_eq!(xattr(&f, "security.capability"), Some(cap));
    assert_eq!(xattr(&f, "trusted.kept").as_deref(), Some(&b"1"[..]));
    assert_eq!(xattr(&f, "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&f, "trusted.overlay.redirect"), None);
    assert_ne!(
        xattr(&f, "security.selinux").as_deref(),
        Some(&b"system_u:object_r:shadow_t:s0"[..])
    );

    let sl = d.join("s");
    let ms = fs::symlink_metadata(&sl).unwrap();
    assert!(ms.file_type().is_symlink());
    assert_eq!(fs::read_link(&sl).unwrap(), Path::new("f"));
    assert_eq!((ms.uid(), ms.gid()), (3, 4));
    assert_eq!((ms.mtime(), ms.mtime_nsec()), (1234, 500_000_000));
    assert_eq!(xattr(&sl, "trusted.sym").as_deref(), Some(&b"s"[..]));
    assert_eq!(
        xattr(&f, "trusted.sym"),
        None,
        "xattr went through the symlink"
    );

    let mh = fs::symlink_metadata(d.join("h")).unwrap();
    assert_eq!(mh.ino(), mf.ino());

    let mc = fs::symlink_metadata(d.join("c")).unwrap();
    assert!(mc.file_type().is_char_device());
    assert_eq!(mc.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(
        (mc.mode() & 0o7777, mc.uid(), mc.gid(), mc.mtime()),
        (0o666, 5, 6, 1_400_000_000)
    );
    let mb = fs::symlink_metadata(d.join("b")).unwrap();
    assert!(mb.file_type().is_block_device());
    assert_eq!(mb.rdev(), rustix::fs::makedev(7, 0));
    assert_eq!(mb.mode() & 0o7777, 0o2660);
    let mp = fs::symlink_metadata(d.join("p")).unwrap();
    assert!(mp.file_type().is_fifo());
    assert_eq!((mp.mode() & 0o7777, mp.uid(), mp.gid()), (0o640, 5, 6));
}

fn simple_layer() -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Directory, b"etc/", b"", b"");
    file(&mut b, "etc/hostname", b"layer\n");
    symlink(&mut b, "etc/alias", "hostname");
    finish(b)
}

fn check_simple_layer(dest: &Path) {
    assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"layer\n");
    assert_eq!(fs::read(dest.join("etc/alias")).unwrap(), b"layer\n");
}

fn gzip_zstd_and_plain_whatever_the_media_type() {
    let tar = simple_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for blob in [&tar, &gz, &zst] {
        let s = Scene::new();
        // The media type says plain tar for all three: the content decides.
        s.unpack_as(blob, &tar).unwrap();
        check_simple_layer(&s.dest());
    }
    // Two gzip members (pigz, concatenated streams) are one layer.
    let half = tar.len() / 2;
    let mut two = Vec::new();
    for part in [&tar[..half], &tar[half..]] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(part).unwrap();
        two.extend(e.finish().unwrap());
    }
    let s = Scene::new();
    s.unpack_as(&two, &tar).unwrap();
    check_simple_layer(&s.dest());
    // Corrupt compressed data is an error, not a partial success.
    let s = Scene::new();
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    assert!(s.unpack_as(&bad, &tar).is_err());
}

#[test]
fn a_base_layer_refuses_whiteouts_and_is_otherwise_a_layer() {
    let base = |s: &Scene, tar: &[u8]| {
        unpack_base_layer(tar, "tar", Some(&Digest::of(tar)), &s.dest(), &mut |_| {})
    };
    for name in ["a/.wh.gone", ".wh..wh..opq", "a/.wh..wh..opq"] {
        let s = Scene::new();
        let mut b = Builder::new(Vec::new());
        raw(&mut b, EntryType::Directory, b"a/", b"", b"");
        file(&mut b, name, b"");
        let err = base(&s, &finish(b)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(err.to_string().contains(name), "{err}");
    }
    // Without whiteouts: what unpack_layer makes.
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Directory, b"a/", b"", b"");
    file(&mut b, "a/f", b"x");
    raw(&mut b, EntryType::Symlink, b"a/l", b"f", b"");
    let tar = finish(b);
    let (one, two) = (Scene::new(), Scene::new());
    assert_eq!(base(&one, &tar).unwrap(), two.unpack(&tar).unwrap());
    for name in ["a", "a/f", "a/l"] {
        let m = |s: &Scene| {
            let m = fs::symlink_metadata(s.dest().join(name)).unwrap();
            (m.mode(), m.uid(), m.gid(), m.size(), m.mtime())
        };
        assert_eq!(m(&one), m(&two), "{name}");
    }
}

fn whiteouts_become_overlay_whiteouts() {
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Directory, b"a/", b"", b"");
    file(&mut b, "a/kept", b"x");
    file(&mut b, "a/.wh.gone", b"");
    file(&mut b, "a/.wh.tree", b"");
    file(&mut b, "a/.wh..wh.plnk", b"");
    file(&mut b, "new/.wh.deep", b"");
    let tar = finish(b);
    s.unpack(&tar).unwrap();
    assert_eq!(fs::read(s.dest().join("a/kept")).unwrap(), b"x");
    for name in ["a/gone", "a/tree", "new/deep"] {
        let m = fs::symlink_metadata(s.dest().join(name)).unwrap();
        assert!(m.file_type().is_char_device(), "{name}");
        assert_eq!(m.rdev(), 0, "{name}");
        assert_eq!(m.mode() & 0o7777, 0, "{name}");
    }
    assert!(!s.dest().join("a/.wh.gone").exists());
    assert!(
        !s.dest().join("a/.wh..wh.plnk").exists(),
        "AUFS metadata is ignored"
    );
    assert!(!s.dest().join("a/plnk").exists());
}

fn opaque_marker_sets_the_overlay_xattr() {
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Directory, b"a/", b"", b"");
    file(&mut b, "a/.wh..wh..opq", b"");
    file(&mut b, "a/kept", b"k");
    file(&mut b, "b/c/.wh..wh..opq", b"");
    let tar = finish(b);
    s.unpack(&tar).unwrap();
    assert_eq!(
        xattr(&s.dest().join("a"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(&s.dest().join("b/c"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&s.dest().join("b"), "trusted.overlay.opaque"), None);
    assert!(!s.dest().join("a/.wh..wh..opq").exists());
    assert_eq!(fs::read(s.dest().join("a/kept")).unwrap(), b"k");
}

fn bad_whiteout_names_are_rejected() {
    for name in [&b"a/.wh.."[..], b".wh...", b".wh.", b"a/.wh."] {
        let s = Scene::new();
        let mut b = Builder::new(Vec::new());
        raw(&mut b, EntryType::Regular, name, b"", b"");
        assert_invalid(s.unpack(&finish(b)), "whiteout");
    }
}

/// Everything in the scene's temp dir except `dest`.
fn outside_names(s: &Scene) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(s.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "dest")
        .collect();
    v.sort();
    v
}

fn dotdot_names_are_rejected() {
    for name in [&b"../x"[..], b"a/../../x", b"a/..", b"./../x", b"/../x"] {
        let s = Scene::new();
        let mut b = Builder::new(Vec::new());
        raw(&mut b, EntryType::Regular, name, b"", b"evil");
        assert_invalid(s.unpack(&finish(b)), "'..'");
        assert!(outside_names(&s).is_empty(), "{name:?} wrote outside");
    }
}

fn absolute_names_land_inside() {
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Regular, b"/etc/x", b"", b"inside");
    raw(&mut b, EntryType::Regular, b"//./etc//y", b"", b"inside");
    s.unpack(&finish(b)).unwrap();
    assert_eq!(fs::read(s.dest().join("etc/x")).unwrap(), b"inside");
    assert_eq!(fs::read(s.dest().join("etc/y")).unwrap(), b"inside");
}

fn symlinked_parents_are_followed_inside_only() {
    let s = Scene::new();
    let before = fs::read("/etc/passwd").unwrap();
    let mut b = Builder::new(Vec::new());
    symlink(&mut b, "a", "/");
    file(&mut b, "a/etc/passwd", b"root::0:0::/:/bin/sh\n");
    symlink(&mut b, "up", "../../..");
    file(&mut b, "up/x", b"x");
    symlink(&mut b, "abs", s.tmp.path().to_str().unwrap());
    file(&mut b, "abs/y", b"y");
    let r = s.unpack(&finish(b));
    assert_eq!(fs::read("/etc/passwd").unwrap(), before);
    assert!(outside_names(&s).is_empty());
    // `abs` points at a path that does not exist inside the layer: refused.
    assert_invalid(r, "abs/y");
    if !s.dirs() {
        return; // a failed image is not mounted: nothing to look at
    }
    assert_eq!(
        fs::read(s.dest().join("etc/passwd")).unwrap(),
        b"root::0:0::/:/bin/sh\n"
    );
    assert_eq!(fs::read(s.dest().join("x")).unwrap(), b"x");
}

fn hardlinks_stay_inside() {
    // To a name with '..'.
    let s = Scene::new();
    fs::write(s.outside("outside"), b"secret").unwrap();
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Link, b"h", b"../outside", b"");
    assert_invalid(s.unpack(&finish(b)), "'..'");

    // To an absolute name: looked up inside the layer, where it does not exist.
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Link, b"h", b"/etc/passwd", b"");
    assert_invalid(s.unpack(&finish(b)), "not in the layer");
    assert!(!s.dest().join("h").exists());

    // Through a symlink pointing out: resolved inside, so again not found.
    let s = Scene::new();
    fs::write(s.outside("outside"), b"secret").unwrap();
    let mut b = Builder::new(Vec::new());
    symlink(&mut b, "esc", "..");
    raw(&mut b, EntryType::Link, b"h", b"esc/outside", b"");
    assert_invalid(s.unpack(&finish(b)), "not in the layer");
    assert_eq!(fs::metadata(s.outside("outside")).unwrap().nlink(), 1);

    // Through a symlink pointing inside: fine.
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    file(&mut b, "real/f", b"data");
    symlink(&mut b, "via", "/real");
    raw(&mut b, EntryType::Link, b"h", b"via/f", b"");
    s.unpack(&finish(b)).unwrap();
    assert_eq!(fs::read(s.dest().join("h")).unwrap(), b"data");

    // To a directory.
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Directory, b"d/", b"", b"");
    raw(&mut b, EntryType::Link, b"h", b"d", b"");
    assert_invalid(s.unpack(&finish(b)), "is a directory");

    // Replacing the directory that holds the target (found by cli/tests/properties/: this
    // was NotFound, as if the system had failed, for what is a malformed layer).
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    file(&mut b, "d/f", b"data");
    raw(&mut b, EntryType::Link, b"d", b"d/f", b"");
    assert_invalid(
        s.unpack(&finish(b)),
        "inside the directory the link replaces",
    );
}

fn entries_replace_symlinks_instead_of_following_them() {
    let s = Scene::new();
    let outside = s.outside("outside");
    fs::write(&outside, b"secret").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
    let outdir = s.outside("outdir");
    fs::create_dir(&outdir).unwrap();
    fs::set_permissions(&outdir, fs::Permissions::from_mode(0o700)).unwrap();

    let mut b = Builder::new(Vec::new());
    symlink(&mut b, "f", outside.to_str().unwrap());
    symlink(&mut b, "g", "../outside");
    symlink(&mut b, "d", "../outdir");
    symlink(&mut b, "p", "../outside");
    let mut h = header(EntryType::Regular, 0o4777, 4);
    h.set_path("f").unwrap();
    h.set_uid(1234);
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    file(&mut b, "g", b"evil");
    raw(&mut b, EntryType::Directory, b"d/", b"", b"");
    raw(&mut b, EntryType::Fifo, b"p", b"", b"");
    s.unpack(&finish(b)).unwrap();

    let m = fs::metadata(&outside).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"secret");
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o600, 0));
    assert_eq!(fs::metadata(&outdir).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read(s.dest().join("f")).unwrap(), b"evil");
    assert_eq!(fs::read(s.dest().join("g")).unwrap(), b"evil");
    assert!(fs::symlink_metadata(s.dest().join("d")).unwrap().is_dir());
    assert!(fs::symlink_metadata(s.dest().join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
}

/// A name may come twice in one layer: the later entry wins, whatever either one is (the
/// unpacker creates first and clears only when the name is taken).
fn later_entries_replace_earlier_ones() {
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    file(&mut b, "twice", b"first");
    file(&mut b, "twice", b"second");
    raw(&mut b, EntryType::Directory, b"was-dir/", b"", b"");
    file(&mut b, "was-dir/inner", b"x");
    file(&mut b, "was-dir", b"now a file");
    file(&mut b, "was-file", b"x");
    raw(&mut b, EntryType::Directory, b"was-file/", b"", b"");
    file(&mut b, "was-file/inner", b"y");
    file(&mut b, "was-link-target", b"z");
    file(&mut b, "was-file-now-link", b"x");
    symlink(&mut b, "was-file-now-link", "was-link-target");
    raw(&mut b, EntryType::Directory, b"kept/", b"", b"");
    file(&mut b, "kept/child", b"c");
    raw(&mut b, EntryType::Directory, b"kept/", b"", b"");
    s.unpack(&finish(b)).unwrap();

    let d = s.dest();
    assert_eq!(fs::read(d.join("twice")).unwrap(), b"second");
    assert_eq!(fs::read(d.join("was-dir")).unwrap(), b"now a file");
    assert_eq!(fs::read(d.join("was-file/inner")).unwrap(), b"y");
    assert_eq!(
        fs::read_link(d.join("was-file-now-link")).unwrap(),
        Path::new("was-link-target")
    );
    assert_eq!(fs::read(d.join("kept/child")).unwrap(), b"c");
}

fn root_entry_only_updates_the_root() {
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    let mut h = header(EntryType::Directory, 0o750, 0);
    h.set_path("./").unwrap();
    h.set_mtime(1_111_111_111);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    file(&mut b, "x", b"x");
    s.unpack(&finish(b)).unwrap();
    let m = fs::metadata(s.dest()).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o750, 1_111_111_111));

    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Regular, b"./", b"", b"");
    assert_invalid(s.unpack(&finish(b)), "layer root");
}

#[test]
fn diff_id_mismatch_is_rejected() {
    let s = Scene::new();
    let tar = simple_layer();
    let wrong = Digest::of(b"something else");
    let err = unpack_layer(
        &tar[..],
        "application/vnd.oci.image.layer.v1.tar",
        Some(&wrong),
        &s.dest(),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        err.message(),
        format!(
            "layer content does not match diff_id {wrong}: got {}",
            Digest::of(&tar)
        )
    );
}

fn trailing_data_counts_in_the_hash() {
    let tar = simple_layer();
    let mut with_tail = tar.clone();
    with_tail.extend_from_slice(b"trailing bytes after the end blocks");
    let s = Scene::new();
    let stats = s.unpack(&with_tail).unwrap();
    assert_eq!(stats.uncompressed_bytes, with_tail.len() as u64);
    check_simple_layer(&s.dest());

    // The same bytes checked against the tar alone do not match.
    let s = Scene::new();
    let err = s.unpack_as(&with_tail, &tar).unwrap_err();
    assert!(err.message().contains("does not match diff_id"), "{err}");
}

fn pax_size_rules_data_and_position_alike() {
    // The ustar header says 1024 bytes; PAX says 0. What hides in those 1024 bytes is the
    // next entry for a PAX reader (Go's, containerd's, ours): reading and skipping must
    // both follow PAX, or the stream goes out of step.
    let mut inner = Builder::new(Vec::new());
    file(&mut inner, "smuggled", b"hello");
    let mut hidden = inner.into_inner().unwrap();
    hidden.truncate(1024);
    assert_eq!(hidden.len(), 1024);

    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([("size", &b"0"[..])]).unwrap();
    let mut h = header(EntryType::Regular, 0o644, 1024);
    h.set_path("a").unwrap();
    h.set_cksum();
    b.append(&h, &hidden[..]).unwrap();
    file(&mut b, "after", b"after");
    let tar = finish(b);
    let s = Scene::new();
    s.unpack(&tar).unwrap();
    assert_eq!(fs::metadata(s.dest().join("a")).unwrap().len(), 0);
    assert_eq!(fs::read(s.dest().join("smuggled")).unwrap(), b"hello");
    assert_eq!(fs::read(s.dest().join("after")).unwrap(), b"after");

    // PAX claims more than the layer holds: an error, not a short file.
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([("size", &b"1000000000"[..])])
        .unwrap();
    let mut h = header(EntryType::Regular, 0o644, 5);
    h.set_path("big").unwrap();
    h.set_cksum();
    b.append(&h, &b"hello"[..]).unwrap();
    let tar = finish(b);
    let s = Scene::new();
    assert_invalid(s.unpack(&tar), "big");
}

fn pax_names_are_checked_too() {
    for (key, value) in [
        ("path", &b"../pax-escape"[..]),
        ("linkpath", b"../../etc/passwd"),
    ] {
        let s = Scene::new();
        let mut b = Builder::new(Vec::new());
        b.append_pax_extensions([(key, value)]).unwrap();
        raw(
            &mut b,
            EntryType::Link,
            b"innocent",
            b"innocent-target",
            b"",
        );
        assert_invalid(s.unpack(&finish(b)), "'..'");
        assert!(outside_names(&s).is_empty());
    }
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([("path", &b"a\0b"[..])]).unwrap();
    file(&mut b, "innocent", b"");
    assert_invalid(s.unpack(&finish(b)), "NUL");
}

fn huge_headers_are_refused() {
    let s = Scene::new();
    let mut b = Builder::new(Vec::new());
    let big = vec![b'x'; (MAX_HEADER_BYTES + 1024) as usize];
    b.append_pax_extensions([("comment", &big[..])]).unwrap();
    file(&mut b, "f", b"");
    assert_invalid(s.unpack(&finish(b)), "MiB");
}

/// A reader of a tar holding one 64 MiB file of zeros, produced on the fly.
fn zero_layer() -> impl Read {
    const SIZE: u64 = 64 << 20;
    let mut h = header(EntryType::Regular, 0o644, SIZE);
    h.set_path("zeros").unwrap();
    h.set_cksum();
    let head = h.as_bytes().to_vec();
    // 64 MiB is block-aligned: no padding; then the two end blocks.
    io::Cursor::new(head)
        .chain(io::repeat(0).take(SIZE))
        .chain(io::Cursor::new(vec![0u8; 1024]))
}

#[test]
fn a_large_file_streams() {
    let mut hasher = Hasher::new();
    let mut r = zero_layer();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let diff_id = hasher.finish();
    let s = Scene::new();
    let stats = unpack_layer(zero_layer(), "tar", Some(&diff_id), &s.dest(), &mut |_| {}).unwrap();
    assert_eq!(stats.uncompressed_bytes, (64 << 20) + 1536);
    let m = fs::metadata(s.dest().join("zeros")).unwrap();
    assert_eq!(m.len(), 64 << 20);
}

#[test]
fn helpers() {
    let mut out = Vec::new();
    normalize(b"/./a//b/./c/", &mut out).unwrap();
    assert_eq!(out, b"a/b/c");
    normalize(b"./", &mut out).unwrap();
    assert!(out.is_empty());
    assert!(normalize(b"a/../b", &mut out).is_err());
    assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
    assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    assert_eq!(
        parse_pax_time(b"1600000000.123456789"),
        Some((1_600_000_000, 123_456_789))
    );
    assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
    assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
    assert_eq!(parse_pax_time(b"7"), Some((7, 0)));
    assert_eq!(parse_pax_time(b"1.1234567899"), Some((1, 123_456_789)));
    for bad in [&b""[..], b".5", b"1e3", b"99999999999999999999", b"-"] {
        assert_eq!(parse_pax_time(bad), None, "{bad:?}");
    }
    assert!(
        xattr_allowed(b"user.x")
            && xattr_allowed(b"trusted.x")
            && xattr_allowed(b"security.capability")
    );
    assert!(!xattr_allowed(b"trusted.overlay.opaque") && !xattr_allowed(b"security.selinux"));
    assert!(!xattr_allowed(b"user.overlay.redirect") && !xattr_allowed(b"system.nfs4_acl"));
}

/// Every test above that unpacks through a `Scene` runs twice: into a directory, and into
/// an EROFS image that is then mounted (`tests::dirs::*`, `tests::erofs::*`).
macro_rules! on_both_forms {
    ($($name:ident),* $(,)?) => {
        mod dirs {
            $(#[test]
            fn $name() {
                super::FORM.set(super::Form::Dirs);
                super::$name()
            })*
        }
        mod erofs {
            $(#[test]
            fn $name() {
                super::FORM.set(super::Form::Erofs);
                super::$name()
            })*
        }
    };
}

on_both_forms!(
    every_entry_type_with_its_metadata,
    gzip_zstd_and_plain_whatever_the_media_type,
    whiteouts_become_overlay_whiteouts,
    opaque_marker_sets_the_overlay_xattr,
    bad_whiteout_names_are_rejected,
    dotdot_names_are_rejected,
    absolute_names_land_inside,
    symlinked_parents_are_followed_inside_only,
    hardlinks_stay_inside,
    entries_replace_symlinks_instead_of_following_them,
    later_entries_replace_earlier_ones,
    root_entry_only_updates_the_root,
    trailing_data_counts_in_the_hash,
    pax_size_rules_data_and_position_alike,
    pax_names_are_checked_too,
    huge_headers_are_refused,
    pax_values_with_newlines_are_read_whole,
    a_malformed_pax_record_before_aufs_metadata_refuses_the_layer,
    names_from_layers_are_quoted_short_in_errors,
    a_whiteout_of_an_entry_of_its_own_layer_is_refused,
);

/// Real images carry PAX values with newlines: a file capability whose bytes hold 0x0a
/// (`setcap cap_dac_override,cap_fowner+ep`: permitted = 0x0000000a), a binary `user.*`
/// xattr, a symlink target and a path with a newline. Go reads them whole (PAX records
/// are framed by their length); the tar crate split them on the newline.
fn pax_values_with_newlines_are_read_whole() {
    let s = Scene::new();
    // VFS_CAP_REVISION_2: magic_etc, then permitted and inheritable (two u32 each).
    let capability: [u8; 20] = [
        0x01, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let binary = b"one\ntwo\n\0three";
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.security.capability", &capability[..]),
        ("SCHILY.xattr.user.binary", &binary[..]),
    ])
    .unwrap();
    file(&mut b, "telegraf", b"#!/bin/true\n");
    b.append_pax_extensions([("path", &b"with\nnewline"[..])])
        .unwrap();
    file(&mut b, "short", b"data");
    b.append_pax_extensions([("linkpath", &b"target\nline"[..])])
        .unwrap();
    symlink(&mut b, "link", "x");
    s.unpack(&finish(b)).unwrap();
    let dest = s.dest();
    assert_eq!(
        xattr(&dest.join("telegraf"), "security.capability").as_deref(),
        Some(&capability[..])
    );
    assert_eq!(
        xattr(&dest.join("telegraf"), "user.binary").as_deref(),
        Some(&binary[..])
    );
    assert_eq!(fs::read(dest.join("with\nnewline")).unwrap(), b"data");
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap(),
        Path::new("target\nline")
    );
}

/// The smuggling layer: an AUFS metadata entry (skipped by the unpacker) whose header
/// says 0 bytes and whose PAX `size` says 1024, in a PAX header that also has a value with
/// a newline. Go reads the PAX header, so 1024 bytes of data, skipped with the entry. The
/// tar crate failed on the newline and fell back to the header's 0, and read the data as
/// entries: a file and a whiteout that no Go reader ever sees. Now imv frames it as Go.
/// A record Go finds malformed refuses the layer, wherever it is.
fn a_malformed_pax_record_before_aufs_metadata_refuses_the_layer() {
    let mut inner = Builder::new(Vec::new());
    file(&mut inner, "hxsmuggled-only-imv.txt", b"smuggled");
    raw(&mut inner, EntryType::Regular, b".wh.keep.txt", b"", b"");
    let mut smuggled = inner.into_inner().unwrap();
    smuggled.resize(1024, 0);

    let layer = |records: &[(&str, &[u8])]| {
        let mut b = Builder::new(Vec::new());
        file(&mut b, "keep.txt", b"keep");
        b.append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        raw(&mut b, EntryType::Regular, b".wh..wh.meta", b"", b"");
        let mut tar = finish(b);
        // The 1024 bytes Go takes for the entry's data, after its (empty) header.
        let end = tar.len() - 1024;
        tar.truncate(end);
        tar.extend_from_slice(&smuggled);
        let mut b = Builder::new(Vec::new());
        file(&mut b, "after.txt", b"after");
        tar.extend(finish(b));
        tar
    };
    let s = Scene::new();
    // The newline first: the tar crate read records up to each newline, so it never
    // reached the size.
    s.unpack(&layer(&[
        ("SCHILY.xattr.user.x", b"a\nb"),
        ("size", b"1024"),
    ]))
    .unwrap();
    assert_eq!(fs::read(s.dest().join("keep.txt")).unwrap(), b"keep");
    assert_eq!(fs::read(s.dest().join("after.txt")).unwrap(), b"after");
    assert!(!s.dest().join("hxsmuggled-only-imv.txt").exists());

    // A malformed record (no length) before the AUFS entry: refused.
    let mut b = Builder::new(Vec::new());
    let records = b"size=1024\n";
    let mut h = header(EntryType::XHeader, 0o644, records.len() as u64);
    h.set_path("PaxHeaders/meta").unwrap();
    h.set_cksum();
    b.append(&h, &records[..]).unwrap();
    raw(&mut b, EntryType::Regular, b".wh..wh.meta", b"", b"");
    file(&mut b, "after.txt", b"after");
    let s = Scene::new();
    assert_invalid(s.unpack(&finish(b)), "malformed PAX record");
}

/// A name of megabytes is quoted by its start and its length, so an error through the
/// daemon stays far below ttrpc's 4 MiB and a log line stays a line.
fn names_from_layers_are_quoted_short_in_errors() {
    let long = format!("{}/../escape", "d".repeat(900_000));
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([("path", long.as_bytes())])
        .unwrap();
    file(&mut b, "innocent", b"");
    let s = Scene::new();
    let e = s.unpack(&finish(b)).unwrap_err();
    assert!(e.message().contains("'..'"), "{e}");
    assert!(
        e.message().contains("(900010 bytes)"),
        "{}",
        &e.message()[..200]
    );
    assert!(
        e.message().len() < 1000,
        "an error of {} bytes",
        e.message().len()
    );
    // Over Go's 1 MiB for one header: refused before any name is read.
    let long = "d".repeat(6 << 20);
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([("path", long.as_bytes())])
        .unwrap();
    file(&mut b, "innocent", b"");
    let s = Scene::new();
    let e = s.unpack(&finish(b)).unwrap_err();
    assert!(
        e.message().len() < 1000,
        "an error of {} bytes",
        e.message().len()
    );
}

/// A whiteout hides what layers below have, not entries of its own layer (OCI image spec,
/// "Whiteouts"; containerd's applier fails to make it over the entry). Refused, whichever
/// comes first in the directory; a name whited out and then made again is that entry.
fn a_whiteout_of_an_entry_of_its_own_layer_is_refused() {
    for entry in ["file", "dir"] {
        let mut b = Builder::new(Vec::new());
        if entry == "file" {
            file(&mut b, "a/victim", b"in this layer");
        } else {
            raw(&mut b, EntryType::Directory, b"a/victim/", b"", b"");
        }
        raw(&mut b, EntryType::Regular, b"a/.wh.victim", b"", b"");
        let s = Scene::new();
        assert_invalid(
            s.unpack(&finish(b)),
            "whiteout of an entry of its own layer",
        );
    }
    // Whited out first, then made: the entry stands (it shadows the lower one anyway).
    let mut b = Builder::new(Vec::new());
    raw(&mut b, EntryType::Regular, b"a/.wh.again", b"", b"");
    file(&mut b, "a/again", b"new");
    let s = Scene::new();
    s.unpack(&finish(b)).unwrap();
    assert_eq!(fs::read(s.dest().join("a/again")).unwrap(), b"new");
}
