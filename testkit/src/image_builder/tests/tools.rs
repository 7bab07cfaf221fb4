//! Tests against independent tools: umoci unpacks and skopeo inspects and copies what
//! the writer wrote. A missing tool fails the test: CI installs both.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use super::*;

/// Run `prog args`, panic with its stderr if it fails or cannot be started; return stdout.
fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {prog} ({e}); the image_builder tests need umoci and skopeo installed")
    });
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// `skopeo` with a permissive policy, so the test does not depend on the host's policy.json.
fn skopeo(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--insecure-policy"];
    all.extend_from_slice(args);
    let out = run("skopeo", &all);
    serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
}

fn tag_layout() -> LayoutOptions {
    LayoutOptions {
        ref_name: RefName::Tag,
        containerd_name: true,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
/// umoci unpacks `tag` of `layout` into `bundle`; returns the rootfs path.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> std::path::PathBuf {
    let image = format!("{}:{tag}", s(layout));
    run("umoci", &["stat", "--image", &image]);
    run("umoci", &["unpack", "--image", &image, s(bundle)]);
    bundle.join("rootfs")
}

#[test]
fn umoci_unpacks_the_sample_with_whiteouts_applied() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    write_oci_layout_with(
        &layout,
        &[("example.com/sample:v1", &sample_image())],
        tag_layout(),
    )
    .unwrap();
    let root = umoci_unpack(&layout, "v1", &t.path().join("bundle"));
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("etc/hostname"), "imv\n");
    assert_eq!(read("data/hello.txt"), "hello from imv\n");
    assert_eq!(read("data/hard"), "hello from imv\n");
    assert_eq!(read("data/second.txt"), "layer 1\n");
    assert_eq!(read("data/opaque/new.txt"), "added by layer 1\n");
    assert_eq!(
        fs::read_link(root.join("data/link")).unwrap(),
        Path::new("hello.txt")
    );
    for gone in [
        "data/remove-me.txt",
        "data/.wh.remove-me.txt",
        "data/opaque/old.txt",
        "data/opaque/.wh..wh..opq",
    ] {
        assert!(!root.join(gone).exists(), "{gone} survived");
    }
}

#[test]
fn umoci_unpacks_many_layers_and_plain_layers() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let plain = many_layers(1).layer(
        LayerBuilder::new()
            .compression(Compression::None)
            .entry(Entry::file("plain", 0o640, "plain\n").owner(12, 34)),
    );
    write_oci_layout_with(
        &layout,
        &[("many:7", &many_layers(7)), ("x/plain:p", &plain)],
        tag_layout(),
    )
    .unwrap();
    let root = umoci_unpack(&layout, "7", &t.path().join("b7"));
    for i in 0..7 {
        let got = fs::read_to_string(root.join(format!("layer-{i}"))).unwrap();
        assert_eq!(got, format!("layer {i}\n"));
    }
    let shared = fs::read_to_string(root.join("shared")).unwrap();
    assert_eq!(shared, "written by layer 6\n");

    let root = umoci_unpack(&layout, "p", &t.path().join("bp"));
    assert_eq!(fs::read_to_string(root.join("plain")).unwrap(), "plain\n");
    let meta = fs::metadata(root.join("plain")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (12, 34, 0o640)
    );
}

#[test]
fn skopeo_inspects_and_copies_our_layout() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let zstd = many_layers(2).layer(LayerBuilder::new().compression(Compression::Zstd).file(
        "zstd-file",
        0o644,
        "zstd\n",
    ));
    let digests = write_oci_layout_with(
        &layout,
        &[
            ("example.com/sample:v1", &sample_image()),
            ("example.com/zstd:z", &zstd),
            (
                "example.com/docker:d",
                &sample_image().docker_media_types(true),
            ),
        ],
        tag_layout(),
    )
    .unwrap();
    for (tag, d) in ["v1", "z"].iter().zip(&digests) {
        let src = format!("oci:{}:{tag}", s(&layout));
        let info = skopeo(&["inspect", &src]);
        assert_eq!(info["Digest"], d.manifest.to_string(), "{tag}");
        assert_eq!(info["Layers"], json!(d.layers), "{tag}");
        assert_eq!(info["Architecture"], d.platform.architecture.as_str());

        // skopeo decompresses our blobs (gzip, zstd) into a dir: layout; the plain tars
        // it gets must hash to our diff_ids.
        let plain = t.path().join(format!("{tag}-dir"));
        skopeo(&[
            "copy",
            "--dest-decompress",
            &src,
            &format!("dir:{}", s(&plain)),
        ]);
        for diff_id in &d.diff_ids {
            let tar = fs::read(plain.join(diff_id.hex())).unwrap();
            assert_eq!(&Digest::of(&tar), diff_id, "{tag}");
        }

        // skopeo 1.9 refuses zstd for docker images, so only gzip goes to docker-archive.
        if *tag != "z" {
            let docker = t.path().join(format!("{tag}-docker.tar"));
            let dst = format!("docker-archive:{}:example.com/x:{tag}", s(&docker));
            skopeo(&["copy", &src, &dst]);
            let info = skopeo(&["inspect", &format!("docker-archive:{}", s(&docker))]);
            assert_eq!(info["Layers"], json!(d.diff_ids), "{tag}");
        }

        let archive = t.path().join(format!("{tag}-oci.tar"));
        skopeo(&["copy", &src, &format!("oci-archive:{}:{tag}", s(&archive))]);
        let info = skopeo(&["inspect", &format!("oci-archive:{}:{tag}", s(&archive))]);
        assert_eq!(info["Layers"], json!(d.layers), "{tag}");
    }
}

