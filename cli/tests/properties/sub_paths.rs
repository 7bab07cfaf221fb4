//! Properties of sub paths.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use proptest::prelude::*;

use imv::__property_tests::{resolve_sub_path, validate_sub_path};
use imv::ErrorKind;

use super::cases;

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
        let got = validate_sub_path(&s);
        prop_assert_eq!(got.is_ok(), want, "{:?}: {:?}", s, got);
    }

    /// resolve returns a path inside the root (the one the model predicts) or an error of
    /// the predicted kind; never a path outside.
    #[test]
    fn sub_path_resolves_inside_or_fails(s in sub_path_like()) {
        let tree = sub_tree();
        let got = resolve_sub_path(&tree.root, &s);
        let want = if validate_sub_path(&s).is_err() {
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
