//! The engine with real mounts, on both backends (the embedded store and a containerd the
//! tests start): mutate, reuse, cleanup, sub paths, many layers, concurrency, and bad input
//! that must leave nothing behind. Each test body takes a [`TestEnv`]; `on_both_backends!`
//! runs it once per backend (`local::NAME`, `containerd::NAME`). What only one backend has
//! (rmi and the local store's files) stays in local-only tests.

mod common;

use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};

use common::{assert_nothing_left, image_mount, TestEnv};
use imv::backend::LeasedSnapshot;
use imv::{ErrorKind, Mount, Platform};
use imv_testkit::image_builder::{
    many_layers, sample_image, ImageBuilder, IndexDigests, LayerBuilder,
};

const SAMPLE: &str = "example.com/imv/sample:1";

fn mutate(env: &TestEnv, sandbox: &str, mounts: &mut [Mount]) -> imv::Result<()> {
    env.iv().mutate_mounts(sandbox, "", None, mounts)
}

fn mutate_one(env: &TestEnv, sandbox: &str, image: &str) -> PathBuf {
    let mut mounts = vec![image_mount(image, "/data")];
    mutate(env, sandbox, &mut mounts).unwrap_or_else(|e| panic!("mutate {image}: {e}"));
    PathBuf::from(&mounts[0].host_path)
}

crate::on_both_backends!(
    mutate_mounts_a_read_only_volume_and_sets_host_path,
    same_sandbox_reuses_and_another_sandbox_shares_layers,
    cleanup_removes_everything_and_is_idempotent,
    cleanup_unmounts_nested_mounts,
    mounts_an_image_with_more_layers_than_fit_in_a_page_of_options,
    single_layer_and_empty_images_mount,
    sub_paths_resolve_inside_the_volume_only,
    bad_requests_fail_with_the_right_kind_and_leave_nothing,
    a_failure_undoes_this_call_but_keeps_earlier_volumes,
    resolves_by_name_digest_and_image_id,
    picks_the_manifest_for_the_platform,
    multi_platform_images_are_named_by_their_index_digest,
    a_volume_directory_that_is_not_mounted_is_mounted_again,
    concurrent_mutates_share_one_mount_and_one_unpack,
    the_lease_holds_the_views_with_their_snapshotter,
    a_pods_next_container_on_an_image_id_reuses_the_volume_unresolved,
    links_in_place_of_imvs_directories_are_refused_and_removed_unfollowed,
    a_mount_imv_did_not_make_is_not_taken_for_the_volume,
    cleanup_converges_with_a_busy_volume_and_nested_mounts,
    selinux_mount_labels_are_refused_or_ignored_without_selinux,
    volumes_of_one_image_share_its_overlay_and_outlive_each_other,
);

fn mutate_mounts_a_read_only_volume_and_sets_host_path(env: TestEnv) {
    let digests = env.import(SAMPLE, &sample_image());
    let mut mounts = vec![
        Mount {
            container_path: "/plain".into(),
            host_path: "/somewhere".into(),
            ..Default::default()
        },
        image_mount(SAMPLE, "/data"),
    ];
    mutate(&env, "sb1", &mut mounts).unwrap();

    assert_eq!(
        mounts[0].host_path, "/somewhere",
        "a mount without image is left alone"
    );
    let host = PathBuf::from(&mounts[1].host_path);
    assert_eq!(
        host,
        env.volumes_dir().join("sb1").join(digests.manifest.hex())
    );
    assert!(imv_testkit::mounts::is_mountpoint(&host));

    // Readable, with the second layer's deletions applied.
    let tree = common::tree(&host);
    assert!(!tree.is_empty());
    for (path, node) in &tree {
        if let common::Node::Device { rdev: 0, .. } = node {
            panic!("a whiteout device is visible at {}", path.display());
        }
    }

    // Writes fail with EROFS.
    let err = fs::write(host.join("new-file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // Mounted ro, nosuid, nodev.
    let info = imv_testkit::mounts::under(&host);
    assert_eq!(info.len(), 1, "{info:?}");
    let opts: Vec<&str> = info[0].mount_options.split(',').collect();
    for want in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&want), "{want} missing from {opts:?}");
    }
}

fn same_sandbox_reuses_and_another_sandbox_shares_layers(env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    let first = mutate_one(&env, "sb1", SAMPLE);
    let layers_after_first = env.layers();
    assert_eq!(env.views().len(), 1);

    let again = mutate_one(&env, "sb1", SAMPLE);
    assert_eq!(first, again);
    assert_eq!(
        env.mounts_under(&first).len(),
        1,
        "second mutate stacked a mount"
    );

    let other = mutate_one(&env, "sb2", SAMPLE);
    assert_ne!(first, other);
    assert_eq!(common::tree(&first), common::tree(&other));
    // One more view, no more layers.
    assert_eq!(env.views().len(), 2);
    assert_eq!(env.layers(), layers_after_first);
}