#[test]
fn skopeo_reads_our_archives() {
    let t = tempfile::tempdir().unwrap();
    let oci = t.path().join("oci.tar");
    let d = write_oci_archive_with(
        &oci,
        &[("example.com/sample:v1", &sample_image())],
        tag_layout(),
    )
    .unwrap()
    .remove(0);
    let info = skopeo(&["inspect", &format!("oci-archive:{}:v1", s(&oci))]);
    assert_eq!(info["Digest"], d.manifest.to_string());

    let docker = t.path().join("docker.tar");
    let d = write_docker_archive(&docker, "example.com/sample:v1", &sample_image()).unwrap();
    assert_eq!(d.layers, d.diff_ids);
    // Naming the image checks that RepoTags is read.
    let src = format!("docker-archive:{}:example.com/sample:v1", s(&docker));
    let info = skopeo(&["inspect", &src]);
    assert_eq!(info["Layers"], json!(d.diff_ids));
    let config = skopeo(&[
        "inspect",
        "--config",
        &format!("docker-archive:{}", s(&docker)),
    ]);
    assert_eq!(config["rootfs"]["diff_ids"], json!(d.diff_ids));

    // And a copy back to an OCI layout unpacks with umoci, whiteouts applied.
    let layout = t.path().join("layout");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", s(&docker)),
        &format!("oci:{}:v1", s(&layout)),
    ]);
    let root = umoci_unpack(&layout, "v1", &t.path().join("bundle"));
    assert!(root.join("data/hello.txt").exists());
    assert!(!root.join("data/remove-me.txt").exists());
}

#[test]
fn multi_platform_index_resolves_per_platform() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let amd = sample_image().platform("linux", "amd64", "");
    let arm = many_layers(2).platform("linux", "arm64", "v8");
    let mut l = OciLayout::new(tag_layout());
    let d = l.add_index("example.com/multi:m", &[&amd, &arm]).unwrap();
    l.write_dir(&layout).unwrap();
    let src = format!("oci:{}:m", s(&layout));
    let raw = skopeo(&["inspect", "--raw", &src]);
    assert_eq!(raw["mediaType"], media_type::OCI_INDEX);
    assert_eq!(raw["manifests"][1]["platform"]["variant"], "v8");
    for (arch, want) in [("amd64", &d.manifests[0]), ("arm64", &d.manifests[1])] {
        let info = skopeo(&[
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            "inspect",
            &src,
        ]);
        // skopeo reports the digest of the index it was given, and the chosen image's layers.
        assert_eq!(info["Digest"], d.index.to_string(), "{arch}");
        assert_eq!(info["Layers"], json!(want.layers), "{arch}");
        assert_eq!(info["Architecture"], arch);
    }

    // The default writer names the index with the full name in both annotations.
    let full = t.path().join("full");
    let d2 = write_oci_layout_index(&full, "example.com/multi:m", &[&amd, &arm]).unwrap();
    assert_eq!(d2, d);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(full.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], d.index.to_string());
    assert_eq!(index["manifests"][0]["mediaType"], media_type::OCI_INDEX);
    assert_eq!(
        index["manifests"][0]["annotations"][ANNOTATION_REF_NAME],
        "example.com/multi:m"
    );
}

#[test]
fn skopeo_reads_docker_media_types() {
    // skopeo's oci: transport only lists OCI-typed manifests in index.json (containerd takes
    // both), so the Docker-typed manifest is checked through skopeo's dir: transport, which
    // is one file per blob plus manifest.json.
    let t = tempfile::tempdir().unwrap();
    let img = sample_image().docker_media_types(true).build().unwrap();
    let dir = t.path().join("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
    fs::write(dir.join("manifest.json"), &img.manifest).unwrap();
    fs::write(dir.join(img.config_digest.hex()), &img.config).unwrap();
    for l in &img.layers {
        fs::write(dir.join(l.digest.hex()), &l.blob).unwrap();
    }
    let src = format!("dir:{}", s(&dir));
    let raw = skopeo(&["inspect", "--raw", &src]);
    assert_eq!(raw["mediaType"], media_type::DOCKER_MANIFEST);
    assert_eq!(raw["layers"][0]["mediaType"], media_type::DOCKER_LAYER_GZIP);
    assert_eq!(raw["config"]["mediaType"], media_type::DOCKER_CONFIG);
    let d = img.digests();
    let info = skopeo(&["inspect", &src]);
    assert_eq!(info["Digest"], d.manifest.to_string());
    assert_eq!(info["Layers"], json!(d.layers));
    // Converting to an OCI layout makes skopeo read every blob through the Docker types.
    let layout = t.path().join("layout");
    skopeo(&["copy", &src, &format!("oci:{}:d", s(&layout))]);
    let root = umoci_unpack(&layout, "d", &t.path().join("bundle"));
    assert!(root.join("data/second.txt").exists());
}
