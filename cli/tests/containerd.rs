//! What only the containerd backend has, checked against a real containerd (started by the
//! tests, see cli/tests/common/containerd.rs) and with `ctr` as the independent witness: the
//! volume's content equals containerd's own view of the image, the lease and the view are
//! where `ctr` looks for them, containerd's GC keeps the image's layers and drops the
//! sandbox's view, an image never unpacked is unpacked the way containerd would, a
//! containerd restart costs nothing, and errors say what went wrong. Needs root and
//! containerd; fails (never skips) without them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{image_mount, TestEnv};
use imv::backend::containerd::ContainerdBackend;
use imv::{BackendConfig, Config, ErrorKind, ImageVolumes, Mount};
use imv_testkit::image_builder::{
    many_layers, sample_image, Entry, ImageBuilder, LayerBuilder, LayoutOptions, OciLayout, RefName,
};

const SAMPLE: &str = "example.com/imv/sample:1";

fn mutate_one(env: &TestEnv, sandbox: &str, image: &str) -> PathBuf {
    mutate_with(env, sandbox, "", image)
}

fn mutate_with(env: &TestEnv, sandbox: &str, snapshotter: &str, image: &str) -> PathBuf {
    let mut mounts = vec![image_mount(image, "/data")];
    env.iv()
        .mutate_mounts(sandbox, snapshotter, None, &mut mounts)
        .unwrap_or_else(|e| panic!("mutate {image}: {e}"));
    PathBuf::from(&mounts[0].host_path)
}

/// The UNPACKED column of `ctr images check` for `name`.
fn unpacked(env: &TestEnv, name: &str, snapshotter: &str) -> bool {
    let out = env.ctr(&["images", "check", "--snapshotter", snapshotter]);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in `ctr images check`:\n{out}"));
    match line.split_whitespace().last() {
        Some("true") => true,
        Some("false") => false,
        _ => panic!("cannot read `ctr images check`: {line}"),
    }
}

/// The snapshot keyed `key` in the default snapshotter, as `ctr snapshots ls` lists it.
fn snapshot_keyed(env: &TestEnv, key: &str) -> common::containerd::Snapshot {
    let snapshots = common::containerd::parse_snapshots(&env.ctr(&["snapshots", "ls"]));
    snapshots
        .iter()
        .find(|s| s.key == key)
        .cloned()
        .unwrap_or_else(|| panic!("no snapshot keyed {key}: {snapshots:?}"))
}

/// `ctr content ls` as (digest, labels) pairs.
fn content_labels(env: &TestEnv) -> Vec<(String, String)> {
    env.ctr(&["content", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').filter(|f| !f.is_empty()).collect();
            Some(((*f.first()?).to_owned(), (*f.last()?).to_owned()))
        })
        .collect()
}

/// Mount `name` with `ctr images mount` in `namespace` at a fresh directory, run `check`
/// on it, then unmount it and remove ctr's snapshot.
fn with_ctr_mount(env: &TestEnv, namespace: &str, name: &str, check: impl FnOnce(&Path)) {
    let (daemon, _) = env.daemon();
    let target = env.scratch("ctr-mount");
    daemon.ctr(
        namespace,
        &["images", "mount", name, target.to_str().unwrap()],
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&target)));
    daemon.ctr(
        namespace,
        &["images", "unmount", "--rm", target.to_str().unwrap()],
    );
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_volume_equals_containerds_own_view_and_the_local_backends() {
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    let ours = mutate_one(&env, "sb1", SAMPLE);

    // The same image, unpacked by containerd's own unpacker in a namespace of its own.
    let (daemon, _) = env.daemon();
    let theirs_ns = common::containerd::unique_namespace();
    let archive = env.scratch("archive").join("sample.tar");
    let mut layout = OciLayout::new(LayoutOptions::default());
    layout.add_image(SAMPLE, &sample_image()).unwrap();
    layout.write_archive(&archive).unwrap();
    daemon.ctr(&theirs_ns, &["images", "import", archive.to_str().unwrap()]);
    with_ctr_mount(&env, &theirs_ns, SAMPLE, |theirs| {
        common::assert_same_tree(&ours, theirs)
    });

    // And by the embedded store's unpacker.
    let local = TestEnv::new_local();
    local.import(SAMPLE, &sample_image());
    let local_volume = {
        let mut m = vec![image_mount(SAMPLE, "/data")];
        local.iv().mutate_mounts("sb1", "", None, &mut m).unwrap();
        PathBuf::from(&m[0].host_path)
    };
    common::assert_same_tree(&ours, &local_volume);
}

/// A node's path, its modification time if it is a directory, and its `user.*` xattrs.
type TimesAndXattrs = (PathBuf, i64, Vec<(String, Vec<u8>)>);

