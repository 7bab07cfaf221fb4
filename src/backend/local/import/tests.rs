//! Import tests on inputs made by real, independent tools (umoci, skopeo) and on small
//! hand-made malformed layouts and tars. The tools must be installed: tests fail, not skip,
//! without them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{import, ImportOptions};
use crate::backend::local::content::{ContentStore, MAX_JSON_SIZE};
use crate::backend::{ImageRecord, NoProgress, Progress};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A temp dir with a fresh content store in it.
struct Fixture {
    tmp: tempfile::TempDir,
    store: ContentStore,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&tmp.path().join("root/content")).unwrap();
        Fixture { tmp, store }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>, Error> {
        import(&self.store, path, &ImportOptions::named(name), &NoProgress)
    }

    /// Import expecting failure of `kind`; the store must be left with no temp file.
    fn import_err(&self, path: &Path, name: Option<&str>, kind: ErrorKind) -> Error {
        let err = match self.import(path, name) {
            Ok(r) => panic!("import of {} succeeded: {r:?}", path.display()),
            Err(e) => e,
        };
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.message().contains(&path.display().to_string()), "{err}");
        self.assert_no_stray_files();
        err
    }

    fn assert_no_stray_files(&self) {
        let ingest = self.store.dir().join("ingest");
        let left: Vec<_> = fs::read_dir(&ingest).unwrap().collect();
        assert!(
            left.is_empty(),
            "stray files in {}: {left:?}",
            ingest.display()
        );
    }

    /// Every blob `record` references is in the store, with the size its descriptor gives
    /// and content that hashes to its digest. Returns the manifests found.
    fn assert_complete(&self, record: &ImageRecord) -> Vec<Digest> {
        let mut manifests = Vec::new();
        let desc =
            json!({"mediaType": record.media_type, "digest": record.digest, "size": record.size});
        self.check(&desc, true, &mut manifests);
        self.assert_no_stray_files();
        manifests
    }

    fn check(&self, desc: &Value, required: bool, manifests: &mut Vec<Digest>) {
        let digest = Digest::parse(desc["digest"].as_str().unwrap()).unwrap();
        if !required && !self.store.contains(&digest) {
            return;
        }
        let data = self.store.read_blob(&digest, 1 << 30).unwrap();
        assert_eq!(
            data.len() as u64,
            desc["size"].as_u64().unwrap(),
            "{digest}"
        );
        match desc["mediaType"].as_str().unwrap() {
            INDEX => {
                let index: Value = serde_json::from_slice(&data).unwrap();
                for m in index["manifests"].as_array().unwrap() {
                    self.check(m, false, manifests);
                }
            }
            MANIFEST => {
                manifests.push(digest);
                let m: Value = serde_json::from_slice(&data).unwrap();
                self.check(&m["config"], true, manifests);
                for l in m["layers"].as_array().unwrap() {
                    self.check(l, true, manifests);
                }
            }
            _ => {}
        }
    }
}

/// Run a tool; a missing tool or a failure panics with what it said.
fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (is it installed? CI installs it): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Add image `tag` to the umoci layout `layout` (created if need be), with `files`
/// (name, content) in its root filesystem.
fn umoci_image(layout: &Path, tag: &str, files: &[(&str, &str)]) {
    let l = layout.to_str().unwrap();
    if !layout.exists() {
        run("umoci", &["init", "--layout", l]);
    }
    let image = format!("{l}:{tag}");
    run("umoci", &["new", "--image", &image]);
    let bundle = layout.with_extension(format!("bundle-{tag}"));
    let b = bundle.to_str().unwrap();
    run("umoci", &["unpack", "--rootless", "--image", &image, b]);
    for (name, content) in files {
        fs::write(bundle.join("rootfs").join(name), content).unwrap();
    }
    run("umoci", &["repack", "--image", &image, b]);
    fs::remove_dir_all(&bundle).unwrap();
}

fn skopeo_copy(from: &str, to: &str) {
    run("skopeo", &["copy", "--quiet", from, to]);
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The index.json entry and the manifest of the image tagged `tag` in an umoci layout.
fn manifest_of(layout: &Path, tag: &str) -> (Value, Value) {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let manifest = read_json(&blob_path(layout, entry["digest"].as_str().unwrap()));
    (entry, manifest)
}

/// Tar `dir` (recursively, regular files only) into `out`, names relative to `dir`.
fn tar_dir(dir: &Path, out: &Path) {
    fn add(b: &mut tar::Builder<fs::File>, root: &Path, dir: &Path) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                add(b, root, &p);
            } else {
                b.append_path_with_name(&p, p.strip_prefix(root).unwrap())
                    .unwrap();
            }
        }
    }
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    add(&mut b, dir, dir);
    b.finish().unwrap();
}

