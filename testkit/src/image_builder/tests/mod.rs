//! Tests of the image writer, partly against independent tools (umoci, skopeo) so the
//! writer is not only checked against the project's own reader. A missing tool fails the
//! test: CI installs both.
//!
//! Here the in-process tests (tar entries, digests, determinism); `tools` has the ones
//! that run umoci and skopeo.

use std::fs;
use std::io::Read;

use serde_json::json;

use imv::Digest;

use super::*;

mod tools;

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
