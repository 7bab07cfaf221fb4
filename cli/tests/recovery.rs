//! What a crash can leave behind, and how the next run converges.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{image_mount, TestEnv};
use imv::Backend;
use imv_testkit::image_builder::sample_image;

const SAMPLE: &str = "example.com/imv/sample:1";

#[test]
fn leftovers_of_an_interrupted_unpack_are_removed_at_open() {
    let mut env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    let snapshots = env.root.join("snapshots");
    // A half-unpacked layer and a layer directory whose row was never committed.
    let tmp = snapshots.join(".tmp-0123-1-0/fs/etc");
    fs::create_dir_all(&tmp).unwrap();
    let orphan = snapshots.join("ab".repeat(32)).join("fs");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("file"), b"x").unwrap();
    env.reopen();
    let left: Vec<String> = fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["empty"]);
    // The store still works.
    let mut m = vec![image_mount(SAMPLE, "/d")];
    env.iv().mutate_mounts("sb", "", None, &mut m).unwrap();
    env.iv().release("sb").unwrap();
}

#[test]
fn a_view_made_before_a_crash_is_mounted_by_the_next_mutate() {
    let mut env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    let image = env.local().resolve(SAMPLE, &imv::Platform::host()).unwrap();
    let target = env.volumes_dir().join("sb").join(image.digest.hex());
    // The crash: lease, directory and view made, nothing mounted.
    env.local()
        .unpack(&image, "", None, &imv::backend::NoProgress)
        .unwrap();
    env.local().create_lease("sb").unwrap();
    fs::create_dir_all(&target).unwrap();
    let top = image.top_chain_id();
    env.local()
        .view(
            "",
            &target.to_string_lossy(),
            top.as_ref(),
            "sb",
            BTreeMap::new(),
        )
        .unwrap();
    env.reopen();

    let mut m = vec![image_mount(SAMPLE, "/d")];
    env.iv().mutate_mounts("sb", "", None, &mut m).unwrap();
    assert_eq!(m[0].host_path, target.to_string_lossy());
    assert!(imv_testkit::mounts::is_mountpoint(&target));
    env.iv().release("sb").unwrap();
    assert!(!target.exists());
    assert!(env.local().leases().unwrap().is_empty());
}

#[test]
fn cleanup_converges_from_any_half_done_state() {
    let env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    let sandbox_dir = env.volumes_dir().join("sb");
    // A directory with no view and no mount, a stray file name, and an empty sandbox.
    fs::create_dir_all(sandbox_dir.join("cd".repeat(32))).unwrap();
    fs::create_dir_all(sandbox_dir.join("not-a-digest")).unwrap();
    env.iv().cleanup("sb", "").unwrap();
    assert!(!sandbox_dir.exists());
    // A mounted volume whose view row is already gone (a cleanup cut short).
    let mut m = vec![image_mount(SAMPLE, "/d")];
    env.iv().mutate_mounts("sb", "", None, &mut m).unwrap();
    env.local().remove("", &m[0].host_path).unwrap();
    env.iv().cleanup("sb", "").unwrap();
    assert!(!sandbox_dir.exists());
    assert!(env.mounts_under(&env.state).is_empty());
}

