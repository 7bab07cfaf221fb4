//! Images checked by the kernel (mounted for real) and by erofs-utils' `fsck.erofs`, and
//! compared file by file with the directory form of the same layer. The rules both forms
//! share are tested in `unpack/tests.rs`, which runs every test on both.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use tar::{Builder, EntryType, Header};

use crate::backend::local::unpack::{unpack_layer, unpack_layer_image};
use crate::digest::Digest;
use crate::mount::{mount_all, MountSpec};

/// Check `image` with erofs-utils' fsck (an implementation other than the kernel's),
/// contents included.
pub(in crate::backend::local) fn fsck(image: &Path) {
    let out = Command::new("fsck.erofs")
        .arg("--extract")
        .arg(image)
        .output()
        .expect("fsck.erofs runs (Debian package erofs-utils)");
    assert!(
        out.status.success(),
        "fsck.erofs {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mount `image` read-only at `dest`, as the store does.
pub(in crate::backend::local) fn mount(image: &Path, dest: &Path) {
    let spec = MountSpec {
        kind: "erofs".into(),
        source: image.to_string_lossy().into_owned(),
        options: vec!["ro".into()],
    };
    mount_all(&[spec], dest).unwrap_or_else(|e| panic!("mounting {}: {e}", image.display()));
}

/// An image mounted in a temp dir; unmounted and removed on drop.
struct Mounted {
    tmp: tempfile::TempDir,
}

impl Mounted {
    fn of(tar: &[u8]) -> Mounted {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("layer.erofs");
        unpack_layer_image(tar, "tar", Some(&Digest::of(tar)), &image, &mut |_| {}).unwrap();
        fsck(&image);
        fs::create_dir(tmp.path().join("mnt")).unwrap();
        let m = Mounted { tmp };
        mount(&image, &m.root());
        m
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("mnt")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.root(), rustix::mount::UnmountFlags::DETACH);
    }
}

fn entry(
    b: &mut Builder<Vec<u8>>,
    kind: EntryType,
    path: &str,
    link: &str,
    mode: u32,
    data: &[u8],
) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_uid(1000);
    h.set_gid(100);
    h.set_mtime(1_234_567_890);
    if link.is_empty() {
        b.append_data(&mut h, path, data).unwrap();
    } else {
        b.append_link(&mut h, path, link).unwrap();
    }
}

/// Every file under `root`: type, mode, owner, size, mtime, content or link target,
/// device number, xattrs, and which other names share its inode.
/// Every entry under `root`, described: type, size and content digest, target, device,
/// owner, mode, time (of the layer's), xattrs, hard-link groups.
pub(in crate::backend::local) fn walk(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let recent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let m = fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(path.clone());
                format!("dir nlink={}", m.nlink())
            } else if ft.is_file() {
                let data = fs::read(&path).unwrap();
                format!("file {} {}", data.len(), Digest::of(&data))
            } else if ft.is_symlink() {
                format!("symlink {}", fs::read_link(&path).unwrap().display())
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("dev {} {:x}", ft.is_char_device(), m.rdev())
            } else {
                "fifo".to_owned()
            };
            if !ft.is_dir() {
                inodes.entry(m.ino()).or_default().push(rel.clone());
            }
            // Times the layer did not give (implicit parents, whiteouts) are the unpack's.
            let mtime = if m.mtime() > recent { -1 } else { m.mtime() };
            let mut xattrs = Vec::new();
            let mut names = vec![0u8; 65_536];
            let n = rustix::fs::llistxattr(&path, &mut names[..]).unwrap();
            for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                let mut value = vec![0u8; 70_000];
                let len = rustix::fs::lgetxattr(&path, name, &mut value[..]).unwrap();
                xattrs.push(format!(
                    "{}={}",
                    String::from_utf8_lossy(name),
                    hex::encode(&value[..len])
                ));
            }
            xattrs.sort();
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} owner={}:{} mtime={mtime} xattrs={xattrs:?}",
                    m.mode(),
                    m.uid(),
                    m.gid()
                ),
            );
        }
    }
    for names in inodes.values().filter(|n| n.len() > 1) {
        for name in names {
            let mut others = names.clone();
            others.sort();
            out.get_mut(name)
                .unwrap()
                .push_str(&format!(" links={others:?}"));
        }
    }
    out
}

