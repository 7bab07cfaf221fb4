//! The `imv` command end to end with the embedded store and real mounts: import, images,
//! mutate (flags, a crictl-style JSON file on stdin), volumes, cleanup --release, rmi, gc,
//! and the exit code of each error kind.

mod common;

use std::path::Path;

use common::TestEnv;
use imv_testkit::image_builder::{sample_image, write_docker_archive, write_oci_archive};

fn imv(env: &TestEnv, args: &[&str], stdin: &str) -> (i32, String, String) {
    common::run_imv(&env.root, &env.state, args, stdin)
}

fn ok(env: &TestEnv, args: &[&str], stdin: &str) -> String {
    let (code, out, err) = imv(env, args, stdin);
    assert_eq!(code, 0, "imv {args:?} failed: {out}\n{err}");
    out
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The CLI talks to the store through its own process, so the test's in-process handle
/// (which would hold the database) is closed first.
fn cli_env() -> TestEnv {
    TestEnv::new_closed()
}

#[test]
fn import_mutate_list_cleanup_rmi() {
    let env = cli_env();
    let archive = env.dir.join("sample.tar");
    let digests =
        write_oci_archive(&archive, &[("example.com/cli/sample:1", &sample_image())]).unwrap();
    let out = json(&ok(
        &env,
        &["import", archive.to_str().unwrap(), "--json"],
        "",
    ));
    assert_eq!(out[0]["name"], "example.com/cli/sample:1", "{out}");

    let docker = env.dir.join("docker.tar");
    write_docker_archive(&docker, "example.com/cli/docker:1", &sample_image()).unwrap();
    ok(&env, &["import", docker.to_str().unwrap()], "");
    let images = json(&ok(&env, &["images", "--json"], ""));
    let names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["example.com/cli/docker:1", "example.com/cli/sample:1"]
    );

    // --mount flags.
    let out = json(&ok(
        &env,
        &[
            "mutate",
            "--sandbox",
            "pod1",
            "--mount",
            "image=example.com/cli/sample:1,container-path=/data",
            "--json",
        ],
        "",
    ));
    let host = out[0]["host_path"].as_str().unwrap().to_owned();
    assert_eq!(out[0]["container_path"], "/data");
    assert!(host.ends_with(digests[0].manifest.hex()), "{host}");
    // The image's ID (KEP-5365), as containerd's PullImage reports it.
    assert_eq!(out[0]["image"]["image_ref"], digests[0].config.to_string());
    assert_eq!(
        std::fs::read_to_string(Path::new(&host).join("data/hello.txt")).unwrap(),
        "hello from imv\n"
    );

    // A crictl-style mounts file on stdin, with a sub path and a plain mount left alone.
    let mounts = r#"[
        {"container_path": "/etc/app", "image": {"image": "example.com/cli/sample:1"}, "readonly": true, "image_sub_path": "etc", "mount_options": ["noexec"]},
        {"container_path": "/plain", "host_path": "/var/empty", "readonly": true}
    ]"#;
    let out = json(&ok(
        &env,
        &["mutate", "--sandbox", "pod1", "--mounts", "-", "--json"],
        mounts,
    ));
    assert_eq!(out[0]["host_path"], format!("{host}/etc"));
    // mount_options (KEP-5855) are the runtime's to apply: passed on as they came.
    assert_eq!(out[0]["mount_options"], serde_json::json!(["noexec"]));
    assert_eq!(out[1]["host_path"], "/var/empty");

    let volumes = json(&ok(&env, &["volumes", "--json"], ""));
    assert_eq!(volumes.as_array().unwrap().len(), 1, "{volumes}");
    assert_eq!(volumes[0]["sandbox_id"], "pod1");
    assert_eq!(volumes[0]["image"], "example.com/cli/sample:1");
    assert_eq!(volumes[0]["mounted"], true);

    ok(&env, &["cleanup", "--sandbox", "pod1", "--release"], "");
    assert!(!Path::new(&host).exists());
    assert!(env.mounts_under(&env.state).is_empty());
    assert_eq!(
        json(&ok(&env, &["volumes", "--json"], "")),
        serde_json::json!([])
    );

    ok(
        &env,
        &[
            "rmi",
            "example.com/cli/sample:1",
            "example.com/cli/docker:1",
        ],
        "",
    );
    assert_eq!(
        json(&ok(&env, &["images", "--json"], "")),
        serde_json::json!([])
    );
    ok(&env, &["gc"], "");
}