/// Directory modification times and `user.*` extended attributes of every node under
/// `root` (what `common::tree` leaves out), by relative path. A directory time from the
/// last hour (a parent made on the way, a directory a later layer changed) is the time of
/// the unpack, not of the image: it shows as -1.
fn times_and_xattrs(root: &Path) -> Vec<TimesAndXattrs> {
    let recent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![];
    for path in common::tree(root).into_keys() {
        let full = root.join(&path);
        let md = fs::symlink_metadata(&full).unwrap();
        let mtime = match md.is_dir() {
            true if md.mtime() > recent => -1,
            true => md.mtime(),
            false => 0,
        };
        let mut names = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(&full, &mut names).unwrap_or(0);
        let mut xattrs = vec![];
        for name in names[..n]
            .split(|&b| b == 0)
            .filter(|n| n.starts_with(b"user."))
        {
            let name = String::from_utf8(name.to_vec()).unwrap();
            let mut value = vec![0u8; 4096];
            let len = rustix::fs::lgetxattr(&full, name.as_str(), &mut value).unwrap();
            value.truncate(len);
            xattrs.push((name, value));
        }
        xattrs.sort();
        out.push((path, mtime, xattrs));
    }
    out
}

/// Mount `image` (imported as `name`) through imv and through `ctr images mount` in a
/// namespace of its own (containerd's unpacker and differ), and compare the two trees,
/// directory times and user xattrs included. Returns what imv logged.
fn compare_with_containerds_unpack(env: &TestEnv, name: &str, image: &ImageBuilder) -> String {
    env.import(name, image);
    let mut ours = PathBuf::new();
    let log = logged(|| ours = mutate_one(env, "sb1", name));
    let (daemon, _) = env.daemon();
    let theirs_ns = common::containerd::unique_namespace();
    let archive = env.scratch("archive").join("image.tar");
    let mut layout = OciLayout::new(LayoutOptions::default());
    layout.add_image(name, image).unwrap();
    layout.write_archive(&archive).unwrap();
    daemon.ctr(&theirs_ns, &["images", "import", archive.to_str().unwrap()]);
    with_ctr_mount(env, &theirs_ns, name, |theirs| {
        common::assert_same_tree(&ours, theirs);
        assert_eq!(times_and_xattrs(&ours), times_and_xattrs(theirs));
    });
    env.iv().release("sb1").unwrap();
    log
}

#[test]
fn a_first_layer_applied_by_imv_equals_containerds_own_apply() {
    // A first layer is applied by imv into the directory the snapshotter prepared (not by
    // containerd's diff service); the result is what containerd's differ makes of it.
    let env = TestEnv::new_containerd();
    let layer = LayerBuilder::new()
        .entry(
            Entry::dir("srv", 0o711)
                .owner(1000, 1001)
                .mtime(1_600_000_000),
        )
        .entry(
            Entry::file("srv/tool", 0o4755, "#!/bin/sh\n")
                .owner(0, 50)
                .mtime(1_500_000_000)
                .xattr("user.origin", "imv"),
        )
        .hardlink("srv/tool-link", "srv/tool")
        // A link whose header says otherwise than its target's: the link's header wins.
        .file("srv/other", 0o644, "other")
        .entry(
            Entry::hardlink("srv/other-link", "srv/other")
                .mode(0o600)
                .owner(5, 6)
                .mtime(1_300_000_000),
        )
        .symlink("srv/abs", "/etc/passwd")
        .fifo("srv/pipe")
        .char_device("srv/null", 1, 3)
        .entry(Entry::dir("empty", 0o1777).mtime(1_400_000_000))
        .entry(Entry::file("deep/a/b/c", 0o600, "parents made on the way").owner(7, 7));
    let image = ImageBuilder::new().layer(layer).layer(
        LayerBuilder::new()
            .file("srv/second", 0o644, "on top")
            .whiteout("srv/pipe"),
    );
    let log = compare_with_containerds_unpack(&env, "example.com/first/layer:1", &image);
    assert_eq!(
        log.matches("applied the first layer here").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_first_layer_with_a_whiteout_is_left_to_containerds_differ() {
    // A whiteout in a first layer hides nothing: containerd's differ drops it, imv's
    // unpacker would make an overlay whiteout; so the layer goes to the differ, into the
    // directory emptied of what imv had applied.
    let env = TestEnv::new_containerd();
    let image = ImageBuilder::new().layer(
        LayerBuilder::new()
            .file("a/kept", 0o644, "kept")
            .whiteout("a/never-there")
            .file("z", 0o644, "after the whiteout"),
    );
    let log = compare_with_containerds_unpack(&env, "example.com/first/whiteout:1", &image);
    assert!(log.contains("containerd's differ applies it"), "{log}");
    assert!(!log.contains("applied the first layer here"), "{log}");
}

#[test]
fn images_made_by_skopeo_mount_like_ctr_mounts_them() {
    let env = TestEnv::new_containerd();
    // An OCI layout as umoci and skopeo name things (`oci:DIR:TAG`), turned into an OCI
    // archive by skopeo, imported by ctr.
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .dir("etc", 0o755)
                .file("etc/os-release", 0o644, "ID=imv\n")
                .dir("bin", 0o755)
                .file("bin/tool", 0o755, "#!/bin/sh\n")
                .symlink("usr-bin", "bin"),
        )
        .layer(
            LayerBuilder::new()
                .file("etc/os-release", 0o600, "ID=imv2\n")
                .whiteout("usr-bin"),
        );
    let layout_dir = env.scratch("layout");
    let mut layout = OciLayout::new(LayoutOptions {
        ref_name: RefName::Tag,
        containerd_name: false,
    });
    // Written with only the tag, `1`, as the ref name.
    layout.add_image("example.com/skopeo/x:1", &image).unwrap();
    layout.write_dir(&layout_dir).unwrap();
    let archive = env.scratch("skopeo").join("x.tar");
    let name = "example.com/skopeo/x:1";
    common::run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:1", layout_dir.display()),
        &format!("oci-archive:{}:{name}", archive.display()),
    ]));
    let records = env.import_path(&archive, None);
    assert!(records.iter().any(|r| r.name == name), "{records:?}");

    let ours = mutate_one(&env, "sb1", name);
    assert_eq!(
        fs::read_to_string(ours.join("etc/os-release")).unwrap(),
        "ID=imv2\n"
    );
    assert!(!ours.join("usr-bin").exists());
    let (_, namespace) = env.daemon();
    with_ctr_mount(&env, namespace, name, |theirs| {
        common::assert_same_tree(&ours, theirs)
    });
}