/// Where the kernel mounts EROFS images from files, the embedded store keeps each layer as
/// one (docs/design.md, "Layers as EROFS images"): mounted on the layer's `fs` directory
/// while the layer exists, mounted again at open after a reboot took the mounts, unmounted
/// and removed with the layer.
#[test]
fn layers_are_erofs_images_mounted_while_they_exist() {
    use imv::backend::local::LayerFormat;
    let mut env = TestEnv::new();
    assert_eq!(
        env.local().layer_format(),
        LayerFormat::Erofs,
        "this machine kind mounts EROFS images from files (Linux 6.12+)"
    );
    env.import(SAMPLE, &sample_image());
    let mut m = vec![image_mount(SAMPLE, "/d")];
    env.iv().mutate_mounts("sb1", "", None, &mut m).unwrap();
    let want = common::tree(std::path::Path::new(&m[0].host_path));
    assert!(want.len() > 3, "{want:?}");
    let layers = env.layers();
    assert_eq!(layers.len(), 2);
    let layer_mounts = |env: &TestEnv| -> Vec<std::path::PathBuf> {
        imv_testkit::mounts::under(&env.root.join("snapshots"))
            .into_iter()
            .filter(|m| m.fs_type == "erofs")
            .map(|m| m.mount_point)
            .collect()
    };
    let mut expected: Vec<std::path::PathBuf> = layers
        .iter()
        .map(|key| {
            let dir = env.root.join("snapshots").join(&key["sha256:".len()..]);
            assert!(dir.join("layer.erofs").is_file(), "{}", dir.display());
            dir.join("fs")
        })
        .collect();
    expected.sort();
    let mut got = layer_mounts(&env);
    got.sort();
    assert_eq!(got, expected);

    // A reboot: every mount gone, the files stay.
    env.iv().cleanup("sb1", "").unwrap();
    env.close();
    imv_testkit::mounts::unmount_under(&env.dir);
    assert!(layer_mounts(&env).is_empty());
    env.reopen();
    let mut got = layer_mounts(&env);
    got.sort();
    assert_eq!(got, expected, "mounted again at open");
    let mut m = vec![image_mount(SAMPLE, "/d")];
    env.iv().mutate_mounts("sb2", "", None, &mut m).unwrap();
    assert_eq!(common::tree(std::path::Path::new(&m[0].host_path)), want);

    // Gone with the layers.
    env.iv().release("sb1").unwrap();
    env.iv().release("sb2").unwrap();
    env.local().remove_image(SAMPLE).unwrap();
    env.local().gc().unwrap();
    assert!(env.layers().is_empty());
    assert!(env.mounts_under(&env.dir).is_empty());
    let left: Vec<String> = fs::read_dir(env.root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["empty"]);
}

