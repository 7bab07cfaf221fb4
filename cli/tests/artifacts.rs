//! OCI artifacts as volumes (models, raw files, tars), on both backends with real mounts:
//! what the volume shows, that raw layers are the stored blobs themselves, the naming
//! rules and what bad artifacts leave (nothing), platforms, IDs, sub paths, reuse,
//! cleanup, release and garbage collection.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{assert_nothing_left, image_mount, TestEnv};
use imv::{ErrorKind, Mount, Platform};
use imv_testkit::image_builder::artifact::{
    sample_data_artifact, sample_model, sample_weights, ArtifactBuilder, BuiltArtifact,
    EMPTY_CONFIG, MODEL_DOC_TAR, MODEL_FILEPATH, MODEL_WEIGHT_RAW, TITLE,
};
use imv_testkit::image_builder::{Compression, LayerBuilder, LayoutOptions, OciLayout};

const MODEL: &str = "example.com/imv/model:1";
const DATA: &str = "example.com/imv/data:1";

crate::on_both_backends!(
    a_model_shows_its_raw_layers_as_the_stored_blobs_and_its_tar_extracted,
    an_empty_config_artifact_mounts_its_file,
    reuse_new_sandboxes_cleanup_and_release_work_as_for_images,
    bad_names_are_refused_before_anything_is_made,
    names_that_collide_with_a_tar_layer_are_refused_and_nothing_is_made,
    a_layer_that_says_tar_but_is_not_is_refused_and_leaves_nothing,
    a_missing_blob_is_not_found_and_leaves_nothing,
    sub_paths_resolve_inside_an_artifact,
    artifact_indexes_pick_the_platform_and_name_the_volume,
    artifacts_are_known_by_their_manifest_not_their_shared_config,
    the_store_lists_the_artifact_type,
    raw_layers_of_many_megabytes_are_linked_not_copied,
    layouts_and_archives_oras_writes_show_what_oras_pull_shows,
    a_raw_layer_without_a_name_is_named_by_its_digest,
    a_volume_mounted_before_a_restart_is_known_and_reused,
);

fn mutate(env: &TestEnv, sandbox: &str, mounts: &mut [Mount]) -> imv::Result<()> {
    env.iv().mutate_mounts(sandbox, "", None, mounts)
}

fn mutate_one(env: &TestEnv, sandbox: &str, image: &str) -> PathBuf {
    let mut mounts = vec![image_mount(image, "/models")];
    mutate(env, sandbox, &mut mounts).unwrap_or_else(|e| panic!("mutate {image}: {e}"));
    PathBuf::from(&mounts[0].host_path)
}