/// A second sandbox's volume of a multi-layer image is a clone of the first one's
/// overlay (one superblock: docs/design.md, "Twin volumes"); each still stands alone:
/// read-only, and mounted until its own cleanup, whichever goes first.
fn volumes_of_one_image_share_its_overlay_and_outlive_each_other(env: TestEnv) {
    use std::os::unix::fs::MetadataExt;
    let image = "example.com/imv/twins:3";
    env.import(image, &many_layers(3));
    let first = mutate_one(&env, "sb1", image);
    let second = mutate_one(&env, "sb2", image);
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    assert_eq!(
        dev(&first),
        dev(&second),
        "the second volume is a new overlay"
    );
    let files = common::tree(&first);
    assert!(!files.is_empty());

    env.iv().cleanup("sb1", "").unwrap();
    assert!(!first.exists());
    assert!(imv_testkit::mounts::is_mountpoint(&second));
    assert_eq!(common::tree(&second), files);
    let err = fs::write(second.join("new-file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // Its twin gone, the next volume is an overlay of its own, or a clone of the second.
    let third = mutate_one(&env, "sb3", image);
    assert_eq!(common::tree(&third), files);
    env.iv().cleanup("sb2", "").unwrap();
    assert_eq!(common::tree(&third), files);
    for sb in ["sb1", "sb2", "sb3"] {
        env.iv().release(sb).unwrap();
        assert_nothing_left(&env, sb);
    }
}

fn cleanup_removes_everything_and_is_idempotent(env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    let kept = mutate_one(&env, "sb2", SAMPLE);

    env.iv().cleanup("sb1", "").unwrap();
    assert!(!host.exists());
    assert!(env.mounts_under(&host).is_empty());
    let views = env.views_when(|v| v.iter().all(|k| !k.contains("/sb1/")));
    assert!(views.iter().all(|k| !k.contains("/sb1/")), "{views:?}");
    assert!(views.iter().any(|k| k.contains("/sb2/")), "{views:?}");
    env.iv().cleanup("sb1", "").unwrap();
    env.iv().release("sb1").unwrap();
    assert_nothing_left(&env, "sb1");

    // The other sandbox is untouched.
    assert!(imv_testkit::mounts::is_mountpoint(&kept));
    // And a sandbox never seen cleans up fine.
    env.iv().cleanup("never-seen", "").unwrap();
}

fn cleanup_unmounts_nested_mounts(env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    // A mount on top of a directory inside the volume (as a container runtime's bind might
    // leave), and one stacked on that.
    let dir = common::tree(&host)
        .into_iter()
        .find(|(_, n)| matches!(n, common::Node::Dir { .. }))
        .map(|(p, _)| host.join(p))
        .expect("the sample has a directory");
    imv_testkit::mounts::tmpfs(&dir, "1m").unwrap();
    imv_testkit::mounts::tmpfs(&dir, "1m").unwrap();
    assert_eq!(env.mounts_under(&host).len(), 3);

    env.iv().cleanup("sb1", "").unwrap();
    assert!(env.mounts_under(&env.state).is_empty());
    assert!(!host.exists());
}

fn mounts_an_image_with_more_layers_than_fit_in_a_page_of_options(env: TestEnv) {
    let n = 80;
    env.import("example.com/imv/many:80", &many_layers(n));
    let host = mutate_one(&env, "sb1", "example.com/imv/many:80");
    for i in 0..n {
        assert!(
            host.join(format!("layer-{i}")).exists(),
            "layer-{i} missing"
        );
    }
    let info = imv_testkit::mounts::under(&host);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].fs_type, "overlay");
    // The layer paths alone are longer than one page of mount data.
    let lower_len: usize = if env.is_containerd() {
        // As mounted: one `lowerdir+=<containerd's snapshot dir>` per layer.
        info[0]
            .super_options
            .split(',')
            .filter(|o| o.starts_with("lowerdir"))
            .map(|o| o.len() + 1)
            .sum()
    } else {
        (0..n)
            .map(|_| {
                env.root
                    .join("snapshots")
                    .join("x".repeat(64))
                    .join("fs")
                    .as_os_str()
                    .len()
                    + 1
            })
            .sum()
    };
    assert!(
        lower_len > 4096,
        "test does not exercise the page limit: {lower_len}"
    );
}

fn single_layer_and_empty_images_mount(env: TestEnv) {
    let one = ImageBuilder::new().layer(LayerBuilder::new().file("hello", 0o644, "world"));
    env.import("example.com/one:1", &one);
    let host = mutate_one(&env, "sb1", "example.com/one:1");
    assert_eq!(fs::read_to_string(host.join("hello")).unwrap(), "world");
    assert_eq!(
        fs::write(host.join("x"), b"").unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );

    env.import("example.com/empty:1", &ImageBuilder::new());
    let empty = mutate_one(&env, "sb1", "example.com/empty:1");
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    env.iv().cleanup("sb1", "").unwrap();
    assert!(env.mounts_under(&env.state).is_empty());
}

fn subpath_image() -> ImageBuilder {
    ImageBuilder::new().layer(
        LayerBuilder::new()
            .dir("etc", 0o755)
            .file("etc/app.conf", 0o644, "conf")
            .dir("data", 0o755)
            .dir("data/inner", 0o755)
            .file("data/inner/x", 0o644, "x")
            .symlink("inside", "data/inner")
            .symlink("escape-rel", "../../../../../../etc")
            .symlink("escape-abs", "/etc"),
    )
}

fn sub_paths_resolve_inside_the_volume_only(env: TestEnv) {
    env.import("example.com/sub:1", &subpath_image());
    let with_sub = |sub: &str| {
        let mut m = image_mount("example.com/sub:1", "/data");
        m.image_sub_path = sub.into();
        m
    };
    let root = mutate_one(&env, "sb1", "example.com/sub:1");

    let mut ok = vec![with_sub("data/inner"), with_sub("inside")];
    mutate(&env, "sb1", &mut ok).unwrap();
    assert_eq!(PathBuf::from(&ok[0].host_path), root.join("data/inner"));
    assert_eq!(PathBuf::from(&ok[1].host_path), root.join("data/inner"));

    for (sub, kind) in [
        ("missing", ErrorKind::NotFound),
        ("../sb2", ErrorKind::InvalidArgument),
        ("data/../../x", ErrorKind::InvalidArgument),
        ("/etc", ErrorKind::InvalidArgument),
        ("escape-rel", ErrorKind::InvalidArgument),
        ("escape-abs/passwd", ErrorKind::InvalidArgument),
        // Directories only, as in containerd and the Kubernetes docs.
        ("etc/app.conf", ErrorKind::InvalidArgument),
    ] {
        let mut m = vec![with_sub(sub)];
        let err = mutate(&env, "sb1", &mut m).expect_err(sub);
        assert_eq!(err.kind(), kind, "{sub}: {err}");
        assert!(
            err.to_string().contains(sub),
            "{sub}: message does not name it: {err}"
        );
        // containerd's phrase, which its own tests match.
        assert!(
            err.to_string().contains("failed to ensure image subpath"),
            "{sub}: {err}"
        );
        assert!(m[0].host_path.is_empty());
    }
    // The volume made before the failures is still there, once.
    assert_eq!(env.mounts_under(&root).len(), 1);

    // In a fresh sandbox a bad sub path leaves nothing behind.
    let mut m = vec![with_sub("missing")];
    mutate(&env, "sb2", &mut m).unwrap_err();
    assert_nothing_left(&env, "sb2");
}