/// A store whose disk fills up during an import: the import fails saying so, leaves no
/// partial blob, row or layer, and the store goes on working once there is room.
#[test]
fn a_full_disk_fails_the_import_clearly_and_leaves_nothing() {
    use imv_testkit::image_builder::{write_oci_archive, ImageBuilder, LayerBuilder};
    let mut env = TestEnv::new_closed();
    // The store on a 4 MiB tmpfs (under the test's directory: its teardown unmounts it).
    imv_testkit::mounts::tmpfs(&env.root, "4m").unwrap();
    env.reopen();
    // EROFS cannot be mounted from a file on tmpfs (no page cache operations of its own):
    // a store there keeps its layers as directories.
    assert_eq!(
        env.local().layer_format(),
        imv::backend::local::LayerFormat::Directory
    );
    // 8 MiB that gzip cannot shrink.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let big = ImageBuilder::new().layer(LayerBuilder::new().file("noise", 0o644, noise));
    let archive = env.scratch("archives").join("big.tar");
    write_oci_archive(&archive, &[("example.com/imv/big:1", &big)]).unwrap();
    let err = env.iv().import(&archive, None).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("no space left"),
        "{err}"
    );
    assert!(env.iv().images().unwrap().is_empty());
    let leftovers = |dir: &str| {
        fs::read_dir(env.root.join(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(leftovers("content/ingest"), 0, "a partial blob was left");
    assert_eq!(
        leftovers("content/blobs/sha256"),
        0,
        "a blob of the failed import was left"
    );
    // Room enough for a small image: it imports and mounts as ever.
    env.import(SAMPLE, &sample_image());
    let mut mounts = vec![image_mount(SAMPLE, "/data")];
    env.iv()
        .mutate_mounts("sb1", "", None, &mut mounts)
        .unwrap();
    assert!(std::path::Path::new(&mounts[0].host_path)
        .join("etc/os-release")
        .exists());
    env.iv().release("sb1").unwrap();
}

/// SIGKILL at varying points of import, mutate, cleanup --release and gc (the `imv`
/// command, killed after 0 to 40 ms), then what a runtime or an operator does next
/// (cleanup --release, rmi, gc): every time the store converges to the empty baseline (no
/// image, blob, partial file, layer, volume or mount), and then works as before (the
/// volume's tree is the sample's). The delays come from a fixed sequence, printed with any
/// failure; which step a delay hits varies with the machine, and every one must converge.
#[test]
fn sigkill_at_any_point_then_recovery_converges_to_the_empty_store() {
    use imv_testkit::image_builder::write_oci_archive;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let env = TestEnv::new_closed();
    let archive = env.scratch("archives").join("sample.tar");
    write_oci_archive(&archive, &[(SAMPLE, &sample_image())]).unwrap();
    let archive = archive.to_str().unwrap().to_owned();
    let command = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imv"));
        cmd.arg("--root")
            .arg(&env.root)
            .arg("--state")
            .arg(&env.state)
            .args(args)
            .env_remove("IMV_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let run = |args: &[&str], ok: &[i32], why: &str| {
        let out = command(args).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        assert!(
            ok.contains(&code),
            "{why}: imv {args:?} exited {code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mutate = [
        "mutate",
        "--sandbox",
        "sb",
        "--mount",
        &format!("image={SAMPLE},container-path=/data"),
    ];
    let volume_tree = |why: &str| {
        let dir = env.state.join("image-volumes/sb");
        let target = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        assert_eq!(env.mounts_under(&target).len(), 1, "{why}");
        common::tree(&target)
    };
    // The tree a clean run mounts.
    run(&["import", &archive], &[0], "clean run");
    run(&mutate, &[0], "clean run");
    let want = volume_tree("clean run");
    run(
        &["cleanup", "--sandbox", "sb", "--release"],
        &[0],
        "clean run",
    );
    run(&["rmi", SAMPLE], &[0], "clean run");

    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_micros(x % 40_000);
        let step = round % 4;
        let why = format!("round {round}: step {step}, killed after {delay:?}");
        // The state before the step, then the step, killed.
        if step >= 1 {
            run(&["import", &archive], &[0], &why);
        }
        if step >= 2 {
            run(&mutate, &[0], &why);
        }
        if step == 3 {
            run(&["cleanup", "--sandbox", "sb", "--release"], &[0], &why);
            run(&["rmi", SAMPLE], &[0], &why);
        }
        let args: Vec<&str> = match step {
            0 => vec!["import", &archive],
            1 => mutate.to_vec(),
            2 => vec!["cleanup", "--sandbox", "sb", "--release"],
            _ => vec!["gc"],
        };
        let mut child = command(&args).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        if step == 0 {
            // A killed import's partial file is collected once it is a second old.
            std::thread::sleep(Duration::from_millis(1100));
        }

        // Recovery, as a runtime and an operator would go about it.
        run(&["cleanup", "--sandbox", "sb", "--release"], &[0], &why);
        run(&["rmi", SAMPLE], &[0, 4], &why);
        run(&["gc"], &[0], &why);
        let entries = |dir: &str| -> Vec<String> {
            fs::read_dir(env.root.join(dir))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert!(
            entries("content/blobs/sha256").is_empty(),
            "{why}: blobs left"
        );
        assert!(
            entries("content/ingest").is_empty(),
            "{why}: partial files left"
        );
        assert_eq!(
            entries("snapshots"),
            vec!["empty".to_owned()],
            "{why}: layers left"
        );
        assert!(
            !env.state.join("image-volumes/sb").exists(),
            "{why}: volumes left"
        );
        assert!(
            env.mounts_under(&env.state).is_empty(),
            "{why}: mounts left"
        );

        // And the store works as before.
        run(&["import", &archive], &[0], &why);
        run(&mutate, &[0], &why);
        assert_eq!(volume_tree(&why), want, "{why}");
        run(&["cleanup", "--sandbox", "sb", "--release"], &[0], &why);
        run(&["rmi", SAMPLE], &[0], &why);
    }
}

/// Leases and views are committed volatile (docs/design.md, "Durability"): `imv serve`
/// killed after a mutate loses them, killed after a release revives them. Either way the
/// next process copes: the mounted volume keeps its layers through an rmi and a
/// collection (they are found mounted), cleanup and release work without the records, and
/// revived views of volumes no longer mounted are forgotten at open, so nothing holds the
/// layers once the image goes.
#[test]
fn records_lost_or_revived_by_a_crash_are_coped_with() {
    use common::serve::Serve;

    let mut env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    env.close();

    // Lost: a mutate's lease and view, with the volume mounted. The image is unpacked
    // first, by another sandbox: an unpack commits durably, and with it what came before.
    let mut serve = Serve::start(&env, &[]);
    let mut m = vec![image_mount(SAMPLE, "/d")];
    serve
        .client()
        .mutate_mounts("unpacked", "", None, &mut m)
        .unwrap();
    let mut m = vec![image_mount(SAMPLE, "/d")];
    serve
        .client()
        .mutate_mounts("lost", "", None, &mut m)
        .unwrap();
    let lost = std::path::PathBuf::from(&m[0].host_path);
    let want = common::tree(&lost);
    serve.kill();
    env.reopen();
    assert!(imv_testkit::mounts::is_mountpoint(&lost));
    assert!(
        !env.local().leases().unwrap().contains(&"lost".to_owned()),
        "the lease outlived the crash: the test no longer tests a lost record"
    );
    env.iv().release("unpacked").unwrap();
    env.local().remove_image(SAMPLE).unwrap();
    env.local().gc().unwrap();
    assert_eq!(
        common::tree(&lost),
        want,
        "layers of a mounted volume were collected"
    );
    assert!(!env.layers().is_empty());
    env.iv().release("lost").unwrap();
    assert!(!lost.exists());
    env.local().gc().unwrap();
    assert!(env.layers().is_empty(), "{:?}", env.layers());

    // Revived: a release's deletions after a durable commit that wrote the rows.
    env.import(SAMPLE, &sample_image());
    env.close();
    let mut serve = Serve::start(&env, &[]);
    let mut m = vec![image_mount(SAMPLE, "/d")];
    serve
        .client()
        .mutate_mounts("revived", "", None, &mut m)
        .unwrap();
    let revived = std::path::PathBuf::from(&m[0].host_path);
    // The first release of a process collects garbage (a durable commit, which writes the
    // volatile ones before it); the second finds nothing to collect, and commits volatile
    // only.
    let mut m = vec![image_mount(SAMPLE, "/d")];
    serve
        .client()
        .mutate_mounts("first", "", None, &mut m)
        .unwrap();
    serve.client().release("first").unwrap();
    serve.client().release("revived").unwrap();
    assert!(!revived.exists());
    serve.kill();
    env.reopen();
    assert_eq!(
        env.views(),
        Vec::<String>::new(),
        "the revived view of an unmounted volume was not forgotten"
    );
    env.local().remove_image(SAMPLE).unwrap();
    env.local().gc().unwrap();
    assert!(env.layers().is_empty(), "{:?}", env.layers());
    assert!(env.mounts_under(&env.state).is_empty());
}

/// Whoever unmounts a store's EROFS layers under a running process (a cleanup script,
/// `umount -a -t erofs`) must not make the next volume silently empty: a view looks at
/// its layers' mounts and mounts again the ones that are gone.
#[test]
fn layers_unmounted_under_a_running_store_are_mounted_again() {
    let env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    let mut m = vec![image_mount(SAMPLE, "/d")];
    env.iv().mutate_mounts("sb1", "", None, &mut m).unwrap();
    let want = common::tree(std::path::Path::new(&m[0].host_path));
    env.iv().cleanup("sb1", "").unwrap();
    let layer_mounts = imv_testkit::mounts::under(&env.root.join("snapshots"));
    assert_eq!(layer_mounts.len(), 2, "the sample's two layers");
    for mp in layer_mounts {
        rustix::mount::unmount(&mp.mount_point, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
    let mut m = vec![image_mount(SAMPLE, "/d")];
    env.iv().mutate_mounts("sb2", "", None, &mut m).unwrap();
    assert_eq!(common::tree(std::path::Path::new(&m[0].host_path)), want);
    env.iv().release("sb1").unwrap();
    env.iv().release("sb2").unwrap();
}