/// Every file under `root`, relative path to content; directories as `None`.
fn files(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn a_model_shows_its_raw_layers_as_the_stored_blobs_and_its_tar_extracted(env: TestEnv) {
    let built = env.import_artifact(MODEL, &sample_model());
    let host = mutate_one(&env, "sb1", MODEL);
    assert_eq!(
        host,
        env.volumes_dir()
            .join("sb1")
            .join(built.manifest_digest.hex())
    );
    assert!(imv_testkit::mounts::is_mountpoint(&host));

    let got = files(&host);
    let want: BTreeMap<String, Option<Vec<u8>>> = [
        ("model.safetensors", Some(sample_weights())),
        ("config.json", Some(br#"{"hidden_size": 64}"#.to_vec())),
        ("docs", None),
        ("docs/README.md", Some(b"# imv test model\n".to_vec())),
        ("docs/LICENSE", Some(b"Apache-2.0\n".to_vec())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want);

    // The raw layer is the stored blob itself: one inode, no copy (an overlay shows the
    // inode of the file below it, under a device of its own).
    let weights = built.layers()[0].clone();
    let in_volume = fs::metadata(host.join("model.safetensors")).unwrap();
    let stored = fs::metadata(env.blob_path(&weights)).unwrap();
    assert_eq!(
        in_volume.ino(),
        stored.ino(),
        "the volume's file is not the stored blob"
    );
    assert!(stored.nlink() >= 2, "the blob has {} links", stored.nlink());
    assert_eq!(in_volume.permissions().mode() & 0o7777, 0o444);

    // Read-only, nosuid, nodev, as an image volume.
    let err = fs::write(host.join("model.safetensors"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::write(host.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let info = imv_testkit::mounts::under(&host);
    assert_eq!(info.len(), 1, "{info:?}");
    let opts: Vec<&str> = info[0].mount_options.split(',').collect();
    for want in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&want), "{want} missing from {opts:?}");
    }
    // The tar layer below and the files on top: two layers, one volume.
    assert_eq!(env.layers().len(), 2, "{:?}", env.layers());
}

fn an_empty_config_artifact_mounts_its_file(env: TestEnv) {
    let built = env.import_artifact(DATA, &sample_data_artifact());
    let host = mutate_one(&env, "sb1", DATA);
    assert_eq!(
        files(&host),
        BTreeMap::from([(
            "hello.txt".to_owned(),
            Some(b"hello from an artifact\n".to_vec())
        )])
    );
    let blob = fs::metadata(env.blob_path(&built.layers()[0])).unwrap();
    assert_eq!(
        fs::metadata(host.join("hello.txt")).unwrap().ino(),
        blob.ino()
    );
}

fn reuse_new_sandboxes_cleanup_and_release_work_as_for_images(env: TestEnv) {
    env.import_artifact(MODEL, &sample_model());
    let first = mutate_one(&env, "sb1", MODEL);
    let layers = env.layers();
    let again = mutate_one(&env, "sb1", MODEL);
    assert_eq!(first, again);
    assert_eq!(
        env.mounts_under(&first).len(),
        1,
        "a second mount was stacked"
    );
    let other = mutate_one(&env, "sb2", MODEL);
    assert_ne!(first, other);
    assert_eq!(files(&first), files(&other));
    assert_eq!(env.layers(), layers, "a second sandbox unpacked again");

    env.iv().cleanup("sb1", "").unwrap();
    assert!(!first.exists());
    assert_eq!(files(&other).len(), 5, "another sandbox's volume went too");
    env.iv().cleanup("sb1", "").unwrap();
    env.iv().release("sb1").unwrap();
    assert_nothing_left(&env, "sb1");
    env.iv().release("sb2").unwrap();
    assert_nothing_left(&env, "sb2");

    // Once the artifact goes, its layers and blobs go with the garbage.
    if !env.is_containerd() {
        env.iv().remove_image(MODEL).unwrap();
        env.iv().gc().unwrap();
        assert!(env.layers().is_empty(), "{:?}", env.layers());
        let blobs = fs::read_dir(env.root.join("content/blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(blobs, 0, "blobs left after the artifact was removed");
    }
}

/// An artifact with one raw layer whose title is `title`.
fn titled(title: &str) -> ArtifactBuilder {
    ArtifactBuilder::new("application/vnd.imv.test").raw(
        "application/octet-stream",
        b"data".to_vec(),
        &[(TITLE, title)],
    )
}

fn bad_names_are_refused_before_anything_is_made(env: TestEnv) {
    let long = "n".repeat(300);
    let cases: Vec<(&str, ArtifactBuilder, &str)> = vec![
        ("absolute", titled("/etc/shadow"), "absolute"),
        ("dotdot", titled("weights/../../../etc/x"), "`..`"),
        ("long", titled(&long), "longer than 255"),
        (
            "duplicate",
            titled("a.bin").raw(
                MODEL_WEIGHT_RAW,
                b"other".to_vec(),
                &[(MODEL_FILEPATH, "a.bin")],
            ),
            "both named \"a.bin\"",
        ),
        (
            "nested",
            titled("a").raw(
                MODEL_WEIGHT_RAW,
                b"other".to_vec(),
                &[(MODEL_FILEPATH, "a/b")],
            ),
            "inside \"a\"",
        ),
    ];
    let before = env.layers();
    for (i, (what, artifact, phrase)) in cases.into_iter().enumerate() {
        let name = format!("example.com/imv/bad-{what}:1");
        let built = env.import_artifact(&name, &artifact);
        let sandbox = format!("bad{i}");
        let mut mounts = vec![image_mount(&name, "/m")];
        let err = mutate(&env, &sandbox, &mut mounts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{what}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(phrase), "{what}: {msg}");
        // Names the layer, and the annotation where one gave the name.
        assert!(
            built.layers().iter().any(|d| msg.contains(&d.to_string())),
            "{what}: {msg}"
        );
        assert!(msg.contains(TITLE), "{what}: {msg}");
        assert!(
            msg.len() < 1000,
            "{what}: a long name is quoted short: {msg}"
        );
        assert!(mounts[0].host_path.is_empty());
        assert_nothing_left(&env, &sandbox);
    }
    assert_eq!(env.layers(), before, "a refused artifact left layers");
}

/// The sample model's tar layer, and one raw layer named `name`.
fn with_doc_tar(name: &str) -> ArtifactBuilder {
    ArtifactBuilder::modelpack()
        .tar(
            MODEL_DOC_TAR,
            LayerBuilder::new()
                .compression(Compression::Gzip)
                .dir("docs", 0o755)
                .file("docs/README.md", 0o644, b"readme".to_vec())
                .symlink("latest", "docs"),
            &[],
        )
        .raw(MODEL_WEIGHT_RAW, b"w".to_vec(), &[(MODEL_FILEPATH, name)])
}

fn names_that_collide_with_a_tar_layer_are_refused_and_nothing_is_made(env: TestEnv) {
    for (i, (name, what)) in [
        ("docs/README.md", "a file \"docs/README.md\""),
        ("docs/README.md/x", "a file \"docs/README.md\""),
        ("docs", "a directory \"docs\""),
        ("latest/weights.bin", "a symbolic link \"latest\""),
    ]
    .into_iter()
    .enumerate()
    {
        let reference = format!("example.com/imv/collide-{i}:1");
        env.import_artifact(&reference, &with_doc_tar(name));
        let sandbox = format!("c{i}");
        let mut mounts = vec![image_mount(&reference, "/m")];
        let err = mutate(&env, &sandbox, &mut mounts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
        assert!(err.to_string().contains(what), "{name}: {err}");
        assert!(
            err.to_string().contains("collides with the tar layer"),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(MODEL_FILEPATH), "{name}: {err}");
        assert_nothing_left(&env, &sandbox);
    }
    // No files layer was made. The tar layer stays in the embedded store (any artifact
    // with it may use it); containerd collects it with the call's lease, which held it.
    let tar_layers = if env.is_containerd() { 0 } else { 1 };
    assert_eq!(env.layers().len(), tar_layers, "{:?}", env.layers());
    // A name beside the tar's entries is fine.
    env.import_artifact("example.com/imv/fine:1", &with_doc_tar("docs/weights.bin"));
    let host = mutate_one(&env, "ok", "example.com/imv/fine:1");
    assert_eq!(fs::read(host.join("docs/weights.bin")).unwrap(), b"w");
    assert_eq!(fs::read(host.join("docs/README.md")).unwrap(), b"readme");
}

fn a_layer_that_says_tar_but_is_not_is_refused_and_leaves_nothing(env: TestEnv) {
    let bogus = ArtifactBuilder::new("application/vnd.imv.test").raw(
        "application/vnd.cncf.model.weight.v1.tar",
        b"this is not a tar archive, though its media type says so".repeat(20),
        &[],
    );
    env.import_artifact("example.com/imv/bogus:1", &bogus);
    let before = env.layers();
    let mut mounts = vec![image_mount("example.com/imv/bogus:1", "/m")];
    let err = mutate(&env, "sb", &mut mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_nothing_left(&env, "sb");
    assert_eq!(env.layers(), before);
}

fn a_missing_blob_is_not_found_and_leaves_nothing(env: TestEnv) {
    let built = env.import_artifact(DATA, &sample_data_artifact());
    let blob = &built.layers()[0];
    if env.is_containerd() {
        env.ctr(&["content", "rm", &blob.to_string()]);
    } else {
        fs::remove_file(env.blob_path(blob)).unwrap();
    }
    let mut mounts = vec![image_mount(DATA, "/m")];
    let err = mutate(&env, "sb", &mut mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&blob.to_string()), "{err}");
    assert_nothing_left(&env, "sb");
    assert!(env.layers().is_empty(), "{:?}", env.layers());
}

fn sub_paths_resolve_inside_an_artifact(env: TestEnv) {
    env.import_artifact(MODEL, &sample_model());
    let mut mounts = vec![Mount {
        image_sub_path: "docs".into(),
        ..image_mount(MODEL, "/docs")
    }];
    mutate(&env, "sb1", &mut mounts).unwrap();
    let host = PathBuf::from(&mounts[0].host_path);
    assert!(host.ends_with("docs"), "{}", host.display());
    assert_eq!(fs::read(host.join("LICENSE")).unwrap(), b"Apache-2.0\n");
    for bad in ["../..", "missing"] {
        let mut mounts = vec![Mount {
            image_sub_path: bad.into(),
            ..image_mount(MODEL, "/x")
        }];
        let err = mutate(&env, "sb2", &mut mounts).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidArgument | ErrorKind::NotFound),
            "{bad}: {err}"
        );
    }
}

fn artifact_indexes_pick_the_platform_and_name_the_volume(env: TestEnv) {
    let dir = env.scratch("src");
    let mut layout = OciLayout::new(LayoutOptions::default());
    let amd64 = ArtifactBuilder::new("application/vnd.imv.test").file("arch", b"amd64".to_vec());
    let arm64 = ArtifactBuilder::new("application/vnd.imv.test").file("arch", b"arm64".to_vec());
    let any = ArtifactBuilder::new("application/vnd.imv.test").file("arch", b"any".to_vec());
    let (index, _) = layout
        .add_artifact_index(
            "example.com/imv/multi:1",
            Some("application/vnd.imv.test.index"),
            &[
                (Some(Platform::parse("linux/arm64").unwrap()), &arm64),
                (Some(Platform::parse("linux/amd64").unwrap()), &amd64),
                (None, &any),
            ],
        )
        .unwrap();
    layout.write_dir(&dir).unwrap();
    env.import_path(&dir, None);
    for (platform, want) in [
        ("linux/amd64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/s390x", "any"),
    ] {
        let sandbox = platform.replace('/', "-");
        let mut mounts = vec![image_mount("example.com/imv/multi:1", "/m")];
        let platform = Platform::parse(platform).unwrap();
        env.iv()
            .mutate_mounts(&sandbox, "", Some(&platform), &mut mounts)
            .unwrap();
        let host = PathBuf::from(&mounts[0].host_path);
        assert_eq!(host.file_name().unwrap().to_str().unwrap(), index.hex());
        assert_eq!(fs::read(host.join("arch")).unwrap(), want.as_bytes());
    }
}

fn artifacts_are_known_by_their_manifest_not_their_shared_config(env: TestEnv) {
    let one = env.import_artifact("example.com/imv/one:1", &titled("one"));
    let two = env.import_artifact("example.com/imv/two:1", &titled("two"));
    assert_eq!(
        one.config_digest, two.config_digest,
        "both have the empty config"
    );
    for (built, name) in [(&one, "one"), (&two, "two")] {
        // By name: the mount reports the artifact's ID, its manifest's digest (KEP-5365).
        let mut m = vec![image_mount(&format!("example.com/imv/{name}:1"), "/models")];
        mutate(&env, &format!("by-name-{name}"), &mut m).unwrap();
        let id = &m[0].image.as_ref().unwrap().image_ref;
        assert_eq!(id, &built.manifest_digest.to_string());
        let host = mutate_one(&env, &format!("by-id-{name}"), id);
        assert!(
            host.join(name).exists(),
            "{} shows {:?}",
            built.manifest_digest,
            files(&host)
        );
        let resolved = env
            .iv()
            .backend()
            .resolve(&built.manifest_digest.hex()[..12], &Platform::host())
            .unwrap();
        assert_eq!(&resolved.manifest, &built.manifest_digest);
        assert_eq!(resolved.id(), &built.manifest_digest);
    }
    // The shared config names neither.
    let err = env
        .iv()
        .backend()
        .resolve(&one.config_digest.to_string(), &Platform::host())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

fn the_store_lists_the_artifact_type(env: TestEnv) {
    env.import_artifact(MODEL, &sample_model());
    env.import_artifact(
        DATA,
        &sample_data_artifact()
            .without_artifact_type()
            .config(EMPTY_CONFIG, b"{}".to_vec()),
    );
    env.import(
        "example.com/imv/image:1",
        &imv_testkit::image_builder::sample_image(),
    );
    let types: BTreeMap<String, Option<String>> = env
        .iv()
        .images()
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.artifact_type))
        .collect();
    assert_eq!(
        types.get(MODEL).unwrap().as_deref(),
        Some("application/vnd.cncf.model.manifest.v1+json")
    );
    // Without an artifactType, the config's media type says what it is.
    assert_eq!(types.get(DATA).unwrap().as_deref(), Some(EMPTY_CONFIG));
    assert_eq!(types.get("example.com/imv/image:1").unwrap(), &None);
}

fn raw_layers_of_many_megabytes_are_linked_not_copied(env: TestEnv) {
    let size = 64 << 20;
    let weights: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let built: BuiltArtifact = env.import_artifact(
        "example.com/imv/big:1",
        &ArtifactBuilder::modelpack().raw(
            MODEL_WEIGHT_RAW,
            weights,
            &[(MODEL_FILEPATH, "w/big.bin")],
        ),
    );
    let free = |p: &Path| {
        let s = rustix::fs::statvfs(p).unwrap();
        s.f_bavail * s.f_frsize
    };
    let before = free(&env.dir);
    let host = mutate_one(&env, "sb", "example.com/imv/big:1");
    let after = free(&env.dir);
    let file = fs::metadata(host.join("w/big.bin")).unwrap();
    assert_eq!(file.len(), size as u64);
    assert_eq!(
        file.ino(),
        fs::metadata(env.blob_path(&built.layers()[0]))
            .unwrap()
            .ino()
    );
    assert!(
        before.saturating_sub(after) < 16 << 20,
        "mounting took {} MiB of disk",
        before.saturating_sub(after) >> 20
    );
}

/// `oras ARGS` in `dir`.
fn oras(dir: &Path, args: &[&str]) -> String {
    common::run(
        std::process::Command::new(common::oras())
            .current_dir(dir)
            .args(args),
    )
}

fn layouts_and_archives_oras_writes_show_what_oras_pull_shows(env: TestEnv) {
    // What a user pushes with oras: files (oras gives them the plain OCI layer media type
    // and a title), a directory (a gzipped tar oras marks to unpack), a ModelPack weight
    // with its media type, and a ModelPack config.
    let work = env.scratch("oras");
    fs::write(work.join("hi.txt"), b"hello\n").unwrap();
    fs::create_dir_all(work.join("models/sub")).unwrap();
    fs::write(work.join("models/config.json"), b"{}").unwrap();
    fs::write(work.join("models/sub/a.bin"), b"weights").unwrap();
    fs::write(work.join("model.bin"), sample_weights()).unwrap();
    fs::write(work.join("config.json"), br#"{"descriptor":{"name":"m"}}"#).unwrap();
    oras(
        &work,
        &[
            "push",
            "--oci-layout",
            "layout:v1",
            "--artifact-type",
            "application/vnd.imv.test.oras",
            "hi.txt",
            "models",
        ],
    );
    oras(
        &work,
        &[
            "push",
            "--oci-layout",
            "layout:model",
            "--artifact-type",
            "application/vnd.cncf.model.manifest.v1+json",
            "--config",
            "config.json:application/vnd.cncf.model.config.v1+json",
            "model.bin:application/vnd.cncf.model.weight.v1.raw",
        ],
    );
    let archive = work.join("layout.tar");
    common::run(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(work.join("layout"))
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    );
    for (i, source) in [work.join("layout"), archive].iter().enumerate() {
        let base = format!("example.com/imv/oras{i}");
        let records = env.import_with_base(source, &base);
        let record = records
            .iter()
            .find(|r| r.name == format!("{base}:v1"))
            .unwrap_or_else(|| panic!("{base}:v1 not among {records:?}"));
        assert_eq!(
            record.artifact_type.as_deref(),
            Some("application/vnd.imv.test.oras")
        );
        let host = mutate_one(&env, &format!("files{i}"), &format!("{base}:v1"));
        assert_eq!(
            files(&host),
            BTreeMap::from([
                ("hi.txt".to_owned(), Some(b"hello\n".to_vec())),
                ("models".to_owned(), None),
                ("models/config.json".to_owned(), Some(b"{}".to_vec())),
                ("models/sub".to_owned(), None),
                ("models/sub/a.bin".to_owned(), Some(b"weights".to_vec())),
            ])
        );
        let host = mutate_one(&env, &format!("model{i}"), &format!("{base}:model"));
        assert_eq!(
            files(&host),
            BTreeMap::from([("model.bin".to_owned(), Some(sample_weights()))])
        );
    }
}

fn a_raw_layer_without_a_name_is_named_by_its_digest(env: TestEnv) {
    let built = env.import_artifact(
        DATA,
        &ArtifactBuilder::new("application/vnd.imv.test").raw(
            "application/octet-stream",
            b"anonymous".to_vec(),
            &[],
        ),
    );
    let host = mutate_one(&env, "sb", DATA);
    assert_eq!(
        files(&host),
        BTreeMap::from([(
            built.layers()[0].hex().to_owned(),
            Some(b"anonymous".to_vec())
        )])
    );
}

/// Importing an artifact whose raw layer is larger than the store's free space fails,
/// saying so, and leaves no blob, no partial file and no image.
#[test]
fn a_raw_layer_larger_than_the_free_space_fails_its_import_and_leaves_nothing() {
    let env = TestEnv::new_closed();
    // A store on a filesystem of its own, of 8 MiB.
    let root = env.dir.join("small");
    fs::create_dir_all(&root).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &root,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=8m"),
    )
    .expect("mounting a tmpfs");
    let mut config = imv::Config::new(root.join("store"), env.dir.join("state"));
    config.backend = imv::BackendConfig::Local;
    let iv = imv::ImageVolumes::open(config).unwrap();
    let layout = env.dir.join("layout");
    let mut oci = OciLayout::new(LayoutOptions::default());
    oci.add_artifact(
        "example.com/imv/huge:1",
        &ArtifactBuilder::modelpack().raw(
            MODEL_WEIGHT_RAW,
            vec![7u8; 16 << 20],
            &[(MODEL_FILEPATH, "huge.bin")],
        ),
    )
    .unwrap();
    oci.write_dir(&layout).unwrap();
    let err = iv.import(&layout, None).unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(iv.images().unwrap().is_empty());
    let content = root.join("store/content");
    for dir in ["blobs/sha256", "ingest"] {
        let left: Vec<_> = fs::read_dir(content.join(dir))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    drop(iv);
    rustix::mount::unmount(&root, rustix::mount::UnmountFlags::DETACH).unwrap();
}

fn a_volume_mounted_before_a_restart_is_known_and_reused(mut env: TestEnv) {
    env.import_artifact(MODEL, &sample_model());
    env.import_artifact(DATA, &sample_data_artifact());
    let model = mutate_one(&env, "sb", MODEL);
    let data = mutate_one(&env, "sb", DATA);
    // A new process knows the volumes only from the kernel's mount table: each is what
    // its view mounts (an overlay for the model, a bind of the files for the data).
    env.reopen();
    assert_eq!(mutate_one(&env, "sb", MODEL), model);
    assert_eq!(mutate_one(&env, "sb", DATA), data);
    assert_eq!(env.mounts_under(&model).len(), 1);
    assert_eq!(env.mounts_under(&data).len(), 1);
    env.iv().release("sb").unwrap();
    assert_nothing_left(&env, "sb");
}

/// On the embedded store (the tests' containerd has no snapshotter that can: see
/// cli/tests/volumes.rs). A pod in a user namespace sees the artifact's root-owned files as owned by
/// its host IDs, the blobs linked all the same.
#[test]
fn artifact_volumes_with_uid_gid_mappings_show_the_owners_mapped() {
    let env = TestEnv::new_local();
    let built = env.import_artifact(MODEL, &sample_model());
    let plain = mutate_one(&env, "plain", MODEL);
    let mapping = imv::IdMapping {
        host_id: 100_000,
        container_id: 0,
        length: 65_536,
    };
    let mut mounts = vec![Mount {
        uid_mappings: vec![mapping],
        gid_mappings: vec![mapping],
        ..image_mount(MODEL, "/models")
    }];
    mutate(&env, "mapped", &mut mounts).unwrap();
    assert!(mounts[0].uid_mappings.is_empty() && mounts[0].gid_mappings.is_empty());
    let mapped = PathBuf::from(&mounts[0].host_path);
    assert_eq!(files(&plain), files(&mapped));
    for path in ["model.safetensors", "docs/README.md", "docs", ""] {
        let (p, m) = (
            fs::symlink_metadata(plain.join(path)).unwrap(),
            fs::symlink_metadata(mapped.join(path)).unwrap(),
        );
        assert_eq!((p.uid(), p.gid()), (0, 0), "{path}");
        assert_eq!((m.uid(), m.gid()), (100_000, 100_000), "{path}");
    }
    let stored = fs::metadata(env.blob_path(&built.layers()[0])).unwrap();
    assert_eq!(
        fs::metadata(mapped.join("model.safetensors"))
            .unwrap()
            .ino(),
        stored.ino()
    );
    for sb in ["plain", "mapped"] {
        env.iv().release(sb).unwrap();
        assert_nothing_left(&env, sb);
    }
}

/// When containerd's content store is not where imv can link its blobs (not visible, or
/// on another filesystem), an artifact's files are copied through the content service:
/// the same volume, files of their own.
#[test]
fn containerd_blobs_imv_cannot_link_are_copied_through_the_content_service() {
    let env = TestEnv::new_containerd();
    let (_, namespace) = env.daemon();
    imv::backend::containerd::test_hooks::copy_artifact_blobs_in(namespace);
    let size = 3 << 20; // three chunks of the service's reads
    let weights: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let built = env.import_artifact(
        MODEL,
        &ArtifactBuilder::modelpack().raw(
            MODEL_WEIGHT_RAW,
            weights.clone(),
            &[(MODEL_FILEPATH, "w.bin")],
        ),
    );
    let host = mutate_one(&env, "sb", MODEL);
    let file = host.join("w.bin");
    assert_eq!(fs::read(&file).unwrap(), weights);
    let copied = fs::metadata(&file).unwrap();
    let stored = fs::metadata(env.blob_path(&built.layers()[0])).unwrap();
    assert_ne!(copied.ino(), stored.ino(), "linked, not copied");
    assert_eq!(copied.permissions().mode() & 0o7777, 0o444);
    env.iv().release("sb").unwrap();
    assert_nothing_left(&env, "sb");
}

/// A raw layer whose bytes are not those its digest names is refused at import, naming the
/// blob, and nothing is stored: no blob, no image.
#[test]
fn a_raw_layer_whose_bytes_do_not_match_its_digest_is_refused_at_import() {
    let env = TestEnv::new_local();
    let layout = env.scratch("layout");
    let mut oci = OciLayout::new(LayoutOptions::default());
    let built = oci.add_artifact(DATA, &sample_data_artifact()).unwrap();
    oci.write_dir(&layout).unwrap();
    let blob = built.layers()[0].clone();
    let path = layout.join("blobs/sha256").join(blob.hex());
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 1;
    fs::write(&path, bytes).unwrap();
    let err = env
        .local()
        .import(
            &layout,
            &imv::ImportOptions::default(),
            &imv::backend::NoProgress,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains(&blob.to_string()), "{err}");
    assert!(env.iv().images().unwrap().is_empty());
    assert!(!env.blob_path(&blob).exists());
}
