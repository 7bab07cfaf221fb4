//! Property-based tests of the code that takes untrusted input: image references,
//! platforms, sandbox IDs, sub paths, layer tars and image archives.
//!
//! Each property runs a bounded number of random cases so the whole file stays within a
//! few seconds in a debug build; set `PROPTEST_CASES=N` to run N cases of every property
//! instead (a longer local run). A failure is shrunk to a small case and its seed written
//! to `tests/properties.proptest-regressions` (commit that file: the case is then replayed
//! first on every run).
//!
//! Run as root: the unpacker sets owners, makes device nodes and trusted.* xattrs.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;

use imv::backend::local::content::ContentStore;
use imv::backend::local::import::import;
use imv::backend::local::unpack::unpack_layer;
use imv::backend::NoProgress;
use imv::image_builder::{
    Compression, Entry, ImageBuilder, LayerBuilder, LayoutOptions, OciLayout,
};
use imv::layout::{validate_sandbox_id, MAX_SANDBOX_ID_LEN};
use imv::reference::{self, Reference};
use imv::{subpath, Digest, ErrorKind, Platform};

/// `default` cases, or `PROPTEST_CASES` when set (the runner's own variable, which an
/// explicit case count would otherwise override).
fn cases(default: u32) -> Config {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases: n,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------------------

/// Strings shaped like references, valid or nearly so: domains with ports and IPv6,
/// path components with every separator the grammar knows (and some it does not), tags,
/// digests good and bad, and the occasional very long component.
fn reference_like() -> impl Strategy<Value = String> {
    let domain = prop_oneof![
        Just(String::new()),
        Just("docker.io/".to_owned()),
        Just("index.docker.io/".to_owned()),
        Just("localhost/".to_owned()),
        Just("localhost:5000/".to_owned()),
        Just("[::1]:5000/".to_owned()),
        Just("[fe80::1]/".to_owned()),
        Just("Example.COM/".to_owned()),
        Just("ex-ample.com:80/".to_owned()),
        "[a-zA-Z0-9.:-]{1,12}/",
    ];
    let component = prop_oneof![
        4 => "[a-z0-9]{1,8}",
        2 => "[a-z0-9]{1,4}([._]|__|-{1,3})[a-z0-9]{1,4}",
        1 => "[a-zA-Z0-9._-]{0,6}",
        1 => "library",
        1 => "[a-f0-9]{64}",
        1 => "[a-z]{60,130}",
        // Just under the 255-byte name limit, before and after `docker.io/library/`.
        1 => "[a-z]{230,255}",
    ];
    let path = prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let tag = prop_oneof![
        Just(String::new()),
        Just(":latest".to_owned()),
        ":[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}",
        ":[A-Za-z0-9_.:-]{0,6}",
        ":[a-z]{127,130}",
    ];
    let digest = prop_oneof![
        Just(String::new()),
        "@sha256:[a-f0-9]{64}",
        "@sha256:[a-fA-F0-9]{60,66}",
        "@[a-z0-9]{1,8}:[a-z0-9]{1,8}",
    ];
    (domain, path, tag, digest).prop_map(|(d, p, t, g)| format!("{d}{p}{t}{g}"))
}

proptest! {
    #![proptest_config(cases(512))]

    /// Parsing never panics, whatever the input; errors are InvalidArgument.
    #[test]
    fn reference_parse_never_panics(s in prop_oneof![any::<String>(), reference_like()]) {
        for r in [Reference::parse(&s), Reference::parse_normalized(&s)] {
            if let Err(e) = r {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e);
            }
        }
    }

    /// normalize(normalize(x)) == normalize(x), and the normalized string parses back to
    /// the normalized value, unchanged by another normalization.
    #[test]
    fn reference_normalize_is_idempotent(s in reference_like()) {
        if let Ok(once) = reference::normalize(&s) {
            let twice = reference::normalize(&once);
            prop_assert_eq!(twice.as_ref().ok(), Some(&once), "{:?} -> {:?} -> {:?}", s, once, twice);
        }
        if let Ok(r) = Reference::parse(&s) {
            let n = r.normalize();
            prop_assert_eq!(n.normalize(), n.clone());
        }
    }

    /// Display of a parsed normalized reference parses back to the same value.
    #[test]
    fn reference_display_round_trips(s in reference_like()) {
        if let Ok(r) = Reference::parse_normalized(&s) {
            let shown = r.to_string();
            let back = Reference::parse(&shown);
            prop_assert_eq!(back.as_ref().ok(), Some(&r), "{:?} shown as {:?}: {:?}", s, shown, back);
        }
        if let Ok(r) = Reference::parse(&s) {
            // Without normalization too: Display is the inverse of parse.
            let back = Reference::parse(&r.to_string());
            prop_assert_eq!(back.ok(), Some(r));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Platforms
// ---------------------------------------------------------------------------------------

/// Strings shaped like platform specifiers: known and unknown OSes and architectures in
/// any case, variants, Windows versions and features with `%`-escapes, and junk.
fn platform_like() -> impl Strategy<Value = String> {
    let os = prop_oneof![
        Just("linux"),
        Just("Linux"),
        Just("windows"),
        Just("darwin"),
        Just("macos"),
        Just("freebsd"),
        Just("foo"),
        Just(""),
    ];
    let option = prop_oneof![
        "[A-Za-z0-9_.-]{0,6}",
        "10\\.0\\.(17763|20348|26100)(\\.[0-9]{1,4})?",
        "%(25|2B|2F|28|29|20|41|zz|2)",
        "[A-Za-z0-9_.%+()/ -]{0,6}",
    ];
    let options = prop_oneof![
        3 => Just(String::new()),
        2 => (option.clone(), prop::collection::vec(option, 0..3)).prop_map(|(v, f)| {
            let mut s = format!("({v}");
            for f in f {
                s.push('+');
                s.push_str(&f);
            }
            s.push(')');
            s
        }),
    ];
    let arch = prop_oneof![
        Just("amd64"),
        Just("x86_64"),
        Just("X86-64"),
        Just("386"),
        Just("i686"),
        Just("arm"),
        Just("armhf"),
        Just("armel"),
        Just("arm64"),
        Just("aarch64"),
        Just("riscv64"),
        Just("s390x"),
        Just("bar"),
        Just(""),
    ];
    let variant = prop_oneof![
        Just(""),
        Just("v1"),
        Just("V2"),
        Just("v5"),
        Just("7"),
        Just("v8"),
        Just("8"),
        Just("v8.2"),
        Just("9"),
        Just("v9.0"),
        Just("v9.7"),
        Just("v10"),
        Just("x.y"),
    ];
    let shape = 0..4usize;
    (os, options, arch, variant, shape).prop_map(
        |(os, options, arch, variant, shape)| match shape {
            0 => format!("{os}{options}"),
            1 => arch.to_owned(),
            2 => format!("{os}{options}/{arch}"),
            _ => format!("{os}{options}/{arch}/{variant}"),
        },
    )
}

/// Platforms built field by field, not through the parser: what an image config or an
/// index entry may declare.
fn platform_struct() -> impl Strategy<Value = Platform> {
    (
        "[A-Za-z]{0,6}|linux|windows",
        "[A-Za-z0-9_-]{0,6}|amd64|arm|arm64|aarch64|x86_64",
        "[A-Za-z0-9.]{0,4}|v7|v8|v9.1",
        "[A-Za-z0-9.+%() -]{0,8}|10\\.0\\.20348\\.1",
        prop::collection::vec("[A-Za-z0-9+%() ]{0,5}", 0..3),
    )
        .prop_map(
            |(os, architecture, variant, os_version, os_features)| Platform {
                os,
                architecture,
                variant,
                os_version,
                os_features,
            },
        )
}

proptest! {
    #![proptest_config(cases(512))]

    /// Parsing never panics; errors are InvalidArgument.
    #[test]
    fn platform_parse_never_panics(s in prop_oneof![any::<String>(), platform_like()]) {
        if let Err(e) = Platform::parse(&s) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e);
        }
    }

    /// What the parser returns, Display writes in a form the parser reads back to the
    /// same value; and a platform always matches itself.
    #[test]
    fn platform_display_round_trips(s in platform_like()) {
        if let Ok(p) = Platform::parse(&s) {
            let shown = p.to_string();
            let back = Platform::parse(&shown);
            prop_assert_eq!(back.as_ref().ok(), Some(&p), "{:?} shown as {:?}: {:?}", s, shown, back);
            prop_assert!(p.only().matches(&p), "{:?} does not match itself", p);
        }
    }

    /// For platforms from configs and index entries: normalization is idempotent and a
    /// platform matches itself.
    #[test]
    fn platform_normalize_idempotent_and_self_matching(p in platform_struct()) {
        let n = p.clone().normalize();
        prop_assert_eq!(n.clone().normalize(), n.clone());
        prop_assert!(p.only().matches(&p), "{:?} does not match itself", p);
        prop_assert_eq!(p.only().rank(&p), Some(0));
    }
}

// ---------------------------------------------------------------------------------------
// Sandbox IDs
// ---------------------------------------------------------------------------------------

fn sandbox_id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9._/-]{0,80}",
        "[a-z0-9.\\x00/]{0,8}",
        prop::collection::vec(
            prop_oneof![
                Just(".."),
                Just("."),
                Just("/"),
                Just("a"),
                Just("-"),
                Just("\u{0}"),
                Just("é")
            ],
            0..10
        )
        .prop_map(|v| v.concat()),
        "[a-f0-9]{60,80}",
    ]
}

