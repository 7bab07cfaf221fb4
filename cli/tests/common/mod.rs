//! Shared helpers of the integration tests: a temporary root and state per test, torn
//! down (unmounted, removed) even when the test fails, on the embedded store or on a
//! containerd started by the tests (see [`containerd`]), and tree comparison.
#![allow(dead_code)] // each test binary uses a different part

pub mod containerd;
pub mod serve;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use imv::backend::ImageRecord;
use imv::backend::NoProgress;
use imv::{BackendConfig, Config, ImageSpec, ImageVolumes, Mount};
use imv_testkit::image_builder::artifact::{ArtifactBuilder, BuiltArtifact};
use imv_testkit::image_builder::{ImageBuilder, ImageDigests, LayoutOptions, OciLayout};

pub use containerd::Containerd;

/// Which backend a [`TestEnv`] runs on.
pub enum EnvBackend {
    /// The embedded store under `root`.
    Local,
    /// A containerd (shared by the test binary, or the test's own), in a namespace of the
    /// test's own.
    Containerd { daemon: Daemon, namespace: String },
}

/// The daemon a containerd [`TestEnv`] talks to.
pub enum Daemon {
    Shared(&'static Containerd),
    Own(Containerd),
}

impl std::ops::Deref for Daemon {
    type Target = Containerd;
    fn deref(&self) -> &Containerd {
        match self {
            Daemon::Shared(c) => c,
            Daemon::Own(c) => c,
        }
    }
}

/// A unique temporary root and state, and an `ImageVolumes` over them and a backend.
pub struct TestEnv {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    iv: Option<ImageVolumes>,
    sources: std::sync::atomic::AtomicUsize,
    pub backend: EnvBackend,
}

impl TestEnv {
    /// The embedded store.
    pub fn new() -> Self {
        Self::with(EnvBackend::Local)
    }

    /// The embedded store (same as [`TestEnv::new`]).
    pub fn new_local() -> Self {
        Self::new()
    }

    /// The test binary's shared containerd, in a namespace of this test's own.
    pub fn new_containerd() -> Self {
        Self::with(EnvBackend::Containerd {
            daemon: Daemon::Shared(Containerd::shared()),
            namespace: containerd::unique_namespace(),
        })
    }

    /// A containerd of this test's own (to restart it).
    pub fn new_own_containerd() -> Self {
        Self::new_own_containerd_without(&[])
    }

    /// A containerd of this test's own with the plugins `disabled` off.
    pub fn new_own_containerd_without(disabled: &[&str]) -> Self {
        Self::with(EnvBackend::Containerd {
            daemon: Daemon::Own(Containerd::start_without(disabled)),
            namespace: containerd::unique_namespace(),
        })
    }

    fn with(backend: EnvBackend) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("imv-test-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let root = dir.join("root");
        let state = dir.join("state");
        let mut env = TestEnv {
            dir,
            root,
            state,
            iv: None,
            sources: std::sync::atomic::AtomicUsize::new(0),
            backend,
        };
        env.iv = Some(ImageVolumes::open(env.config()).expect("open"));
        env
    }

    /// The config this env opens its `ImageVolumes` with.
    pub fn config(&self) -> Config {
        let mut config = Config::new(&self.root, &self.state);
        if let EnvBackend::Containerd { daemon, namespace } = &self.backend {
            config.backend = BackendConfig::Containerd {
                address: daemon.address.clone(),
                namespace: namespace.clone(),
            };
        }
        config
    }

    /// Directories only, with no handle open (for tests that run the `imv` binary, which
    /// must own the store's database).
    pub fn new_closed() -> Self {
        let mut env = Self::new();
        env.iv = None;
        env
    }

    pub fn iv(&self) -> &ImageVolumes {
        self.iv.as_ref().expect("open")
    }

    pub fn is_containerd(&self) -> bool {
        matches!(self.backend, EnvBackend::Containerd { .. })
    }

    pub fn local(&self) -> &imv::backend::local::LocalBackend {
        self.iv().local().expect("local backend")
    }

    /// The daemon and namespace of a containerd env.
    pub fn daemon(&self) -> (&Containerd, &str) {
        match &self.backend {
            EnvBackend::Containerd { daemon, namespace } => (daemon, namespace),
            EnvBackend::Local => panic!("not a containerd test env"),
        }
    }

    /// `ctr ARGS` in this env's namespace.
    pub fn ctr(&self, args: &[&str]) -> String {
        let (daemon, namespace) = self.daemon();
        daemon.ctr(namespace, args)
    }