#[test]
fn ctr_sees_the_lease_and_the_view_and_gc_keeps_only_the_image() {
    let env = TestEnv::new_containerd();
    let digests = env.import(SAMPLE, &sample_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    let key = host.to_str().unwrap();

    assert_eq!(
        env.leases(),
        vec!["sb1".to_owned()],
        "only the sandbox's lease (the unpack lease is gone)"
    );
    let view = snapshot_keyed(&env, key);
    assert_eq!(view.kind, "View");
    let top = imv::backend::chain_ids(&digests.diff_ids).pop().unwrap();
    assert_eq!(view.parent.as_deref(), Some(top.to_string().as_str()));
    let info = env.ctr(&["snapshots", "info", key]);
    assert!(info.contains("\"imv.io/sandbox\": \"sb1\""), "{info}");
    assert!(
        info.contains(&format!("\"imv.io/image\": \"{SAMPLE}\"")),
        "{info}"
    );
    let layers = env.layers();
    assert_eq!(layers.len(), 2);

    // Cleanup removes the view (in the background), not the lease.
    env.iv().cleanup("sb1", "").unwrap();
    let views = env.views_when(|v| v.is_empty());
    assert!(views.is_empty(), "{views:?}");
    assert_eq!(env.leases(), vec!["sb1".to_owned()]);

    // Release drops the lease; containerd's GC (synchronous on lease delete) keeps the
    // image's layers, rooted by the config's gc.ref.snapshot label, and its blobs.
    env.iv().release("sb1").unwrap();
    assert!(env.leases().is_empty());
    assert_eq!(env.layers(), layers);
    assert!(!env.volumes_dir().join("sb1").exists());
    let blobs = content_labels(&env);
    assert_eq!(blobs.len(), 4, "manifest, config, 2 layers: {blobs:?}");

    // A view whose lease goes without a cleanup is garbage to containerd.
    let host = mutate_one(&env, "sb2", SAMPLE);
    assert_eq!(env.views().len(), 1);
    env.iv().backend().delete_lease("sb2").unwrap();
    assert!(env.views().is_empty(), "GC left {:?}", env.views());
    assert_eq!(env.layers(), layers);
    // The mount outlives the snapshot record; cleanup still converges.
    env.iv().cleanup("sb2", "").unwrap();
    assert!(!host.exists());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn an_image_never_unpacked_is_unpacked_as_containerd_would() {
    let env = TestEnv::new_containerd();
    let digests = env.import(SAMPLE, &sample_image());
    assert!(!unpacked(&env, SAMPLE, "overlayfs"));
    assert!(env.layers().is_empty());

    mutate_one(&env, "sb1", SAMPLE);
    // The sandbox's lease held the layers while the config's label was set in the
    // background; its release waits for that, so the image stays unpacked after it.
    env.iv().release("sb1").unwrap();
    assert!(
        unpacked(&env, SAMPLE, "overlayfs"),
        "ctr does not see it unpacked"
    );

    // The labels containerd's unpacker leaves.
    let labels = content_labels(&env);
    let label_of = |digest: &imv::Digest| {
        labels
            .iter()
            .find(|(d, _)| d == &digest.to_string())
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let chain = imv::backend::chain_ids(&digests.diff_ids);
    assert!(
        label_of(&digests.config).contains(&format!(
            "containerd.io/gc.ref.snapshot.overlayfs={}",
            chain[1]
        )),
        "{labels:?}"
    );
    for (layer, diff_id) in digests.layers.iter().zip(&digests.diff_ids) {
        assert!(
            label_of(layer).contains(&format!("containerd.io/uncompressed={diff_id}")),
            "{labels:?}"
        );
    }
    for chain_id in &chain {
        let info = env.ctr(&["snapshots", "info", &chain_id.to_string()]);
        assert!(
            info.contains(&format!("\"containerd.io/snapshot.ref\": \"{chain_id}\"")),
            "{info}"
        );
    }
}

#[test]
fn an_image_unpacked_elsewhere_is_unpacked_into_the_snapshotter_asked_for() {
    let env = TestEnv::new_containerd();
    let archive = env.scratch("archive").join("many.tar");
    let mut layout = OciLayout::new(LayoutOptions::default());
    layout
        .add_image("example.com/many:3", &many_layers(3))
        .unwrap();
    layout.write_archive(&archive).unwrap();
    // containerd's own unpacker, into the native snapshotter.
    env.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        archive.to_str().unwrap(),
    ]);
    assert!(unpacked(&env, "example.com/many:3", "native"));
    assert!(!unpacked(&env, "example.com/many:3", "overlayfs"));

    let over = mutate_one(&env, "sb1", "example.com/many:3");
    assert!(unpacked(&env, "example.com/many:3", "overlayfs"));
    assert!(unpacked(&env, "example.com/many:3", "native"));

    // A view from containerd's native snapshots: a bind mount, same content.
    let native = mutate_with(&env, "sb2", "native", "example.com/many:3");
    let info = imv_testkit::mounts::under(&native);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_ne!(info[0].fs_type, "overlay");
    assert!(
        info[0].mount_options.split(',').any(|o| o == "ro"),
        "{info:?}"
    );
    common::assert_same_tree(&over, &native);
    env.iv().cleanup("sb2", "native").unwrap();
    assert!(!native.exists());
}

#[test]
fn a_volume_of_another_snapshotter_is_listed_and_released_from_it() {
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    let native = mutate_with(&env, "sb1", "native", SAMPLE);
    assert_eq!(env.views_in("native"), [native.to_str().unwrap()]);

    // The listing reads the view where it was made.
    let volumes = env.iv().volumes().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].image.as_deref(), Some(SAMPLE), "{volumes:?}");

    // Release takes the view out of the snapshotter it is in, with no snapshotter given.
    // (Here the GC would take it too once the lease goes; where the default snapshotter
    // is not loaded, asking it fails: see the next test.)
    env.iv().release("sb1").unwrap();
    assert!(!native.exists());
    assert!(env.views_in("native").is_empty());
    assert!(env.leases().is_empty());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn release_needs_no_default_snapshotter_after_a_restart_of_both() {
    // A containerd without overlayfs (it does not load on every filesystem): a sandbox
    // whose volumes are in native must release without asking for the default.
    let mut env = TestEnv::new_own_containerd_without(&["io.containerd.snapshotter.v1.overlayfs"]);
    env.import(SAMPLE, &sample_image());
    env.import("example.com/many:2", &many_layers(2));
    let first = mutate_with(&env, "sb1", "native", SAMPLE);
    let second = mutate_with(&env, "sb1", "native", "example.com/many:2");
    assert_eq!(env.views_in("native").len(), 2);

    // What release needs to know survives a restart of imv and of containerd.
    env.daemon().0.restart();
    env.reopen();
    let mut images: Vec<_> = env
        .iv()
        .volumes()
        .unwrap()
        .into_iter()
        .map(|v| v.image)
        .collect();
    images.sort();
    assert_eq!(
        images,
        [
            Some(SAMPLE.to_owned()),
            Some("example.com/many:2".to_owned())
        ]
    );
    env.iv().release("sb1").unwrap();
    assert!(!first.exists() && !second.exists());
    assert!(!env.volumes_dir().join("sb1").exists());
    assert!(env.views_in("native").is_empty());
    assert!(env.leases().is_empty());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn an_image_containerd_unpacked_is_used_as_is() {
    let env = TestEnv::new_containerd();
    let archive = env.scratch("archive").join("sample.tar");
    let mut layout = OciLayout::new(LayoutOptions::default());
    layout.add_image(SAMPLE, &sample_image()).unwrap();
    layout.write_archive(&archive).unwrap();
    env.ctr(&["images", "import", archive.to_str().unwrap()]);
    let before = common::containerd::parse_snapshots(&env.ctr(&["snapshots", "ls"]));
    mutate_one(&env, "sb1", SAMPLE);
    let after = common::containerd::parse_snapshots(&env.ctr(&["snapshots", "ls"]));
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the view is new: {after:?}"
    );
}

