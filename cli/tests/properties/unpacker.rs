//! Properties of the layer unpacker.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use imv::__property_tests::unpack_layer;
use imv::{Digest, ErrorKind};
use imv_testkit::image_builder::{Compression, Entry, LayerBuilder};

use super::cases;

/// One component of an entry name or link target.
#[derive(Clone, Debug)]
enum Comp {
    Lit(&'static str),
    /// Random bytes, never `/` or NUL.
    Bytes(Vec<u8>),
    /// `n` times `x`: 255 is the longest name a filesystem takes, 256 is too long.
    Long(usize),
    /// The temp dir holding the destination and the canaries, as an absolute path
    /// (without its leading `/`: put it first after a leading `/`).
    Outside,
}

#[derive(Clone, Debug)]
struct Name {
    lead: &'static str,
    comps: Vec<Comp>,
    trail: &'static str,
}

impl Name {
    fn render(&self, outside: &Path) -> Vec<u8> {
        let mut out = self.lead.as_bytes().to_vec();
        for (i, c) in self.comps.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            match c {
                Comp::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Comp::Bytes(b) => out.extend_from_slice(b),
                Comp::Long(n) => out.extend(std::iter::repeat_n(b'x', *n)),
                Comp::Outside => {
                    let o = outside.to_str().unwrap();
                    out.extend_from_slice(o.trim_start_matches('/').as_bytes())
                }
            }
        }
        out.extend_from_slice(self.trail.as_bytes());
        out
    }
}

/// A name component. `rough` adds what makes the unpacker refuse a layer outright (`..`,
/// NUL, over-long names, whiteouts of nothing); without it a layer mostly unpacks, so the
/// tricky entries after the first get applied too.
fn comp(rough: bool) -> BoxedStrategy<Comp> {
    let plain = prop_oneof![
        Just("a"),
        Just("b"),
        Just("c"),
        Just("out"),
        Just("up"),
        Just("abs"),
        Just("canary_dir"),
        Just("canary_file"),
        Just("inner"),
        Just("dest"),
    ]
    .prop_map(Comp::Lit);
    let dots = prop_oneof![Just("."), Just(""), Just("...")].prop_map(Comp::Lit);
    let whiteouts = prop_oneof![
        Just(".wh.a"),
        Just(".wh.b"),
        Just(".wh.out"),
        Just(".wh..."),
        Just(".wh..wh..opq"),
        Just(".wh..wh.plnk"),
    ]
    .prop_map(Comp::Lit);
    let bytes = prop::collection::vec(1u8..=255, 1..6).prop_map(|v| {
        Comp::Bytes(
            v.into_iter()
                .map(|b| if b == b'/' { b'_' } else { b })
                .collect(),
        )
    });
    if !rough {
        return prop_oneof![
            16 => plain,
            2 => dots,
            2 => whiteouts,
            1 => bytes,
            1 => Just(Comp::Long(255)),
            1 => Just(Comp::Outside),
        ]
        .boxed();
    }
    prop_oneof![
        8 => plain,
        2 => dots,
        2 => whiteouts,
        2 => Just(Comp::Lit("..")),
        1 => prop_oneof![Just(".wh."), Just(".wh.."), Just(".wh..wh.")].prop_map(Comp::Lit),
        1 => Just(Comp::Lit("n\0ul")),
        1 => bytes,
        1 => prop_oneof![Just(255usize), Just(256usize)].prop_map(Comp::Long),
        1 => Just(Comp::Outside),
    ]
    .boxed()
}

fn name(rough: bool) -> impl Strategy<Value = Name> {
    let lead = if rough {
        prop_oneof![6 => Just(""), 2 => Just("/"), 2 => Just("./"), 1 => Just("//"), 1 => Just("../")].boxed()
    } else {
        prop_oneof![6 => Just(""), 2 => Just("/"), 2 => Just("./"), 1 => Just("//")].boxed()
    };
    (
        lead,
        prop::collection::vec(comp(rough), 1..4),
        prop_oneof![6 => Just(""), 2 => Just("/"), 1 => Just("/.")],
    )
        .prop_map(|(lead, comps, trail)| Name { lead, comps, trail })
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    File,
    Dir,
    /// A directory as old tars write it: type `\0` and a trailing `/`.
    OldDir,
    Symlink,
    Hardlink,
    /// `.wh.` prepended to the last component.
    Whiteout,
    /// `/.wh..wh..opq` appended.
    Opaque,
    Char,
    Block,
    Fifo,
    /// Any typeflag byte.
    Other(u8),
}