/// Append a member with exactly `name` (the tar crate refuses to write unsafe names).
fn append_raw(b: &mut tar::Builder<impl Write>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Re-tar `from` into `to`, replacing members by name (`None`: drop it) and adding others.
fn rewrite_tar(from: &Path, to: &Path, replace: &[(&str, Option<&[u8]>)]) {
    let mut src = tar::Archive::new(fs::File::open(from).unwrap());
    let mut b = tar::Builder::new(fs::File::create(to).unwrap());
    let mut done = Vec::new();
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        match replace.iter().find(|(n, _)| *n == name) {
            Some((n, Some(data))) => {
                done.push(*n);
                let mut h = e.header().clone();
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            Some((n, None)) => done.push(*n),
            None => {
                let h = e.header().clone();
                b.append(&h, &mut e).unwrap();
            }
        }
    }
    for (n, data) in replace {
        if let (false, Some(data)) = (done.contains(n), data) {
            append_raw(&mut b, n, data);
        }
    }
    b.finish().unwrap();
}

fn single(records: Vec<ImageRecord>) -> ImageRecord {
    assert_eq!(records.len(), 1, "{records:?}");
    records.into_iter().next().unwrap()
}

#[test]
fn umoci_layout_imports_with_a_name() {
    let f = Fixture::new();
    let layout = f.path("layout");
    umoci_image(&layout, "latest", &[("hello", "hello\n")]);
    let (entry, manifest) = manifest_of(&layout, "latest");

    let rec = single(f.import(&layout, Some("example.com/app:1")).unwrap());
    assert_eq!(rec.name, "example.com/app:1");
    assert_eq!(rec.digest.to_string(), entry["digest"].as_str().unwrap());
    assert_eq!(rec.media_type, MANIFEST);
    assert_eq!(rec.size, entry["size"].as_u64().unwrap());
    let manifests = f.assert_complete(&rec);
    assert_eq!(manifests, vec![rec.digest.clone()]);
    let layer = Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap();
    assert!(f.store.contains(&layer));

    // A short name is normalized; importing again is fine.
    let rec = single(f.import(&layout, Some("app")).unwrap());
    assert_eq!(rec.name, "docker.io/library/app:latest");
}

/// A layout of three images tagged only `one`, `two` (by umoci) and `eight` (by skopeo),
/// as the user had.
fn multi_image_layout(f: &Fixture) -> PathBuf {
    let layout = f.path("multi");
    umoci_image(&layout, "one", &[("which", "one")]);
    umoci_image(&layout, "two", &[("which", "two")]);
    let l = layout.display();
    skopeo_copy(&format!("oci:{l}:one"), &format!("oci:{l}:eight"));
    layout
}

fn import_with(
    f: &Fixture,
    path: &Path,
    options: ImportOptions,
) -> Result<Vec<ImageRecord>, Error> {
    import(&f.store, path, &options, &NoProgress)
}

#[test]
fn bare_tagged_images_are_named_by_a_base_name_or_picked_by_tag() {
    let f = Fixture::new();
    let layout = multi_image_layout(&f);
    // Nothing names them: the error says every way to.
    let err = f.import_err(&layout, None, ErrorKind::InvalidArgument);
    for says in ["--base-name", ":one", "--tag", "--name"] {
        assert!(err.message().contains(says), "{says}: {err}");
    }
    // A name cannot name two (eight is one's copy).
    let err = f.import_err(&layout, Some("example.com/x:1"), ErrorKind::InvalidArgument);
    assert!(
        err.message().contains("2 images") && err.message().contains("--tag"),
        "{err}"
    );

    // --base-name: REPO:TAG each (containerd's convention).
    let base = |b: &str| ImportOptions {
        base_name: Some(b.into()),
        ..Default::default()
    };
    let records = import_with(&f, &layout, base("example.com/imgs")).unwrap();
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "example.com/imgs:eight",
            "example.com/imgs:one",
            "example.com/imgs:two"
        ]
    );
    assert_eq!(
        records[0].digest, records[1].digest,
        "skopeo copied one as eight"
    );
    assert_ne!(records[1].digest, records[2].digest);
    let short = import_with(&f, &layout, base("imgs")).unwrap();
    assert_eq!(short[1].name, "docker.io/library/imgs:one");

    // A tag picks one image, named by --name or by the base name.
    let tag = |t: &str, name: Option<&str>| ImportOptions {
        name: name.map(str::to_owned),
        tag: Some(t.into()),
        ..Default::default()
    };
    let two = single(import_with(&f, &layout, tag("two", Some("example.com/two:1"))).unwrap());
    assert_eq!(
        (two.name.as_str(), &two.digest),
        ("example.com/two:1", &records[2].digest)
    );
    let picked = ImportOptions {
        base_name: Some("example.com/imgs".into()),
        tag: Some("one".into()),
        ..Default::default()
    };
    assert_eq!(
        single(import_with(&f, &layout, picked).unwrap()).name,
        "example.com/imgs:one"
    );
    // Picked but unnamed: the error still says how to name it.
    let err = import_with(&f, &layout, tag("one", None)).unwrap_err();
    assert!(err.message().contains("--name"), "{err}");

    // A tag that is not there: NotFound, listing those that are.
    let err = import_with(&f, &layout, tag("nine", Some("x"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    for t in ["\"nine\"", "\"one\"", "\"two\"", "\"eight\""] {
        assert!(err.message().contains(t), "{t}: {err}");
    }

    // Bad options fail before anything is read.
    for (options, says) in [
        (base("example.com/imgs:1"), "without tag or digest"),
        (base("example.com/imgs@sha256:00"), "without tag or digest"),
        (base("Bad Repo"), "Bad Repo"),
        (tag("a/b", Some("x")), "a tag alone"),
        (tag("", Some("x")), "a tag alone"),
        (
            ImportOptions {
                name: Some("example.com/x:1".into()),
                base_name: Some("example.com/imgs".into()),
                tag: None,
            },
            "give one",
        ),
    ] {
        let err = import_with(&f, &layout, options.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{options:?}: {err}");
        assert!(err.message().contains(says), "{options:?}: {err}");
    }
    f.assert_no_stray_files();
}

#[test]
fn a_tag_picks_an_image_of_a_docker_archive_by_its_repo_tag() {
    let f = Fixture::new();
    let layout = multi_image_layout(&f);
    let archive = f.path("docker.tar");
    let l = layout.display();
    skopeo_copy(
        &format!("oci:{l}:two"),
        &format!("docker-archive:{}:example.com/app:two", archive.display()),
    );
    let options = ImportOptions {
        tag: Some("two".into()),
        ..Default::default()
    };
    assert_eq!(
        single(import_with(&f, &archive, options).unwrap()).name,
        "example.com/app:two"
    );
    let options = ImportOptions {
        tag: Some("one".into()),
        ..Default::default()
    };
    let err = import_with(&f, &archive, options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("example.com/app:two"), "{err}");
}

#[test]
fn tag_only_ref_name_needs_a_name() {
    let f = Fixture::new();
    let layout = f.path("layout");
    umoci_image(&layout, "latest", &[]);
    let err = f.import_err(&layout, None, ErrorKind::InvalidArgument);
    assert!(err.message().contains("--name"), "{err}");
    assert!(err.message().contains("\"latest\""), "{err}");

    // A full reference in ref.name, or containerd's annotation, names the image.
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        json!("example.com/a:v1");
    fs::write(&index_path, index.to_string()).unwrap();
    assert_eq!(
        single(f.import(&layout, None).unwrap()).name,
        "example.com/a:v1"
    );
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = json!("busybox:1");
    fs::write(&index_path, index.to_string()).unwrap();
    assert_eq!(
        single(f.import(&layout, None).unwrap()).name,
        "docker.io/library/busybox:1"
    );
    // A bad name is refused, naming it.
    let err = f.import_err(&layout, Some("Bad Name"), ErrorKind::InvalidArgument);
    assert!(err.message().contains("Bad Name"), "{err}");
}

#[test]
fn skopeo_oci_archive_plain_gzip_and_zstd() {
    let f = Fixture::new();
    let layout = f.path("layout");
    umoci_image(&layout, "latest", &[("a", "a\n"), ("b", "bb\n")]);
    let (entry, _) = manifest_of(&layout, "latest");
    let plain = f.path("x.tar");
    skopeo_copy(
        &format!("oci:{}:latest", layout.display()),
        &format!("oci-archive:{}", plain.display()),
    );

    let gz = f.path("x.tar.gz");
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&fs::read(&plain).unwrap()).unwrap();
    enc.finish().unwrap();
    let zst = f.path("x.tar.zst");
    fs::write(
        &zst,
        zstd::encode_all(&fs::read(&plain).unwrap()[..], 3).unwrap(),
    )
    .unwrap();

    for archive in [&plain, &gz, &zst] {
        let f2 = Fixture::new();
        let rec = single(f2.import(archive, Some("example.com/app:2")).unwrap());
        assert_eq!(rec.name, "example.com/app:2");
        assert_eq!(rec.digest.to_string(), entry["digest"].as_str().unwrap());
        f2.assert_complete(&rec);
        // skopeo's index.json carries no name at all.
        let err = f2.import_err(archive, None, ErrorKind::InvalidArgument);
        assert!(err.message().contains("--name"), "{err}");
    }
}

#[test]
fn skopeo_docker_archive() {
    let f = Fixture::new();
    let layout = f.path("layout");
    umoci_image(&layout, "latest", &[("hello", "hello\n")]);
    let archive = f.path("y.tar");
    skopeo_copy(
        &format!("oci:{}:latest", layout.display()),
        &format!("docker-archive:{}:example.com/app:1", archive.display()),
    );
    let rec = single(f.import(&archive, None).unwrap());
    assert_eq!(rec.name, "example.com/app:1");
    assert_eq!(rec.media_type, MANIFEST);
    f.assert_complete(&rec);
    let manifest: Value = f.store.read_json(&rec.digest).unwrap();
    let config: Value = f
        .store
        .read_json(&Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap())
        .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    // Uncompressed layers: the digest is the diff ID.
    assert_eq!(layers[0]["digest"], config["rootfs"]["diff_ids"][0]);

    // --name overrides RepoTags for a single image.
    assert_eq!(
        single(f.import(&archive, Some("other:9")).unwrap()).name,
        "docker.io/library/other:9"
    );

    // Old docker save: manifest.json names `<id>/layer.tar`, a symlink to the copy.
    let mut listing = tar::Archive::new(fs::File::open(&archive).unwrap());
    let link = listing
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
        .find(|n| n.ends_with("/layer.tar"))
        .expect("skopeo writes <id>/layer.tar symlinks");
    let mut docker_manifest: Value = {
        let mut a = tar::Archive::new(fs::File::open(&archive).unwrap());
        let mut e = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| &*e.path_bytes() == b"manifest.json")
            .unwrap();
        serde_json::from_reader(&mut e).unwrap()
    };
    docker_manifest[0]["Layers"][0] = json!(link);
    docker_manifest[0]["RepoTags"] = json!(["linked:1"]);
    let linked = f.path("linked.tar");
    let bytes = docker_manifest.to_string().into_bytes();
    rewrite_tar(&archive, &linked, &[("manifest.json", Some(&bytes))]);
    let rec2 = single(f.import(&linked, None).unwrap());
    assert_eq!(rec2.name, "docker.io/library/linked:1");
    assert_eq!(rec2.digest, rec.digest);

    // A layer that is not what the config says it is.
    docker_manifest[0]["Layers"][0] = docker_manifest[0]["Config"].clone();
    let bytes = docker_manifest.to_string().into_bytes();
    let bad = f.path("bad.tar");
    rewrite_tar(&archive, &bad, &[("manifest.json", Some(&bytes))]);
    let err = f.import_err(&bad, None, ErrorKind::InvalidArgument);
    assert!(err.message().contains("diff ID"), "{err}");
}

#[test]
fn multi_platform_index_is_kept_whole() {
    let f = Fixture::new();
    let layout = f.path("layout");
    umoci_image(&layout, "amd64", &[("arch", "amd64\n")]);
    umoci_image(&layout, "arm64", &[("arch", "arm64\n")]);
    let (amd, _) = manifest_of(&layout, "amd64");
    let (arm, _) = manifest_of(&layout, "arm64");
    let platform = |arch: &str, e: &Value| {
        json!({"mediaType": MANIFEST, "digest": e["digest"], "size": e["size"],
               "platform": {"os": "linux", "architecture": arch}})
    };
    // A third platform that this partial copy does not hold.
    let absent = json!({"mediaType": MANIFEST, "digest": Digest::of(b"absent").to_string(), "size": 6,
                        "platform": {"os": "linux", "architecture": "s390x"}});
    let index = json!({"schemaVersion": 2, "mediaType": INDEX,
                       "manifests": [platform("amd64", &amd), platform("arm64", &arm), absent]})
    .to_string();
    let index_digest = Digest::of(index.as_bytes());
    fs::write(blob_path(&layout, &index_digest.to_string()), &index).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": INDEX, "digest": index_digest, "size": index.len(),
        "annotations": {"io.containerd.image.name": "example.com/multi:1"}}]});
    fs::write(layout.join("index.json"), top.to_string()).unwrap();

    let rec = single(f.import(&layout, None).unwrap());
    assert_eq!(rec.name, "example.com/multi:1");
    assert_eq!(rec.digest, index_digest);
    assert_eq!(rec.media_type, INDEX);
    assert_eq!(rec.size, index.len() as u64);
    let mut manifests = f.assert_complete(&rec);
    manifests.sort();
    let mut want = vec![
        Digest::parse(amd["digest"].as_str().unwrap()).unwrap(),
        Digest::parse(arm["digest"].as_str().unwrap()).unwrap(),
    ];
    want.sort();
    assert_eq!(manifests, want);

    // The same as an archive.
    let archive = f.path("multi.tar");
    tar_dir(&layout, &archive);
    let f2 = Fixture::new();
    let rec2 = single(f2.import(&archive, None).unwrap());
    assert_eq!(rec2, rec);
    f2.assert_complete(&rec2);
}