fn bad_requests_fail_with_the_right_kind_and_leave_nothing(env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    let cases: Vec<(&str, Mount, ErrorKind)> = vec![
        (
            "read-write",
            Mount {
                readonly: false,
                ..image_mount(SAMPLE, "/d")
            },
            ErrorKind::InvalidArgument,
        ),
        (
            "host_path set",
            Mount {
                host_path: "/x".into(),
                ..image_mount(SAMPLE, "/d")
            },
            ErrorKind::InvalidArgument,
        ),
        (
            "empty image",
            image_mount("", "/d"),
            ErrorKind::InvalidArgument,
        ),
        (
            "unknown image",
            image_mount("example.com/nope:1", "/d"),
            ErrorKind::NotFound,
        ),
        (
            "relative container path",
            image_mount(SAMPLE, "data"),
            ErrorKind::InvalidArgument,
        ),
        (
            "empty container path",
            image_mount(SAMPLE, ""),
            ErrorKind::InvalidArgument,
        ),
        (
            "NUL in the container path",
            image_mount(SAMPLE, "/da\0ta"),
            ErrorKind::InvalidArgument,
        ),
        (
            "1 MiB container path",
            image_mount(SAMPLE, &format!("/{}", "d".repeat(1 << 20))),
            ErrorKind::InvalidArgument,
        ),
        (
            "100 MB image reference",
            image_mount(&"i".repeat(100 << 20), "/d"),
            ErrorKind::InvalidArgument,
        ),
    ];
    for (what, m, kind) in cases {
        let mut mounts = vec![m.clone()];
        let err = mutate(&env, "sb1", &mut mounts).expect_err(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
        // The message names the value, but only its start when it is long.
        assert!(
            err.to_string().len() < 1024,
            "{what}: {} bytes of message",
            err.to_string().len()
        );
        assert_eq!(mounts[0], m, "{what}: the mount was changed");
        assert_nothing_left(&env, "sb1");
    }

    // Too many mounts in one call, and a snapshotter name no snapshotter has.
    let mut many = vec![Mount::default(); imv::MAX_MOUNTS + 1];
    many[0] = image_mount(SAMPLE, "/d");
    let err = mutate(&env, "sb1", &mut many).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let huge = "s".repeat(1 << 20);
    for snapshotter in [huge.as_str(), "over\nlay"] {
        let mut mounts = vec![image_mount(SAMPLE, "/d")];
        let err = env
            .iv()
            .mutate_mounts("sb1", snapshotter, None, &mut mounts)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().len() < 1024);
        let err = env.iv().cleanup("sb1", snapshotter).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    assert_nothing_left(&env, "sb1");

    let long = "a".repeat(4096);
    for sandbox in ["../x", "a/b", "", long.as_str(), "..", "a\0b"] {
        let mut mounts = vec![image_mount(SAMPLE, "/d")];
        let err = mutate(&env, sandbox, &mut mounts).expect_err(sandbox);
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{sandbox:?}: {err}");
        assert_eq!(
            env.iv().cleanup(sandbox, "").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
    assert_eq!(fs::read_dir(env.volumes_dir()).unwrap().count(), 0);
    assert!(env.leases().is_empty());

    // A platform the image does not have.
    let arm = Platform::parse("linux/s390x").unwrap();
    let mut mounts = vec![image_mount(SAMPLE, "/d")];
    let err = env
        .iv()
        .mutate_mounts("sb1", "", Some(&arm), &mut mounts)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("s390x"), "{err}");
    assert_nothing_left(&env, "sb1");

    // An unknown snapshotter.
    let err = env
        .iv()
        .mutate_mounts("sb1", "zfs", None, &mut mounts)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("zfs"));
    assert_nothing_left(&env, "sb1");
}

fn a_failure_undoes_this_call_but_keeps_earlier_volumes(env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    env.import("example.com/sub:1", &subpath_image());
    let earlier = mutate_one(&env, "sb1", SAMPLE);

    let mut mounts = vec![
        image_mount(SAMPLE, "/a"),
        image_mount("example.com/sub:1", "/b"),
        image_mount("example.com/nope:1", "/c"),
    ];
    let before = mounts.clone();
    let err = mutate(&env, "sb1", &mut mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("/c"),
        "the message names the mount: {err}"
    );
    assert_eq!(mounts, before);
    // The earlier volume stays mounted; the one this call made for sub:1 is gone.
    assert_eq!(env.mounts_under(&env.state), vec![earlier.clone()]);
    assert_eq!(
        fs::read_dir(env.volumes_dir().join("sb1")).unwrap().count(),
        1
    );
    assert!(
        env.leases().contains(&"sb1".to_owned()),
        "the earlier lease stays"
    );
}

fn resolves_by_name_digest_and_image_id(env: TestEnv) {
    let d = env.import("docker.io/library/busybox:1", &sample_image());
    // A single-manifest image: its name points at the manifest, whose digest names the
    // volume.
    let expected = env.volumes_dir().join("sb1").join(d.manifest.hex());
    let short_id = d.config.hex()[..12].to_owned();
    for reference in [
        "docker.io/library/busybox:1".to_owned(),
        "busybox:1".to_owned(),
        format!("busybox@{}", d.manifest),
        d.manifest.to_string(),
        d.config.to_string(),
        short_id,
    ] {
        assert_eq!(mutate_one(&env, "sb1", &reference), expected, "{reference}");
    }
    // image_ref is the runtime's output in CRI: read `image` only, as containerd does.
    let mut m = image_mount("example.com/nope:1", "/d");
    m.image.as_mut().unwrap().image_ref = d.config.to_string();
    let err = mutate(&env, "sb1", std::slice::from_mut(&mut m)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("not found"), "{err}");
    assert!(m.host_path.is_empty());
    assert_eq!(m.image.as_ref().unwrap().image_ref, d.config.to_string());
    // ... and what it reports (KEP-5365) is the image's ID, whatever the caller put there.
    let mut m = image_mount("busybox:1", "/d");
    m.image.as_mut().unwrap().image_ref = "example.com/nope:1".into();
    mutate(&env, "sb1", std::slice::from_mut(&mut m)).unwrap();
    assert_eq!(PathBuf::from(&m.host_path), expected);
    assert_eq!(m.image.as_ref().unwrap().image_ref, d.config.to_string());
    let volumes = env.iv().volumes().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].image_digest, d.manifest);
}

