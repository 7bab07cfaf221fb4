//! Tests of the image writer, partly against independent tools (umoci, skopeo) so the
//! writer is not only checked against the project's own reader. A missing tool fails the
//! test: CI installs both.

use std::io::Read;
use std::path::Path;
use std::process::Command;

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

/// (name, type byte, link name, size, uid, mtime, pax xattrs) of every entry of `tar`.
type Row = (Vec<u8>, u8, Vec<u8>, u64, u64, u64, Vec<(String, Vec<u8>)>);

fn entries(tar: &[u8]) -> Vec<Row> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut xattrs = Vec::new();
            if let Some(pax) = e.pax_extensions().unwrap() {
                for r in pax {
                    let r = r.unwrap();
                    if let Some(k) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((k.to_owned(), r.value_bytes().to_vec()));
                    }
                }
            }
            let h = e.header().clone();
            let name = e.path_bytes().into_owned();
            let link = e
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (
                name,
                h.entry_type().as_byte(),
                link,
                data.len() as u64,
                h.uid().unwrap(),
                h.mtime().unwrap(),
                xattrs,
            )
        })
        .collect()
}

#[test]
fn layer_has_every_entry_kind_and_option() {
    let long = format!("deep/{}", "n".repeat(150));
    let layer = LayerBuilder::new()
        .dir("deep", 0o755)
        .entry(
            Entry::file("deep/owned", 0o600, "secret")
                .owner(1000, 2000)
                .mtime(42)
                .xattr("user.k", "v")
                .xattr("security.capability", vec![1, 2, 3]),
        )
        .file(&long, 0o644, "x")
        .symlink("deep/sym", "/etc/passwd")
        .hardlink("deep/hard", "deep/owned")
        .char_device("deep/null", 1, 3)
        .block_device("deep/loop0", 7, 0)
        .fifo("deep/pipe")
        .whiteout("deep/gone")
        .whiteout("top")
        .opaque("deep/");
    let tar = layer.tar().unwrap();
    let rows = entries(&tar);
    let names: Vec<String> = rows
        .iter()
        .map(|r| String::from_utf8(r.0.clone()).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "deep/",
            "deep/owned",
            long.as_str(),
            "deep/sym",
            "deep/hard",
            "deep/null",
            "deep/loop0",
            "deep/pipe",
            "deep/.wh.gone",
            ".wh.top",
            "deep/.wh..wh..opq",
        ]
    );
    let types: Vec<u8> = rows.iter().map(|r| r.1).collect();
    assert_eq!(types, b"50021346000");
    let owned = &rows[1];
    assert_eq!((owned.3, owned.4, owned.5), (6, 1000, 42));
    assert_eq!(
        owned.6,
        [
            ("user.k".to_owned(), b"v".to_vec()),
            ("security.capability".to_owned(), vec![1, 2, 3])
        ]
    );
    assert_eq!(rows[0].5, DEFAULT_MTIME);
    assert_eq!(rows[3].2, b"/etc/passwd");
    assert_eq!(rows[4].2, b"deep/owned");

    let mut a = tar::Archive::new(&tar[..]);
    let null = a.entries().unwrap().nth(5).unwrap().unwrap();
    assert_eq!(null.header().device_major().unwrap(), Some(1));
    assert_eq!(null.header().device_minor().unwrap(), Some(3));
}

#[test]
fn raw_entries_are_written_unchecked_and_checked_ones_are_refused() {
    let long_link = vec![b'a'; 120];
    let layer = LayerBuilder::new()
        .raw(b"../escape", b'0', b"boom", b"")
        .raw(b"/abs", b'2', b"", b"../../../etc")
        .raw(b".wh..", b'0', b"", b"")
        .raw(b"hl", b'1', b"", &long_link)
        .raw(b"old/", 0, b"", b"");
    let tar = layer.tar().unwrap();
    let rows = entries(&tar);
    assert_eq!(rows[0].0, b"../escape");
    assert_eq!((rows[0].1, rows[0].3), (b'0', 4));
    assert_eq!(rows[1].0, b"/abs");
    assert_eq!(rows[1].2, b"../../../etc");
    assert_eq!(rows[2].0, b".wh..");
    assert_eq!(rows[3].2, long_link);
    // Typeflag `\0` stays `\0` (the tar crate would write `0`): old tars' directories
    // are `\0` with a trailing `/`, and the unpacker must see them as such.
    assert_eq!(rows[4].0, b"old/");
    let mut a = tar::Archive::new(&tar[..]);
    let old = a.entries().unwrap().nth(4).unwrap().unwrap();
    assert_eq!(old.header().as_bytes()[156], 0);

    for bad in ["../x", "/abs", "a/../../b", "", "nul\0"] {
        let err = LayerBuilder::new().file(bad, 0o644, "").tar().unwrap_err();
        assert_eq!(err.kind(), imv::ErrorKind::InvalidArgument, "{bad:?}");
    }
    assert!(LayerBuilder::new().hardlink("a", "../b").tar().is_err());
}