proptest! {
    #![proptest_config(cases(1024))]

    /// An accepted ID is a single normal path component: no `/`, NUL or `..`, at most
    /// 76 bytes.
    #[test]
    fn sandbox_id_accepted_is_one_component(id in sandbox_id_like()) {
        match validate_sandbox_id(&id) {
            Ok(()) => {
                prop_assert!(!id.contains('/') && !id.contains('\0') && !id.contains(".."), "{:?}", id);
                prop_assert!(id.len() <= MAX_SANDBOX_ID_LEN, "{:?}", id);
                let components: Vec<_> = Path::new(&id).components().collect();
                prop_assert!(
                    matches!(components.as_slice(), [Component::Normal(c)] if *c == id.as_str()),
                    "{:?} is {:?}", id, components
                );
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument),
        }
    }

    /// CRI sandbox IDs (64 hex digits) are always accepted.
    #[test]
    fn sandbox_id_cri_form_accepted(id in "[a-f0-9]{64}") {
        prop_assert!(validate_sandbox_id(&id).is_ok());
    }
}

// ---------------------------------------------------------------------------------------
// Sub paths
// ---------------------------------------------------------------------------------------

/// A fixed tree for sub paths, in a temp dir `T`:
///
/// ```text
/// T/vol/dir/file           file
/// T/vol/dir/back -> ../dir     inside
/// T/vol/dir/up2 -> ../..       escapes
/// T/vol/file               file
/// T/vol/in -> dir              inside
/// T/vol/inabs -> /dir          absolute: an escape under RESOLVE_BENEATH
/// T/vol/up -> ..               escapes
/// T/vol/out -> T/outside       escapes (absolute)
/// T/vol/loop -> loop           loop
/// T/vol/dangling -> nowhere    missing
/// T/outside/secret         what an escape would reach
/// ```
struct SubTree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn sub_tree() -> SubTree {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("vol");
    let outside = base.join("outside");
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    fs::write(root.join("dir/file"), b"f").unwrap();
    fs::write(root.join("file"), b"f").unwrap();
    symlink("../dir", root.join("dir/back")).unwrap();
    symlink("../..", root.join("dir/up2")).unwrap();
    symlink("dir", root.join("in")).unwrap();
    symlink("/dir", root.join("inabs")).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink(&outside, root.join("out")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    SubTree {
        _tmp: tmp,
        root,
        outside,
    }
}

/// What resolving a sub path should give, by a model of `SubTree` independent of the
/// kernel.
#[derive(Debug, PartialEq)]
enum Expect {
    Found(PathBuf),
    Invalid,
    NotFound,
}

/// Resolve `sub` in the model of [`sub_tree`], as openat2 `RESOLVE_BENEATH` walks it.
fn model_resolve(sub: &str) -> Expect {
    #[derive(Clone, Copy, PartialEq)]
    enum Node {
        Dir,
        File,
        Link(&'static str),
    }
    let lookup = |path: &[String]| -> Option<Node> {
        let p = path.join("/");
        Some(match p.as_str() {
            "" | "dir" => Node::Dir,
            "dir/file" | "file" => Node::File,
            "dir/back" => Node::Link("../dir"),
            "dir/up2" => Node::Link("../.."),
            "in" => Node::Link("dir"),
            "inabs" => Node::Link("/dir"),
            "up" => Node::Link(".."),
            "out" => Node::Link("/outside"),
            "loop" => Node::Link("loop"),
            "dangling" => Node::Link("nowhere"),
            _ => return None,
        })
    };
    // Components still to walk (front first), and where we are.
    let mut todo: Vec<String> = sub.split('/').rev().map(str::to_owned).collect();
    let mut at: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        // Anything after a component, even "" or ".", requires it to be a directory.
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                if at.pop().is_none() {
                    return Expect::Invalid;
                }
            }
            name => {
                at.push(name.to_owned());
                match lookup(&at) {
                    None => return Expect::NotFound,
                    Some(Node::Dir) => {}
                    Some(Node::File) => {
                        // More to walk below a file: ENOTDIR, which resolve reports as
                        // NotFound.
                        if !todo.is_empty() {
                            return Expect::NotFound;
                        }
                        // A file at the end: only directories are sub paths.
                        return Expect::Invalid;
                    }
                    Some(Node::Link(target)) => {
                        links += 1;
                        if links > 40 {
                            return Expect::Invalid;
                        }
                        if target.starts_with('/') {
                            return Expect::Invalid;
                        }
                        at.pop();
                        todo.extend(target.split('/').rev().map(str::to_owned));
                    }
                }
            }
        }
    }
    Expect::Found(PathBuf::from(at.join("/")))
}