/// Two platforms of one image, each layer saying which it is.
fn multi_platform_image(env: &TestEnv, name: &str) -> IndexDigests {
    let amd = ImageBuilder::new()
        .platform("linux", "amd64", "")
        .layer(LayerBuilder::new().file("arch", 0o644, "amd64"));
    let arm = ImageBuilder::new()
        .platform("linux", "arm64", "")
        .layer(LayerBuilder::new().file("arch", 0o644, "arm64"));
    let dir = env.scratch("multi");
    let digests =
        imv_testkit::image_builder::write_oci_layout_index(&dir, name, &[&amd, &arm]).unwrap();
    env.import_path(&dir, None);
    digests
}

fn picks_the_manifest_for_the_platform(env: TestEnv) {
    multi_platform_image(&env, "example.com/multi:1");
    // One sandbox per platform: in one sandbox the platforms of an image share a volume
    // (see multi_platform_images_are_named_by_their_index_digest).
    for (sandbox, platform, want) in [
        ("sb-amd64", "linux/amd64", "amd64"),
        ("sb-arm64", "linux/arm64", "arm64"),
        ("sb-arm64-v8", "linux/arm64/v8", "arm64"),
    ] {
        let p = Platform::parse(platform).unwrap();
        let mut m = vec![image_mount("example.com/multi:1", "/d")];
        env.iv()
            .mutate_mounts(sandbox, "", Some(&p), &mut m)
            .unwrap();
        assert_eq!(
            fs::read_to_string(Path::new(&m[0].host_path).join("arch")).unwrap(),
            want,
            "{platform}"
        );
    }
    let p = Platform::parse("linux/ppc64le").unwrap();
    let mut m = vec![image_mount("example.com/multi:1", "/d")];
    assert_eq!(
        env.iv()
            .mutate_mounts("sb2", "", Some(&p), &mut m)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_nothing_left(&env, "sb2");
}

fn multi_platform_images_are_named_by_their_index_digest(env: TestEnv) {
    let name = "example.com/multi:2";
    let d = multi_platform_image(&env, name);
    let (amd, arm) = (&d.manifests[0], &d.manifests[1]);
    let amd64 = Platform::parse("linux/amd64").unwrap();
    // As containerd's CRI plugin names it: by the digest the image's name points at (its
    // target, here the index), however the image was asked for.
    // Its ID (the mount's image_ref) is that of the platform's image, as containerd's.
    for (sandbox, reference, want, id) in [
        ("by-name", name.to_owned(), "amd64", &amd.config),
        (
            "by-name-digest",
            format!("{name}@{}", d.index),
            "amd64",
            &amd.config,
        ),
        ("by-index", d.index.to_string(), "amd64", &amd.config),
        ("by-id", amd.config.to_string(), "amd64", &amd.config),
        // A manifest of the index, by digest: that platform, whatever the one asked for.
        (
            "by-manifest",
            arm.manifest.to_string(),
            "arm64",
            &arm.config,
        ),
    ] {
        let mut m = vec![image_mount(&reference, "/d")];
        env.iv()
            .mutate_mounts(sandbox, "", Some(&amd64), &mut m)
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        let host = PathBuf::from(&m[0].host_path);
        assert_eq!(
            host,
            env.volumes_dir().join(sandbox).join(d.index.hex()),
            "{reference}"
        );
        assert_eq!(fs::read_to_string(host.join("arch")).unwrap(), want);
        assert_eq!(m[0].image.as_ref().unwrap().image_ref, id.to_string());
        let info = env.iv().volumes().unwrap();
        let v = info.iter().find(|v| v.sandbox_id == sandbox).unwrap();
        assert_eq!(v.image_digest, d.index, "{reference}");
    }

    // Two platforms of one image in one sandbox would have one directory: as in
    // containerd, the second request reuses the volume the first mounted.
    let arm64 = Platform::parse("linux/arm64").unwrap();
    let mut m = vec![image_mount(name, "/d")];
    env.iv()
        .mutate_mounts("by-name", "", Some(&arm64), &mut m)
        .unwrap();
    let host = env.volumes_dir().join("by-name").join(d.index.hex());
    assert_eq!(PathBuf::from(&m[0].host_path), host);
    assert_eq!(fs::read_to_string(host.join("arch")).unwrap(), "amd64");
    assert_eq!(env.mounts_under(&host).len(), 1);
}

fn a_volume_directory_that_is_not_mounted_is_mounted_again(mut env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    // A reboot: the state directory survives (say it is not a tmpfs), mounts do not.
    imv_testkit::mounts::unmount_under(&host);
    env.reopen();
    assert!(host.is_dir() && !imv_testkit::mounts::is_mountpoint(&host));
    assert_eq!(mutate_one(&env, "sb1", SAMPLE), host);
    assert!(imv_testkit::mounts::is_mountpoint(&host));
    assert_eq!(env.mounts_under(&host).len(), 1);
    env.iv().release("sb1").unwrap();
    assert_nothing_left(&env, "sb1");
}

fn concurrent_mutates_share_one_mount_and_one_unpack(env: TestEnv) {
    env.import("example.com/many:12", &many_layers(12));
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let env = &env;
                s.spawn(move || {
                    mutate_one(
                        env,
                        if i % 2 == 0 { "even" } else { "odd" },
                        "example.com/many:12",
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut distinct = paths.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "{paths:?}");
    for p in &distinct {
        assert_eq!(env.mounts_under(p).len(), 1, "{}", p.display());
    }
    assert_eq!(env.layers().len(), 12, "each layer unpacked once");
    if !env.is_containerd() {
        let layer_dirs = fs::read_dir(env.root.join("snapshots")).unwrap().count();
        assert_eq!(
            layer_dirs,
            12 + 1,
            "12 layers and the empty dir, no leftovers"
        );
    }

    std::thread::scope(|s| {
        for sb in ["even", "odd"] {
            let env = &env;
            s.spawn(move || env.iv().release(sb).unwrap());
        }
    });
    assert_nothing_left(&env, "even");
    assert_nothing_left(&env, "odd");
}

/// What release reads to find each view's snapshotter (the local store has one only).
fn the_lease_holds_the_views_with_their_snapshotter(env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    env.import("example.com/sub:1", &subpath_image());
    let mut want = vec![
        mutate_one(&env, "sb1", SAMPLE),
        mutate_one(&env, "sb1", "example.com/sub:1"),
    ];
    mutate_one(&env, "sb2", SAMPLE);
    want.sort();
    // The layers an unpack made under the lease are held too (containerd): only the views
    // matter here.
    let mut held = env.iv().backend().lease_snapshots("sb1").unwrap();
    held.retain(|s| Path::new(&s.key).starts_with(env.volumes_dir()));
    held.sort_by(|a, b| a.key.cmp(&b.key));
    let want: Vec<LeasedSnapshot> = want
        .into_iter()
        .map(|target| LeasedSnapshot {
            snapshotter: "overlayfs".into(),
            key: target.to_string_lossy().into_owned(),
        })
        .collect();
    assert_eq!(held, want);
    let err = env
        .iv()
        .backend()
        .lease_snapshots("never-seen")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// Taken for writing by the test whose "container" has a mount namespace of its own (it
/// starts as a copy of every mount, other tests' volumes too, for the moment its script
/// takes to unmount them), for reading by tests that expect garbage collection to take
/// their layers at once: no copy of their mounts may exist then.
static OTHER_MOUNT_NAMESPACE: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[test]
fn release_and_rmi_collect_garbage() {
    let _no_copies = OTHER_MOUNT_NAMESPACE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    let layers = env.local().snapshots().unwrap().len() - 1;
    env.iv().release("sb1").unwrap();
    assert!(!host.exists());
    assert_eq!(
        env.local().snapshots().unwrap().len(),
        layers,
        "layers stay while the image does"
    );

    env.local().remove_image(SAMPLE).unwrap();
    assert!(env.local().snapshots().unwrap().is_empty());
    assert!(env.local().content().list().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(env.root.join("snapshots")).unwrap().count(),
        1,
        "only the empty dir"
    );
    let err = env.local().remove_image(SAMPLE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let _ = IoErrorKind::NotFound;
}

#[test]
fn another_stores_volumes_of_the_same_image_do_not_keep_this_stores_layers() {
    // Two embedded stores on one filesystem (a test's and an operator's, say) hold the
    // same images, so the same chain IDs: one store's mounted volumes must not make the
    // other's garbage collection keep its layers (it did: mounts were matched by chain ID
    // alone). Two layers (an overlay) and one (a bind).
    let one = ImageBuilder::new().layer(LayerBuilder::new().file("hello", 0o644, "world"));
    for (name, image) in [(SAMPLE, sample_image()), ("example.com/one:1", one)] {
        let keeper = TestEnv::new_local();
        let other = TestEnv::new_local();
        keeper.import(name, &image);
        other.import(name, &image);
        let kept = mutate_one(&keeper, "sb1", name);
        mutate_one(&other, "sb1", name);
        other.iv().release("sb1").unwrap();
        other.local().remove_image(name).unwrap();
        assert!(
            other.local().snapshots().unwrap().is_empty(),
            "{name}: {:?}",
            other.local().snapshots().unwrap()
        );
        // The keeper's volume is untouched, and its own layers stay while it is mounted.
        assert!(kept
            .join(if name == SAMPLE {
                "etc/os-release"
            } else {
                "hello"
            })
            .exists());
        keeper.iv().release("sb1").unwrap();
    }
}

/// The kubelet names an image volume's image by its ID. A pod's next container on the same
/// ID reuses the mounted volume without resolving anything: shown by removing the image
/// in between, which only a resolution would notice. A new sandbox, or the same one after
/// its cleanup, does resolve (and finds nothing).
fn a_pods_next_container_on_an_image_id_reuses_the_volume_unresolved(env: TestEnv) {
    let d = env.import(SAMPLE, &sample_image());
    let id = d.config.to_string();
    let first = mutate_one(&env, "sb1", &id);
    if env.is_containerd() {
        env.ctr(&["images", "rm", SAMPLE]);
    } else {
        env.iv().remove_image(SAMPLE).unwrap();
    }
    assert_eq!(mutate_one(&env, "sb1", &id), first);
    assert_eq!(env.mounts_under(&first).len(), 1);
    let mut other = vec![image_mount(&id, "/data")];
    let err = mutate(&env, "sb2", &mut other).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    env.iv().cleanup("sb1", "").unwrap();
    let mut again = vec![image_mount(&id, "/data")];
    let err = mutate(&env, "sb1", &mut again).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    env.iv().release("sb1").unwrap();
}

fn links_in_place_of_imvs_directories_are_refused_and_removed_unfollowed(env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    let tree = common::tree(&host);
    env.iv().release("sb1").unwrap();

    // Elsewhere: a directory with a file, and a mountpoint (what a link might point at).
    let elsewhere = env.scratch("elsewhere");
    fs::write(elsewhere.join("keep"), "keep").unwrap();
    let mounted = env.scratch("mounted");
    imv_testkit::mounts::tmpfs(&mounted, "1m").unwrap();
    fs::write(mounted.join("keep"), "keep").unwrap();

    for pointee in [&elsewhere, &mounted] {
        // A link where the volume goes: mutate refuses (a link to a mountpoint is no
        // mounted volume), cleanup removes the link and leaves what it points at.
        fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(pointee, &host).unwrap();
        let mut mounts = vec![image_mount(SAMPLE, "/data")];
        let err = mutate(&env, "sb1", &mut mounts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(mounts[0].host_path.is_empty());
        env.iv().cleanup("sb1", "").unwrap();
        assert!(
            fs::symlink_metadata(&host).is_err(),
            "the link is still there"
        );
        assert_eq!(fs::read_to_string(pointee.join("keep")).unwrap(), "keep");

        // A link in place of the sandbox's directory: the same.
        let sandbox_dir = env.volumes_dir().join("sb1");
        std::os::unix::fs::symlink(pointee, &sandbox_dir).unwrap();
        let err = mutate(&env, "sb1", &mut mounts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        env.iv().release("sb1").unwrap();
        assert!(fs::symlink_metadata(&sandbox_dir).is_err());
        assert_eq!(fs::read_to_string(pointee.join("keep")).unwrap(), "keep");
    }
    assert!(imv_testkit::mounts::is_mountpoint(&mounted));

    // Then the sandbox works again.
    let again = mutate_one(&env, "sb1", SAMPLE);
    assert_eq!(common::tree(&again), tree);
    env.iv().release("sb1").unwrap();
    assert_nothing_left(&env, "sb1");
    imv_testkit::mounts::unmount_under(&mounted);
}

fn a_mount_imv_did_not_make_is_not_taken_for_the_volume(mut env: TestEnv) {
    env.import(SAMPLE, &sample_image());
    env.import("example.com/sub:1", &subpath_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    let tree = common::tree(&host);
    env.iv().release("sb1").unwrap();
    let other = mutate_one(&env, "sb2", "example.com/sub:1");
    let elsewhere = env.scratch("elsewhere");
    fs::write(elsewhere.join("planted"), "planted").unwrap();

    use imv_testkit::mounts::{bind, tmpfs};
    // A tmpfs, a bind of some directory, another image's volume: each mounted where sb1's
    // volume of SAMPLE goes, and none of them is taken for it.
    for (what, source) in [
        ("tmpfs", None),
        ("a bind of a directory", Some(&elsewhere)),
        ("another image's volume", Some(&other)),
    ] {
        fs::create_dir_all(&host).unwrap();
        match source {
            None => tmpfs(&host, "1m").unwrap(),
            Some(source) => bind(source, &host).unwrap(),
        }
        let mut mounts = vec![image_mount(SAMPLE, "/data")];
        let err = mutate(&env, "sb1", &mut mounts).expect_err(what);
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{what}: {err}");
        assert!(err.to_string().contains("did not make"), "{what}: {err}");
        assert!(mounts[0].host_path.is_empty(), "{what}");
        // The view made to tell whether it is the volume's went again.
        let key = host.to_string_lossy().into_owned();
        assert!(!env.views().contains(&key), "{what}: its view is left");
        // Cleanup unmounts it (and what it showed stays where it is).
        env.iv().cleanup("sb1", "").unwrap();
        assert!(!host.exists(), "{what}");
    }
    assert_eq!(
        fs::read_to_string(elsewhere.join("planted")).unwrap(),
        "planted"
    );
    assert!(imv_testkit::mounts::is_mountpoint(&other));

    // Something mounted over the real volume hides it: refused too, though the view exists.
    assert_eq!(mutate_one(&env, "sb1", SAMPLE), host);
    bind(&elsewhere, &host).unwrap();
    let mut mounts = vec![image_mount(SAMPLE, "/data")];
    let err = mutate(&env, "sb1", &mut mounts).unwrap_err();
    assert!(
        err.to_string()
            .contains("not what the volume's view mounts"),
        "{err}"
    );
    env.iv().cleanup("sb1", "").unwrap();
    assert!(env.mounts_under(&host).is_empty());

    // The real volume, found mounted by a new handle (a restart), is reused as it is.
    assert_eq!(mutate_one(&env, "sb1", SAMPLE), host);
    env.reopen();
    assert_eq!(mutate_one(&env, "sb1", SAMPLE), host);
    assert_eq!(env.mounts_under(&host).len(), 1);
    assert_eq!(common::tree(&host), tree);
    for sb in ["sb1", "sb2"] {
        env.iv().release(sb).unwrap();
        assert_nothing_left(&env, sb);
    }
}

/// A container that still holds a volume (its own mount namespace has a copy of the mount,
/// as runc's has) when the sandbox is released and the image removed: garbage collection
/// keeps the layers it uses until the container is gone, then takes them.
/// Both for an overlay volume (the sample's two layers) and for one layer, whose volume is
/// a bind of the layer (of its EROFS mount, which mountinfo shows by the image's path).
#[test]
fn layers_a_container_still_holds_outlive_release_rmi_and_gc() {
    use imv_testkit::image_builder::{ImageBuilder, LayerBuilder};
    let one_layer = ImageBuilder::new().layer(LayerBuilder::new().file(
        "etc/os-release",
        0o644,
        b"ID=one\n".to_vec(),
    ));
    for image in [sample_image(), one_layer] {
        a_container_holds_layers(&image);
    }
}

fn a_container_holds_layers(image: &imv_testkit::image_builder::ImageBuilder) {
    let _copies = OTHER_MOUNT_NAMESPACE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let env = TestEnv::new_local();
    env.import(SAMPLE, image);
    let host = mutate_one(&env, "sb1", SAMPLE);
    let want = fs::read_to_string(host.join("etc/os-release")).unwrap();
    // The "container": a process in a mount namespace of its own (private propagation,
    // so the host's unmounts do not reach it) with the volume bound at a path of its own,
    // as runc binds it into a container's root. Its namespace starts as a copy of every
    // mount, other tests' volumes too: those (and the host path) are unmounted in it, so
    // it holds this test's layers only, and no other test's garbage collection waits on it.
    let inside = env.scratch("container-data");
    let mut container = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{host}' '{inside}' && \
             awk '{{print $5}}' /proc/self/mountinfo | grep '^/tmp/imv-test-' \
               | grep -vxF '{inside}' | sort -r \
               | while read -r m; do umount -l \"$m\" 2>/dev/null; done; \
             exec sleep 300",
            host = host.display(),
            inside = inside.display()
        ))
        .spawn()
        .expect("unshare");
    let seen = PathBuf::from(format!("/proc/{}/root", container.id()))
        .join(inside.strip_prefix("/").unwrap())
        .join("etc/os-release");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::read_to_string(&seen).ok().as_deref() != Some(want.as_str()) {
        assert!(
            std::time::Instant::now() < until,
            "the container never saw the volume"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    env.iv().release("sb1").unwrap();
    env.iv().remove_image(SAMPLE).unwrap();
    env.iv().gc().unwrap();
    assert_eq!(
        fs::read_to_string(&seen).unwrap(),
        want,
        "the container's view of the volume was emptied"
    );
    assert!(!env.layers().is_empty(), "the layers it uses went");

    container.kill().unwrap();
    container.wait().unwrap();
    // The kernel lets go of a dead namespace's mounts shortly after its last process, not
    // as that process is reaped: until then the layers are busy, and a collection leaves
    // them for the next one. Collect until they are free, within a bound.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut collected = 0;
    loop {
        collected += env.iv().gc().unwrap().snapshots;
        if env.layers().is_empty() || std::time::Instant::now() >= until {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        collected > 0,
        "no snapshot collected once the container went"
    );
    assert!(env.layers().is_empty(), "{:?}", env.layers());
}

fn cleanup_converges_with_a_busy_volume_and_nested_mounts(env: TestEnv) {
    // A process whose working directory is inside the volume (the volume is busy), and a
    // mount inside the volume: cleanup detaches what it cannot unmount and converges; the
    // process keeps its files until it exits.
    env.import(SAMPLE, &sample_image());
    let host = mutate_one(&env, "sb1", SAMPLE);
    let nested = host.join("etc");
    imv_testkit::mounts::tmpfs(&nested, "1m").unwrap();
    let mut busy = std::process::Command::new("sleep")
        .arg("300")
        .current_dir(&host)
        .spawn()
        .unwrap();
    env.iv().cleanup("sb1", "").unwrap();
    assert!(!host.exists());
    assert!(env.mounts_under(&env.state).is_empty());
    // Its working directory still shows the volume's files.
    let cwd = PathBuf::from(format!("/proc/{}/cwd", busy.id()));
    assert!(
        cwd.join("data").exists() || cwd.join("etc").exists(),
        "the busy process lost its files"
    );
    env.iv().cleanup("sb1", "").unwrap();
    busy.kill().unwrap();
    busy.wait().unwrap();
    env.iv().release("sb1").unwrap();
    assert_nothing_left(&env, "sb1");
}

/// `sample_image`'s mount of `image` with the pod's mappings: container 0 is host `base`,
/// 65,536 IDs (the kubelet's shape).
fn idmapped_mount(image: &str, base: u32) -> Mount {
    let mut m = image_mount(image, "/data");
    let mapping = imv::IdMapping {
        host_id: base,
        container_id: 0,
        length: 65_536,
    };
    m.uid_mappings = vec![mapping];
    m.gid_mappings = vec![mapping];
    m
}

/// Owner (uid, gid) of `path`, not following a link.
fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(path).unwrap();
    (md.uid(), md.gid())
}

/// On the embedded store. With containerd the snapshotter decides: the tests' containerd
/// (Debian's 1.6) has none that can (cli/tests/containerd.rs checks the refusal); the
/// end-to-end suite runs a pod in a user namespace on containerd 2's overlayfs.
#[test]
fn volumes_with_uid_gid_mappings_show_the_owners_mapped() {
    // A pod in a user namespace (`hostUsers: false`): the kubelet sends the pod's mappings
    // with the mount. The volume shows the image's root-owned files as owned by the pod's
    // host IDs, by idmapped mounts (no copies), and the mappings are taken off the mount
    // it returns (the runtime must not map again).
    let mut env = TestEnv::new_local();
    env.import(SAMPLE, &sample_image());
    let one =
        ImageBuilder::new().layer(LayerBuilder::new().file("hello", 0o644, "world").entry(
            imv_testkit::image_builder::Entry::file("theirs", 0o600, "x").owner(1000, 1001),
        ));
    env.import("example.com/one:1", &one);
    for image in [SAMPLE, "example.com/one:1"] {
        let plain = mutate_one(&env, "plain", image);
        let mut mounts = vec![idmapped_mount(image, 100_000)];
        mutate(&env, "mapped", &mut mounts).unwrap();
        assert!(mounts[0].uid_mappings.is_empty() && mounts[0].gid_mappings.is_empty());
        let mapped = PathBuf::from(&mounts[0].host_path);
        // The same files, their owners shifted.
        let (a, b) = (common::tree(&plain), common::tree(&mapped));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for path in a.keys() {
            let (u, g) = owner(&plain.join(path));
            assert_eq!(
                owner(&mapped.join(path)),
                (u + 100_000, g + 100_000),
                "{}",
                path.display()
            );
        }
        assert_eq!(owner(&plain), (0, 0));
        assert_eq!(owner(&mapped), (100_000, 100_000));
        // Asked of the snapshotter as containerd's CRI plugin asks: remap labels on the
        // view, which then mounts with uidmap=/gidmap= options.
        let backend = env.iv().backend();
        let view = backend
            .view_info("overlayfs", &mounts[0].host_path)
            .unwrap();
        for label in ["uidmapping", "gidmapping"] {
            let label = format!("containerd.io/snapshot/{label}");
            assert_eq!(
                view.labels.get(&label).map(String::as_str),
                Some("0:100000:65536")
            );
        }
        let spec = backend.mounts("overlayfs", &mounts[0].host_path).unwrap();
        assert!(
            spec[0]
                .options
                .contains(&"uidmap=0:100000:65536".to_owned()),
            "{spec:?}"
        );
        let plain_view = backend
            .view_info("overlayfs", &plain.to_string_lossy())
            .unwrap();
        assert!(!plain_view.labels.keys().any(|k| k.ends_with("mapping")));
        let err = fs::write(mapped.join("new"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        // Another pod, another mapping: a volume of its own.
        let mut other = vec![idmapped_mount(image, 300_000)];
        mutate(&env, "other", &mut other).unwrap();
        assert_eq!(owner(Path::new(&other[0].host_path)), (300_000, 300_000));
        // The pod's next container: the same volume.
        let mut again = vec![idmapped_mount(image, 100_000)];
        mutate(&env, "mapped", &mut again).unwrap();
        assert_eq!(again[0].host_path, mounts[0].host_path);
        assert_eq!(env.mounts_under(&mapped).len(), 1);
        // ... also after a restart, which knows the volume only from the kernel.
        env.reopen();
        let mut again = vec![idmapped_mount(image, 100_000)];
        mutate(&env, "mapped", &mut again).unwrap();
        assert_eq!(env.mounts_under(&mapped).len(), 1);
        // Not with other mappings, nor without: that volume is no such volume.
        let mut unmapped = vec![image_mount(image, "/data")];
        let err = mutate(&env, "mapped", &mut unmapped).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        let err = mutate(&env, "plain", &mut [idmapped_mount(image, 100_000)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        for sb in ["plain", "mapped", "other"] {
            env.iv().release(sb).unwrap();
            assert_nothing_left(&env, sb);
        }
        assert!(!env.state.join("idmap-staging").join("mapped").exists());
    }
    // A mapping the kernel would refuse: InvalidArgument naming it, nothing made.
    let mut bad = vec![idmapped_mount(SAMPLE, 100_000)];
    bad[0].gid_mappings.push(imv::IdMapping {
        host_id: 100_010,
        container_id: 70_000,
        length: 5,
    });
    let err = mutate(&env, "bad", &mut bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("overlap on the host side"),
        "{err}"
    );
    assert!(bad[0].host_path.is_empty());
    assert_nothing_left(&env, "bad");
}

fn selinux_mount_labels_are_refused_or_ignored_without_selinux(env: TestEnv) {
    // The pod's MountLabel goes on as a context= mount option, which only a kernel with
    // SELinux takes (these machines have none: mount/selinux.rs's tests show the kernel
    // refusing the option, and check the label where SELinux is on).
    assert!(
        !imv_testkit::mounts::selinux_enabled(),
        "this test is written for hosts without SELinux"
    );
    env.import(SAMPLE, &sample_image());
    let label = "system_u:object_r:container_file_t:s0:c1,c2";
    let with = |mount_label: &str, ignore: bool| imv::MutateOptions {
        mount_label: mount_label.to_owned(),
        ignore_label_without_selinux: ignore,
    };
    let mutate_with = |sandbox: &str, options: &imv::MutateOptions, mounts: &mut [Mount]| {
        env.iv()
            .mutate_mounts_with(sandbox, "", None, options, mounts)
    };
    // Refused, naming the label, before anything is made.
    let mut mounts = vec![image_mount(SAMPLE, "/data")];
    let before = mounts.clone();
    let err = mutate_with("labelled", &with(label, false), &mut mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(
        err.to_string().contains(label) && err.to_string().contains("SELinux is not enabled"),
        "{err}"
    );
    assert_eq!(mounts, before);
    assert_nothing_left(&env, "labelled");
    // A label that is no label is InvalidArgument, ignored or not.
    for ignore in [false, true] {
        let err = mutate_with("labelled", &with("u:r:t:s0\"", ignore), &mut mounts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("u:r:t:s0"), "{err}");
        assert_nothing_left(&env, "labelled");
    }
    // Ignored when asked: mounted as without a label, and reused by a call without one.
    mutate_with("labelled", &with(label, true), &mut mounts).unwrap();
    let host = PathBuf::from(&mounts[0].host_path);
    let found = imv_testkit::mounts::under(&host);
    assert!(
        !found[0].super_options.contains("context="),
        "{:?}",
        found[0].super_options
    );
    let mut again = vec![image_mount(SAMPLE, "/data")];
    mutate(&env, "labelled", &mut again).unwrap();
    assert_eq!(again[0].host_path, mounts[0].host_path);
    env.iv().release("labelled").unwrap();
    assert_nothing_left(&env, "labelled");
}