/// A one-image layout and its layer's digest and blob path, plus that layout as a tar.
fn layout_and_layer(f: &Fixture) -> (PathBuf, String, PathBuf) {
    let layout = f.path("layout");
    umoci_image(&layout, "latest", &[("hello", "hello\n")]);
    let (_, manifest) = manifest_of(&layout, "latest");
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let path = blob_path(&layout, &layer);
    (layout, layer, path)
}

#[test]
fn corrupted_blob_is_refused() {
    let f = Fixture::new();
    let (layout, layer, path) = layout_and_layer(&f);
    let mut data = fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    fs::write(&path, &data).unwrap();
    let err = f.import_err(&layout, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains(&layer), "{err}");
    assert!(!f.store.contains(&Digest::parse(&layer).unwrap()));

    let archive = f.path("corrupt.tar");
    tar_dir(&layout, &archive);
    let err = f.import_err(&archive, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains(&layer), "{err}");
    assert!(!f.store.contains(&Digest::parse(&layer).unwrap()));
}

#[test]
fn size_disagreeing_with_descriptor_is_refused() {
    let f = Fixture::new();
    let (layout, _, _) = layout_and_layer(&f);
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    let size = index["manifests"][0]["size"].as_u64().unwrap();
    index["manifests"][0]["size"] = json!(size + 1);
    fs::write(&index_path, index.to_string()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();

    let err = f.import_err(&layout, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains(&digest), "{err}");
    let archive = f.path("size.tar");
    tar_dir(&layout, &archive);
    let err = f.import_err(&archive, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains(&digest), "{err}");
    assert!(err.message().contains(&format!("{}", size + 1)), "{err}");
}

#[test]
fn missing_layer_is_refused() {
    let f = Fixture::new();
    let (layout, layer, path) = layout_and_layer(&f);
    fs::remove_file(&path).unwrap();
    let err = f.import_err(&layout, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains(&layer), "{err}");
    assert!(err.message().contains("missing"), "{err}");

    let archive = f.path("missing.tar");
    tar_dir(&layout, &archive);
    let err = f.import_err(&archive, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains(&layer), "{err}");
}

#[test]
fn unsafe_member_names_are_refused() {
    let f = Fixture::new();
    let (layout, _, _) = layout_and_layer(&f);
    let good = f.path("good.tar");
    tar_dir(&layout, &good);
    for name in ["blobs/sha256/../../x", "../x", "/etc/x", "a/../../x"] {
        let bad = f.path("bad.tar");
        rewrite_tar(&good, &bad, &[(name, Some(b"x"))]);
        let err = f.import_err(&bad, Some("app"), ErrorKind::InvalidArgument);
        assert!(err.message().contains(name), "{name}: {err}");
    }
    assert!(!f.tmp.path().join("x").exists());
    // Other algorithms are ignored; a sha256 name that is not a digest is refused.
    let other = f.path("other.tar");
    let sha512 = format!("blobs/sha512/{}", "ab".repeat(32));
    rewrite_tar(&good, &other, &[(&sha512, Some(b"x"))]);
    single(f.import(&other, Some("app")).unwrap());
    rewrite_tar(&good, &other, &[("blobs/sha256/ABC", Some(b"x"))]);
    f.import_err(&other, Some("app"), ErrorKind::InvalidArgument);
}

#[test]
fn oversized_index_json_is_refused() {
    let f = Fixture::new();
    let (layout, _, _) = layout_and_layer(&f);
    let index_path = layout.join("index.json");
    let mut index = fs::read(&index_path).unwrap();
    index.resize(MAX_JSON_SIZE as usize + 1, b' ');
    fs::write(&index_path, &index).unwrap();
    let err = f.import_err(&layout, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains("index.json"), "{err}");
    let archive = f.path("big.tar");
    tar_dir(&layout, &archive);
    let err = f.import_err(&archive, Some("app"), ErrorKind::InvalidArgument);
    assert!(err.message().contains("index.json"), "{err}");
}

#[test]
fn a_name_cannot_name_two_images() {
    let f = Fixture::new();
    let layout = f.path("layout");
    umoci_image(&layout, "a", &[("x", "a\n")]);
    umoci_image(&layout, "b", &[("x", "b\n")]);
    let err = f.import_err(
        &layout,
        Some("example.com/app:1"),
        ErrorKind::InvalidArgument,
    );
    assert!(err.message().contains("2 images"), "{err}");
    // Named by their annotations, both import.
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    for m in index["manifests"].as_array_mut().unwrap() {
        let tag = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap()
            .to_owned();
        m["annotations"]["org.opencontainers.image.ref.name"] =
            json!(format!("example.com/app:{tag}"));
    }
    fs::write(&index_path, index.to_string()).unwrap();
    let names: Vec<String> = f
        .import(&layout, None)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["example.com/app:a", "example.com/app:b"]);
}