/// A link target: a name of its own, or the name of an earlier entry of the layer (so
/// hard links mostly find their target, and symlinks point at what the layer made).
#[derive(Clone, Debug)]
enum Link {
    Name(Name),
    Earlier(usize),
}

#[derive(Clone, Debug)]
struct GenEntry {
    kind: Kind,
    name: Name,
    link: Link,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    data: Vec<u8>,
    xattr: Option<(&'static str, Vec<u8>)>,
}

impl GenEntry {
    /// The entry, `earlier` being the names (rendered) of the entries before it.
    fn entry(&self, outside: &Path, earlier: &[Vec<u8>]) -> (Vec<u8>, Entry) {
        let mut name = self.name.render(outside);
        let link = match &self.link {
            Link::Earlier(i) if !earlier.is_empty() => earlier[i % earlier.len()].clone(),
            Link::Earlier(_) => b"a".to_vec(),
            Link::Name(n) => n.render(outside),
        };
        let none: &[u8] = b"";
        let (typ, data, link) = match self.kind {
            Kind::File => (b'0', &self.data[..], none),
            Kind::Dir => (b'5', none, none),
            Kind::OldDir => {
                name.push(b'/');
                (0, none, none)
            }
            // Links and nodes may carry data too: the unpacker must skip it.
            Kind::Symlink => (b'2', &self.data[..self.data.len().min(3)], &link[..]),
            Kind::Hardlink => (b'1', none, &link[..]),
            Kind::Whiteout => {
                // Hide the last real component: `a/` is whited out as `.wh.a`, not `a/.wh.`.
                while name.ends_with(b"/") || name.ends_with(b"/.") {
                    name.truncate(name.len() - if name.ends_with(b"/") { 1 } else { 2 });
                }
                let at = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
                name.splice(at..at, *b".wh.");
                (b'0', none, none)
            }
            Kind::Opaque => {
                name.extend_from_slice(b"/.wh..wh..opq");
                (b'0', none, none)
            }
            Kind::Char => (b'3', none, none),
            Kind::Block => (b'4', none, none),
            Kind::Fifo => (b'6', none, none),
            Kind::Other(t) => (t, &self.data[..], &link[..]),
        };
        let mut e = Entry::raw(&name, typ, data, link)
            .mode(self.mode)
            .owner(self.owner.0, self.owner.1)
            .mtime(self.mtime);
        if let Some((k, v)) = &self.xattr {
            e = e.xattr(k, v.clone());
        }
        (name, e)
    }
}

fn gen_entry(rough: bool) -> impl Strategy<Value = GenEntry> {
    let kind = prop_oneof![
        5 => Just(Kind::File),
        3 => Just(Kind::Dir),
        1 => Just(Kind::OldDir),
        4 => Just(Kind::Symlink),
        3 => Just(Kind::Hardlink),
        2 => Just(Kind::Whiteout),
        1 => Just(Kind::Opaque),
        1 => Just(Kind::Char),
        1 => Just(Kind::Block),
        1 => Just(Kind::Fifo),
    ];
    // Any typeflag (extension headers aside: they describe the next entry), rough only.
    let kind = if rough {
        prop_oneof![
            16 => kind,
            1 => any::<u8>().prop_filter("not a PAX or GNU extension header", |t| {
                !matches!(t, b'x' | b'g' | b'L' | b'K')
            }).prop_map(Kind::Other),
        ]
        .boxed()
    } else {
        kind.boxed()
    };
    let link = prop_oneof![
        2 => name(rough).prop_map(Link::Name),
        1 => any::<usize>().prop_map(Link::Earlier),
    ];
    let mode = prop_oneof![
        4 => 0u32..0o10000,
        1 => Just(0o7777u32),
        1 => 0u32..=0o7777777,
    ];
    let owner = prop_oneof![
        4 => Just((0u64, 0u64)),
        1 => Just((1000, 1000)),
        1 => Just((65534, 65534)),
        1 => Just((2097151, 0)),
    ];
    let mtime = prop_oneof![Just(0u64), Just(1_000_000_000), Just(0o77777777777)];
    let data = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..48),
        1 => (0usize..3000).prop_map(|n| vec![0u8; n]),
    ];
    let xattr = prop_oneof![
        8 => Just(None),
        1 => Just(Some(("user.k", b"v".to_vec()))),
        1 => Just(Some(("trusted.overlay.opaque", b"y".to_vec()))),
        1 => Just(Some(("trusted.imv", b"t".to_vec()))),
    ];
    // Not a valid capability: the kernel refuses it (EINVAL), failing the layer.
    let xattr = if rough {
        prop_oneof![11 => xattr, 1 => Just(Some(("security.capability", b"junk".to_vec())))].boxed()
    } else {
        xattr.boxed()
    };
    (kind, name(rough), link, mode, owner, mtime, data, xattr).prop_map(
        |(kind, name, link, mode, owner, mtime, data, xattr)| GenEntry {
            kind,
            name,
            link,
            mode,
            owner,
            mtime,
            data,
            xattr,
        },
    )
}

