//! What a crash can leave behind, and how the next run converges.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{image_mount, TestEnv};
use imv::image_builder::sample_image;
use imv::Backend;

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
    assert!(imv::mount::is_mountpoint(&target).unwrap());
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