#[test]
fn diff_id_is_the_digest_of_the_decompressed_blob() {
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let layer = LayerBuilder::new()
            .compression(c)
            .file("f", 0o644, vec![7u8; 100_000])
            .build()
            .unwrap();
        assert_eq!(layer.digest, Digest::of(&layer.blob));
        let mut tar = Vec::new();
        match c {
            Compression::None => tar = layer.blob.clone(),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&layer.blob[..])
                    .read_to_end(&mut tar)
                    .unwrap();
            }
            Compression::Zstd => tar = zstd::decode_all(&layer.blob[..]).unwrap(),
        }
        assert_eq!(layer.diff_id, Digest::of(&tar), "{c:?}");
        if c != Compression::None {
            assert!(layer.blob.len() < 10_000, "{c:?} did not compress");
        }
    }
}

#[test]
fn chain_id_follows_the_spec() {
    let a = Digest::of(b"a");
    let b = Digest::of(b"b");
    assert_eq!(chain_id(&[]), None);
    assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
    let ab = Digest::of(format!("{a} {b}").as_bytes());
    assert_eq!(chain_id(&[a, b]), Some(ab));
}

#[test]
fn output_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let (d1, d2) = (t.path().join("one"), t.path().join("two"));
    let images = [("example.com/sample:1", &sample_image())];
    let r1 = write_oci_layout(&d1, &images).unwrap();
    let r2 = write_oci_layout(&d2, &[("example.com/sample:1", &sample_image())]).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(
        fs::read(d1.join("index.json")).unwrap(),
        fs::read(d2.join("index.json")).unwrap()
    );
    let a1 = t.path().join("a1.tar");
    let a2 = t.path().join("a2.tar");
    assert_eq!(write_oci_archive(&a1, &images).unwrap(), r1);
    write_oci_archive(&a2, &images).unwrap();
    assert_eq!(fs::read(&a1).unwrap(), fs::read(&a2).unwrap());
    let k1 = t.path().join("k1.tar");
    let k2 = t.path().join("k2.tar");
    write_docker_archive(&k1, "sample:1", &sample_image()).unwrap();
    write_docker_archive(&k2, "sample:1", &sample_image()).unwrap();
    assert_eq!(fs::read(&k1).unwrap(), fs::read(&k2).unwrap());
    let z = many_layers(3)
        .layer(
            LayerBuilder::new()
                .compression(Compression::Zstd)
                .file("z", 0o644, "z"),
        )
        .build()
        .unwrap();
    assert_eq!(
        z,
        many_layers(3)
            .layer(
                LayerBuilder::new()
                    .compression(Compression::Zstd)
                    .file("z", 0o644, "z")
            )
            .build()
            .unwrap()
    );

    // The layout on disk matches the returned digests.
    let d = &r1[0];
    assert_eq!(d.layers.len(), 2);
    assert_eq!(d.chain_id, chain_id(&d.diff_ids));
    for blob in d.layers.iter().chain([&d.manifest, &d.config]) {
        let data = fs::read(d1.join("blobs/sha256").join(blob.hex())).unwrap();
        assert_eq!(&Digest::of(&data), blob);
    }
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(d1.join("blobs/sha256").join(d.config.hex())).unwrap())
            .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"], json!(d.diff_ids));
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(d1.join("index.json")).unwrap()).unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann[ANNOTATION_REF_NAME], "example.com/sample:1");
    assert_eq!(ann[ANNOTATION_CONTAINERD_NAME], "example.com/sample:1");
}

#[test]
fn tag_of_names() {
    assert_eq!(tag_of("docker.io/library/busybox:1.36"), "1.36");
    assert_eq!(tag_of("localhost:5000/x"), "latest");
    assert_eq!(tag_of("x:v1@sha256:abc"), "v1");
    assert_eq!(tag_of("x"), "latest");
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