#[derive(Clone, Debug)]
struct GenLayer {
    entries: Vec<GenEntry>,
    compression: Compression,
    /// Cut the tar after this fraction (per mille) of its bytes.
    truncate: Option<u16>,
    /// Claim a diff_id that is not the layer's.
    wrong_diff_id: bool,
}

fn gen_layer() -> impl Strategy<Value = GenLayer> {
    (
        prop::bool::weighted(0.3).prop_flat_map(|rough| prop::collection::vec(gen_entry(rough), 1..12)),
        prop_oneof![6 => Just(Compression::None), 1 => Just(Compression::Gzip), 1 => Just(Compression::Zstd)],
        prop_oneof![9 => Just(None), 1 => (0u16..1000).prop_map(Some)],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(entries, compression, truncate, wrong_diff_id)| GenLayer {
            entries,
            compression,
            truncate,
            wrong_diff_id,
        })
}

/// The destination and its neighbours, in a temp dir `T`:
///
/// ```text
/// T/dest/                   the unpack destination, holding what a lower layer left:
/// T/dest/out -> T/canary_dir     an absolute symlink out
/// T/dest/up -> ../canary_dir     a relative symlink out
/// T/dest/abs -> /                the host root
/// T/canary_file             must not change (content, mode, owner, times, xattrs, links)
/// T/canary_dir/inner        same
/// T/canary_dir/sub/
/// T/canary_link -> canary_file
/// T/destx/file              a sibling whose name starts like the destination's
/// ```
struct Scene {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    dest: PathBuf,
}

/// Owner of the canaries: nothing in a layer chowns to it by chance.
const CANARY_ID: u32 = 4321;

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let dest = base.join("dest");
    fs::create_dir(&dest).unwrap();
    symlink(base.join("canary_dir"), dest.join("out")).unwrap();
    symlink("../canary_dir", dest.join("up")).unwrap();
    symlink("/", dest.join("abs")).unwrap();
    fs::write(base.join("canary_file"), b"canary\n").unwrap();
    fs::create_dir_all(base.join("canary_dir/sub")).unwrap();
    fs::write(base.join("canary_dir/inner"), b"inner\n").unwrap();
    symlink("canary_file", base.join("canary_link")).unwrap();
    fs::create_dir(base.join("destx")).unwrap();
    fs::write(base.join("destx/file"), b"x").unwrap();
    for (rel, mode) in [
        ("canary_file", 0o640),
        ("canary_dir/inner", 0o600),
        ("canary_dir/sub", 0o750),
        ("canary_dir", 0o750),
        ("destx/file", 0o644),
    ] {
        let p = base.join(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&p, Some(CANARY_ID), Some(CANARY_ID)).unwrap();
    }
    // Times last: the writes above changed the directories'.
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(123_456_789, 42);
    for rel in [
        "canary_file",
        "canary_dir/inner",
        "canary_dir/sub",
        "canary_dir",
        "destx/file",
        "destx",
    ] {
        let f = fs::File::open(base.join(rel)).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }
    Scene {
        _tmp: tmp,
        base,
        dest,
    }
}

/// Everything observable about one file outside the destination.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
    nlink: u64,
    size: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names).unwrap();
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 4096];
        let m = rustix::fs::lgetxattr(path, name, &mut value).unwrap();
        out.push((name.to_vec(), value[..m].to_vec()));
    }
    out.sort();
    out
}

