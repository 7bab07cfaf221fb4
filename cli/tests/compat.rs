//! Our mounted volumes against an independent unpacker: for the same image, the tree
//! imv mounts must equal the tree `umoci unpack` (Debian's umoci) produces. Images come
//! from our own builder, from umoci itself, and through skopeo's conversions, so we don't
//! only check our writer against our reader.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_same_tree, image_mount, run, TestEnv};
use imv_testkit::image_builder::{
    many_layers, sample_image, Compression, ImageBuilder, LayerBuilder, LayoutOptions, OciLayout,
    RefName,
};

/// `umoci unpack` of `layout:tag` into a fresh bundle; returns its rootfs.
fn umoci_unpack(env: &TestEnv, layout: &Path, tag: &str) -> PathBuf {
    let bundle = env.scratch("bundle");
    fs::remove_dir(&bundle).unwrap();
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

fn mount_image(env: &TestEnv, sandbox: &str, image: &str) -> PathBuf {
    let mut mounts = vec![image_mount(image, "/data")];
    env.iv()
        .mutate_mounts(sandbox, "", None, &mut mounts)
        .unwrap_or_else(|e| panic!("mutate {image}: {e}"));
    PathBuf::from(&mounts[0].host_path)
}

/// Write `image` as an OCI layout umoci can read (tag-only ref name) that imv imports
/// under `name` (the containerd name annotation).
fn layout_for_both(env: &TestEnv, name: &str, image: &ImageBuilder) -> PathBuf {
    let dir = env.scratch("layout");
    let mut layout = OciLayout::new(LayoutOptions {
        ref_name: RefName::Tag,
        containerd_name: true,
    });
    layout.add_image(name, image).unwrap();
    layout.write_dir(&dir).unwrap();
    dir
}

fn tag_of(name: &str) -> &str {
    name.rsplit_once(':').map(|(_, t)| t).unwrap()
}

/// An image with every kind of entry and deletions across layers, uncompressed and gzip
/// (umoci 0.4 reads no zstd).
fn rich_image() -> ImageBuilder {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .compression(Compression::None)
                .dir("bin", 0o755)
                .file("bin/tool", 0o4755, "#!/bin/sh\n")
                .dir("etc", 0o755)
                .file("etc/shadow", 0o640, "root:*:1::::::\n")
                .dir("home", 0o755)
                .dir("home/user", 0o700)
                .file("home/user/notes", 0o600, "mine")
                .dir("var", 0o755)
                .dir("var/cache", 0o755)
                .file("var/cache/a", 0o644, "a")
                .file("var/cache/b", 0o644, "b")
                .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
                .symlink("lib", "usr/lib")
                .dir("usr", 0o755)
                .dir("usr/lib", 0o755)
                .file("usr/lib/libx.so.1", 0o755, vec![7u8; 10_000])
                .hardlink("usr/lib/libx.so", "usr/lib/libx.so.1")
                .fifo("var/fifo"),
        )
        .layer(
            LayerBuilder::new()
                .compression(Compression::Gzip)
                .whiteout("etc/shadow")
                .opaque("var/cache")
                .file("var/cache/c", 0o644, "c")
                .file("bin/tool", 0o755, "#!/bin/sh\necho v2\n")
                .dir("home/user", 0o750),
        )
        .layer(
            LayerBuilder::new()
                .whiteout("home")
                .file("etc/shadow", 0o600, "back again"),
        )
}

#[test]
fn our_images_mount_as_umoci_unpacks_them() {
    let env = TestEnv::new();
    for (name, image) in [
        ("example.com/compat/sample:1", sample_image()),
        ("example.com/compat/rich:1", rich_image()),
        ("example.com/compat/many:9", many_layers(9)),
    ] {
        let layout = layout_for_both(&env, name, &image);
        env.import_path(&layout, None);
        let ours = mount_image(&env, "sb1", name);
        let theirs = umoci_unpack(&env, &layout, tag_of(name));
        assert_same_tree(&ours, &theirs);
    }
}

/// Populate `rootfs` through a shell snippet.
fn sh(rootfs: &Path, script: &str) {
    run(Command::new("sh")
        .arg("-euc")
        .arg(script)
        .current_dir(rootfs));
}

/// An image made by umoci alone: three layers from edits of an unpacked bundle (files,
/// links, modes, owners, then deletions and a replaced directory).
fn umoci_image(env: &TestEnv) -> PathBuf {
    let layout = env.scratch("umoci");
    fs::remove_dir(&layout).unwrap();
    let image = format!("{}:t", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    let edits = [
        "mkdir -p etc usr/lib var/lib/app srv/www && echo hello > etc/motd && \
         printf 'x%.0s' $(seq 1 5000) > usr/lib/big && ln usr/lib/big usr/lib/big.hard && \
         ln -s ../usr/lib lib && ln -s /etc/motd motd && echo s > srv/www/index.html && \
         chown 1000:2000 srv/www/index.html && chmod 2750 srv/www && echo 1 > var/lib/app/one && \
         echo 2 > var/lib/app/two && mkfifo var/lib/app/fifo",
        "rm etc/motd && rm -r var/lib/app && mkdir var/lib/app && echo new > var/lib/app/three && \
         chmod 0700 usr/lib && echo changed > srv/www/index.html",
        "rm -r srv && echo again > etc/motd && ln -sf usr/lib/big shortcut",
    ];
    for edit in edits {
        let bundle = env.scratch("edit");
        fs::remove_dir(&bundle).unwrap();
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle));
        sh(&bundle.join("rootfs"), edit);
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle));
        fs::remove_dir_all(&bundle).unwrap();
    }
    layout
}

#[test]
fn umoci_and_skopeo_images_mount_as_umoci_unpacks_them() {
    let env = TestEnv::new();
    let layout = umoci_image(&env);
    let reference = umoci_unpack(&env, &layout, "t");
    assert!(reference.join("var/lib/app/three").exists() && !reference.join("srv").exists());
    fs::set_permissions(&reference, fs::Permissions::from_mode(0o755)).unwrap();

    // The umoci layout itself (named only by tag: --name is needed).
    env.import_path(&layout, Some("example.com/compat/umoci:1"));
    assert_same_tree(
        &mount_image(&env, "sb1", "example.com/compat/umoci:1"),
        &reference,
    );

    // skopeo's OCI archive and docker archive of it.
    let oci_archive = env.dir.join("skopeo-oci.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:t", layout.display()))
        .arg(format!("oci-archive:{}", oci_archive.display())));
    env.import_path(&oci_archive, Some("example.com/compat/skopeo-oci:1"));
    assert_same_tree(
        &mount_image(&env, "sb2", "example.com/compat/skopeo-oci:1"),
        &reference,
    );

    let docker_archive = env.dir.join("skopeo-docker.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:t", layout.display()))
        .arg(format!(
            "docker-archive:{}:example.com/compat/skopeo-docker:1",
            docker_archive.display()
        )));
    let records = env.import_path(&docker_archive, None);
    assert_eq!(records[0].name, "example.com/compat/skopeo-docker:1");
    assert_same_tree(
        &mount_image(&env, "sb3", "example.com/compat/skopeo-docker:1"),
        &reference,
    );

    for sb in ["sb1", "sb2", "sb3"] {
        env.iv().release(sb).unwrap();
    }
    assert!(env.mounts_under(&env.state).is_empty());
}