    /// Close the store, so another process (a daemon) can open the same directories.
    pub fn close(&mut self) {
        self.iv = None;
    }

    /// Close and open again over the same directories (a restart of the runtime).
    pub fn reopen(&mut self) {
        self.iv = None;
        self.iv = Some(ImageVolumes::open(self.config()).expect("reopen"));
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

    /// Write `image` as an OCI layout named `name` and import it (into containerd without
    /// unpacking it, so imv's unpacker does the work).
    pub fn import(&self, name: &str, image: &ImageBuilder) -> ImageDigests {
        let dir = self.scratch("src");
        let mut layout = OciLayout::new(LayoutOptions::default());
        let digests = layout.add_image(name, image).expect("build image");
        layout.write_dir(&dir).expect("write layout");
        let records = self.import_path(&dir, None);
        assert!(
            records.iter().any(|r| r.name == name),
            "{name} not among {records:?}"
        );
        digests
    }

    /// Write `artifact` as an OCI layout named `name` and import it.
    pub fn import_artifact(&self, name: &str, artifact: &ArtifactBuilder) -> BuiltArtifact {
        let dir = self.scratch("src");
        let mut layout = OciLayout::new(LayoutOptions::default());
        let built = layout.add_artifact(name, artifact).expect("build artifact");
        layout.write_dir(&dir).expect("write layout");
        let records = self.import_path(&dir, None);
        assert!(
            records.iter().any(|r| r.name == name),
            "{name} not among {records:?}"
        );
        built
    }

    /// Where the store keeps blob `digest` as a file.
    pub fn blob_path(&self, digest: &imv::Digest) -> PathBuf {
        let content = match &self.backend {
            EnvBackend::Local => self.root.join("content"),
            EnvBackend::Containerd { daemon, .. } => {
                daemon.dir.join("root/io.containerd.content.v1.content")
            }
        };
        content.join("blobs/sha256").join(digest.hex())
    }

    /// Import the OCI layout directory (or, locally, any archive) at `path`; the images in
    /// the store afterwards (local: those imported).
    pub fn import_path(&self, path: &Path, name: Option<&str>) -> Vec<ImageRecord> {
        match &self.backend {
            EnvBackend::Local => self
                .local()
                .import(path, &imv::ImportOptions::named(name), &NoProgress)
                .unwrap_or_else(|e| panic!("import {}: {e}", path.display())),
            EnvBackend::Containerd { .. } => {
                assert!(name.is_none(), "naming on import is local-only");
                self.ctr_import(path, &[])
            }
        }
    }

    /// `ctr images import` (not unpacking, every platform) of the layout directory or
    /// archive at `path`, with `args` more; the images in the store afterwards.
    fn ctr_import(&self, path: &Path, args: &[&str]) -> Vec<ImageRecord> {
        let archive = if path.is_dir() {
            let archive = self.scratch("archive").join("image.tar");
            containerd::archive_dir(path, &archive);
            archive
        } else {
            path.to_owned()
        };
        let mut all = vec!["images", "import", "--no-unpack", "--all-platforms"];
        all.extend_from_slice(args);
        all.push(archive.to_str().unwrap());
        self.ctr(&all);
        self.iv().backend().images().expect("images")
    }

    /// Import the OCI layout (a directory, or locally an archive too) at `path` whose
    /// images carry bare tags, naming them `<base>:<tag>` (`imv import --base-name`, `ctr
    /// images import --base-name`).
    pub fn import_with_base(&self, path: &Path, base: &str) -> Vec<ImageRecord> {
        match &self.backend {
            EnvBackend::Local => {
                let options = imv::ImportOptions {
                    base_name: Some(base.to_owned()),
                    ..Default::default()
                };
                self.local()
                    .import(path, &options, &NoProgress)
                    .unwrap_or_else(|e| panic!("import {}: {e}", path.display()))
            }
            EnvBackend::Containerd { .. } => self.ctr_import(path, &["--base-name", base]),
        }
    }

    /// Wait for the views (and leases) of volumes mounted the quick way to be made, as a
    /// caller that looks at the store itself must (`ImageVolumes::wait_deferred`).
    fn settle(&self) {
        if let Some(iv) = &self.iv {
            iv.wait_deferred(None);
        }
    }

    /// The sandbox leases in the store.
    pub fn leases(&self) -> Vec<String> {
        self.settle();
        match &self.backend {
            EnvBackend::Local => self.local().leases().unwrap(),
            EnvBackend::Containerd { .. } => self
                .ctr(&["leases", "ls", "-q"])
                .lines()
                .map(str::to_owned)
                .filter(|l| !l.is_empty())
                .collect(),
        }
    }

    /// The keys of the view snapshots in the store (in the default snapshotter).
    pub fn views(&self) -> Vec<String> {
        self.snapshots_of_kind("View")
    }

    /// The view keys once `settled` holds of them (a cleanup may remove views in the
    /// background: see `Backend::remove_soon`); the last list seen if it does not within
    /// 10 s.
    pub fn views_when(&self, settled: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let views = self.views();
            if settled(&views) || std::time::Instant::now() > deadline {
                return views;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The keys of the view snapshots in containerd's `snapshotter`.
    pub fn views_in(&self, snapshotter: &str) -> Vec<String> {
        self.settle();
        containerd::parse_snapshots(&self.ctr(&["snapshots", "--snapshotter", snapshotter, "ls"]))
            .into_iter()
            .filter(|s| s.kind == "View")
            .map(|s| s.key)
            .collect()
    }

    /// The keys of the committed (layer) snapshots in the store.
    pub fn layers(&self) -> Vec<String> {
        self.snapshots_of_kind("Committed")
    }

    fn snapshots_of_kind(&self, kind: &str) -> Vec<String> {
        self.settle();
        match &self.backend {
            EnvBackend::Local => {
                use imv::backend::local::SnapshotKind;
                let want = if kind == "View" {
                    SnapshotKind::View
                } else {
                    SnapshotKind::Committed
                };
                self.local()
                    .snapshots()
                    .unwrap()
                    .into_iter()
                    .filter(|(_, row)| row.kind == want)
                    .map(|(k, _)| k)
                    .collect()
            }
            EnvBackend::Containerd { .. } => {
                containerd::parse_snapshots(&self.ctr(&["snapshots", "ls"]))
                    .into_iter()
                    .filter(|s| s.kind == kind)
                    .map(|s| s.key)
                    .collect()
            }
        }
    }

    /// Everything mounted at or under the test's directory.
    pub fn mounts_under(&self, path: &Path) -> Vec<PathBuf> {
        imv_testkit::mounts::under(path)
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
        imv_testkit::mounts::unmount_under(&self.dir);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("teardown: removing {}: {e}", self.dir.display());
        }
        // An own daemon (a field) is stopped and removed after this, when fields drop.
    }
}

/// Generate `mod local` and `mod containerd` with one `#[test]` per name, each running
/// the function of that name (taking a [`TestEnv`]) on that backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[test]
                fn $name() {
                    super::$name(super::common::TestEnv::new_local())
                }
            )*
        }
        mod containerd {
            $(
                #[test]
                fn $name() {
                    super::$name(super::common::TestEnv::new_containerd())
                }
            )*
        }
    };
}