#[test]
fn not_an_image_is_refused() {
    let f = Fixture::new();
    let empty_dir = f.path("empty");
    fs::create_dir(&empty_dir).unwrap();
    f.import_err(&empty_dir, None, ErrorKind::InvalidArgument);
    let junk = f.path("junk.tar");
    fs::write(&junk, b"this is not a tar archive at all").unwrap();
    f.import_err(&junk, None, ErrorKind::InvalidArgument);
    let truncated = f.path("trunc.tar");
    let (layout, _, _) = layout_and_layer(&f);
    let good = f.path("good.tar");
    tar_dir(&layout, &good);
    let data = fs::read(&good).unwrap();
    fs::write(&truncated, &data[..data.len() / 2 + 100]).unwrap();
    f.import_err(&truncated, Some("app"), ErrorKind::InvalidArgument);
    let missing = f.path("nope");
    assert_eq!(
        f.import(&missing, None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn progress_is_per_blob_by_bytes() {
    use std::sync::Mutex;
    #[derive(Default)]
    struct Rec(Mutex<Vec<(String, u64)>>);
    impl Progress for Rec {
        fn begin(&self, task: &str, _: Option<u64>) {
            self.0.lock().unwrap().push((task.to_owned(), 0));
        }
        fn advance(&self, task: &str, bytes: u64) {
            let mut v = self.0.lock().unwrap();
            let e = v.iter_mut().rev().find(|(t, _)| t == task).unwrap();
            e.1 += bytes;
        }
    }
    let f = Fixture::new();
    let (layout, layer, path) = layout_and_layer(&f);
    let rec = Rec::default();
    import(&f.store, &layout, &ImportOptions::named(Some("app")), &rec).unwrap();
    let seen = rec.0.lock().unwrap();
    let size = fs::metadata(&path).unwrap().len();
    assert!(seen.contains(&(layer.clone(), size)), "{seen:?}");
    assert_eq!(seen.len(), 3, "manifest, config, layer: {seen:?}");
}