/// A layer with a bit of everything, in sizes that cross the image's block boundaries.
fn varied_layer() -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    entry(&mut b, EntryType::Directory, "usr/", "", 0o755, b"");
    entry(&mut b, EntryType::Directory, "usr/lib/", "", 0o2775, b"");
    for (i, size) in [0usize, 1, 4095, 4096, 4097, 100_000]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
        entry(
            &mut b,
            EntryType::Regular,
            &format!("usr/lib/f{i}"),
            "",
            0o644,
            &data,
        );
    }
    // A directory of many blocks, with names that sort before "." and ".." too.
    for i in 0..700 {
        let name = match i % 3 {
            0 => format!("big/-{i:04}-a-rather-long-name-to-fill-blocks-faster"),
            1 => format!("big/{i:04}"),
            _ => format!("big/!{i}"),
        };
        entry(
            &mut b,
            EntryType::Regular,
            &name,
            "",
            0o600,
            name.as_bytes(),
        );
    }
    entry(
        &mut b,
        EntryType::Symlink,
        "usr/short",
        "lib/f1",
        0o777,
        b"",
    );
    let long = format!("{}/target", "x".repeat(4000));
    entry(&mut b, EntryType::Symlink, "usr/long", &long, 0o777, b"");
    entry(
        &mut b,
        EntryType::Link,
        "usr/hard",
        "usr/lib/f3",
        0o644,
        b"",
    );
    entry(
        &mut b,
        EntryType::Link,
        "big/hard",
        "usr/lib/f3",
        0o644,
        b"",
    );
    entry(&mut b, EntryType::Fifo, "run/fifo", "", 0o640, b"");
    b.append_pax_extensions([
        ("SCHILY.xattr.user.note", &b"a note"[..]),
        ("SCHILY.xattr.trusted.big", &[7u8; 3000][..]),
    ])
    .unwrap();
    entry(&mut b, EntryType::Regular, "usr/xattrs", "", 0o755, b"x");
    entry(&mut b, EntryType::Regular, "usr/.wh.gone", "", 0o644, b"");
    entry(
        &mut b,
        EntryType::Regular,
        "opaque/.wh..wh..opq",
        "",
        0o644,
        b"",
    );
    entry(&mut b, EntryType::Regular, "opaque/kept", "", 0o644, b"k");
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Char);
    h.set_mode(0o600);
    h.set_size(0);
    h.set_device_major(4).unwrap();
    h.set_device_minor(300).unwrap();
    h.set_mtime(1_234_567_890);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, "dev/tty300", &[][..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn an_image_holds_what_the_directory_form_holds() {
    let tar = varied_layer();
    let dirs = tempfile::tempdir().unwrap();
    unpack_layer(
        &tar[..],
        "tar",
        Some(&Digest::of(&tar)),
        dirs.path(),
        &mut |_| {},
    )
    .unwrap();
    let image = Mounted::of(&tar);
    let (want, got) = (walk(dirs.path()), walk(&image.root()));
    assert!(want.len() > 700, "{} entries", want.len());
    for (name, w) in &want {
        assert_eq!(got.get(name), Some(w), "{name}");
    }
    assert_eq!(want.len(), got.len(), "extra entries in the image");
    // The root too.
    let (a, b) = (
        fs::metadata(dirs.path()).unwrap(),
        fs::metadata(image.root()).unwrap(),
    );
    assert_eq!(
        (a.mode(), a.uid(), a.nlink()),
        (b.mode(), b.uid(), b.nlink())
    );
}

#[test]
fn lookups_find_every_name_in_a_large_directory() {
    let tar = varied_layer();
    let image = Mounted::of(&tar);
    // By name (the kernel bisects the sorted blocks), not by listing.
    for i in 0..700 {
        let name = match i % 3 {
            0 => format!("big/-{i:04}-a-rather-long-name-to-fill-blocks-faster"),
            1 => format!("big/{i:04}"),
            _ => format!("big/!{i}"),
        };
        assert_eq!(fs::read(image.root().join(&name)).unwrap(), name.as_bytes());
    }
    assert!(fs::symlink_metadata(image.root().join("big/nonexistent")).is_err());
    assert!(fs::symlink_metadata(image.root().join("big/."))
        .unwrap()
        .is_dir());
}

#[test]
fn an_empty_layer_is_an_empty_root() {
    let mut b = Builder::new(Vec::new());
    b.finish().unwrap();
    let tar = b.into_inner().unwrap();
    let image = Mounted::of(&tar);
    assert_eq!(fs::read_dir(image.root()).unwrap().count(), 0);
}

#[test]
fn the_stream_is_checked_against_the_diff_id() {
    // The image form hashes on the thread reading the tar, not the inflating one: the
    // check must be the same.
    let tar = varied_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wrong = Digest::of(b"another layer");
    let err = unpack_layer_image(
        &gz[..],
        "gzip",
        Some(&wrong),
        &tmp.path().join("a"),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::InvalidArgument);
    assert!(
        err.message().contains(&format!(
            "does not match diff_id {wrong}: got {}",
            Digest::of(&tar)
        )),
        "{err}"
    );
    let stats = unpack_layer_image(
        &gz[..],
        "gzip",
        Some(&Digest::of(&tar)),
        &tmp.path().join("b"),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
}

#[test]
fn xattrs_larger_than_a_block_are_read_back() {
    // An inode whose xattrs do not fit in one block starts at a block boundary and spans
    // the next ones.
    let mut b = Builder::new(Vec::new());
    let big: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.big", &big[..]),
        ("SCHILY.xattr.user.small", b"s"),
    ])
    .unwrap();
    entry(&mut b, EntryType::Regular, "f", "", 0o644, b"data");
    entry(&mut b, EntryType::Regular, "g", "", 0o644, b"next");
    let tar = b.into_inner().unwrap();
    let image = Mounted::of(&tar);
    let mut value = vec![0u8; 30_000];
    let n = rustix::fs::lgetxattr(image.root().join("f"), "trusted.big", &mut value[..]).unwrap();
    assert_eq!(&value[..n], &big[..]);
    let n = rustix::fs::lgetxattr(image.root().join("f"), "user.small", &mut value[..]).unwrap();
    assert_eq!(&value[..n], b"s");
    assert_eq!(fs::read(image.root().join("f")).unwrap(), b"data");
    assert_eq!(fs::read(image.root().join("g")).unwrap(), b"next");
}