/// The `oras` command (`go install oras.land/oras/cmd/oras@v1.3.6`, which scripts/setup
/// runs): `$IMV_ORAS`, else Go's bin directory, else the PATH. Panics (never skips) when
/// there is none: CI installs it.
pub fn oras() -> PathBuf {
    if let Some(p) = std::env::var_os("IMV_ORAS") {
        return PathBuf::from(p);
    }
    let gopath = Command::new("go")
        .args(["env", "GOPATH"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .or_else(|| {
            Command::new("/usr/local/go/bin/go")
                .args(["env", "GOPATH"])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        });
    if let Some(gopath) = gopath.filter(|g| !g.is_empty()) {
        let p = Path::new(&gopath).join("bin/oras");
        if p.is_file() {
            return p;
        }
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v oras"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert!(
        !on_path.is_empty(),
        "no oras: scripts/setup installs it (go install oras.land/oras/cmd/oras@v1.3.6), or set IMV_ORAS"
    );
    PathBuf::from(on_path)
}

/// Nothing of `sandbox` is left: no directory, no mount, no view, no lease.
pub fn assert_nothing_left(env: &TestEnv, sandbox: &str) {
    let dir = env.volumes_dir().join(sandbox);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert_eq!(
        env.mounts_under(&dir),
        Vec::<PathBuf>::new(),
        "mounts left behind"
    );
    let views: Vec<String> = env
        .views()
        .into_iter()
        .filter(|k| k.contains(&format!("/{sandbox}/")))
        .collect();
    assert!(views.is_empty(), "views left behind: {views:?}");
    assert!(
        !env.leases().contains(&sandbox.to_owned()),
        "lease {sandbox} left behind"
    )
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

/// Run the `imv` binary with `--root`/`--state` and `args`, feeding `stdin`; (exit code,
/// stdout, stderr).
pub fn run_imv(root: &Path, state: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_imv"))
        .arg("--root")
        .arg(root)
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("IMV_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