#[test]
fn a_containerd_restart_between_two_mutates_reuses_the_mount() {
    let env = TestEnv::new_own_containerd();
    env.import(SAMPLE, &sample_image());
    env.import("example.com/many:4", &many_layers(4));
    let mut first = vec![image_mount(SAMPLE, "/a")];
    env.iv().mutate_mounts("sb1", "", None, &mut first).unwrap();

    env.daemon().0.restart();

    // The second container of the pod, same image: same volume, no second mount.
    let mut second = vec![
        image_mount(SAMPLE, "/b"),
        image_mount("example.com/many:4", "/c"),
    ];
    env.iv()
        .mutate_mounts("sb1", "", None, &mut second)
        .unwrap();
    assert_eq!(first[0].host_path, second[0].host_path);
    assert_eq!(env.mounts_under(Path::new(&first[0].host_path)).len(), 1);
    assert!(Path::new(&second[1].host_path).join("layer-3").exists());
    assert_eq!(env.views().len(), 2);

    env.iv().release("sb1").unwrap();
    assert!(env.views().is_empty());
    assert!(env.leases().is_empty());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn containerd_not_running_is_unavailable_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("no-containerd.sock");
    let mut config = Config::new(dir.path().join("root"), dir.path().join("state"));
    config.backend = BackendConfig::Containerd {
        address: address.clone(),
        namespace: "k8s.io".into(),
    };
    let iv = ImageVolumes::open(config).unwrap();
    let mut mounts = vec![image_mount(SAMPLE, "/data")];
    let before = mounts.clone();
    let err = iv.mutate_mounts("sb1", "", None, &mut mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains(address.to_str().unwrap()),
        "the message names the socket: {err}"
    );
    assert_eq!(mounts, before);
    assert_eq!(fs::read_dir(iv.volumes_dir()).unwrap().count(), 0);
    assert!(
        !dir.path().join("root").exists(),
        "the containerd backend uses no root"
    );

    // Cleanup of a sandbox with nothing on disk needs no containerd; release does.
    iv.cleanup("sb1", "").unwrap();
    assert_eq!(
        iv.release("sb1").unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(
        iv.backend().images().unwrap_err().kind(),
        ErrorKind::Unavailable
    );
}

#[test]
fn missing_images_and_unknown_snapshotters_say_so() {
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    let mut mounts = vec![image_mount("example.com/absent:1", "/data")];
    let err = env
        .iv()
        .mutate_mounts("sb1", "", None, &mut mounts)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("example.com/absent:1"), "{err}");

    let mut mounts = vec![image_mount(SAMPLE, "/data")];
    let err = env
        .iv()
        .mutate_mounts("sb1", "no-such-snapshotter", None, &mut mounts)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("no-such-snapshotter"), "{err}");
    assert!(env.leases().is_empty());
    assert!(!env.volumes_dir().join("sb1").exists());

    // A namespace containerd would refuse is refused up front.
    let (daemon, _) = env.daemon();
    let err = ContainerdBackend::new(&daemon.address, "bad/ns")
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn idmapped_volumes_need_a_snapshotter_that_declares_remap_ids() {
    // A pod in a user namespace: imv asks the snapshotter for an idmapped view with the
    // remap labels, as containerd's CRI plugin does, which only a snapshotter declaring
    // `remap-ids` honours. The tests' containerd (Debian's 1.6) declares no capability for
    // any snapshotter; containerd 2's overlayfs does (the end-to-end suite runs a pod in a
    // user namespace on it).
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    let mapping = imv::IdMapping {
        host_id: 100_000,
        container_id: 0,
        length: 65_536,
    };
    let mapped = || {
        let mut m = image_mount(SAMPLE, "/data");
        m.uid_mappings = vec![mapping];
        m.gid_mappings = vec![mapping];
        m
    };
    for (snapshotter, named) in [("", "overlayfs"), ("native", "native")] {
        let mut mounts = vec![mapped()];
        let before = mounts.clone();
        let err = env
            .iv()
            .mutate_mounts("userns", snapshotter, None, &mut mounts)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("snapshotter {named:?}")) && text.contains("remap-ids"),
            "{err}"
        );
        assert_eq!(mounts, before, "the mount is left as it was");
        assert!(env.leases().is_empty(), "lease left: {:?}", env.leases());
        assert!(env.views().is_empty(), "views left: {:?}", env.views());
        assert!(!env.volumes_dir().join("userns").exists());
    }
    let err = env
        .iv()
        .mutate_mounts("userns", "no-such-snapshotter", None, &mut [mapped()])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    // The refusals left nothing in the way of the sandbox's volumes without mappings.
    let host = mutate_one(&env, "userns", SAMPLE);
    assert!(imv_testkit::mounts::is_mountpoint(&host));
    env.iv().release("userns").unwrap();
}