fn sub_path_like() -> impl Strategy<Value = String> {
    let component = prop_oneof![
        Just("dir"),
        Just("file"),
        Just("in"),
        Just("inabs"),
        Just("up"),
        Just("up2"),
        Just("out"),
        Just("back"),
        Just("loop"),
        Just("dangling"),
        Just("secret"),
        Just("vol"),
        Just("missing"),
        Just(".."),
        Just("."),
        Just(""),
    ];
    (
        prop_oneof![4 => Just(""), 1 => Just("/")],
        prop::collection::vec(component, 1..7),
    )
        .prop_map(|(lead, c)| format!("{lead}{}", c.join("/")))
}

proptest! {
    #![proptest_config(cases(512))]

    /// validate accepts exactly the non-empty relative paths without `..`.
    #[test]
    fn sub_path_validate_matches_its_rule(s in prop_oneof![sub_path_like(), any::<String>()]) {
        let want = !s.is_empty()
            && !s.starts_with('/')
            && !s.contains('\0')
            && !s.split('/').any(|c| c == "..");
        let got = subpath::validate(&s);
        prop_assert_eq!(got.is_ok(), want, "{:?}: {:?}", s, got);
    }

    /// resolve returns a path inside the root (the one the model predicts) or an error of
    /// the predicted kind; never a path outside.
    #[test]
    fn sub_path_resolves_inside_or_fails(s in sub_path_like()) {
        let tree = sub_tree();
        let got = subpath::resolve(&tree.root, &s);
        let want = if subpath::validate(&s).is_err() {
            Expect::Invalid
        } else {
            match model_resolve(&s) {
                Expect::Found(rel) if rel.as_os_str().is_empty() => Expect::Found(tree.root.clone()),
                Expect::Found(rel) => Expect::Found(tree.root.join(rel)),
                other => other,
            }
        };
        if let Ok(p) = &got {
            prop_assert!(p.starts_with(&tree.root), "{:?} resolved to {:?}", s, p);
            prop_assert!(!p.starts_with(&tree.outside), "{:?} resolved to {:?}", s, p);
            prop_assert_eq!(&p.canonicalize().unwrap(), p, "{:?}: not fully resolved", s);
        }
        let got = match got {
            Ok(p) => Expect::Found(p),
            Err(e) if e.kind() == ErrorKind::InvalidArgument => Expect::Invalid,
            Err(e) if e.kind() == ErrorKind::NotFound => Expect::NotFound,
            Err(e) => return Err(TestCaseError::fail(format!("{s:?}: unexpected error {e}"))),
        };
        prop_assert_eq!(got, want, "sub path {:?}", s);
    }
}