/// `n` xattrs `user.xNNNNN` of 24 bytes each on file `f`, then file `g`.
fn xattr_flood(n: usize) -> Vec<u8> {
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("SCHILY.xattr.user.x{i:05}"),
                format!("value-{i:018}").into_bytes(),
            )
        })
        .collect();
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), &v[..])))
        .unwrap();
    entry(&mut b, EntryType::Regular, "f", "", 0o644, b"data");
    entry(&mut b, EntryType::Regular, "g", "", 0o644, b"next");
    b.into_inner().unwrap()
}

/// An inode's xattr count is 16 bits: 7,000 xattrs (about 252 KiB) are the most that fit
/// and are read back whole by the kernel; 7,400 are refused, naming the entry. (Narrowed to
/// 16 bits, the count wrapped and the kernel read EUCLEAN from about the 6,892nd on.)
#[test]
fn an_inode_holds_the_xattrs_erofs_can_count_and_more_are_refused() {
    let image = Mounted::of(&xattr_flood(7_000));
    let f = image.root().join("f");
    let mut value = [0u8; 64];
    for i in (0..7_000).step_by(7).chain([6_891, 6_892, 6_999]) {
        let n = rustix::fs::lgetxattr(&f, format!("user.x{i:05}"), &mut value[..])
            .unwrap_or_else(|e| panic!("xattr {i}: {e}"));
        assert_eq!(&value[..n], format!("value-{i:018}").as_bytes());
    }
    assert_eq!(fs::read(image.root().join("g")).unwrap(), b"next");

    let tar = xattr_flood(7_400);
    let tmp = tempfile::tempdir().unwrap();
    let e = unpack_layer_image(
        &tar[..],
        "tar",
        Some(&Digest::of(&tar)),
        &tmp.path().join("layer.erofs"),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("entry \"f\""), "{e}");
    assert!(e.message().contains("an EROFS inode holds"), "{e}");
}