#[test]
fn the_imv_command_drives_containerd() {
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    let (daemon, namespace) = env.daemon();
    let imv = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imv"));
        cmd.arg("--backend")
            .arg("containerd")
            .arg("--address")
            .arg(&daemon.address)
            .arg("--namespace")
            .arg(namespace)
            .arg("--state")
            .arg(&env.state)
            .args(args)
            .env_remove("IMV_LOG");
        cmd.output().unwrap()
    };
    let out = imv(&[
        "mutate",
        "--sandbox",
        "cli1",
        "--mount",
        &format!("image={SAMPLE},container-path=/data"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounts: Vec<Mount> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(imv_testkit::mounts::is_mountpoint(Path::new(
        &mounts[0].host_path
    )));

    let out = imv(&["images"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(SAMPLE));
    let out = imv(&["volumes"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli1"));

    let out = imv(&["import", "/nonexistent.tar"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ctr images import"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = imv(&["cleanup", "--sandbox", "cli1", "--release"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.leases().is_empty());
    assert!(env.views().is_empty());
}

/// Another image under `name`: one layer with the file `which` saying `text`.
fn one_file_image(text: &str) -> ImageBuilder {
    ImageBuilder::new().layer(LayerBuilder::new().file("which", 0o644, text))
}

#[test]
fn a_tag_moved_to_another_image_is_followed() {
    // Resolutions are kept by target digest; names are looked up every time.
    let env = TestEnv::new_containerd();
    let first = env.import("example.com/moving:1", &one_file_image("first"));
    let a = mutate_one(&env, "sb1", "example.com/moving:1");
    assert_eq!(fs::read_to_string(a.join("which")).unwrap(), "first");
    assert!(a.ends_with(first.manifest.hex()));
    let second = env.import("example.com/moving:1", &one_file_image("second"));
    let b = mutate_one(&env, "sb2", "example.com/moving:1");
    assert_eq!(fs::read_to_string(b.join("which")).unwrap(), "second");
    assert!(b.ends_with(second.manifest.hex()), "{}", b.display());
}

#[test]
fn layers_collected_behind_imvs_back_are_unpacked_again() {
    // This process remembers the image as unpacked; after an rmi and containerd's GC the
    // view finds its parent gone, and the mutate unpacks again instead of failing.
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    let first = mutate_one(&env, "sb1", SAMPLE);
    let tree = common::tree(&first);
    env.iv().cleanup("sb1", "").unwrap();
    env.iv().release("sb1").unwrap();
    env.ctr(&["images", "rm", "--sync", SAMPLE]);
    assert!(env.layers().is_empty(), "GC kept {:?}", env.layers());
    env.import(SAMPLE, &sample_image());
    let again = mutate_one(&env, "sb2", SAMPLE);
    assert_eq!(common::tree(&again), tree);
    assert_eq!(env.layers().len(), 2);
}

#[test]
fn a_lease_deleted_behind_imvs_back_is_made_again() {
    // This process remembers sb1's lease; someone deletes it (ctr leases rm); the next
    // volume of sb1 finds it gone and makes it again.
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    env.import("example.com/other:1", &one_file_image("other"));
    mutate_one(&env, "sb1", SAMPLE);
    env.ctr(&["leases", "rm", "sb1"]);
    assert!(env.leases().is_empty());
    let other = mutate_one(&env, "sb1", "example.com/other:1");
    assert_eq!(fs::read_to_string(other.join("which")).unwrap(), "other");
    assert_eq!(env.leases(), vec!["sb1".to_owned()]);
    env.iv().release("sb1").unwrap();
    assert!(env.leases().is_empty());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn views_removed_in_the_background_are_waited_for() {
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    // A new view of the key a cleanup is still removing waits for the removal, then is
    // made anew: mounted, one view, one mount.
    for _ in 0..5 {
        let host = mutate_one(&env, "sb1", SAMPLE);
        env.iv().cleanup("sb1", "").unwrap();
        assert!(!host.exists());
        let again = mutate_one(&env, "sb1", SAMPLE);
        assert_eq!(again, host);
        assert_eq!(env.mounts_under(&host).len(), 1);
        assert_eq!(env.views().len(), 1, "{:?}", env.views());
        env.iv().cleanup("sb1", "").unwrap();
        // Release waits for the removal: nothing is left when it returns.
        env.iv().release("sb1").unwrap();
        assert!(env.views().is_empty(), "{:?}", env.views());
        assert!(env.leases().is_empty());
    }
    // Closing the handle waits too: a command that exits right after a cleanup leaves no
    // view behind.
    mutate_one(&env, "sb2", SAMPLE);
    // (That handle may still be making the view: another handle does not wait for it.)
    env.iv().wait_deferred(Some("sb2"));
    let iv = ImageVolumes::open(env.config()).unwrap();
    iv.cleanup("sb2", "").unwrap();
    drop(iv);
    assert!(env.views().is_empty(), "{:?}", env.views());
    env.iv().release("sb2").unwrap();
}

/// The lines `run` logs on its own thread (at debug level and above).
fn logged(run: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn once_two_views_of_an_image_mount_alike_the_next_volume_is_mounted_before_its_view() {
    let env = TestEnv::new_containerd();
    let digests = env.import(SAMPLE, &sample_image());
    let top = imv::backend::chain_ids(&digests.diff_ids).pop().unwrap();
    let first = mutate_one(&env, "sb1", SAMPLE);
    let second = mutate_one(&env, "sb2", SAMPLE);
    let mut third = PathBuf::new();
    let log = logged(|| third = mutate_one(&env, "sb3", SAMPLE));
    assert!(
        log.contains("mounted image volume (its view follows)"),
        "the third volume was made the careful way:\n{log}"
    );
    // The volume is what the careful way mounts, and the view and lease follow: the same
    // kind of view, same parent and labels, under the sandbox's own lease.
    assert_eq!(common::tree(&third), common::tree(&first));
    let mounts = |p: &Path| {
        let m = imv_testkit::mounts::under(p);
        assert_eq!(m.len(), 1, "{m:?}");
        (
            m[0].fs_type.clone(),
            m[0].root.clone(),
            m[0].mount_options.clone(),
        )
    };
    assert_eq!(mounts(&third), mounts(&second));
    env.iv().wait_deferred(Some("sb3"));
    let key = third.to_str().unwrap();
    let view = snapshot_keyed(&env, key);
    assert_eq!(view.kind, "View");
    assert_eq!(view.parent.as_deref(), Some(top.to_string().as_str()));
    let info = env.ctr(&["snapshots", "info", key]);
    assert!(info.contains("\"imv.io/sandbox\": \"sb3\""), "{info}");
    let resources = env.ctr(&["leases", "ls"]);
    assert!(
        resources.lines().any(|l| l.starts_with("sb3 ")),
        "no lease for sb3: {resources}"
    );
    // A cleanup right after such a mutate waits for its view before removing it, and the
    // release leaves nothing.
    let fourth = mutate_one(&env, "sb4", SAMPLE);
    env.iv().release("sb4").unwrap();
    assert!(!fourth.exists());
    for sb in ["sb1", "sb2", "sb3"] {
        env.iv().release(sb).unwrap();
    }
    assert!(env.views().is_empty(), "{:?}", env.views());
    assert!(env.leases().is_empty(), "{:?}", env.leases());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn once_two_extractions_predicted_their_views_a_cold_volume_is_mounted_before_its_view() {
    // Each image is new to containerd (not unpacked). The first two of a kind are mounted
    // the careful way, and their views prove what the extraction of the top layer
    // predicted; from the third on, the volume is mounted right after the unpack and the
    // view follows. A one-layer image (a bind of its directory) and a two-layer one (an
    // overlay) are predicted by different rules, each proven on its own.
    let env = TestEnv::new_containerd();
    let two_layers = |n: usize| {
        ImageBuilder::new()
            .layer(LayerBuilder::new().file("base", 0o644, format!("base {n}")))
            .layer(LayerBuilder::new().file("which", 0o644, format!("two {n}")))
    };
    let kinds: [(&str, &dyn Fn(usize) -> ImageBuilder); 2] = [
        ("one", &|n| one_file_image(&format!("one {n}"))),
        ("two", &two_layers),
    ];
    let mut sandboxes = vec![];
    for (kind, image) in kinds {
        for n in 0..3 {
            let name = format!("example.com/cold/{kind}:{n}");
            let digests = env.import(&name, &image(n));
            assert!(!unpacked(&env, &name, "overlayfs"));
            let sandbox = format!("sb-{kind}-{n}");
            let mut host = PathBuf::new();
            let log = logged(|| host = mutate_one(&env, &sandbox, &name));
            let quick = log.contains("mounted image volume (its view follows)");
            assert_eq!(quick, n == 2, "volume {n} of kind {kind}:\n{log}");
            assert_eq!(
                fs::read_to_string(host.join("which")).unwrap(),
                format!("{kind} {n}")
            );
            let m = imv_testkit::mounts::under(&host);
            assert_eq!(m.len(), 1, "{m:?}");
            assert_eq!(m[0].fs_type == "overlay", kind == "two", "{m:?}");
            // The view follows, as the careful way makes it ...
            env.iv().wait_deferred(Some(&sandbox));
            let key = host.to_str().unwrap();
            let view = snapshot_keyed(&env, key);
            let top = imv::backend::chain_ids(&digests.diff_ids).pop().unwrap();
            assert_eq!(view.kind, "View");
            assert_eq!(view.parent.as_deref(), Some(top.to_string().as_str()));
            assert!(unpacked(&env, &name, "overlayfs"));
            // ... and mounts what was mounted: the same directories as containerd's own
            // view of the image.
            let (_, namespace) = env.daemon();
            let mut theirs = vec![];
            with_ctr_mount(&env, namespace, &name, |dir| {
                theirs = imv_testkit::mounts::under(dir);
            });
            assert_eq!(theirs.len(), 1);
            // (The lower directories in either notation: `lowerdir=a:b` by mount(2),
            // `lowerdir+=a,lowerdir+=b` by imv's fsconfig.)
            let what = |m: &imv_testkit::mounts::MountPoint| {
                let lower: Vec<String> = m
                    .super_options
                    .split(',')
                    .filter_map(|o| o.strip_prefix("lowerdir+=").or(o.strip_prefix("lowerdir=")))
                    .flat_map(|dirs| dirs.split(':'))
                    .map(str::to_owned)
                    .collect();
                (m.fs_type.clone(), m.root.clone(), lower)
            };
            assert_eq!(what(&theirs[0]), what(&m[0]));
            sandboxes.push(sandbox);
        }
    }
    for sb in &sandboxes {
        env.iv().release(sb).unwrap();
    }
    assert!(env.views().is_empty(), "{:?}", env.views());
    assert!(env.leases().is_empty(), "{:?}", env.leases());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn known_view_mounts_whose_layers_were_collected_are_made_anew() {
    // Two views taught this process what a view of the image mounts; then the image is
    // removed and collected, and imported again: the old directories are gone, the quick
    // mount fails, and the volume is made the careful way, from a new unpack.
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    let tree = common::tree(&mutate_one(&env, "sb1", SAMPLE));
    mutate_one(&env, "sb2", SAMPLE);
    for sb in ["sb1", "sb2"] {
        env.iv().release(sb).unwrap();
    }
    env.ctr(&["images", "rm", "--sync", SAMPLE]);
    assert!(env.layers().is_empty(), "GC kept {:?}", env.layers());
    env.import(SAMPLE, &sample_image());
    let again = mutate_one(&env, "sb3", SAMPLE);
    assert_eq!(common::tree(&again), tree);
    assert_eq!(env.views().len(), 1, "{:?}", env.views());
    env.iv().release("sb3").unwrap();
    assert!(env.views().is_empty() && env.leases().is_empty());
}

#[test]
fn a_cold_volume_outlives_a_failed_background_commit_of_its_top_layer() {
    // Once extractions predict their views, a cold volume is mounted while its top layer is
    // committed in the background. That commit fails here (containerd refuses it, on a
    // debug build's hook): the volume stays whole, since the extraction it mounts is not
    // removed but left to the sandbox's lease; the image is not taken as unpacked, and
    // what the extraction predicted is forgotten, so the next sandbox unpacks it again
    // into directories of its own (not the first one's, which only the first lease
    // holds); the release takes the first extraction, and the second volume does not
    // notice.
    let env = TestEnv::new_containerd();
    for n in 0..2 {
        let name = format!("example.com/commit/proof:{n}");
        env.import(&name, &one_file_image(&format!("proof {n}")));
        mutate_one(&env, &format!("sb-proof-{n}"), &name);
    }
    let name = "example.com/commit/fails:1";
    let digests = env.import(name, &one_file_image("still here"));
    let top = imv::backend::chain_ids(&digests.diff_ids).pop().unwrap();
    imv::backend::containerd::test_hooks::fail_next_background_commit(&top);
    let mut first = PathBuf::new();
    let log = logged(|| first = mutate_one(&env, "sb-a", name));
    assert!(log.contains("its view follows"), "{log}");
    // At once, before the first volume's view has been tried: the second sandbox waits for
    // the failed commit and unpacks again, into directories of its own.
    let second = mutate_one(&env, "sb-b", name);
    env.iv().wait_deferred(None);
    assert_eq!(
        fs::read_to_string(first.join("which")).unwrap(),
        "still here"
    );
    assert_eq!(
        fs::read_to_string(second.join("which")).unwrap(),
        "still here"
    );
    let source = |p: &Path| {
        let m = imv_testkit::mounts::under(p);
        assert_eq!(m.len(), 1, "{m:?}");
        (m[0].root.clone(), m[0].super_options.clone())
    };
    assert_ne!(source(&first), source(&second));
    assert!(unpacked(&env, name, "overlayfs"));
    let snapshots = common::containerd::parse_snapshots(&env.ctr(&["snapshots", "ls"]));
    let extractions = |snapshots: &[common::containerd::Snapshot]| {
        snapshots
            .iter()
            .filter(|s| s.kind == "Active" && s.key.starts_with("extract-"))
            .count()
    };
    // The first sandbox's extraction, never committed, is left to its lease.
    assert_eq!(extractions(&snapshots), 1, "{snapshots:?}");
    env.iv().release("sb-a").unwrap();
    let snapshots = common::containerd::parse_snapshots(&env.ctr(&["snapshots", "ls"]));
    assert_eq!(extractions(&snapshots), 0, "{snapshots:?}");
    assert_eq!(
        fs::read_to_string(second.join("which")).unwrap(),
        "still here"
    );
    for sb in ["sb-b", "sb-proof-0", "sb-proof-1"] {
        env.iv().release(sb).unwrap();
    }
    assert!(env.views().is_empty(), "{:?}", env.views());
    assert!(env.leases().is_empty(), "{:?}", env.leases());
    assert!(env.mounts_under(&env.state).is_empty());
}

#[test]
fn a_failing_call_undoes_a_volume_mounted_before_its_view() {
    // The first mount goes the quick way; the second, of the same volume, asks for a sub
    // path the image lacks, which fails once the first's thread has started: the undo
    // waits for that thread, then removes the view, the lease it made and the directories.
    let env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    mutate_one(&env, "sb1", SAMPLE);
    mutate_one(&env, "sb2", SAMPLE);
    let mut missing = image_mount(SAMPLE, "/other");
    missing.image_sub_path = "no/such/dir".into();
    let mut mounts = vec![image_mount(SAMPLE, "/data"), missing];
    let mut result = Ok(());
    let log = logged(|| result = env.iv().mutate_mounts("sb3", "", None, &mut mounts));
    assert!(log.contains("its view follows"), "{log}");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!env.volumes_dir().join("sb3").exists());
    let leases = env.leases();
    assert!(!leases.contains(&"sb3".to_owned()), "{leases:?}");
    assert_eq!(env.views().len(), 2, "{:?}", env.views());
    for sb in ["sb1", "sb2"] {
        env.iv().release(sb).unwrap();
    }
}

#[test]
fn blobs_are_read_from_containerds_content_store_when_it_is_visible() {
    // containerd's content plugin names its directory; the backend reads manifests and
    // configs from there (checked against their digests) instead of a call each.
    let env = TestEnv::new_containerd();
    let (daemon, namespace) = env.daemon();
    let backend = ContainerdBackend::new(&daemon.address, namespace).unwrap();
    let expected = daemon
        .dir
        .join("root")
        .join("io.containerd.content.v1.content");
    assert_eq!(backend.content_store(), Some(expected.as_path()));
    // A blob altered on disk is not taken from there: the content service is asked, and
    // its own check fails the same way it always did.
    let digests = env.import(SAMPLE, &sample_image());
    let config = expected.join("blobs/sha256").join(digests.config.hex());
    let original = fs::read(&config).unwrap();
    fs::write(&config, b"{}").unwrap();
    let mut mounts = vec![image_mount(SAMPLE, "/data")];
    let err = env
        .iv()
        .mutate_mounts("sb1", "", None, &mut mounts)
        .unwrap_err();
    assert!(err.to_string().contains("content has digest"), "{err}");
    fs::write(&config, original).unwrap();
    let host = mutate_one(&env, "sb1", SAMPLE);
    assert!(host.join("etc/os-release").exists());
    env.iv().release("sb1").unwrap();
}