// ---------------------------------------------------------------------------------------
// The layer unpacker
// ---------------------------------------------------------------------------------------

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
            &diff_id,
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

// ---------------------------------------------------------------------------------------
// Archive import
// ---------------------------------------------------------------------------------------

/// One member of a random archive.
#[derive(Clone, Debug)]
struct Member {
    name: MemberName,
    typ: u8,
    content: Content,
}

#[derive(Clone, Debug)]
enum MemberName {
    Lit(&'static str),
    /// `blobs/sha256/<hex of this member's content>`.
    BlobOfContent,
    /// `blobs/sha256/<random hex>`.
    BlobRandom(String),
    Random(String),
}

#[derive(Clone, Debug)]
enum Content {
    Bytes(Vec<u8>),
    OciLayout,
    /// An index.json naming the blob of content `n` (by generated digest and size),
    /// with the size off by `delta`.
    Index {
        size_delta: i8,
        name: bool,
    },
    /// A docker manifest.json naming members.
    DockerManifest(Vec<&'static str>),
    Json(&'static str),
}

fn member() -> impl Strategy<Value = Member> {
    let name = prop_oneof![
        3 => Just(MemberName::BlobOfContent),
        2 => prop_oneof![
            Just("oci-layout"), Just("index.json"), Just("manifest.json"), Just("./index.json"),
            Just("repositories"), Just("a/json"), Just("a/layer.tar"), Just("layer.tar"),
            Just("blobs"), Just("blobs/sha256"), Just("blobs/sha512/ab"), Just("blobs/sha256/zz"),
            Just("../index.json"), Just("/oci-layout"), Just("a/../b"), Just("conf.json"),
        ].prop_map(MemberName::Lit),
        1 => "[a-f0-9]{64}".prop_map(MemberName::BlobRandom),
        1 => "[a-z./]{1,12}".prop_map(MemberName::Random),
    ];
    let typ = prop_oneof![8 => Just(b'0'), 1 => Just(b'5'), 1 => Just(b'2'), 1 => Just(b'1'), 1 => Just(b'3')];
    let content = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Content::Bytes),
        2 => Just(Content::OciLayout),
        2 => (-2i8..=2, any::<bool>()).prop_map(|(size_delta, name)| Content::Index { size_delta, name }),
        1 => prop::collection::vec(prop_oneof![Just("a/layer.tar"), Just("conf.json"), Just("layer.tar"), Just("../x")], 0..3)
            .prop_map(Content::DockerManifest),
        1 => prop_oneof![
            Just("{}"), Just("[]"), Just("null"), Just("{\"imageLayoutVersion\":\"2.0\"}"),
            Just("{\"schemaVersion\":2,\"manifests\":[{}]}"),
            Just("[{\"Config\":\"conf.json\",\"RepoTags\":null,\"Layers\":[]}]"),
            Just("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"size\":0},\"layers\":[]}"),
        ].prop_map(Content::Json),
    ];
    (name, typ, content).prop_map(|(name, typ, content)| Member { name, typ, content })
}

/// Render random members into a tar; an index names the previous member's blob.
fn random_archive(members: &[Member]) -> Vec<u8> {
    let mut layer = LayerBuilder::new().compression(Compression::None);
    let mut prev: Option<(Digest, usize)> = None;
    for m in members {
        let content: Vec<u8> = match &m.content {
            Content::Bytes(b) => b.clone(),
            Content::OciLayout => br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            Content::Index { size_delta, name } => {
                let (digest, size) = prev.clone().unwrap_or((Digest::of(b""), 0));
                let size = (size as i64 + i64::from(*size_delta)).max(0);
                let annotations = if *name {
                    r#","annotations":{"io.containerd.image.name":"example.com/x:1"}"#
                } else {
                    ""
                };
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size}{annotations}}}]}}"#
                )
                .into_bytes()
            }
            Content::DockerManifest(layers) => {
                format!(r#"[{{"Config":"conf.json","RepoTags":["x:1"],"Layers":{layers:?}}}]"#)
                    .into_bytes()
            }
            Content::Json(s) => s.as_bytes().to_vec(),
        };
        let name = match &m.name {
            MemberName::Lit(s) => s.to_string(),
            MemberName::BlobOfContent => format!("blobs/sha256/{}", Digest::of(&content).hex()),
            MemberName::BlobRandom(h) => format!("blobs/sha256/{h}"),
            MemberName::Random(s) => s.clone(),
        };
        let link: &[u8] = if matches!(m.typ, b'1' | b'2') {
            b"index.json"
        } else {
            b""
        };
        let data: &[u8] = if m.typ == b'0' { &content } else { b"" };
        layer = layer.entry(Entry::raw(name.as_bytes(), m.typ, data, link));
        prev = Some((Digest::of(&content), content.len()));
    }
    layer.tar().unwrap()
}