#[test]
fn each_error_kind_has_its_exit_code() {
    let env = cli_env();
    let archive = env.dir.join("sample.tar");
    write_oci_archive(&archive, &[("example.com/cli/sample:1", &sample_image())]).unwrap();
    ok(&env, &["import", archive.to_str().unwrap()], "");

    let cases: [(&[&str], i32, &str); 5] = [
        (
            &[
                "mutate",
                "--sandbox",
                "p",
                "--mount",
                "image=example.com/cli/none:1,container-path=/d",
            ],
            4,
            "not found",
        ),
        (
            &[
                "mutate",
                "--sandbox",
                "p",
                "--mount",
                "image=example.com/cli/sample:1,container-path=/d,readonly=false",
            ],
            3,
            "read-only",
        ),
        (
            &[
                "mutate",
                "--sandbox",
                "../p",
                "--mount",
                "image=example.com/cli/sample:1,container-path=/d",
            ],
            3,
            "../p",
        ),
        (
            &["rmi", "example.com/cli/none:1"],
            4,
            "example.com/cli/none:1",
        ),
        (
            &["import", "/nonexistent/image.tar"],
            4,
            "/nonexistent/image.tar",
        ),
    ];
    for (args, code, needle) in cases {
        let (got, _, err) = imv(&env, args, "");
        assert_eq!(got, code, "imv {args:?}: {err}");
        assert!(err.starts_with("imv: "), "{err}");
        assert!(
            err.contains(needle),
            "imv {args:?}: {needle:?} not in {err}"
        );
    }
    assert!(env.mounts_under(&env.state).is_empty());
    assert_eq!(
        std::fs::read_dir(env.state.join("image-volumes"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn gc_removes_what_killed_imports_left_and_only_that() {
    let env = cli_env();
    // `imv images` creates the store; then two partial files as a killed import leaves
    // them (a few seconds old, under the minute a plain open leaves them), and one a live
    // import is still writing (it holds the file's lock).
    ok(&env, &["images"], "");
    let ingest = env.root.join("content/ingest");
    let aged = |name: &str| {
        let path = ingest.join(name);
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(5))
            .unwrap();
        (path, file)
    };
    let (killed_a, _) = aged("111-0-killed");
    let (killed_b, _) = aged("222-0-killed");
    let (live, live_file) = aged("333-0-live");
    rustix::fs::flock(&live_file, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let out = json(&ok(&env, &["gc", "--json"], ""));
    assert_eq!(out["ingests"], 2, "{out}");
    assert!(!killed_a.exists() && !killed_b.exists());
    assert!(live.exists(), "a live import's file was removed");
    let text = ok(&env, &["gc"], "");
    assert!(text.contains("0 partial import files"), "{text}");
    drop(live_file);
}

#[test]
fn commands_on_one_store_from_many_processes_take_turns() {
    // 32 `imv` processes at once on one --root: mutates of 8 sandboxes (each asked twice),
    // cleanups of sandboxes that have nothing, and listings. Each waits for the store
    // instead of failing, and each (sandbox, image) ends up mounted once.
    let env = cli_env();
    let archive = env.dir.join("sample.tar");
    write_oci_archive(&archive, &[("example.com/imv/sample:1", &sample_image())]).unwrap();
    ok(&env, &["import", archive.to_str().unwrap()], "");
    let results: Vec<(Vec<String>, (i32, String, String))> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..32)
            .map(|i| {
                let env = &env;
                s.spawn(move || {
                    let args: Vec<String> = match i % 4 {
                        0 | 1 => vec![
                            "mutate".into(),
                            "--sandbox".into(),
                            format!("pod{}", i / 4),
                            "--mount".into(),
                            "image=example.com/imv/sample:1,container-path=/data".into(),
                        ],
                        2 => vec!["cleanup".into(), "--sandbox".into(), format!("idle{i}")],
                        _ => vec!["images".into()],
                    };
                    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                    let result = imv(env, &argv, "");
                    (args, result)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (args, (code, out, err)) in &results {
        assert_eq!(*code, 0, "imv {args:?}: {out}\n{err}");
    }
    for pod in 0..8 {
        let dir = env.state.join("image-volumes").join(format!("pod{pod}"));
        let volumes: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(volumes.len(), 1, "pod{pod}");
        let target = volumes[0].as_ref().unwrap().path();
        assert_eq!(
            env.mounts_under(&target).len(),
            1,
            "pod{pod}: {}",
            target.display()
        );
    }
    for pod in 0..8 {
        ok(&env, &["release", "--sandbox", &format!("pod{pod}")], "");
    }
    assert!(env.mounts_under(&env.state).is_empty());
}

/// What the issue that asked for artifacts tried: an OCI layout holding a ModelPack model
/// (raw weight, config, a tar layer), imported with a base name, mounted, listed.
#[test]
fn an_artifact_imports_mounts_and_lists_its_type() {
    use imv_testkit::image_builder::artifact::{sample_model, TITLE};
    use imv_testkit::image_builder::{LayoutOptions, OciLayout, RefName};
    let env = cli_env();
    let layout = env.dir.join("lay");
    let mut oci = OciLayout::new(LayoutOptions {
        ref_name: RefName::Tag,
        containerd_name: false,
    });
    oci.add_artifact("example.test/model:v1", &sample_model())
        .unwrap();
    let bad = imv_testkit::image_builder::artifact::ArtifactBuilder::new("application/x.test").raw(
        "application/octet-stream",
        b"x".to_vec(),
        &[(TITLE, "/../etc/passwd")],
    );
    oci.add_artifact("example.test/model:bad", &bad).unwrap();
    oci.write_dir(&layout).unwrap();
    ok(
        &env,
        &[
            "import",
            layout.to_str().unwrap(),
            "--base-name",
            "example.test/model",
        ],
        "",
    );

    let table = ok(&env, &["images"], "");
    let line = table
        .lines()
        .find(|l| l.starts_with("example.test/model:v1 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.ends_with("application/vnd.cncf.model.manifest.v1+json"),
        "{table}"
    );
    assert!(
        table.lines().next().unwrap().ends_with("ARTIFACT TYPE"),
        "{table}"
    );

    let out = json(&ok(
        &env,
        &[
            "mutate",
            "--sandbox",
            "a",
            "--mount",
            "image=example.test/model:v1,container-path=/m",
            "--json",
        ],
        "",
    ));
    let host = Path::new(out[0]["host_path"].as_str().unwrap()).to_owned();
    assert_eq!(
        std::fs::read(host.join("docs/README.md")).unwrap(),
        b"# imv test model\n"
    );
    assert_eq!(
        std::fs::metadata(host.join("model.safetensors"))
            .unwrap()
            .len(),
        65536
    );

    // A name that leaves the volume: exit 3, naming the annotation; nothing mounted.
    let (code, _, err) = imv(
        &env,
        &[
            "mutate",
            "--sandbox",
            "b",
            "--mount",
            "image=example.test/model:bad,container-path=/m",
        ],
        "",
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(TITLE) && err.contains("absolute"), "{err}");
    assert!(!env.state.join("image-volumes/b").exists());
    ok(&env, &["release", "--sandbox", "a"], "");
}
