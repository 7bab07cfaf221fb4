//! Calls that race: a failing call must never undo a volume another call was handed.

mod common;

use std::path::PathBuf;

use common::{image_mount, TestEnv};
use imv::ErrorKind;
use imv_testkit::image_builder::sample_image;

const SAMPLE: &str = "example.com/imv/sample:1";

/// Container A asks for the image twice, the second time with a sub path that does not
/// exist, so A mounts the volume and then has to undo it. Container B of the same pod asks
/// for the image at the same time. Whatever the interleaving, B succeeds and B's volume is
/// still mounted afterwards.
#[test]
fn a_failing_call_does_not_undo_a_volume_handed_to_another() {
    let env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    for round in 0..20 {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                let mut bad = image_mount(SAMPLE, "/b");
                bad.image_sub_path = "no/such/dir".into();
                let mut mounts = vec![image_mount(SAMPLE, "/a"), bad];
                env.iv().mutate_mounts("pod", "", None, &mut mounts)
            });
            let b = s.spawn(|| {
                let mut mounts = vec![image_mount(SAMPLE, "/c")];
                env.iv()
                    .mutate_mounts("pod", "", None, &mut mounts)
                    .map(|()| PathBuf::from(&mounts[0].host_path))
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a.unwrap_err().kind(), ErrorKind::NotFound, "round {round}");
        let host = b.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            imv_testkit::mounts::is_mountpoint(&host),
            "round {round}: B's volume was undone"
        );
        assert!(
            env.local().leases().unwrap().contains(&"pod".to_owned()),
            "round {round}: lease gone"
        );
        env.iv().release("pod").unwrap();
        assert!(env.mounts_under(&env.state).is_empty());
    }
}

/// Two handles of one process on one store share it (its database admits one opener),
/// and their calls on one volume take turns as one handle's do: eight threads, each with a
/// handle of its own, ask for the same volume and all get it, mounted once.
#[test]
fn handles_of_one_process_on_one_store_share_it() {
    let env = TestEnv::new();
    env.import(SAMPLE, &sample_image());
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let iv = imv::ImageVolumes::open(env.config()).expect("a second handle");
                    let mut mounts = vec![image_mount(SAMPLE, "/data")];
                    iv.mutate_mounts("pod", "", None, &mut mounts).unwrap();
                    assert_eq!(iv.images().unwrap().len(), 1);
                    PathBuf::from(&mounts[0].host_path)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]), "{paths:?}");
    assert_eq!(env.mounts_under(&paths[0]).len(), 1);
    env.iv().release("pod").unwrap();
    assert!(env.mounts_under(&env.state).is_empty());
}

/// Images that share their lower layers (each the one before with a layer more), all
/// asked for at once, cold, by several sandboxes each: a call holding layers of its own
/// never waits for a layer another call holds (two such calls would wait for each other
/// forever), and each layer is unpacked once.
#[test]
fn cold_images_sharing_layers_at_once_unpack_each_layer_once() {
    use imv_testkit::image_builder::{ImageBuilder, LayerBuilder};
    for round in 0..5 {
        let env = TestEnv::new();
        let mut image = ImageBuilder::new();
        let mut names = Vec::new();
        for depth in 0..4 {
            let mut layer = LayerBuilder::new();
            for f in 0..50 {
                layer = layer.file(&format!("l{depth}/f{f}"), 0o644, vec![depth as u8; 3000]);
            }
            image = image.layer(layer);
            let name = format!("example.com/imv/stack{depth}:{round}");
            env.import(&name, &image);
            names.push(name);
        }
        std::thread::scope(|s| {
            for (n, name) in names.iter().enumerate() {
                for copy in 0..3 {
                    let env = &env;
                    s.spawn(move || {
                        let mut mounts = vec![image_mount(name, "/data")];
                        let sandbox = format!("pod-{n}-{copy}");
                        env.iv()
                            .mutate_mounts(&sandbox, "", None, &mut mounts)
                            .unwrap();
                        let top = PathBuf::from(&mounts[0].host_path).join(format!("l{n}/f49"));
                        assert_eq!(std::fs::read(top).unwrap(), vec![n as u8; 3000]);
                    });
                }
            }
        });
        assert_eq!(env.layers().len(), 4, "round {round}");
        for n in 0..4 {
            for copy in 0..3 {
                env.iv().release(&format!("pod-{n}-{copy}")).unwrap();
            }
        }
    }
}