/// Every path under `base` except `dest`'s content, without following symlinks, with
/// what can be observed of it (ctime too: any chmod, chown, xattr or link change moves it).
fn observe(base: &Path, dest: &Path, out: &mut BTreeMap<PathBuf, Observed>) {
    let meta = fs::symlink_metadata(base).unwrap();
    let content = meta.is_file().then(|| fs::read(base).unwrap());
    let link = meta.is_symlink().then(|| fs::read_link(base).unwrap());
    out.insert(
        base.to_owned(),
        Observed {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            nlink: meta.nlink(),
            size: meta.size(),
            content,
            link,
            xattrs: xattrs(base),
        },
    );
    if meta.is_dir() && base != dest {
        for e in fs::read_dir(base).unwrap() {
            observe(&e.unwrap().path(), dest, out);
        }
    }
}

/// (dev, ino) of every path in the map.
fn inodes(observed: &BTreeMap<PathBuf, Observed>) -> HashSet<(u64, u64)> {
    observed
        .keys()
        .map(|p| {
            let m = fs::symlink_metadata(p).unwrap();
            (m.dev(), m.ino())
        })
        .collect()
}

/// Walk `dir` (inside `dest`) without following symlinks; check each entry is beneath
/// `dest` by the kernel's own walk and shares no inode with anything outside.
fn check_dest(
    dest_fd: &std::os::fd::OwnedFd,
    dest: &Path,
    dir: &Path,
    outside: &HashSet<(u64, u64)>,
) -> Result<(), TestCaseError> {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        prop_assert!(
            !outside.contains(&(meta.dev(), meta.ino())),
            "{} is (a hard link to) a file outside the destination",
            path.display()
        );
        let rel = path.strip_prefix(dest).unwrap();
        let beneath = rustix::fs::openat2(
            dest_fd,
            rel,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
        );
        prop_assert!(
            beneath.is_ok(),
            "{} is not beneath the destination: {:?}",
            path.display(),
            beneath
        );
        if meta.is_dir() {
            check_dest(dest_fd, dest, &path, outside)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(384))]

    /// Whatever the layer holds, the unpacker writes only inside its destination (the
    /// canaries beside it and behind its symlinks keep content, mode, owner, times and
    /// xattrs), never panics, and fails only with InvalidArgument or Internal; a wrong
    /// diff_id always fails.
    #[test]
    fn unpack_stays_inside_destination(layer in gen_layer()) {
        let scene = scene();
        let mut builder = LayerBuilder::new().compression(Compression::None);
        let mut names = Vec::new();
        for e in &layer.entries {
            let (name, entry) = e.entry(&scene.base, &names);
            builder = builder.entry(entry);
            names.push(name);
        }
        let mut tar = builder.tar().unwrap();
        if let Some(per_mille) = layer.truncate {
            tar.truncate(tar.len() * usize::from(per_mille) / 1000);
        }
        let blob = layer.compression.compress(&tar).unwrap();
        let diff_id = if layer.wrong_diff_id {
            Digest::of(b"not this layer")
        } else {
            Digest::of(&tar)
        };

        let mut before = BTreeMap::new();
        observe(&scene.base, &scene.dest, &mut before);
        let result = unpack_layer(
            blob.as_slice(),
            "application/vnd.oci.image.layer.v1.tar",
            Some(&diff_id),
            &scene.dest,
            &mut |_| {},
        );
        let mut after = BTreeMap::new();
        observe(&scene.base, &scene.dest, &mut after);
        // The destination's own entry may change (a `./` entry sets its metadata).
        before.remove(&scene.dest);
        after.remove(&scene.dest);
        for (path, was) in &before {
            prop_assert_eq!(after.get(path), Some(was), "{} changed", path.display());
        }
        prop_assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "files appeared outside the destination"
        );

        let dest_fd = rustix::fs::open(
            &scene.dest,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ).unwrap();
        check_dest(&dest_fd, &scene.dest, &scene.dest, &inodes(&before))?;

        match &result {
            Ok(_) => prop_assert!(!layer.wrong_diff_id, "a wrong diff_id was accepted"),
            Err(e) => prop_assert!(
                matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::Internal),
                "unexpected error kind: {e}"
            ),
        }
    }
}