/// A real archive of a small image, for mutation.
fn valid_archive() -> Vec<u8> {
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .compression(Compression::None)
                .file("a", 0o644, "hello"),
        )
        .layer(LayerBuilder::new().file("b", 0o644, "world"));
    let mut layout = OciLayout::new(LayoutOptions::default());
    layout.add_image("example.com/img:1", &image).unwrap();
    layout.archive_bytes().unwrap()
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Set the byte at this fraction (per mille) of the archive to a value.
    Set(u16, u8),
    /// Cut the archive at this fraction (per mille).
    Truncate(u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0u16..1000, any::<u8>()).prop_map(|(at, v)| Mutation::Set(at, v)),
        1 => (0u16..1000).prop_map(Mutation::Truncate),
    ]
}

fn archive_case() -> impl Strategy<Value = (Vec<u8>, Compression, bool)> {
    let random = prop::collection::vec(member(), 0..8).prop_map(|m| random_archive(&m));
    let mutated = prop::collection::vec(mutation(), 0..4).prop_map(|ms| {
        let mut a = valid_archive();
        for m in ms {
            match m {
                // After a cut to nothing there is nothing to set.
                Mutation::Set(_, _) if a.is_empty() => {}
                Mutation::Set(at, v) => {
                    let i = a.len() * usize::from(at) / 1000;
                    a[i] = v;
                }
                Mutation::Truncate(at) => a.truncate(a.len() * usize::from(at) / 1000),
            }
        }
        a
    });
    (
        prop_oneof![random, mutated],
        prop_oneof![4 => Just(Compression::None), 1 => Just(Compression::Gzip), 1 => Just(Compression::Zstd)],
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(cases(192))]

    /// Importing a random or damaged archive never panics, fails with InvalidArgument,
    /// and leaves no temp file in the store's ingest/ directory (nor anything but
    /// verified blobs under blobs/).
    #[test]
    fn import_random_archive((tar, compression, named) in archive_case()) {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&tmp.path().join("content")).unwrap();
        let path = tmp.path().join("archive.tar");
        fs::write(&path, compression.compress(&tar).unwrap()).unwrap();
        let name = named.then_some("example.com/named:1");
        let result = import(&store, &path, &imv::ImportOptions::named(name), &NoProgress);
        if let Err(e) = &result {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e);
        }
        let ingest: Vec<_> = fs::read_dir(store.dir().join("ingest")).unwrap().collect();
        prop_assert!(ingest.is_empty(), "left in ingest/: {:?} after {:?}", ingest, result);
        for digest in store.list().unwrap() {
            let mut data = Vec::new();
            store.open_blob(&digest).unwrap().read_to_end(&mut data).unwrap();
            prop_assert_eq!(Digest::of(&data), digest);
        }
    }
}
