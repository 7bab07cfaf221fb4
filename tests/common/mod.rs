//! Shared helpers of the integration tests: a temporary root and state per test, torn
//! down (unmounted, removed) even when the test fails, and tree comparison.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use imv::backend::ImageRecord;
use imv::backend::NoProgress;
use imv::image_builder::{ImageBuilder, ImageDigests, LayoutOptions, OciLayout};
use imv::{Config, ImageSpec, ImageVolumes, Mount};

/// A unique temporary root and state, and an `ImageVolumes` over them.
pub struct TestEnv {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    iv: Option<ImageVolumes>,
    sources: std::sync::atomic::AtomicUsize,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("imv-test-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let root = dir.join("root");
        let state = dir.join("state");
        let iv = ImageVolumes::open(Config::new(&root, &state)).expect("open");
        TestEnv {
            dir,
            root,
            state,
            iv: Some(iv),
            sources: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn iv(&self) -> &ImageVolumes {
        self.iv.as_ref().expect("open")
    }

    pub fn local(&self) -> &imv::backend::local::LocalBackend {
        self.iv().local().expect("local backend")
    }

    /// Close the store, so another process (a daemon) can open the same directories.
    pub fn close(&mut self) {
        self.iv = None;
    }

    /// Close and open again over the same directories (a restart of the runtime).
    pub fn reopen(&mut self) {
        self.iv = None;
        self.iv = Some(ImageVolumes::open(Config::new(&self.root, &self.state)).expect("reopen"));
    }

    /// A fresh directory inside the test's temporary directory.
    pub fn scratch(&self, what: &str) -> PathBuf {
        let n = self
            .sources
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = self.dir.join(format!("{what}-{n}"));
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Write `image` as an OCI layout named `name` and import it.
    pub fn import(&self, name: &str, image: &ImageBuilder) -> ImageDigests {
        let dir = self.scratch("src");
        let mut layout = OciLayout::new(LayoutOptions::default());
        let digests = layout.add_image(name, image).expect("build image");
        layout.write_dir(&dir).expect("write layout");
        let records = self.import_path(&dir, None);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].name, name);
        digests
    }

    pub fn import_path(&self, path: &Path, name: Option<&str>) -> Vec<ImageRecord> {
        self.local()
            .import(path, name, &NoProgress)
            .unwrap_or_else(|e| panic!("import {}: {e}", path.display()))
    }

    /// Everything mounted at or under the test's directory.
    pub fn mounts_under(&self, path: &Path) -> Vec<PathBuf> {
        imv::mount::mountinfo::under(path)
            .unwrap()
            .into_iter()
            .map(|m| m.mount_point)
            .collect()
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.iv().volumes_dir()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.iv = None;
        if let Err(e) = imv::mount::unmount_recursive(&self.dir) {
            eprintln!("teardown: unmounting {}: {e}", self.dir.display());
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("teardown: removing {}: {e}", self.dir.display());
        }
    }
}

/// An image mount as the kubelet sends it.
pub fn image_mount(image: &str, container_path: &str) -> Mount {
    Mount {
        container_path: container_path.into(),
        readonly: true,
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One node of a file tree, as compared between two unpackers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        sha: String,
        mtime: i64,
    },
    Symlink {
        target: PathBuf,
        uid: u32,
        gid: u32,
    },
    Device {
        kind: &'static str,
        mode: u32,
        rdev: u64,
    },
    Fifo {
        mode: u32,
    },
}

/// Every node under `root`, by relative path (not following symlinks).
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let md = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_owned();
        let ft = md.file_type();
        let mode = md.mode() & 0o7777;
        let node = if ft.is_dir() {
            walk(root, &path, out);
            Node::Dir {
                mode,
                uid: md.uid(),
                gid: md.gid(),
            }
        } else if ft.is_file() {
            let mut data = Vec::new();
            fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            Node::File {
                mode,
                uid: md.uid(),
                gid: md.gid(),
                sha: imv::Digest::of(&data).to_string(),
                mtime: md.mtime(),
            }
        } else if ft.is_symlink() {
            Node::Symlink {
                target: fs::read_link(&path).unwrap(),
                uid: md.uid(),
                gid: md.gid(),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            Node::Device {
                kind: if ft.is_char_device() { "char" } else { "block" },
                mode,
                rdev: md.rdev(),
            }
        } else {
            Node::Fifo { mode }
        };
        out.insert(rel, node);
    }
}

/// Assert two trees are equal, printing only the differences.
pub fn assert_same_tree(ours: &Path, theirs: &Path) {
    let a = tree(ours);
    let b = tree(theirs);
    let mut diffs = Vec::new();
    for (path, node) in &a {
        match b.get(path) {
            None => diffs.push(format!("only in ours: {} {node:?}", path.display())),
            Some(other) if other != node => diffs.push(format!(
                "differs: {}\n  ours   {node:?}\n  theirs {other:?}",
                path.display()
            )),
            _ => {}
        }
    }
    for (path, node) in &b {
        if !a.contains_key(path) {
            diffs.push(format!("only in theirs: {} {node:?}", path.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "trees differ ({} vs {}):\n{}",
        ours.display(),
        theirs.display(),
        diffs.join("\n")
    );
    assert!(!a.is_empty(), "empty tree at {}", ours.display());
}

/// Run a command, panicking with its output when it fails or is missing.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (CI installs umoci and skopeo)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
